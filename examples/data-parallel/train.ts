/**
 * The same model trained two ways: in one process with one optimizer, and data-parallel over
 * ranks that each own a slice of the optimizer (ZeRO-1 style), with any collective engine behind
 * the small Collective interface (threads.ts: worker threads over SharedArrayBuffers and Atomics;
 * mpi.ts: processes over MPI_Allreduce). Both runs see the same global batches, so their
 * trajectories agree up to the order of floating-point sums; compare() measures how far apart.
 */
import { KoalaM, KoalaV, shardLayers, shardRange, type Layer } from '../../lib';

const IN = 6;
const HIDDEN = 12;
const SAMPLES = 512;
/** Global batch per step, split between the ranks. */
const BATCH = 32;

/** Parameter layout: W1 (HIDDEN x IN), b1, w2, b2, one flat float64 vector. */
export const LAYER_SIZES = [HIDDEN * IN, HIDDEN, HIDDEN, 1];
export const PARAMS = LAYER_SIZES.reduce((a, b) => a + b);

export type Variant = 'koala-m' | 'koala-m-lazy' | 'koala-v';

export interface RunOptions {
  variant: Variant;
  steps: number;
}

/** Every rank and the single run see the same reproducible data and initial parameters. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

const DATA = (() => {
  const r = lcg(7);
  const x = new Float64Array(SAMPLES * IN).map(() => 2 * r() - 1);
  const t = new Float64Array(SAMPLES);
  for (let s = 0; s < SAMPLES; s++) {
    let v = 0;
    for (let i = 0; i < IN; i++) v += Math.sin((i + 1) * x[s * IN + i]);
    t[s] = 0.5 * v;
  }
  return { x, t };
})();

export function initialParams(): Float64Array {
  const r = lcg(11);
  return new Float64Array(PARAMS).map(() => (r() - 0.5) * 0.6);
}

/** Per layer { param, grad } views into the flat vectors. */
export function layerViews(params: Float64Array, grads: Float64Array): Layer[] {
  let at = 0;
  return LAYER_SIZES.map((n, l) => {
    const begin = at;
    at += n;
    return { param: params.subarray(begin, at), grad: grads.subarray(begin, at), name: ['w1', 'b1', 'w2', 'b2'][l] };
  });
}

/**
 * Adds the gradient of 0.5 (y - t)^2 over the samples [from, to) of step k's global batch into
 * out[0, PARAMS), their losses into out[PARAMS] and squared losses into out[PARAMS + 1] (sums, not means).
 */
function accumulate(params: Float64Array, step: number, from: number, to: number, out: Float64Array): void {
  const w1 = 0;
  const b1 = w1 + HIDDEN * IN;
  const w2 = b1 + HIDDEN;
  const b2 = w2 + HIDDEN;
  const h = new Float64Array(HIDDEN);
  for (let k = from; k < to; k++) {
    const s = (step * BATCH + k) % SAMPLES;
    const x = DATA.x.subarray(s * IN, (s + 1) * IN);
    let y = params[b2];
    for (let j = 0; j < HIDDEN; j++) {
      let z = params[b1 + j];
      for (let i = 0; i < IN; i++) z += params[w1 + j * IN + i] * x[i];
      h[j] = Math.tanh(z);
      y += params[w2 + j] * h[j];
    }
    const dy = y - DATA.t[s];
    const loss = 0.5 * dy * dy;
    out[PARAMS] += loss;
    out[PARAMS + 1] += loss * loss;
    out[b2] += dy;
    for (let j = 0; j < HIDDEN; j++) {
      out[w2 + j] += dy * h[j];
      const dz = dy * params[w2 + j] * (1 - h[j] * h[j]);
      out[b1 + j] += dz;
      for (let i = 0; i < IN; i++) out[w1 + j * IN + i] += dz * x[i];
    }
  }
}

function optimizer(variant: Variant, layers: Layer[], shard?: ReturnType<typeof shardLayers>['shard']): KoalaM | KoalaV {
  const options = { weightDecay: 1e-4, threads: 1, ...(shard ? { shard } : {}) };
  return variant === 'koala-v' ? new KoalaV(layers, { ...options, sigma0: 0.1 }) : new KoalaM(layers, { ...options, lazyPredict: variant === 'koala-m-lazy' });
}

/** The learning rate of step k (a schedule, so that lr changes between steps as in training). */
const lrOf = (step: number): number => 0.5 + 0.5 * Math.cos((Math.PI * step) / 200);

/** The filter's scalars, the same on every rank. */
function filterOf(o: KoalaM | KoalaV): number[] {
  if (o instanceof KoalaV) return [o.state.sigma, o.state.R];
  const { P, qX, R } = o.state;
  return [P[0][0], P[0][1], P[1][1], qX, R];
}

/** What a run went through: the parameters the forward pass saw at each step, then the final ones; the filter after each update. */
export interface Trajectory {
  params: Float64Array[];
  filters: number[][];
  losses: number[];
}

