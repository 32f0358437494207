// Sharded steps (Note [sharded step], native/cpu/optimizer.h): N ranks, each holding a slice of every
// layer cut at random points, reduce their partial sums (here in one thread, rank by rank) and
// must reproduce the single optimizer's trajectory.
import { KoalaM, KoalaV, shardLayers, shardRange, type FloatArray, type KoalaMOptions, type KoalaStateDict, type KoalaVOptions, type UpdateInfo } from '../../lib';
import { errorCode, rng } from '../helpers';

// A layer over two chunks of the native plan, small ones, a one-element one; the last layer's
// gradient is always zero (skipped), the third's on every third step.
const SIZES = [16500, 5, 1, 300, 17, 4];
const TOTAL = SIZES.reduce((a, b) => a + b);
const ALWAYS_SKIPPED = SIZES.length - 1;
const SOMETIMES_SKIPPED = 2;
const STEPS = 100;

type Optimizer = KoalaM | KoalaV;
type Kind = 'koala-m' | 'koala-m lazy' | 'koala-v';

type Options = KoalaMOptions & KoalaVOptions;

function make(kind: Kind, layers: { param: FloatArray; grad: FloatArray }[], options: Options): Optimizer {
  const common = { ...options, weightDecay: 1e-3, threads: 2 };
  return kind === 'koala-v' ? new KoalaV(layers, common) : new KoalaM(layers, { ...common, lazyPredict: kind === 'koala-m lazy' });
}

/** Whole layers over one flat Float64Array (so that ranks' slices are views of the same memory). */
function model(init: (i: number) => number): { flat: Float64Array; layers: Float64Array[] } {
  const flat = new Float64Array(TOTAL).map((_, i) => init(i));
  let at = 0;
  return { flat, layers: SIZES.map((n) => flat.subarray(at, (at += n))) };
}

const TARGET = new Float64Array(TOTAL).map((_, i) => Math.sin(i));
const NOISE = (() => {
  const r = rng(1000);
  return new Float64Array(4099).map(() => 0.05 * (r() - 0.5));
})();

/** The gradient of 0.5 c |x - t|^2 plus noise of step k, and a loss and lossSq that follow the parameters. */
function gradients(step: number, params: Float64Array, grads: Float64Array): [number, number] {
  let sq = 0;
  for (let i = 0; i < params.length; i++) {
    const d = params[i] - TARGET[i];
    grads[i] = 0.2 * d + NOISE[(i + 7919 * step) % NOISE.length];
    sq += d * d;
  }
  let at = 0;
  SIZES.forEach((n, l) => {
    if (l === ALWAYS_SKIPPED || (l === SOMETIMES_SKIPPED && step % 3 === 0)) grads.fill(0, at, at + n);
    at += n;
  });
  const loss = 0.1 * (sq / params.length) + 0.05;
  return [loss, loss * loss * 1.3];
}

/** Sums every rank's buffer into each one, rank by rank: an all-reduce in one thread. */
function allReduce(buffers: Float64Array[]): void {
  const total = new Float64Array(buffers[0].length);
  for (const b of buffers) for (let i = 0; i < b.length; i++) total[i] += b[i];
  for (const b of buffers) b.set(total);
}

/** Random cut points: ranks - 1 of them, each in a random layer at a random point (its ends included), sorted (a rank may get nothing). */
function randomRanges(ranks: number, seed: number): [number, number][] {
  const r = rng(seed);
  const starts = SIZES.map((_, l) => SIZES.slice(0, l).reduce((a, b) => a + b, 0));
  const cuts = Array.from({ length: ranks - 1 }, () => {
    const l = Math.floor(r() * SIZES.length);
    return starts[l] + Math.floor(r() * (SIZES[l] + 1));
  }).sort((a, b) => a - b);
  const bounds = [0, ...cuts, TOTAL];
  return bounds.slice(0, -1).map((b, k) => [b, bounds[k + 1]]);
}

interface Ranks {
  opts: Optimizer[];
  params: Float64Array;
  grads: Float64Array;
}

