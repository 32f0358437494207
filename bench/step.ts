#!/usr/bin/env node
/**
 * The benchmark (`npm run bench`, or `npx koala-optim-bench` where the package is installed): the
 * optimizer step against the memory bound and the tools a user would pick instead, all measured in
 * this one process (shared/docs/PERFORMANCE.md). `--help` lists the flags.
 *
 * Counted bytes per parameter (float32): KOALA-M 52 (native: Note [deferred decay],
 * native/cpu/optimizer.h; the js backend and the tfjs port 56), KOALA-M lazy 36, KOALA-V 20, KOALA++ 44 (Note
 * [KOALA++ passes], native/core/step_pp.h), fused Adam 28, triad 12 and copy 8 per element. GB/s = counted bytes / median time.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { join } from 'node:path';

import { KoalaM, KoalaPP, KoalaV } from '../lib';
import { PACKAGE_ROOT } from '../lib/native';
import { parseFlags, usage, UsageError, type FlagSpec } from './args';
import { devKernels } from './dev-addon';
import { fourTensors, resnet50, total, transformerBlocks, type ParamList } from './lists';
import { renderReport, summaryLines, type Report, type Row } from './report';
import { recordStepReport } from './results';

interface Stepper {
  step(): void;
  dispose(): void;
}

interface Contender {
  name: string;
  /** Which bound this contender's GB/s is compared with: the triad at the same thread count. */
  threads: number;
  bytesPerParam: number;
  make(buffers: Buffers): Stepper;
}

/** Memory for one list, shared by its contenders (each resets what it changes). */
interface Buffers {
  list: ParamList;
  params: Float32Array[];
  grads: Float32Array[];
  flat: Float32Array[]; // three arrays of the list's total size, for triad, copy and Adam
}

