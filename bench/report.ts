/**
 * Turns the measured rows into the JSON, the Markdown tables and the log-log plot of a run. The plot
 * needs vega and vega-lite (devDependencies): where they are not installed (the installed package's
 * `koala-optim-bench`), there is no plot.
 */

export interface Row {
  list: string;
  kind: 'size' | 'model';
  params: number;
  tensors: number;
  contender: string;
  threads: number;
  bytesPerParam: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  reps: number;
}

export interface Report {
  machine: { cpu: string; cores: number; memoryGiB: number; node: string; tfjsBackend: string };
  mode: 'quick' | 'full';
  seconds: number;
  rows: Row[];
  /** KOALA-M on the ResNet-50 list and on the same total in 4 tensors, timed in alternation. */
  paired: { threads: number; manyMs: number; fourMs: number } | null;
  /** KOALA-M at 1M to 3M parameters and at 16M, timed in alternation (full mode). */
  inCache?: { threads: number; sizes: { params: number; koalaNs: number }[] } | null;
  /**
   * KOALA-M and the fused Adam timed in alternation on each list of 1M parameters and up, at the
   * most threads: medians of each, and the median over the rounds of their ratio in the round.
   */
  adamPairs?: { list: string; params: number; threads: number; rounds: number; koalaMs: number; adamMs: number; ratio: number }[];
  /**
   * KOALA-M, KOALA-M lazy and KOALA++ each timed in alternation with the triad on each list of 16M
   * parameters and up, at the most threads: their GB/s as a percentage of the triad's, from the
   * median over the rounds of their time ratio in the round.
   */
  triadPairs?: { list: string; params: number; threads: number; rounds: number; contender: string; percent: number }[];
}

const ADAM_PAIR_NOTE = '1M parameters up, KOALA-M and the fused Adam timed in alternation on the list (rounds of 3 steps of each, after 2 untimed), the median over the rounds of their ratio in the round';

const gbs = (r: Row) => (r.bytesPerParam * r.params) / (r.medianMs / 1e3) / 1e9;
const nsPerParam = (r: Row) => (r.medianMs * 1e6) / r.params;
const fmt = (x: number, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');

/** Least-squares slope of log(time) against log(params). */
function slope(points: [number, number][]): number {
  const xs = points.map(([n]) => Math.log(n));
  const ys = points.map(([, t]) => Math.log(t));
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const num = xs.reduce((s, x, i) => s + (x - mx) * (ys[i] - my), 0);
  const den = xs.reduce((s, x) => s + (x - mx) ** 2, 0);
  return num / den;
}

/** The run's lists in order, its most threads, and a row finder (at the most threads by default). */
function lookup(rows: Row[]) {
  const maxThreads = Math.max(...rows.map((r) => r.threads));
  const lists = [...new Set(rows.map((r) => r.list))];
  const find = (list: string, contender: string, threads = maxThreads) => rows.find((r) => r.list === list && r.contender === contender && r.threads === threads);
  const triadOf = (r: Row) => find(r.list, 'triad', r.threads);
  return { maxThreads, lists, find, triadOf };
}

/** The summary table: one row per list, KOALA-M at the most threads against the others. */
export function summaryLines(report: Report): string[] {
  const { rows } = report;
  const { maxThreads, lists, find, triadOf } = lookup(rows);
  const out: string[] = [];
  out.push(`## Summary (native contenders at ${maxThreads} threads)`, '');
  out.push('| list | params | tensors | KOALA-M ms | ns/param | % of triad (b) | lazy: % of triad (b) | KOALA-M / Adam time (a) | vs js backend | vs tfjs KOALA-M | vs tfjs Adam |');
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const list of lists) {
    const k = find(list, 'KOALA-M');
    const lazy = find(list, 'KOALA-M lazy');
    if (!k || !lazy) continue;
    const ratio = (c: string, threads = 1) => {
      const r = find(list, c, threads);
      return r ? `${fmt(r.medianMs / k.medianMs, 1)}x` : 'n/a';
    };
    const adam = find(list, 'Adam (fused, native)');
    const pair = report.adamPairs?.find((p) => p.list === list && p.threads === maxThreads);
    const adamRatio = pair ? `${fmt(pair.ratio)}` : adam ? `${fmt(k.medianMs / adam.medianMs)} (rows)` : 'n/a';
    const ofTriad = (r: Row) => {
      const alternated = report.triadPairs?.find((p) => p.list === list && p.contender === r.contender && p.threads === r.threads);
      return `${fmt(alternated ? alternated.percent : (100 * gbs(r)) / gbs(triadOf(r)!), 0)}%`;
    };
    out.push(
      `| ${list} | ${k.params.toLocaleString('en-US')} | ${k.tensors} | ${fmt(k.medianMs, 3)} | ${fmt(nsPerParam(k))} | ${ofTriad(k)} | ${ofTriad(lazy)} | ${adamRatio} | ${ratio('KOALA-M (js backend)')} | ${ratio('KOALA-M (tfjs-wasm, op by op)')} | ${ratio('Adam (tfjs-wasm)')} |`,
    );
  }
  out.push('');
  out.push(
    `(a) From ${ADAM_PAIR_NOTE}; below 1M parameters, "(rows)": the ratio of the two contenders' rows of the list, timed one after the other.`,
    '',
    '(b) From 16M parameters up, the step timed in alternation with the triad on the list, the same way (the checks below use these); below, from the rows of the list (the triad\'s faster measurement, before or after the contenders).',
    '',
  );
  return out;
}

