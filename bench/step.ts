/**
 * A first number: the KOALA-M step (predict + update) on the native backend, float32, against a
 * STREAM triad measured in the same process on the same threads. Counted bytes: KOALA-M 56 per
 * parameter (shared/docs/ALGORITHM.md), triad 12 per element.
 *
 *   npm run bench -- [--params 16000000] [--reps 15] [--threads N]
 */
import { availableParallelism, cpus } from 'node:os';

import { KoalaM } from '../lib';
import { nativeModule } from '../lib/native';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Seconds per call: warm-up, then `reps` timed calls; median, min and max. */
function time(fn: () => void, reps: number): { median: number; min: number; max: number } {
  for (let i = 0; i < 3; i++) fn();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { median: median(ts), min: Math.min(...ts), max: Math.max(...ts) };
}

function main(): void {
  const n = arg('params', 16_000_000);
  const reps = arg('reps', 15);
  const threads = arg('threads', availableParallelism());
  const native = nativeModule();
  if (!native) throw new Error('the native addon is not built (npm run build:native)');

  const a = new Float32Array(n);
  const b = new Float32Array(n).fill(1);
  const c = new Float32Array(n).fill(2);
  const triad = time(() => native.streamTriad(a, b, c, 3, threads), reps);

  // Four tensors of n/4: a large model's shape without per-layer overhead.
  const sizes = [0, 1, 2, 3].map((i) => Math.floor((n * (i + 1)) / 4) - Math.floor((n * i) / 4));
  const layers = sizes.map((m, i) => ({
    param: new Float32Array(m).fill(0.01),
    grad: Float32Array.from({ length: m }, (_, j) => Math.sin(i + j) * 1e-3),
  }));
  const opt = new KoalaM(layers, { backend: 'native', threads });
  const step = time(() => {
    opt.predict();
    opt.update(0.5, 0.3);
  }, reps);
  opt.dispose();

  const triadGBs = (12 * n) / triad.median / 1e9;
  const koalaGBs = (56 * n) / step.median / 1e9;
  const row = {
    cpu: cpus()[0]?.model ?? 'unknown',
    threads,
    node: process.version,
    params: n,
    triadGBs,
    koalaMGBs: koalaGBs,
    fractionOfTriad: koalaGBs / triadGBs,
    nsPerParam: (step.median / n) * 1e9,
    stepMs: { median: step.median * 1e3, min: step.min * 1e3, max: step.max * 1e3 },
  };
  console.log(`${row.cpu}, ${threads} threads, Node ${row.node}, ${n.toLocaleString('en-US')} float32 parameters`);
  console.log(`triad (12 B/elem)      ${triadGBs.toFixed(2)} GB/s`);
  console.log(
    `KOALA-M step (56 B/param) ${koalaGBs.toFixed(2)} GB/s = ${(100 * row.fractionOfTriad).toFixed(1)}% of triad, ` +
      `${row.nsPerParam.toFixed(2)} ns/param, ${row.stepMs.median.toFixed(1)} ms (${row.stepMs.min.toFixed(1)}..${row.stepMs.max.toFixed(1)})`,
  );
  console.log(JSON.stringify(row));
}

main();