function makeRanks(kind: Kind, backend: 'native' | 'js', ranges: [number, number][], init: (i: number) => number, options: Options = {}): Ranks {
  const p = model(init);
  const g = model(() => 0);
  const whole = p.layers.map((param, l) => ({ param, grad: g.layers[l] }));
  const opts = ranges.map(([b, e]) => {
    const { layers, shard } = shardLayers(whole, b, e);
    return make(kind, layers as { param: FloatArray; grad: FloatArray }[], { ...options, backend, shard });
  });
  return { opts, params: p.flat, grads: g.flat };
}

/** One sharded step: predict halves, gradients on the whole (shared) parameters, update halves. */
function shardedStep(ranks: Ranks, step: number, lr: number): UpdateInfo[] {
  for (const o of ranks.opts) o.lr = lr;
  allReduce(ranks.opts.map((o) => o.predictPartial() as Float64Array));
  ranks.opts.forEach((o) => o.finishPredict());
  const [loss, lossSq] = gradients(step, ranks.params, ranks.grads);
  allReduce(ranks.opts.map((o) => o.updatePartial() as Float64Array));
  return ranks.opts.map((o) => o.finishUpdate(loss, lossSq));
}

/** The filter's scalars: P00, P01, P11, qX, R (KOALA-M) or sigma, R (KOALA-V). */
function filterOf(o: Optimizer): number[] {
  if (o instanceof KoalaV) return [o.state.sigma, o.state.R];
  const { P, qX, R } = o.state;
  return [P[0][0], P[0][1], P[1][1], qX, R];
}

// Globals are slow to reach inside jest's vm context (test/helpers.ts): hold Math.abs locally.
const abs = Math.abs;

/** Largest |a_i - b_i| / max_i |b_i|. */
function relMaxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    const d = abs(a[i] - b[i]);
    const m = abs(b[i]);
    if (d > diff) diff = d;
    if (m > scale) scale = m;
  }
  return scale === 0 ? diff : diff / scale;
}

const init = (i: number): number => Math.cos(0.7 * i) * 0.5;

interface Comparison {
  /** Largest relative difference of the parameters and the filter scalars, over every step and rank. */
  worst: number;
  /** The single optimizer's parameters at the end. */
  final: Float64Array;
}

/**
 * `n` ranks with random cut points against the single optimizer, both with `options`, over `steps`
 * steps: every rank's outcome checked against the single one's at each step.
 */
function compareSharded(kind: Kind, backend: 'native' | 'js', n: number, steps: number, options: Options = {}): Comparison {
  const single = model(init);
  const singleGrads = model(() => 0);
  const ref = make(kind, single.layers.map((param, l) => ({ param, grad: singleGrads.layers[l] })), { ...options, backend });
  const ranges = randomRanges(n, 17 * n + kind.length);
  const ranks = makeRanks(kind, backend, ranges, init, options);
  const lrs = rng(99);
  let worst = 0;
  let skipped = 0;
  for (let step = 0; step < steps; step++) {
    const lr = 0.2 + lrs();
    ref.lr = lr;
    ref.predict();
    const [loss, lossSq] = gradients(step, single.flat, singleGrads.flat);
    const want = ref.update(loss, lossSq);
    const got = shardedStep(ranks, step, lr);
    for (const info of got) {
      expect(info.applied).toBe(true);
      expect(info.skippedLayers).toEqual(want.skippedLayers);
      expect(Math.abs(info.maxGain - want.maxGain)).toBeLessThanOrEqual(1e-12 * want.maxGain);
    }
    skipped += want.skippedLayers.length;
    worst = Math.max(worst, relMaxDiff(ranks.params, single.flat));
    for (const o of ranks.opts) worst = Math.max(worst, relMaxDiff(filterOf(o), filterOf(ref)));
  }
  expect(skipped).toBeGreaterThan(steps); // the always-skipped layer and the sometimes-skipped one
  expect(ranks.opts.every((o) => o.step === steps)).toBe(true);
  // The state is sharded: each rank's per-layer state adds up to the single optimizer's.
  if (ref instanceof KoalaM) {
    const whole = ref.velocities();
    const pieces = whole.map((v) => new Float64Array(v.length));
    ranks.opts.forEach((o) => {
      const { offsets } = o.shard!;
      (o as KoalaM).velocities().forEach((v, l) => pieces[l].set(v, offsets[l]));
    });
    pieces.forEach((p, l) => expect(relMaxDiff(p, whole[l])).toBeLessThanOrEqual(1e-12));
  }
  return { worst, final: single.flat };
}