/** One process, one optimizer over the whole model. */
export function trainSingle(o: RunOptions): Trajectory {
  const params = initialParams();
  const grads = new Float64Array(PARAMS);
  const opt = optimizer(o.variant, layerViews(params, grads));
  const sums = new Float64Array(PARAMS + 2);
  const out: Trajectory = { params: [], filters: [], losses: [] };
  for (let step = 0; step < o.steps; step++) {
    opt.lr = lrOf(step);
    opt.predict();
    out.params.push(params.slice());
    sums.fill(0);
    accumulate(params, step, 0, BATCH, sums);
    for (let i = 0; i < PARAMS; i++) grads[i] = sums[i] / BATCH;
    const info = opt.update(sums[PARAMS] / BATCH, sums[PARAMS + 1] / BATCH);
    if (!info.applied) throw new Error(`single run: step ${step} refused (${info.reason})`);
    out.filters.push(filterOf(opt));
    out.losses.push(sums[PARAMS] / BATCH);
  }
  out.params.push(params.slice());
  opt.dispose();
  return out;
}

/**
 * How a rank talks to the others. allReduceSum must leave the same bits on every rank (the
 * ranks then take the same decisions: Note [sharded step]); shareParams must leave every rank's
 * params holding every rank's slice [begin, end) (shared memory: a barrier; MPI: an all-gather).
 */
export interface Collective {
  rank: number;
  size: number;
  allReduceSum(buf: Float64Array): void;
  shareParams(params: Float64Array, begin: number, end: number): void;
}

/**
 * One rank of the data-parallel run: it computes the gradient of its part of each global batch,
 * all-reduces it with the losses, and steps its slice [begin, end) of the optimizer. params and
 * grads are whole-model vectors (shared between the ranks, or each rank's own copy).
 */
export function trainSharded(c: Collective, o: RunOptions, params: Float64Array, grads: Float64Array): Trajectory {
  const [begin, end] = shardRange(PARAMS, c.rank, c.size);
  const [from, to] = shardRange(BATCH, c.rank, c.size);
  const { layers, shard } = shardLayers(layerViews(params, grads), begin, end);
  const opt = optimizer(o.variant, layers, shard);
  const sums = new Float64Array(PARAMS + 2);
  const out: Trajectory = { params: [], filters: [], losses: [] };
  for (let step = 0; step < o.steps; step++) {
    opt.lr = lrOf(step);
    // predict: the slice's |a - x|^2 summed over the ranks, then every rank's slice is shared.
    c.allReduceSum(opt.predictPartial() as Float64Array);
    opt.finishPredict();
    c.shareParams(params, begin, end);
    if (c.rank === 0) out.params.push(params.slice());
    // Data parallel: this rank's samples, the gradient and the losses summed over the ranks in one reduction.
    sums.fill(0);
    accumulate(params, step, from, to, sums);
    c.allReduceSum(sums);
    for (let i = begin; i < end; i++) grads[i] = sums[i] / BATCH; // the optimizer reads its slice only
    // update: the slice's per-layer sums summed over the ranks, then every rank finishes alike.
    c.allReduceSum(opt.updatePartial() as Float64Array);
    const info = opt.finishUpdate(sums[PARAMS] / BATCH, sums[PARAMS + 1] / BATCH);
    if (!info.applied) throw new Error(`rank ${c.rank}: step ${step} refused (${info.reason})`);
    out.filters.push(filterOf(opt));
    out.losses.push(sums[PARAMS] / BATCH);
  }
  c.shareParams(params, begin, end);
  out.params.push(params.slice());
  opt.dispose();
  return out;
}

/** Largest |a_i - b_i| / max_i |b_i| over every recorded vector of the two runs. */
export function compare(sharded: Trajectory, single: Trajectory): number {
  const rel = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < b.length; i++) {
      diff = Math.max(diff, Math.abs(a[i] - b[i]));
      scale = Math.max(scale, Math.abs(b[i]));
    }
    return scale === 0 ? diff : diff / scale;
  };
  if (sharded.params.length !== single.params.length) throw new Error('the runs recorded different numbers of steps');
  let worst = 0;
  single.params.forEach((p, k) => (worst = Math.max(worst, rel(sharded.params[k], p))));
  single.filters.forEach((f, k) => (worst = Math.max(worst, rel(sharded.filters[k], f))));
  worst = Math.max(worst, rel(sharded.losses, single.losses));
  return worst;
}

export function parseArgs(argv: string[]): RunOptions & { ranks: number } {
  const get = (name: string, fallback: string): string => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback;
  };
  const variant = get('variant', 'koala-m') as Variant;
  if (!['koala-m', 'koala-m-lazy', 'koala-v'].includes(variant)) throw new Error(`--variant must be koala-m, koala-m-lazy or koala-v, got ${variant}`);
  const steps = Number(get('steps', '100'));
  const ranks = Number(get('ranks', '3'));
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer`);
  if (!Number.isInteger(ranks) || ranks < 1) throw new Error(`--ranks must be a positive integer`);
  return { variant, steps, ranks };
}

/** The example's verdict: the first loss and last loss, then the last line that CI reads. Returns the exit code. */
export function report(setting: string, sharded: Trajectory, single: Trajectory, log: (line: string) => void): number {
  const worst = compare(sharded, single);
  const losses = single.losses;
  log(`${setting}: loss ${losses[0].toFixed(4)} -> ${losses[losses.length - 1].toFixed(4)} over ${losses.length} steps`);
  log(`largest relative difference: ${worst}`);
  return worst <= 1e-12 ? 0 : 1;
}
