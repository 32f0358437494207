/**
 * Results: a JSON file per run, summary.md (test accuracy and loss, mean and spread over seeds),
 * curves.svg (vega-lite, rendered to SVG without native code) and, for the batch sweep, its table.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';

import * as vega from 'vega';
import * as vl from 'vega-lite';

import { BASE_LR, LABELS, type OptimizerName } from './optimizers';
import type { Experiment, RunResult } from './train';

interface Stats {
  mean: number;
  sd: number;
  min: number;
  max: number;
}

/** Mean, sample standard deviation (0 for one value), min and max. */
function stats(values: number[]): Stats {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const sd = values.length > 1 ? Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1)) : 0;
  return { mean, sd, min: Math.min(...values), max: Math.max(...values) };
}

const last = <T>(xs: T[]): T => xs[xs.length - 1];
const pct = (x: number) => (100 * x).toFixed(2);

function byOptimizer(runs: RunResult[]): Map<OptimizerName, RunResult[]> {
  const out = new Map<OptimizerName, RunResult[]>();
  for (const r of runs) out.set(r.optimizer, [...(out.get(r.optimizer) ?? []), r]);
  return out;
}

function accuracyStats(runs: RunResult[]): Stats {
  return stats(runs.map((r) => last(r.test).accuracy));
}

function machine(): string {
  return `${cpus()[0]?.model.trim() ?? 'unknown CPU'} (${cpus().length} cores), Node ${process.version}`;
}

function setup(e: Experiment): string {
  const c = e.config;
  const model = c.model === 'mlp' ? 'MLP 784-256-128-10' : 'CNN (conv 3x3x8, pool, conv 3x3x16, pool, dense 10)';
  return `${model}, ${e.parameters.toLocaleString('en-US')} parameters; ${e.trainSize.toLocaleString('en-US')} train / ${e.testSize.toLocaleString('en-US')} test digits (the \`mnist\` package, stratified split, seed ${c.splitSeed}); batch ${c.batch}, ${c.epochs} epochs, schedule ${c.schedule}, KOALA variant ${c.variant}, weight decay ${c.weightDecay}, seeds ${c.seeds.join(', ')}; tfjs ${e.backend.name} backend; ${machine()}; ${e.seconds.toFixed(0)} s in all.`;
}

// Two-sided 5% critical values of Student's t for 1 to 30 degrees of freedom; beyond, the normal's.
const T_CRITICAL_5 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131,
  2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042];

/**
 * A paired t-test of a against b over the seeds they share (the same seed: the same initial weights
 * and batch order): the mean difference, t, and whether it is significant at two-sided p < 0.05.
 * null with fewer than two shared seeds.
 */
export function pairedTTest(a: Map<number, number>, b: Map<number, number>): { n: number; diff: number; t: number; significant: boolean } | null {
  const d = [...a].filter(([seed]) => b.has(seed)).map(([seed, x]) => x - b.get(seed)!);
  if (d.length < 2) return null;
  const { mean, sd } = stats(d);
  const t = sd === 0 ? (mean === 0 ? 0 : Math.sign(mean) * Infinity) : mean / (sd / Math.sqrt(d.length));
  const critical = T_CRITICAL_5[d.length - 2] ?? 1.96;
  return { n: d.length, diff: mean, t, significant: Math.abs(t) > critical };
}

/**
 * The closing comparison: each KOALA variant's final test accuracy against the best baseline's. A
 * lead (or a lag) is claimed only where a paired t-test over the seeds finds it significant; any
 * other gap is "on par", the seeds' spread covering it.
 */
