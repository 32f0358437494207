// State as plain data, resuming bitwise, and working in place on memory the caller owns.
import { KoalaM, KoalaPP, KoalaV, type FloatArray } from '../../lib';
import { bitwiseEqual, makeArray, rng, snapshot } from '../helpers';

type Opt = KoalaM | KoalaV | KoalaPP;
const BACKENDS = ['native', 'js'] as const;

function drive(opts: Opt[], grads: FloatArray[][], steps: number, seed: number, frozen: number[] = []) {
  const r = rng(seed);
  for (let k = 0; k < steps; k++) {
    const lr = 0.2 + r();
    const loss = 0.1 + r();
    const lossSq = loss * loss * (1 + r());
    const g = grads[0].map((a, l) => Float64Array.from(a, () => (frozen.includes(l) ? 0 : r() - 0.5)));
    opts.forEach((opt, j) => {
      opt.lr = lr;
      opt.predict();
      g.forEach((src, l) => grads[j][l].set(src));
      expect(opt.update(loss, lossSq).applied).toBe(true);
    });
  }
}

describe.each(BACKENDS)('%s backend', (backend) => {
  describe.each(['m', 'v', 'pp'] as const)('KOALA-%s', (variant) => {
    describe.each(['float32', 'float64'] as const)('%s', (dtype) => {
      const Ctor = dtype === 'float32' ? Float32Array : Float64Array;
      const sizes = [40, 7, 1, 300];
      const create = (params: FloatArray[], grads: FloatArray[], extra: object = {}) => {
        const layers = params.map((param, i) => ({ param, grad: grads[i] }));
        const opts = { backend, weightDecay: 1e-3, ...extra };
        return variant === 'm' ? new KoalaM(layers, opts) : variant === 'v' ? new KoalaV(layers, opts) : new KoalaPP(layers, opts);
      };

      test('stateDict() survives structuredClone, and loading it resumes on a bitwise-identical trajectory', () => {
        const r = rng(7);
        const pa = sizes.map((n) => makeArray(dtype, n, () => r() - 0.5));
        const ga = sizes.map((n) => new Ctor(n));
        const a = create(pa, ga);
        // Layer 2 gets no gradient before the save: KOALA++ must carry that it was never updated.
        drive([a], [ga], 10, 1, [2]);
        a.predict(); // save mid-step, between predict() and update()
        const sd = structuredClone(a.stateDict());
        expect(sd).toMatchObject({ format: 'koala-optim', version: 1, optimizer: `koala-${variant}`, dtype, step: 10, phase: 'predicted' });
        expect(JSON.parse(JSON.stringify({ ...sd, velocities: [], averages: [] })).filter).toEqual(sd.filter); // plain numbers

        const pb = pa.map((p) => p.slice());
        const gb = sizes.map((n) => new Ctor(n));
        const b = create(pb, gb, { lr: 0.123 });
        b.loadStateDict(sd);
        expect(b.lr).toBe(a.lr);
        expect(b.state).toEqual(a.state);
        const r2 = rng(99);
        const g = sizes.map((n) => Float64Array.from({ length: n }, () => r2() - 0.5));
        for (const [opt, grads] of [[a, ga], [b, gb]] as const) {
          g.forEach((src, l) => grads[l].set(src));
          opt.update(0.3, 0.2);
        }
        drive([a, b], [ga, gb], 20, 2);
        expect(bitwiseEqual(pb, pa)).toBe(true);
        expect(b.stateDict().filter).toEqual(a.stateDict().filter);
        if (a instanceof KoalaM && b instanceof KoalaM) {
          expect(bitwiseEqual(b.velocities(), a.velocities())).toBe(true);
          expect(bitwiseEqual(b.paramAverages(), a.paramAverages())).toBe(true);
        }
        if (a instanceof KoalaPP && b instanceof KoalaPP) {
          expect(sd.plusPlus!.updated).toEqual([true, true, false, true]);
          expect(sd.plusPlus!.S[2]).toBe(0);
          expect(bitwiseEqual(b.products(), a.products())).toBe(true);
          expect(bitwiseEqual(b.directions(), a.directions())).toBe(true);
          expect(b.stateDict().plusPlus).toEqual(a.stateDict().plusPlus);
          expect(b.state.S.every((v) => v !== null)).toBe(true);
        }
        a.dispose();
        b.dispose();
      });

      test('stateDict() and the per-layer getters return copies', () => {
        const params = sizes.map((n) => new Ctor(n).fill(0.25));
        const grads = sizes.map((n) => new Ctor(n).fill(0.5));
        const opt = create(params, grads);
        drive([opt], [grads], 2, 3);
        const sd = opt.stateDict();
        sd.filter[0] = 123;
        sd.velocities.forEach((v) => v.fill(9));
        expect(opt.stateDict().filter[0]).not.toBe(123);
        if (opt instanceof KoalaM) {
          const v = opt.velocities();
          expect(v.map((a) => a.length)).toEqual(sizes);
          expect(v.every((a) => a instanceof Ctor)).toBe(true);
          v[0].fill(7);
          expect(opt.velocities()[0][0]).not.toBe(7);
          expect(opt.paramAverages()[0][0]).not.toBe(0);
        }
        if (opt instanceof KoalaPP) {
          sd.plusPlus!.products.forEach((v) => v.fill(9));
          sd.plusPlus!.S[0] = 123;
          expect(opt.products()[0][0]).not.toBe(9);
          expect(opt.state.S[0]).not.toBe(123);
          const v = opt.directions();
          expect(v.map((a) => a.length)).toEqual(sizes);
          expect(v.every((a) => a instanceof Ctor)).toBe(true);
          v[0].fill(7);
          expect(opt.directions()[0][0]).not.toBe(7);
        }
      });

      test('lr = 0 between steps: update() leaves the predicted parameters as they are', () => {
        const params = sizes.map((n) => new Ctor(n).fill(0.25));
        const grads = sizes.map((n) => new Ctor(n).fill(0.5));
        const opt = create(params, grads);
        drive([opt], [grads], 3, 4);
        opt.lr = 0;
        opt.predict();
        const predicted = snapshot(params);
        expect(opt.update(0.5, 0.3).applied).toBe(true);
        expect(bitwiseEqual(params, predicted)).toBe(true);
      });
    });
  });

  describe('memory the caller owns, used in place', () => {
    // The same model over standalone arrays and over each kind of shared memory: the results
    // must be bitwise equal, and the writes must land in the caller's memory.
    const sizes = [33, 8, 5];
    const total = sizes.reduce((a, b) => a + b, 0);
    const reference = () => {
      const params = sizes.map((n, l) => Float32Array.from({ length: n }, (_, i) => Math.sin(l + i)));
      const grads = sizes.map((n) => new Float32Array(n));
      return { params, grads };
    };
    const views = (mem: Float32Array) => {
      let at = 0;
      const params = sizes.map((n) => mem.subarray(at, (at += n)));
      const grads = sizes.map((n) => mem.subarray(at, (at += n)));
      params.forEach((p, l) => p.forEach((_, i) => (p[i] = Math.sin(l + i))));
      return { params, grads };
    };
    const memories: [string, () => Float32Array][] = [
      ['subarray views into one Float32Array', () => new Float32Array(2 * total)],
      ['a Node Buffer from the shared pool', () => {
        const buf = Buffer.allocUnsafe(8 * total); // small: carved from Buffer's pool, byteOffset > 0 as a rule
        return new Float32Array(buf.buffer, buf.byteOffset, 2 * total);
      }],
      ['a SharedArrayBuffer', () => new Float32Array(new SharedArrayBuffer(8 * total))],
      ['views at an odd element offset', () => new Float32Array(2 * total + 3).subarray(3)],
    ];
    test.each(memories)('%s', (_name, alloc) => {
      const mem = alloc();
      const shared = views(mem);
      const plain = reference();
      const opts = [shared, plain].map(({ params, grads }) => new KoalaM(params.map((param, i) => ({ param, grad: grads[i] })), { backend }));
      drive(opts, [shared.grads, plain.grads], 5, 5);
      expect(bitwiseEqual(shared.params, plain.params)).toBe(true);
      expect(Array.from(mem.subarray(0, sizes[0]))).toEqual(Array.from(plain.params[0]));
      expect(plain.params[0][0]).not.toBe(Math.fround(Math.sin(0)));
    });
  });
});
