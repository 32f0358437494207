// The native backend against the js reference (the readable spec) over a table of random layer
// lists, and the native backend on 1 thread against 2 threads (bitwise).
import { KoalaM, KoalaPP, KoalaV, type FloatArray, type UpdateInfo } from '../../lib';
import { bitwiseEqual, makeArray, relNorm, rng } from '../helpers';

const CHUNK = 16384; // native/core/plan.h kChunkElems: a layer longer than this spans chunks
const MIN_FOR_TWO_THREADS = 2 * 65536; // native/cpu/optimizer.cpp kMinElemsPerThread, per thread

interface Case {
  name: string;
  sizes: number[];
  weightDecay: number;
}

const rand = rng(12345);
const tiny = Array.from({ length: 1100 }, () => 1 + Math.floor(rand() * 12));
const CASES: Case[] = [
  { name: 'layers longer than a chunk', sizes: [3 * CHUNK + 7, 5, CHUNK, CHUNK + 1, 70001, 1], weightDecay: 5e-4 },
  { name: 'over 1,000 tiny layers and a large one', sizes: [...tiny.slice(0, 600), MIN_FOR_TWO_THREADS, ...tiny.slice(600)], weightDecay: 0 },
];
const ZERO_GRAD_LAYER = 1; // its gradient stays 0: skipped by |g| < eps at every step
const STEPS = 200;

type Opt = KoalaM | KoalaV | KoalaPP;

describe.each(['koala-m', 'koala-v', 'koala-pp'] as const)('%s', (variant) => {
  describe.each(['float64', 'float32'] as const)('%s', (dtype) => {
    test.each(CASES)('native (1 and 2 threads) vs js: $name', ({ sizes, weightDecay }) => {
      const Ctor = dtype === 'float32' ? Float32Array : Float64Array;
      const r = rng(sizes.length * 7919 + (dtype === 'float32' ? 1 : 2) + ({ 'koala-m': 10, 'koala-v': 20, 'koala-pp': 30 }[variant]));
      const initial = sizes.map((n) => makeArray(dtype, n, () => r() - 0.5));
      const make = (backend: 'native' | 'js', threads: number) => {
        const params = initial.map((p) => p.slice());
        const grads = sizes.map((n) => new Ctor(n));
        const layers = params.map((param, i) => ({ param, grad: grads[i] }));
        const opts = { backend, threads, weightDecay };
        const opt: Opt = variant === 'koala-m' ? new KoalaM(layers, opts) : variant === 'koala-v' ? new KoalaV(layers, opts) : new KoalaPP(layers, opts);
        return { params, grads, opt };
      };
      const runs = [make('native', 1), make('native', 2), make('js', 1)];
      expect(runs.map((x) => x.opt.threads)).toEqual([1, 2, 1]);
      expect(runs.map((x) => x.opt.backend)).toEqual(['native', 'native', 'js']);

      // This step's gradients, one view per layer into one buffer.
      const flat = new Float64Array(sizes.reduce((a, b) => a + b, 0));
      let at = 0;
      const grads = sizes.map((n) => flat.subarray(at, (at += n)));
      const tol = dtype === 'float64' ? 1e-12 : 1e-5;
      const states = (o: Opt): FloatArray[] =>
        o instanceof KoalaM ? [...o.velocities(), ...o.paramAverages()] : o instanceof KoalaPP ? [...o.products(), ...o.directions()] : [];
      for (let step = 0; step < STEPS; step++) {
        const lr = 0.05 + 0.95 * r();
        const loss = (step % 25 === 24 ? -1 : 1) * (0.05 + 3 * r()); // a negative loss now and then
        const lossSq = loss * loss * (1 + r());
        for (let i = 0; i < flat.length; i++) flat[i] = r() - 0.5;
        grads[ZERO_GRAD_LAYER].fill(0);
        const infos: UpdateInfo[] = runs.map(({ opt, grads: g }) => {
          opt.lr = lr;
          opt.predict();
          grads.forEach((src, l) => g[l].set(src));
          return opt.update(loss, lossSq);
        });
        for (const info of infos) {
          expect(info.applied).toBe(true);
          expect(info.skippedLayers).toEqual([ZERO_GRAD_LAYER]);
        }
        expect(infos[1]).toEqual(infos[0]);
        if (step % 40 === 39 || step === STEPS - 1) {
          const [one, two, js] = runs;
          expect(bitwiseEqual(two.params, one.params)).toBe(true);
          expect(bitwiseEqual(states(two.opt), states(one.opt))).toBe(true);
          expect(two.opt.stateDict().filter).toEqual(one.opt.stateDict().filter);
          expect(relNorm(one.params, js.params)).toBeLessThanOrEqual(tol);
          if (variant !== 'koala-v') expect(relNorm(states(one.opt), states(js.opt))).toBeLessThanOrEqual(tol);
          if (variant === 'koala-pp') {
            expect(two.opt.stateDict().plusPlus).toEqual(one.opt.stateDict().plusPlus);
            const [s1, sj] = [(one.opt as KoalaPP).state.S, (js.opt as KoalaPP).state.S];
            s1.forEach((v, l) => expect(Math.abs(v! - sj[l]!)).toBeLessThanOrEqual(tol * Math.abs(sj[l]!)));
          }
          const [f1, fj] = [one.opt.stateDict().filter, js.opt.stateDict().filter];
          f1.forEach((v, i) => expect(Math.abs(v - fj[i])).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(fj[i]))));
          expect(Math.abs(infos[0].maxGain - infos[2].maxGain)).toBeLessThanOrEqual(tol * Math.abs(infos[2].maxGain));
        }
      }
      // The untouched layer is exactly as it started.
      for (const { params } of runs) expect(bitwiseEqual([params[ZERO_GRAD_LAYER]], [initial[ZERO_GRAD_LAYER]])).toBe(true);
      runs.forEach(({ opt }) => opt.dispose());
    });
  });
});