function koalaVsBest(e: Experiment): string[] {
  const groups = byOptimizer(e.runs);
  const baselines = [...groups].filter(([name]) => name === 'sgd' || name === 'adam');
  if (baselines.length === 0) return [];
  const [bestName, bestRuns] = baselines.reduce((a, b) => (accuracyStats(b[1]).mean > accuracyStats(a[1]).mean ? b : a));
  const bySeed = (rs: RunResult[]) => new Map(rs.map((r) => [r.seed, 100 * last(r.test).accuracy]));
  const { variant, weightDecay } = e.config;
  const out: string[] = [];
  for (const name of ['koala-m', 'koala-v', 'koala-pp'] as const) {
    const koala = groups.get(name);
    if (!koala) continue;
    const diff = 100 * (accuracyStats(koala).mean - accuracyStats(bestRuns).mean);
    const test = pairedTTest(bySeed(koala), bySeed(bestRuns));
    const verdict =
      test === null
        ? 'one seed: no lead or lag can be claimed'
        : `${test.significant ? (test.diff > 0 ? 'ahead' : 'behind') : 'on par'} (paired t-test over ${test.n} seeds: t = ${test.t.toFixed(2)}, ${test.significant ? '' : 'not '}significant at p < 0.05)`;
    // The paper's variants are KOALA-M's and KOALA-V's (KOALA++ runs the authors' own form).
    const changed = [variant !== 'official' && name !== 'koala-pp' ? `variant ${variant}` : '', weightDecay !== 0 ? `weight decay ${weightDecay}` : ''].filter((s) => s !== '');
    out.push(`${LABELS[name]} (${changed.length === 0 ? 'default options' : changed.join(', ')}, lr 1) ends ${Math.abs(diff).toFixed(2)} points ${diff >= 0 ? 'above' : 'below'} the best baseline, ${LABELS[bestName]} (${pct(accuracyStats(koala).mean)}% against ${pct(accuracyStats(bestRuns).mean)}%): ${verdict}.`);
  }
  return out;
}

export function summaryMarkdown(e: Experiment): string {
  const lines = ['# MNIST: KOALA against SGD with momentum and Adam', '', setup(e), ''];
  lines.push('| optimizer | lr | test accuracy (%) | test loss | last-epoch train loss | ms per step |', '|---|---|---|---|---|---|');
  for (const [name, runs] of byOptimizer(e.runs)) {
    const acc = accuracyStats(runs);
    const loss = stats(runs.map((r) => last(r.test).loss));
    const train = stats(runs.map((r) => r.finalTrainLoss));
    const ms = stats(runs.map((r) => (1000 * r.seconds) / r.steps));
    lines.push(`| ${LABELS[name]} | ${BASE_LR[name]} | ${pct(acc.mean)} ± ${pct(acc.sd)} (${pct(acc.min)}–${pct(acc.max)}) | ${loss.mean.toFixed(4)} ± ${loss.sd.toFixed(4)} | ${train.mean.toFixed(4)} | ${ms.mean.toFixed(1)} |`);
  }
  lines.push('', 'Test accuracy and loss after the last epoch: mean ± standard deviation over the seeds (min–max). ms per step: the run\'s whole time (test evaluations included) over its steps.');
  const overhead = [...byOptimizer(e.runs)].filter(([, runs]) => runs[0].adapter);
  if (overhead.length > 0) {
    lines.push('', 'KOALA through the tfjs adapter, per step: host copies (gradients read, parameters written back) and the KOALA step itself, against the whole step (Note [tfjs host copies], lib/tfjs.ts):', '');
    for (const [name, runs] of overhead) {
      const mean = (f: (a: NonNullable<RunResult['adapter']>) => number) => stats(runs.map((r) => (r.adapter ? f(r.adapter) : 0))).mean;
      const copy = mean((a) => a.copyMs);
      const step = stats(runs.map((r) => (1000 * r.seconds) / r.steps)).mean;
      lines.push(`- ${LABELS[name]}: copies ${copy.toFixed(3)} ms (${mean((a) => a.writes).toFixed(2)} write-backs, ${mean((a) => a.writeMs).toFixed(3)} ms), KOALA ${mean((a) => a.koalaMs).toFixed(3)} ms, of ${step.toFixed(2)} ms (${((100 * copy) / step).toFixed(1)}% copies)`);
    }
  }
  const refused = e.runs.filter((r) => r.refused > 0);
  if (refused.length > 0) lines.push('', `Refused KOALA updates (non-finite loss or gradient): ${refused.map((r) => `${r.label} seed ${r.seed}: ${r.refused}`).join(', ')}.`);
  const closing = koalaVsBest(e);
  if (closing.length > 0) lines.push('', ...closing.flatMap((c) => [c, '']).slice(0, -1));
  return `${lines.join('\n')}\n`;
}