const VARIANT_STEPS = 50;
/** The paper's variants (Note [paper variants], native/include/koala/filter.h) through the sharded path. */
const VARIANTS: [string, Kind, Options][] = [
  ['KOALA-M, target absolute', 'koala-m', { target: 'absolute' }],
  ['KOALA-M, stateNoise paper', 'koala-m', { stateNoise: 'paper' }],
  ['KOALA-M lazy, target absolute and stateNoise paper', 'koala-m lazy', { target: 'absolute', stateNoise: 'paper' }],
  ['KOALA-V, direction regularized', 'koala-v', { direction: 'regularized' }],
  ['KOALA-V, target absolute and direction regularized', 'koala-v', { target: 'absolute', direction: 'regularized' }],
];

describe.each(['native', 'js'] as const)('%s backend', (backend) => {
  test.each(VARIANTS)('%s: 3 shards reproduce the single optimizer within 1e-12 over 50 steps', (_, kind, options) => {
    const { worst, final } = compareSharded(kind, backend, 3, VARIANT_STEPS, options);
    expect(worst).toBeLessThanOrEqual(1e-12);
    if (process.env.KOALA_SHARDED_REPORT) process.stdout.write(`${backend} ${kind} ${JSON.stringify(options)}: largest relative difference ${worst}\n`);
    // The variant changes the trajectory (so the match above is the variant's, not the default's).
    const official = compareSharded(kind, backend, 3, VARIANT_STEPS);
    expect(relMaxDiff(final, official.final)).toBeGreaterThan(1e-6);
  });

  describe.each(['koala-m', 'koala-m lazy', 'koala-v'] as const)('%s', (kind) => {
    test.each([2, 3, 4])('%i shards with random cut points reproduce the single optimizer within 1e-12 over 100 steps', (n) => {
      const { worst } = compareSharded(kind, backend, n, STEPS);
      expect(worst).toBeLessThanOrEqual(1e-12);
      if (process.env.KOALA_SHARDED_REPORT) process.stdout.write(`${backend} ${kind} N=${n}: largest relative difference ${worst}\n`);
    });

    test('a NaN on one rank refuses the step on every rank, and nothing changes', () => {
      const ranks = makeRanks(kind, backend, [[0, 7000], [7000, 16503], [16503, TOTAL]], init);
      for (let step = 0; step < 3; step++) shardedStep(ranks, step, 0.5);
      for (const [where, reason] of [['grad', 'non-finite-gradient'], ['param', 'non-finite-parameter']] as const) {
        const before = ranks.opts.map((o) => o.stateDict());
        allReduce(ranks.opts.map((o) => o.predictPartial() as Float64Array));
        ranks.opts.forEach((o) => o.finishPredict());
        const [loss, lossSq] = gradients(7, ranks.params, ranks.grads);
        const saved = ranks.params.slice();
        const poisoned = 16503 + 150; // inside rank 2's slice of layer 3
        (where === 'grad' ? ranks.grads : ranks.params)[poisoned] = NaN;
        allReduce(ranks.opts.map((o) => o.updatePartial() as Float64Array));
        const infos = ranks.opts.map((o) => o.finishUpdate(loss, lossSq));
        for (const info of infos) expect([info.applied, info.reason]).toEqual([false, reason]);
        if (where === 'param') ranks.params[poisoned] = saved[poisoned];
        expect(Array.from(ranks.params)).toEqual(Array.from(saved));
        ranks.opts.forEach((o, k) => {
          const after = o.stateDict();
          expect(after.step).toBe(before[k].step);
          expect(after.phase).toBe('predicted');
        });
        ranks.grads[poisoned] = 0;
        // The phase rule holds for the split calls: the refused step is retried from updatePartial().
        allReduce(ranks.opts.map((o) => o.updatePartial() as Float64Array));
        expect(ranks.opts.map((o) => o.finishUpdate(loss, lossSq).applied)).toEqual(ranks.opts.map(() => true));
        expect(ranks.opts.map((o) => o.phase)).toEqual(ranks.opts.map(() => 'updated'));
        // The step goes on: every rank applies the next one alike.
        const again = shardedStep(ranks, 8, 0.5);
        expect(again.every((i) => i.applied)).toBe(true);
      }
    });

    test('each rank saves and loads its own slice of the state', () => {
      const ranges = randomRanges(3, 5);
      const a = makeRanks(kind, backend, ranges, init);
      for (let step = 0; step < 20; step++) shardedStep(a, step, 0.7);
      const saved: KoalaStateDict[] = a.opts.map((o) => structuredClone(o.stateDict()));
      saved.forEach((sd, k) => {
        expect(sd.shard).toEqual(a.opts[k].shard);
        expect(sd.layers.map((l) => l.length)).toEqual(a.opts[k].shard!.offsets.map((_, l) => {
          const [b, e] = ranges[k];
          const start = SIZES.slice(0, l).reduce((x, y) => x + y, 0);
          return Math.max(0, Math.min(e, start + SIZES[l]) - Math.max(b, start));
        }));
      });
      const b = makeRanks(kind, backend, ranges, (i) => a.params[i]);
      b.opts.forEach((o, k) => o.loadStateDict(saved[k]));
      for (let step = 20; step < 30; step++) {
        shardedStep(a, step, 0.7);
        shardedStep(b, step, 0.7);
      }
      expect(Array.from(b.params)).toEqual(Array.from(a.params));
      b.opts.forEach((o, k) => expect(filterOf(o)).toEqual(filterOf(a.opts[k])));
      // Another rank's slice, or an unsharded state, does not load.
      expect(errorCode(() => b.opts[0].loadStateDict(saved[1]))).toBe('ERR_KOALA_INVALID_STATE');
    });
  });

  test.each(['koala-m', 'koala-m lazy', 'koala-v'] as const)('%s: the split calls on an unsharded optimizer are predict() and update(), bitwise', (kind) => {
    const runs = [0, 1].map(() => {
      const p = model(init);
      const g = model(() => 0);
      return { p, g, opt: make(kind, p.layers.map((param, l) => ({ param, grad: g.layers[l] })), { backend }) };
    });
    for (let step = 0; step < 10; step++) {
      const [whole, split] = runs;
      const moved = whole.opt.predict();
      split.opt.predictPartial(); // one rank: its partial sum is the reduced one
      expect(split.opt.finishPredict()).toBe(moved); // whether the parameters moved, as predict() says
      expect(moved).toBe(kind === 'koala-m' || (kind === 'koala-m lazy' && step === 0));
      const [loss, lossSq] = gradients(step, whole.p.flat, whole.g.flat);
      gradients(step, split.p.flat, split.g.flat);
      expect(whole.opt.update(loss, lossSq).applied).toBe(true);
      split.opt.updatePartial();
      expect(split.opt.finishUpdate(loss, lossSq).applied).toBe(true);
      expect(Buffer.from(split.p.flat.buffer).equals(Buffer.from(whole.p.flat.buffer))).toBe(true);
      expect(filterOf(split.opt)).toEqual(filterOf(whole.opt));
    }
  });

  test('a state loads only into an optimizer with the same slices, through JSON too (lib/state.ts)', () => {
    const p = model(init);
    const g = model(() => 0);
    const whole = p.layers.map((param, l) => ({ param, grad: g.layers[l] }));
    const all = shardLayers(whole, 0, TOTAL); // one rank holding everything: the unsharded layer lengths
    const rank = new KoalaM(all.layers, { backend, shard: all.shard });
    const plain = new KoalaM(whole, { backend });
    const sharded = JSON.parse(JSON.stringify(rank.stateDict())) as KoalaStateDict;
    const unsharded = JSON.parse(JSON.stringify(plain.stateDict())) as KoalaStateDict;
    expect(sharded.shard).toEqual(all.shard);
    expect(unsharded.shard).toBeNull();
    rank.loadStateDict(sharded);
    plain.loadStateDict(unsharded);
    expect(errorCode(() => plain.loadStateDict(sharded))).toBe('ERR_KOALA_INVALID_STATE');
    expect(errorCode(() => rank.loadStateDict(unsharded))).toBe('ERR_KOALA_INVALID_STATE');
    const moved = { layerLengths: all.shard.layerLengths, offsets: all.shard.offsets.map((o, l) => (l === 1 ? o + 1 : o)) };
    expect(errorCode(() => rank.loadStateDict({ ...sharded, shard: moved }))).toBe('ERR_KOALA_INVALID_STATE');
    expect(errorCode(() => rank.loadStateDict({ ...sharded, shard: { layerLengths: all.shard.layerLengths } as never }))).toBe('ERR_KOALA_INVALID_STATE');
    const { shard: _none, ...older } = unsharded; // a state saved before sharding has no shard field
    plain.loadStateDict(older);
  });

  test('the sharded calls: empty slices accepted, order enforced, predict()/update() refused', () => {
    const p = model(init);
    const g = model(() => 0);
    const whole = p.layers.map((param, l) => ({ param, grad: g.layers[l] }));
    const { layers, shard } = shardLayers(whole, 10, 20); // a slice of layer 0 only
    expect(shard.offsets).toEqual([10, 0, 0, 0, 0, 0]);
    expect(layers.map((l) => l.param.length)).toEqual([10, 0, 0, 0, 0, 0]);
    const opt = new KoalaM(layers, { backend, shard });
    expect(errorCode(() => new KoalaM(layers, { backend }))).toBe('ERR_KOALA_INVALID_LAYERS'); // unsharded: no empty layers
    expect(errorCode(() => new KoalaM(layers, { backend, shard: { ...shard, offsets: [19995, 0, 0, 0, 0, 0] } }))).toBe('ERR_KOALA_INVALID_OPTION');
    expect(errorCode(() => new KoalaM(layers, { backend, shard: { layerLengths: [1], offsets: [0] } }))).toBe('ERR_KOALA_INVALID_OPTION');
    expect(errorCode(() => opt.predict())).toBe('ERR_KOALA_SHARDED');
    expect(errorCode(() => opt.update(1))).toBe('ERR_KOALA_SHARDED');
    expect(errorCode(() => opt.finishPredict())).toBe('ERR_KOALA_SHARDED');
    expect(errorCode(() => opt.updatePartial())).toBe('ERR_KOALA_PREDICT_REQUIRED');
    const sums = opt.predictPartial() as Float64Array;
    expect(errorCode(() => opt.predictPartial())).toBe('ERR_KOALA_SHARDED');
    expect(errorCode(() => opt.stateDict())).toBe('ERR_KOALA_SHARDED');
    sums[0] = -1;
    expect(errorCode(() => opt.finishPredict())).toBe('ERR_KOALA_INVALID_ARGUMENT');
    sums[0] = 0;
    opt.finishPredict();
    const us = opt.updatePartial() as Float64Array;
    expect(us.length).toBe(3 * SIZES.length);
    expect(us.slice(3).every((v) => v === 0)).toBe(true); // the empty slices sum to 0
    expect(errorCode(() => opt.finishUpdate(-1, -1))).toBe('ERR_KOALA_INVALID_LOSS');
    expect(opt.finishUpdate(1, 1).applied).toBe(true);
    expect(shardRange(10, 2, 3)).toEqual([6, 10]);
  });
});