/** The paper's training setting, used by every KOALA contender (it costs no extra pass). */
const WD = 5e-4;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Warm-up, then as many timed steps as fit in `budget` seconds (between minReps and 50). */
function time(stepper: Stepper, budget: number, minReps: number): { times: number[] } {
  const once = () => {
    const t0 = process.hrtime.bigint();
    stepper.step();
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  const first = Math.max(once(), once());
  const reps = Math.max(minReps, Math.min(50, Math.floor(budget / first)));
  return { times: Array.from({ length: reps }, once) };
}

function allocate(list: ParamList): Buffers {
  const params = list.sizes.map((n) => new Float32Array(n));
  const grads = list.sizes.map((n, l) => {
    const g = new Float32Array(n);
    for (let i = 0; i < n; i++) g[i] = Math.sin(l + i) * 1e-3;
    return g;
  });
  const n = total(list);
  return { list, params, grads, flat: [0, 1, 2].map(() => new Float32Array(n).fill(1)) };
}

function nativeContenders(threads: number[]): Contender[] {
  const native = devKernels();
  const optimizer = (name: string, bytes: number, t: number, make: (b: Buffers) => KoalaM | KoalaV | KoalaPP): Contender => ({
    name,
    threads: t,
    bytesPerParam: bytes,
    make: (b) => {
      b.params.forEach((p) => p.fill(0.01));
      const opt = make(b);
      return {
        step: () => {
          opt.predict();
          // A refused step would skip its update pass, and the time would not be a step's.
          if (!opt.update(0.5, 0.3).applied) throw new Error(`${name}: a step was refused`);
        },
        dispose: () => opt.dispose(),
      };
    },
  });
  const layers = (b: Buffers) => b.params.map((param, i) => ({ param, grad: b.grads[i] }));
  const out: Contender[] = [];
  for (const t of threads) {
    out.push(
      { name: 'triad', threads: t, bytesPerParam: 12, make: ({ flat: [a, b, c] }) => ({ step: () => native.streamTriad(a, b, c, 3, t), dispose: () => undefined }) },
      { name: 'copy', threads: t, bytesPerParam: 8, make: ({ flat: [a, b] }) => ({ step: () => native.streamCopy(a, b, t), dispose: () => undefined }) },
      {
        name: 'Adam (fused, native)',
        threads: t,
        bytesPerParam: 28,
        make: ({ flat: [x, m, v], grads }) => {
          const g = new Float32Array(x.length);
          let at = 0;
          for (const gl of grads) {
            g.set(gl, at);
            at += gl.length;
          }
          m.fill(0);
          v.fill(0);
          const hyper = Float64Array.of(1e-3, 0.9, 0.999, 1e-8, 0);
          return { step: () => ((hyper[4] += 1), native.adamStep(x, g, m, v, hyper, t)), dispose: () => undefined };
        },
      },
      optimizer('KOALA-M', 52, t, (b) => new KoalaM(layers(b), { backend: 'native', threads: t, weightDecay: WD })),
      optimizer('KOALA-M lazy', 36, t, (b) => new KoalaM(layers(b), { backend: 'native', threads: t, weightDecay: WD, lazyPredict: true })),
      optimizer('KOALA-V', 20, t, (b) => new KoalaV(layers(b), { backend: 'native', threads: t, weightDecay: WD })),
      optimizer('KOALA++', 44, t, (b) => new KoalaPP(layers(b), { backend: 'native', threads: t, weightDecay: WD })),
    );
  }
  out.push(optimizer('KOALA-M (js backend)', 56, 1, (b) => new KoalaM(layers(b), { backend: 'js', weightDecay: WD })));
  return out;
}

/** The TensorFlow.js contenders, where tfjs-core and its wasm backend are installed (devDependencies here). */
async function tfjsContenders(skip: boolean): Promise<{ contenders: Contender[]; backend: string }> {
  if (skip) return { contenders: [], backend: 'skipped (--skip-tfjs)' };
  try {
    require.resolve('@tensorflow/tfjs-core');
    require.resolve('@tensorflow/tfjs-backend-wasm');
  } catch {
    return { contenders: [], backend: 'not installed (@tensorflow/tfjs-core and @tensorflow/tfjs-backend-wasm add its contenders)' };
  }
  const { tfjsAdam, tfjsKoalaM, tfjsKoalaPP, useWasm } = await import('./tfjs');
  return {
    backend: await useWasm(),
    contenders: [
      { name: 'KOALA-M (tfjs-wasm, op by op)', threads: 1, bytesPerParam: 56, make: (b) => tfjsKoalaM(b.list.sizes) },
      { name: 'KOALA++ (tfjs-wasm, op by op)', threads: 1, bytesPerParam: 44, make: (b) => tfjsKoalaPP(b.list.sizes) },
      { name: 'Adam (tfjs-wasm)', threads: 1, bytesPerParam: 28, make: (b) => tfjsAdam(b.list.sizes) },
    ],
  };
}

const FLAGS: FlagSpec[] = [
  {
    name: 'full',
    default: 'off, the quick mode',
    help: 'the full sweep, 1e4 to 3e7 parameters, ResNet-50 and transformer lists (a few minutes); from a checkout it also rewrites bench/RESULTS.md and bench/step-time.svg',
  },
  {
    name: 'sizes',
    value: 'LIST',
    default: `1e4,1e5,1e6 and the ResNet-50 shapes / 25; with --full, 1e4 to 3e7 and the model lists`,
    help: 'your own parameter lists instead, comma-separated: a total (25e6: that many parameters in four tensors) or tensor sizes joined by + (4096+64+1000)',
  },
  { name: 'threads', value: 'LIST', default: `1,${availableParallelism()} (1 and every core)`, help: 'thread counts of the native contenders' },
  { name: 'out', value: 'DIR', default: 'results/bench', help: 'where bench.json, bench.md (every table) and step-time.svg go' },
  { name: 'skip-tfjs', default: 'off', help: 'leave out the TensorFlow.js contenders (left out anyway where @tensorflow/tfjs-core and @tensorflow/tfjs-backend-wasm are not installed)' },
  { name: 'verbose', default: 'off', help: 'a line per measurement as it is taken, and every table at the end' },
];

const SYNOPSIS = [
  'usage: koala-optim-bench [flags]      (in a checkout: npm run bench -- [flags])',
  '',
  'Times the KOALA-M (standard and lazy) and KOALA-V steps of this package, native at each thread count',
  'and on the js backend, against a STREAM triad and copy and a fused Adam step measured in the same',
  'run, and KOALA-M op by op in TensorFlow.js where it is installed; prints a summary table.',
];

/** One --sizes entry: a total (four tensors) or tensor sizes joined by +. */
function parseList(entry: string): ParamList {
  const parts = entry.split('+').map(Number);
  if (parts.some((n) => !Number.isInteger(n) || n < 1)) throw new UsageError(`--sizes: ${entry} is not a positive integer or sizes joined by +`);
  if (parts.length === 1) {
    if (parts[0] < 4) throw new UsageError(`--sizes: a total (${entry}) is cut into four tensors, so it must be at least 4`);
    return fourTensors(parts[0]);
  }
  return { name: `${parts.length} tensors, ${entry.length > 24 ? `${total({ name: '', kind: 'model', sizes: parts })} total` : entry}`, kind: 'model', sizes: parts };
}

function parseThreads(value: string): number[] {
  const t = value.split(',').map(Number);
  if (t.some((n) => !Number.isInteger(n) || n < 1)) throw new UsageError(`--threads must be positive integers joined by commas, got ${value}`);
  return t;
}

/**
 * The in-cache step against the memory-bound one: KOALA-M at 1M, 2M, 3M and 16M parameters (4
 * tensors), all timed in alternation, round after round, so that every size sees the same machine;
 * medians in ns per parameter.
 */
function measureInCache(t: number): NonNullable<Report['inCache']> {
  const sizes = [1e6, 2e6, 3e6, 1.6e7];
  const koala = nativeContenders([t]).find((c) => c.name === 'KOALA-M')!;
  const steppers = sizes.map((n) => koala.make(allocate(fourTensors(n))));
  const times = sizes.map(() => [] as number[]);
  for (let round = 0; round < 15; round++) steppers.forEach((s, i) => times[i].push(...time(s, 0, 3).times));
  steppers.forEach((s) => s.dispose());
  const out = sizes.map((params, i) => ({ params, koalaNs: (median(times[i]) * 1e9) / params }));
  for (const r of out) console.log(`in cache, alternated: ${r.params} params, KOALA-M ${r.koalaNs.toFixed(3)} ns/param`);
  return { threads: t, sizes: out };
}

/** Rounds of an alternation (measurePair). */
const PAIR_ROUNDS = 15;
/** KOALA-M is timed in alternation with the fused Adam on each list of this many parameters and up. */
const ADAM_PAIR_FROM = 1e6;
/** KOALA-M (standard and lazy) and KOALA++ are timed in alternation with the triad on each list of this many parameters and up. */
const TRIAD_PAIR_FROM = 16e6;

/**
 * Two contenders on one list, timed in alternation: each round warms up and times a few steps of
 * one, then of the other, so that both see the same machine (this one's memory bandwidth drifts by
 * 30% within a minute, with the other work on it). Returns their median times and the median over
 * the rounds of the ratio of their medians in the round (a's time over b's).
 */
function measurePair(buffers: Buffers, a: Contender, b: Contender): { aMs: number; bMs: number; ratio: number } {
  const [sa, sb] = [a.make(buffers), b.make(buffers)];
  const [ta, tb, ratios] = [[] as number[], [] as number[], [] as number[]];
  for (let round = 0; round < PAIR_ROUNDS; round++) {
    const x = time(sa, 0, 3).times;
    const y = time(sb, 0, 3).times;
    ta.push(...x);
    tb.push(...y);
    ratios.push(median(x) / median(y));
  }
  sa.dispose();
  sb.dispose();
  return { aMs: median(ta) * 1e3, bMs: median(tb) * 1e3, ratio: median(ratios) };
}

/** The alternations of one list at `t` threads: KOALA-M against Adam, and the big lists' KOALA steps against the triad. */
function measurePairs(buffers: Buffers, t: number, report: { adamPairs: NonNullable<Report['adamPairs']>; triadPairs: NonNullable<Report['triadPairs']> }, verbose: boolean) {
  const n = total(buffers.list);
  const native = nativeContenders([t]);
  const named = (name: string) => native.find((c) => c.name === name)!;
  const base = { list: buffers.list.name, params: n, threads: t, rounds: PAIR_ROUNDS };
  if (n >= ADAM_PAIR_FROM) {
    const p = measurePair(buffers, named('KOALA-M'), named('Adam (fused, native)'));
    report.adamPairs.push({ ...base, koalaMs: p.aMs, adamMs: p.bMs, ratio: p.ratio });
    if (verbose) process.stdout.write(`${buffers.list.name.padEnd(28)} ${'KOALA-M / Adam, alternated'.padEnd(34)} ${p.ratio.toFixed(3).padStart(10)}\n`);
  }
  if (n >= TRIAD_PAIR_FROM) {
    for (const name of ['KOALA-M', 'KOALA-M lazy', 'KOALA++']) {
      const c = named(name);
      const p = measurePair(buffers, c, named('triad'));
      // GB/s against the triad's: (bytes / time) / (12 / triad's time).
      const percent = (100 * c.bytesPerParam) / 12 / p.ratio;
      report.triadPairs.push({ ...base, contender: name, percent });
      if (verbose) process.stdout.write(`${buffers.list.name.padEnd(28)} ${`${name} / triad, alternated`.padEnd(34)} ${percent.toFixed(0).padStart(9)}%\n`);
    }
  }
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), FLAGS);
  if (!flags) {
    process.stdout.write(usage(SYNOPSIS, FLAGS));
    return;
  }
  const full = flags.has('full');
  const verbose = flags.has('verbose');
  const threads = parseThreads(flags.get('threads') ?? [...new Set([1, availableParallelism()])].join(','));
  const outDir = flags.get('out') ?? join('results', 'bench');
  const own = flags.get('sizes')?.split(',').map(parseList);
  const budget = full ? 0.5 : 0.08;
  const minReps = full ? 7 : 3;
  // In a checkout, a full run with the standard lists is the one bench/RESULTS.md records.
  const benchDir = join(PACKAGE_ROOT, 'bench');
  const recorded = full && !own && existsSync(join(benchDir, 'step.ts'));

  const resnet = resnet50();
  const lists: ParamList[] =
    own ??
    (full
      ? [
          ...[1e4, 3e4, 1e5, 3e5, 1e6, 2e6, 3e6, 1e7, 1.6e7, 3e7].map((n) => fourTensors(n)),
          resnet,
          { ...fourTensors(total(resnet), '4 tensors, ResNet-50 total'), kind: 'model' },
          transformerBlocks(),
          // The per-tensor cost of a step, isolated: many tiny tensors against four of the same total.
          { name: '161 tiny tensors', kind: 'model', sizes: new Array<number>(161).fill(64) },
          { ...fourTensors(161 * 64, '4 tensors, tiny total'), kind: 'model' },
        ]
      : [fourTensors(1e4), fourTensors(1e5), fourTensors(1e6), { name: 'ResNet-50 shapes / 25', kind: 'model', sizes: resnet.sizes.map((n) => Math.max(1, Math.round(n / 25))) }]);
  const tfjs = await tfjsContenders(flags.has('skip-tfjs'));
  const backend = tfjs.backend;
  const contenders = [...nativeContenders(threads), ...tfjs.contenders];
  if (!verbose) console.log(`measuring ${contenders.length} contenders on ${lists.length} lists (${full ? 'full' : 'quick'} mode; --verbose shows each measurement)...`);

  const rows: Row[] = [];
  const pairs = { adamPairs: [] as NonNullable<Report['adamPairs']>, triadPairs: [] as NonNullable<Report['triadPairs']> };
  const started = Date.now();
  for (const list of lists) {
    const buffers = allocate(list);
    // The bound is measured before and again after the list's contenders; the faster one is kept.
    const bounds = contenders.filter((c) => c.name === 'triad' || c.name === 'copy');
    for (const c of [...contenders, ...bounds]) {
      const stepper = c.make(buffers);
      const { times } = time(stepper, budget, minReps);
      stepper.dispose();
      const before = rows.findIndex((r) => r.list === list.name && r.contender === c.name && r.threads === c.threads);
      if (before >= 0) {
        if (median(times) * 1e3 < rows[before].medianMs) rows.splice(before, 1);
        else continue;
      }
      const row: Row = {
        list: list.name,
        kind: list.kind,
        params: total(list),
        tensors: list.sizes.length,
        contender: c.name,
        threads: c.threads,
        bytesPerParam: c.bytesPerParam,
        medianMs: median(times) * 1e3,
        minMs: Math.min(...times) * 1e3,
        maxMs: Math.max(...times) * 1e3,
        reps: times.length,
      };
      rows.push(row);
      if (verbose) process.stdout.write(`${list.name.padEnd(28)} ${`${c.name} x${c.threads}`.padEnd(34)} ${row.medianMs.toFixed(3).padStart(10)} ms\n`);
    }
    measurePairs(buffers, Math.max(...threads), pairs, verbose);
  }

  // The ResNet-50 list against the same total in four tensors, both KOALA-M at all threads, timed in
  // alternation so that both see the same machine (their separate rows above are minutes apart).
  let paired: Report['paired'] = null;
  if (full && !own) {
    const t = Math.max(...threads);
    const [a, b] = [resnet, fourTensors(total(resnet), '4 tensors, ResNet-50 total')].map((list) => {
      const buffers = allocate(list);
      return nativeContenders([t]).find((c) => c.name === 'KOALA-M')!.make(buffers);
    });
    const ta: number[] = [];
    const tb: number[] = [];
    for (let round = 0; round < 15; round++) {
      ta.push(...time(a, 0, 3).times);
      tb.push(...time(b, 0, 3).times);
    }
    [a, b].forEach((s) => s.dispose());
    paired = { threads: t, manyMs: median(ta) * 1e3, fourMs: median(tb) * 1e3 };
    if (verbose) console.log(`paired: ResNet-50 list ${paired.manyMs.toFixed(3)} ms, 4 tensors ${paired.fourMs.toFixed(3)} ms`);
  }

  const inCache = full ? measureInCache(Math.max(...threads)) : null;

  const report: Report = {
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, tfjsBackend: backend },
    mode: full ? 'full' : 'quick',
    seconds: (Date.now() - started) / 1e3,
    rows,
    paired,
    inCache,
    ...pairs,
  };
  const { markdown, svg, json } = await renderReport(report);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'bench.json'), json);
  writeFileSync(join(outDir, 'bench.md'), markdown);
  if (svg) writeFileSync(join(outDir, 'step-time.svg'), svg);
  if (recorded) {
    recordStepReport(join(benchDir, 'RESULTS.md'), markdown);
    if (svg) writeFileSync(join(benchDir, 'step-time.svg'), svg);
  }
  console.log(`\n${verbose ? markdown : summaryLines(report).join('\n')}`);
  if (!full && !own) {
    console.log(
      [
        'Quick mode: its lists (1e4 to 1e6 parameters: up to 16 MB of KOALA-M arrays) sit in or near the caches, and each contender runs',
        'for a fraction of a second. It shows that every contender runs and how they rank, not the memory-bound figures: the README\'s',
        'targets (% of the triad at 16M parameters and more, the slope, the per-tensor cost) are measured with --full.',
      ].join('\n'),
    );
  } else if (own) {
    console.log('Your lists: the "% of triad" columns compare with a memory-bound reference only where a step\'s memory is well beyond the caches (millions of parameters).');
  }
  const files = ['bench.json', 'bench.md', ...(svg ? ['step-time.svg'] : [])];
  console.log(`every measurement: ${join(outDir, 'bench.md')} (written with ${files.join(', ')})${recorded ? ', and bench/RESULTS.md' : ''}${svg ? '' : '; install vega and vega-lite for the plot'}`);
}

main().catch((e: unknown) => {
  if (e instanceof UsageError) {
    process.stderr.write(`usage: ${e.message}\n`);
    process.exitCode = 2;
  } else {
    console.error(e);
    process.exitCode = 1;
  }
});