/** The log-log plot of the size sweep as SVG, or null where vega is not installed. */
async function plot(plotted: Row[], title: string): Promise<string | null> {
  let vega: typeof import('vega');
  let vegaLite: typeof import('vega-lite');
  try {
    [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  } catch {
    return null;
  }
  const spec = vegaLite.compile({
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    width: 640,
    height: 400,
    data: { values: plotted.map((r) => ({ params: r.params, ms: r.medianMs, contender: r.contender })) },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'params', type: 'quantitative', scale: { type: 'log' }, title: 'parameters' },
      y: { field: 'ms', type: 'quantitative', scale: { type: 'log' }, title: 'time per step (ms, median)' },
      color: { field: 'contender', type: 'nominal', legend: { labelLimit: 320 } },
    },
  }).spec;
  return new vega.View(vega.parse(spec), { renderer: 'none' }).toSVG();
}

export async function renderReport(report: Report): Promise<{ markdown: string; svg: string | null; json: string }> {
  const { rows, machine } = report;
  const { maxThreads, lists, find, triadOf } = lookup(rows);

  const out: string[] = [];
  out.push(`# Benchmark: the KOALA step (${report.mode} run)`, '');
  out.push(`Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Node ${machine.node}; tfjs backend: ${machine.tfjsBackend}. Run time ${report.seconds.toFixed(0)} s.`);
  out.push('Produced by `npm run bench' + (report.mode === 'full' ? ' -- --full' : '') + '`. float32 parameters; counted bytes per parameter: KOALA-M 52 (its js backend and tfjs rows 56), KOALA-M lazy 36, KOALA-V 20, KOALA++ 44, Adam 28, triad 12, copy 8. GB/s = counted bytes / median step time; "% of triad" compares with the triad at the same thread count, measured in the same run (before and after each list\'s contenders, the faster kept). Every KOALA contender runs with weight decay 5e-4, the paper\'s setting. The triad\'s 12 counted bytes leave out the read of its output line that the cache does before writing it, which in-place passes do not pay, so a KOALA pass can show more than 100%. Below about 1e5 parameters a step is a few microseconds and thread wake-ups dominate the triad, so its percentages say little there.', '');

  out.push(...summaryLines(report));

  // The acceptance checks of the benchmark issue, computed from this run.
  const checks: string[] = [];
  // Measured on every list of 16M parameters and up (bench/step.ts, measurePairs).
  const triadPairs = report.triadPairs ?? [];
  if (triadPairs.length > 0) {
    const of = (name: string) => triadPairs.filter((p) => p.contender === name);
    const worst = (name: string) => fmt(Math.min(...of(name).map((p) => p.percent)), 0);
    const listed = (name: string) => of(name).map((p) => `${p.list} ${fmt(p.percent, 0)}%`).join(', ');
    checks.push(
      `KOALA-M at >= 16M parameters, each list timed in alternation with the triad (${triadPairs[0].rounds} rounds): at least ${worst('KOALA-M')}% of the triad (${listed('KOALA-M')}); lazy predict at least ${worst('KOALA-M lazy')}% (targets 85% and 80%).`,
      `KOALA++ at >= 16M parameters, the same way: at least ${worst('KOALA++')}% of the triad in its 44 counted bytes (${listed('KOALA++')}) (target 80%).`,
    );
  }
  const tf = lists.map((l) => [find(l, 'KOALA-M (tfjs-wasm, op by op)', 1), find(l, 'KOALA-M')]).filter(([a, b]) => a && b) as [Row, Row][];
  if (tf.length > 0) checks.push(`KOALA-M native vs tfjs-wasm op by op on the same list: at least ${fmt(Math.min(...tf.map(([a, b]) => a.medianMs / b.medianMs)), 1)}x faster (target 5x).`);
  const tfPP = lists.map((l) => [find(l, 'KOALA++ (tfjs-wasm, op by op)', 1), find(l, 'KOALA++')]).filter(([a, b]) => a && b) as [Row, Row][];
  if (tfPP.length > 0) checks.push(`KOALA++ native vs tfjs-wasm op by op on the same list: at least ${fmt(Math.min(...tfPP.map(([a, b]) => a.medianMs / b.medianMs)), 1)}x faster.`);
  const { paired } = report;
  if (paired) {
    checks.push(
      `ResNet-50 list (161 tensors) vs the same total in 4 tensors, KOALA-M at ${paired.threads} threads timed in alternation (45 steps each): ` +
        `${fmt(paired.manyMs, 2)} ms vs ${fmt(paired.fourMs, 2)} ms, ${fmt(paired.manyMs / paired.fourMs, 3)}x the time (target within 1.15x).`,
    );
  }
  const { inCache } = report;
  const bound = inCache?.sizes.find((r) => r.params >= 16e6);
  if (inCache && bound) {
    const cached = inCache.sizes.filter((r) => r.params < 16e6);
    checks.push(
      `In-cache KOALA-M step, timed in alternation with the 16M one at ${inCache.threads} threads: ` +
        cached.map((r) => `${r.params / 1e6}M ${fmt(r.koalaNs, 3)} ns/param (${fmt(r.koalaNs / bound.koalaNs)}x)`).join(', ') +
        `, 16M ${fmt(bound.koalaNs, 3)} (target at 2M: at most 0.7x).`,
    );
  }
  const pairs = report.adamPairs ?? [];
  if (pairs.length > 0) {
    checks.push(
      `KOALA-M / fused Adam time at ${pairs[0].threads} threads, timed in alternation on each list of 1M parameters and up (${pairs[0].rounds} rounds each): ` +
        pairs.map((p) => `${p.list} ${fmt(p.ratio)}`).join(', ') +
        ` (target at most 2.2; byte ratio 1.86, 2.0 before the deferred decay).`,
    );
  }
  const tiny = rows.find((r) => r.list === '161 tiny tensors' && r.contender === 'KOALA-M' && r.threads === maxThreads);
  const tinySame = rows.find((r) => r.list === '4 tensors, tiny total' && r.contender === 'KOALA-M' && r.threads === maxThreads);
  if (tiny && tinySame) {
    checks.push(`Cost of a tensor in a step (161 tensors of 64 parameters against 4 of the same total): ${fmt(((tiny.medianMs - tinySame.medianMs) * 1e6) / (tiny.tensors - tinySame.tensors), 0)} ns per tensor (target <= 1 us).`);
  }
  for (const threads of [...new Set(rows.map((r) => r.threads))].sort()) {
    const sweep = rows.filter((r) => r.kind === 'size' && r.contender === 'KOALA-M' && r.threads === threads && r.params >= 1e5);
    if (sweep.length >= 3) checks.push(`Growth of the KOALA-M step at ${threads} thread(s), 1e5 parameters and up: log-log slope ${fmt(slope(sweep.map((r) => [r.params, r.medianMs])), 3)} (target 0.9 to 1.1).`);
  }
  if (checks.length > 0) out.push('## Checks', '', ...checks.map((c) => `- ${c}`), '');

  out.push('## Every measurement', '');
  for (const list of lists) {
    const first = rows.find((r) => r.list === list)!;
    out.push(`### ${list}: ${first.params.toLocaleString('en-US')} parameters in ${first.tensors} tensors`, '');
    out.push('| contender | threads | B/param | median ms (min..max) | reps | ns/param | GB/s | % of triad |');
    out.push('|---|---:|---:|---|---:|---:|---:|---:|');
    for (const r of rows.filter((x) => x.list === list)) {
      const t = triadOf(r);
      out.push(
        `| ${r.contender} | ${r.threads} | ${r.bytesPerParam} | ${fmt(r.medianMs, 3)} (${fmt(r.minMs, 3)}..${fmt(r.maxMs, 3)}) | ${r.reps} | ${fmt(nsPerParam(r))} | ${fmt(gbs(r), 1)} | ${t ? `${fmt((100 * gbs(r)) / gbs(t), 0)}%` : ''} |`,
      );
    }
    out.push('');
  }

  // The size sweep; native contenders at all threads, the single-threaded ones as they are.
  const plotted = rows.filter(
    (r) => r.kind === 'size' && (r.threads === maxThreads || !rows.some((x) => x.contender === r.contender && x.threads === maxThreads && x.list === r.list)),
  );
  const svg = await plot(plotted, `Step time against size (${machine.cpu}, ${maxThreads} threads for native contenders)`);
  return { markdown: out.join('\n'), svg, json: JSON.stringify(report, null, 2) };
}