/** The batch-size sweep: final test accuracy per optimizer and batch size, and its spread. */
export function sweepMarkdown(experiments: Experiment[]): string {
  const batches = experiments.map((e) => e.config.batch);
  const lines = ['# MNIST batch-size sweep', '', setup(experiments[0]).replace(/batch \d+, /, `batch ${batches.join(', ')}, `).replace(/ \d+ s in all\./, ` ${experiments.reduce((s, e) => s + e.seconds, 0).toFixed(0)} s in all.`), ''];
  lines.push(`| optimizer | ${batches.map((b) => `batch ${b}`).join(' | ')} | spread (max − min of the means) |`, `|---|${batches.map(() => '---|').join('')}---|`);
  for (const name of experiments[0].config.optimizers) {
    const means = experiments.map((e) => accuracyStats(e.runs.filter((r) => r.optimizer === name)));
    const spread = Math.max(...means.map((m) => m.mean)) - Math.min(...means.map((m) => m.mean));
    lines.push(`| ${LABELS[name]} | ${means.map((m) => `${pct(m.mean)} ± ${pct(m.sd)}`).join(' | ')} | ${pct(spread)} points |`);
  }
  lines.push('', 'Test accuracy (%) after the last epoch, mean ± standard deviation over the seeds; the same number of epochs and the same learning rate at every batch size (no retuning).');
  return `${lines.join('\n')}\n`;
}

/** The loss and accuracy curves (mean over seeds, band from min to max) as an SVG document. */
export async function curvesSvg(e: Experiment): Promise<string> {
  const rows: { optimizer: string; epoch: number; metric: string; value: number }[] = [];
  for (const r of e.runs) {
    for (const p of r.trainLoss) rows.push({ optimizer: r.label, epoch: p.epoch, metric: 'train loss', value: p.loss });
    for (const p of r.test) {
      rows.push({ optimizer: r.label, epoch: p.epoch, metric: 'test loss', value: p.loss });
      rows.push({ optimizer: r.label, epoch: p.epoch, metric: 'test accuracy (%)', value: 100 * p.accuracy });
    }
  }
  const color = { field: 'optimizer', type: 'nominal', scale: { domain: e.config.optimizers.map((o) => LABELS[o]) }, title: null };
  // The test panels start at epoch 1: every optimizer starts from the same point (chance), which
  // would flatten the part worth seeing.
  const panel = (metric: string, log: boolean) => ({
    title: metric,
    width: 250,
    height: 190,
    transform: [
      { filter: metric === 'train loss' ? { field: 'metric', equal: metric } : { and: [{ field: 'metric', equal: metric }, { field: 'epoch', gt: 0 }] } },
      { aggregate: [{ op: 'mean', field: 'value', as: 'mean' }, { op: 'min', field: 'value', as: 'lo' }, { op: 'max', field: 'value', as: 'hi' }], groupby: ['optimizer', 'epoch'] },
    ],
    encoding: { x: { field: 'epoch', type: 'quantitative', title: 'epoch' } },
    layer: [
      { mark: { type: 'area', opacity: 0.18 }, encoding: { y: { field: 'lo', type: 'quantitative', scale: log ? { type: 'log' } : { zero: false }, title: null }, y2: { field: 'hi' }, color } },
      { mark: { type: 'line', point: !log }, encoding: { y: { field: 'mean', type: 'quantitative', title: null }, color } },
    ],
  });
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: `MNIST ${e.config.model.toUpperCase()}, batch ${e.config.batch}: mean over ${e.config.seeds.length} seeds (band: min to max)`, anchor: 'start' },
    background: 'white',
    config: { legend: { symbolType: 'stroke', symbolOpacity: 1, symbolStrokeWidth: 3 } },
    data: { values: rows },
    hconcat: [panel('train loss', true), panel('test loss', true), panel('test accuracy (%)', false)],
  } as unknown as vl.TopLevelSpec;
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

/** Writes a JSON per run, summary.md and curves.svg into dir; returns the paths written. */
export async function writeResults(dir: string, e: Experiment): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  const write = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    written.push(join(dir, name));
  };
  for (const r of e.runs) write(`${r.model}-b${r.batch}-${r.optimizer}-seed${r.seed}.json`, `${JSON.stringify({ ...r, config: e.config, backend: e.backend.name }, null, 1)}\n`);
  write('summary.md', summaryMarkdown(e));
  write('curves.svg', await curvesSvg(e));
  return written;
}
