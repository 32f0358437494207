/**
 * `npm run bench`: the optimizer step against the memory bound and the tools a user would pick
 * instead, all measured in this one process (shared/docs/PERFORMANCE.md).
 *
 *   npm run bench                 quick mode (about half a minute): small lists, a smoke test of every contender
 *   npm run bench -- --full       full mode (a few minutes): 1e4 .. 3e7 parameters, ResNet-50 and
 *                                 transformer lists; also rewrites bench/RESULTS.md and bench/step-time.svg
 *   --threads 1,2                 thread counts of the native contenders (default 1 and all cores)
 *   --out DIR                     where the JSON, Markdown and SVG go (default results/bench)
 *
 * Counted bytes per parameter (float32): KOALA-M 56, KOALA-M lazy 36, KOALA-V 20, fused Adam 28,
 * triad 12 and copy 8 per element. GB/s = counted bytes / median time.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { join } from 'node:path';

import { KoalaM, KoalaV } from '../lib';
import { devAddon, devAddonStatus } from './dev-addon';
import { fourTensors, resnet50, total, transformerBlocks, type ParamList } from './lists';
import { renderReport, type Report, type Row } from './report';
import { tfjsAdam, tfjsKoalaM, useWasm } from './tfjs';

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

function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

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
  const native = devAddon();
  if (!native) throw new Error(`the benchmark's kernels do not load: ${devAddonStatus().reason}`);
  const optimizer = (name: string, bytes: number, t: number, make: (b: Buffers) => KoalaM | KoalaV): Contender => ({
    name,
    threads: t,
    bytesPerParam: bytes,
    make: (b) => {
      b.params.forEach((p) => p.fill(0.01));
      const opt = make(b);
      return {
        step: () => {
          opt.predict();
          opt.update(0.5, 0.3);
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
      optimizer('KOALA-M', 56, t, (b) => new KoalaM(layers(b), { backend: 'native', threads: t, weightDecay: WD })),
      optimizer('KOALA-M lazy', 36, t, (b) => new KoalaM(layers(b), { backend: 'native', threads: t, weightDecay: WD, lazyPredict: true })),
      optimizer('KOALA-V', 20, t, (b) => new KoalaV(layers(b), { backend: 'native', threads: t, weightDecay: WD })),
    );
  }
  out.push(optimizer('KOALA-M (js backend)', 56, 1, (b) => new KoalaM(layers(b), { backend: 'js', weightDecay: WD })));
  return out;
}

const TFJS: Contender[] = [
  { name: 'KOALA-M (tfjs-wasm, op by op)', threads: 1, bytesPerParam: 56, make: (b) => tfjsKoalaM(b.list.sizes) },
  { name: 'Adam (tfjs-wasm)', threads: 1, bytesPerParam: 28, make: (b) => tfjsAdam(b.list.sizes) },
];

/**
 * The in-cache step against the memory-bound one: KOALA-M and the fused Adam at 1M, 2M, 3M and 16M
 * parameters (4 tensors), all timed in alternation, round after round, so that every size sees the
 * same machine; medians in ns per parameter.
 */
function measureInCache(t: number): NonNullable<Report['inCache']> {
  const sizes = [1e6, 2e6, 3e6, 1.6e7];
  const contenders = ['KOALA-M', 'Adam (fused, native)'].map((name) => nativeContenders([t]).find((c) => c.name === name)!);
  const steppers = sizes.map((n) => {
    const buffers = allocate(fourTensors(n));
    return contenders.map((c) => c.make(buffers));
  });
  const times = sizes.map(() => contenders.map(() => [] as number[]));
  for (let round = 0; round < 15; round++) {
    steppers.forEach((row, i) => row.forEach((s, j) => times[i][j].push(...time(s, 0, 3).times)));
  }
  steppers.flat().forEach((s) => s.dispose());
  const out = sizes.map((params, i) => ({ params, koalaNs: (median(times[i][0]) * 1e9) / params, adamNs: (median(times[i][1]) * 1e9) / params }));
  for (const r of out) console.log(`in cache, alternated: ${r.params} params, KOALA-M ${r.koalaNs.toFixed(3)} ns/param, Adam ${r.adamNs.toFixed(3)} ns/param`);
  return { threads: t, sizes: out };
}

async function main(): Promise<void> {
  const full = process.argv.includes('--full');
  const threads = (argValue('threads') ?? [...new Set([1, availableParallelism()])].join(',')).split(',').map(Number);
  const outDir = argValue('out') ?? join('results', 'bench');
  const budget = full ? 0.5 : 0.08;
  const minReps = full ? 7 : 3;

  const resnet = resnet50();
  const lists: ParamList[] = full
    ? [
        ...[1e4, 3e4, 1e5, 3e5, 1e6, 2e6, 3e6, 1e7, 1.6e7, 3e7].map((n) => fourTensors(n)),
        resnet,
        { ...fourTensors(total(resnet), '4 tensors, ResNet-50 total'), kind: 'model' },
        transformerBlocks(),
        // The per-tensor cost of a step, isolated: many tiny tensors against four of the same total.
        { name: '161 tiny tensors', kind: 'model', sizes: new Array<number>(161).fill(64) },
        { ...fourTensors(161 * 64, '4 tensors, tiny total'), kind: 'model' },
      ]
    : [fourTensors(1e4), fourTensors(1e5), fourTensors(1e6), { name: 'ResNet-50 shapes / 25', kind: 'model', sizes: resnet.sizes.map((n) => Math.max(1, Math.round(n / 25))) }];
  const backend = await useWasm();
  const contenders = [...nativeContenders(threads), ...TFJS];

  const rows: Row[] = [];
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
      process.stdout.write(`${list.name.padEnd(28)} ${`${c.name} x${c.threads}`.padEnd(34)} ${row.medianMs.toFixed(3).padStart(10)} ms\n`);
    }
  }

  // The ResNet-50 list against the same total in four tensors, both KOALA-M at all threads, timed in
  // alternation so that both see the same machine (their separate rows above are minutes apart).
  let paired: Report['paired'] = null;
  if (full) {
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
    console.log(`paired: ResNet-50 list ${paired.manyMs.toFixed(3)} ms, 4 tensors ${paired.fourMs.toFixed(3)} ms`);
  }

  const inCache = full ? measureInCache(Math.max(...threads)) : null;

  const report: Report = {
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, tfjsBackend: backend },
    mode: full ? 'full' : 'quick',
    seconds: (Date.now() - started) / 1e3,
    rows,
    paired,
    inCache,
  };
  const { markdown, svg, json } = await renderReport(report);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'bench.json'), json);
  writeFileSync(join(outDir, 'bench.md'), markdown);
  writeFileSync(join(outDir, 'step-time.svg'), svg);
  if (full) {
    writeFileSync(join(__dirname, '..', '..', 'bench', 'RESULTS.md'), markdown);
    writeFileSync(join(__dirname, '..', '..', 'bench', 'step-time.svg'), svg);
  }
  console.log(`\n${markdown}`);
  console.log(`written to ${outDir}/ (bench.json, bench.md, step-time.svg)${full ? ' and bench/RESULTS.md' : ''}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
