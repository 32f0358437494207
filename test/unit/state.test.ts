// State as plain data, resuming bitwise, and working in place on memory the caller owns.
import { KoalaM, KoalaPP, KoalaV, type FloatArray, type KoalaStateDict } from '../../lib';
import { STATE_ABS_TOL, STATE_REL_TOL } from '../../lib/state';
import { bitwiseEqual, errorCode, makeArray, rng, snapshot } from '../helpers';

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

describe.each(BACKENDS)('%s backend: loadStateDict is a transaction', (backend) => {
  const sizes = [40, 7, 300];
  type Run = { params: FloatArray[]; grads: FloatArray[]; opt: Opt };
  const make = (variant: 'm' | 'v' | 'pp', dtype: 'float32' | 'float64', extra: object = {}): Run => {
    const r = rng(3);
    const params = sizes.map((n) => makeArray(dtype, n, () => r() - 0.5));
    const grads = sizes.map((n) => makeArray(dtype, n, () => 0));
    const layers = params.map((param, i) => ({ param, grad: grads[i] }));
    const opts = { backend, weightDecay: 1e-3, ...extra };
    const opt = variant === 'm' ? new KoalaM(layers, opts) : variant === 'v' ? new KoalaV(layers, opts) : new KoalaPP(layers, opts);
    return { params, grads, opt };
  };
  const same = (a: Run, sd: KoalaStateDict, params: FloatArray[]) => {
    const now = a.opt.stateDict();
    const { velocities, averages, ...rest } = now;
    const { velocities: v0, averages: a0, ...rest0 } = sd;
    expect(rest).toStrictEqual(rest0);
    expect(bitwiseEqual(velocities, v0)).toBe(true);
    expect(bitwiseEqual(averages, a0)).toBe(true);
    expect(bitwiseEqual(a.params, params)).toBe(true);
  };

  describe.each(['m', 'v', 'pp'] as const)('KOALA-%s', (variant) => {
    test.each(['float32', 'float64'] as const)('%s: a state dict through JSON resumes bitwise, parameters saved beside it', (dtype) => {
      for (const lazyPredict of variant === 'm' ? [false, true] : [false]) {
        const a = make(variant, dtype, variant === 'm' ? { lazyPredict } : {});
        drive([a.opt], [a.grads], 7, 1);
        const text = JSON.stringify({ params: a.params.map((p) => Array.from(p)), state: a.opt.stateDict() });
        const saved = JSON.parse(text) as { params: number[][]; state: KoalaStateDict };
        const b = make(variant, dtype, variant === 'm' ? { lazyPredict } : {});
        saved.params.forEach((p, l) => b.params[l].set(p));
        b.opt.loadStateDict(saved.state);
        same(b, a.opt.stateDict(), a.params);
        drive([a.opt, b.opt], [a.grads, b.grads], 9, 2);
        expect(bitwiseEqual(b.params, a.params)).toBe(true);
        same(b, a.opt.stateDict(), a.params);
        // Plain number arrays load as well as the index-keyed objects JSON makes of typed arrays.
        const plain = { ...a.opt.stateDict() } as unknown as Record<string, unknown>;
        for (const key of ['velocities', 'averages']) plain[key] = (plain[key] as FloatArray[]).map((x) => Array.from(x));
        const pp = plain.plusPlus as KoalaStateDict['plusPlus'];
        if (pp) plain.plusPlus = { ...pp, products: pp.products.map((x) => Array.from(x)), directions: pp.directions.map((x) => Array.from(x)) };
        b.opt.loadStateDict(plain as unknown as KoalaStateDict);
        same(b, a.opt.stateDict(), a.params);
      }
    });

    test('every field is read once: getters, proxies and own iterators cannot slip values in after the checks', () => {
      const a = make(variant, 'float64');
      drive([a.opt], [a.grads], 4, 3);
      const good = a.opt.stateDict();
      const reads = new Map<string, number>();
      const count = <T extends object>(o: T, path: string): T =>
        new Proxy(o, {
          get(target, key, receiver) {
            if (typeof key === 'string') reads.set(`${path}.${key}`, (reads.get(`${path}.${key}`) ?? 0) + 1);
            return Reflect.get(target, key, receiver);
          },
        });
      // filter: an own iterator yielding NaN (what spreading it would read), and indices read through a Proxy.
      const filter = [...good.filter];
      Object.defineProperty(filter, Symbol.iterator, { value: function* () { yield* filter.map(() => NaN); } });
      // a per-layer array whose element is good on the first read and too short on the next
      const layerArrays = (arrays: FloatArray[]) => {
        const out = [...arrays];
        if (out.length > 0) {
          let n = 0;
          Object.defineProperty(out, 1, { enumerable: true, get: () => (n++ === 0 ? arrays[1] : new Float64Array(1)) });
        }
        return out;
      };
      const sd = count({ ...good, filter: count(filter, 'filter'), velocities: layerArrays(good.velocities), averages: layerArrays(good.averages) }, 'sd');
      const b = make(variant, 'float64');
      b.opt.loadStateDict(sd);
      for (const [key, n] of reads) expect([key, n]).toEqual([key, 1]);
      expect(reads.get('sd.filter')).toBe(1);
      same(b, good, b.params);
    });

    test.each(['float32', 'float64'] as const)('%s: bad data is refused with ERR_KOALA_INVALID_STATE, nothing written', (dtype) => {
      const a = make(variant, dtype);
      drive([a.opt], [a.grads], 4, 4);
      const good = a.opt.stateDict();
      const other = make(variant, dtype);
      drive([other.opt], [other.grads], 2, 5);
      const donor = other.opt.stateDict(); // a good filter, different from good's
      const f = good.filter;
      const withFilter = (i: number, v: number) => ({ ...good, filter: f.map((x, j) => (j === i ? v : x)) });
      const spoilLayer = (key: 'velocities' | 'averages', v: number, plain = false) => ({
        ...donor,
        [key]: donor[key].map((x, l) => {
          const y = x.slice();
          if (l === 2) y[y.length - 1] = v;
          return plain ? Array.from(y) : y;
        }),
      });
      const cases: [string, unknown][] = [
        ['R < 0', withFilter(5, -0.5)],
        ['R = 0', withFilter(5, 0)],
        ['R NaN', withFilter(5, NaN)],
        ['lr above the bound', { ...good, lr: 1e13 }],
        ['lr Infinity', { ...good, lr: Infinity }],
        ['a filter of strings', { ...good, filter: f.map(String) }],
        ['a filter as a Float64Array', { ...good, filter: Float64Array.from(f) }],
        ['pendingPredict negative', { ...good, phase: 'updated', pendingPredict: -1 }],
        ['pendingPredict in phase predicted', { ...good, phase: 'predicted', pendingPredict: 0.5 }],
        ['layers not an array', { ...good, layers: { length: 3 } }],
        ['a getter that throws', Object.defineProperty({ ...good }, 'lr', { enumerable: true, get: () => { throw new RangeError('boom'); } })],
        ['a Proxy that throws', new Proxy(good, { get: (t, k) => (k === 'filter' ? (() => { throw new Error('boom'); })() : Reflect.get(t, k)) })],
        ['a layer list entry that is not an object', { ...good, layers: [1, 2, 3] }],
        ['variants not an object', { ...good, variants: 'official' }],
        ['variants null', { ...good, variants: null }],
        ['variants as an array', { ...good, variants: [] }],
        ['variants with a key too many', { ...good, variants: { ...good.variants, kappa: 0.9 } }],
        ['variants with a key missing', { ...good, variants: Object.fromEntries(Object.entries(good.variants!).slice(1)) }],
      ];
      if (variant === 'm') {
        cases.push(
          ['P not positive semidefinite', { ...good, filter: [1, 1.01, 1, f[3], 0, f[5]] }],
          ['P with a negative variance', withFilter(2, -0.01 * Math.abs(f[0]) - 1e-9)],
          ['P00 Infinity', withFilter(0, Infinity)],
          ['P00 negative beyond what 0.9 qX covers', withFilter(0, -f[3] - 0.01)],
          ['qX < 0', withFilter(3, -1e-3)],
          ['sigma set in a KOALA-M state', withFilter(4, 0.1)],
          ['NaN in a velocity', spoilLayer('velocities', NaN)],
          ['Inf in an average', spoilLayer('averages', -Infinity)],
          ['NaN in a velocity, plain array', spoilLayer('velocities', NaN, true)],
          ['a string in an average, plain array', { ...spoilLayer('averages', 0, true), averages: donor.averages.map((x) => [...Array.from(x).slice(1), 'x']) }],
          ['a velocity of the wrong length, plain array', { ...donor, velocities: donor.velocities.map((x) => Array.from(x).slice(1)) }],
          ['an average as an Int32Array', { ...donor, averages: donor.averages.map((x) => Int32Array.from(x)) }],
          ['a JSON velocity with a missing index', { ...donor, velocities: donor.velocities.map((x) => { const o = JSON.parse(JSON.stringify(x)); delete o['0']; o.extra = 1; return o; }) }],
          ['pendingPredict Infinity', { ...good, phase: 'updated', pendingPredict: Infinity }],
        );
        if (dtype === 'float32') cases.push(['a plain value beyond float32', spoilLayer('velocities', 1e39, true)]);
      } else {
        cases.push(
          ['sigma < 0', withFilter(4, -0.01)],
          ['P set in a KOALA-V state', withFilter(0, 0.1)],
          ['pendingPredict in a KOALA-V state', { ...good, phase: 'updated', pendingPredict: 0.5 }],
          ['velocities in a KOALA-V state', { ...good, velocities: [new (dtype === 'float32' ? Float32Array : Float64Array)(40)] }],
        );
      }
      const params = a.params.map((p) => p.slice());
      for (const [name, sd] of cases) {
        expect([name, errorCode(() => a.opt.loadStateDict(sd as KoalaStateDict))]).toEqual([name, 'ERR_KOALA_INVALID_STATE']);
        same(a, good, params);
      }
      // The donor itself loads: the cases fail on the spoiled field alone.
      a.opt.loadStateDict(donor);
      same(a, donor, params);
    });

    // Note [state variants]: each variant option, flipped, makes the optimizer of another algorithm.
    const flips: Record<'m' | 'v' | 'pp', [object, object][]> = {
      m: [[{ stateNoise: 'official' }, { stateNoise: 'paper' }], [{ target: 'relative' }, { target: 'absolute' }]],
      v: [[{ direction: 'gradient' }, { direction: 'regularized' }], [{ target: 'relative' }, { target: 'absolute' }]],
      pp: [[{ symmetric: true }, { symmetric: false }]],
    };
    test('a state records its variant and loads only into the same one; one saved without (0.2.0) loads into any', () => {
      const defaults = { m: { target: 'relative', stateNoise: 'official' }, v: { target: 'relative', direction: 'gradient' }, pp: { symmetric: true } }[variant];
      expect(make(variant, 'float64').opt.stateDict().variants).toStrictEqual(defaults);
      for (const [mine, theirs] of flips[variant]) {
        for (const [from, to] of [[mine, theirs], [theirs, mine]]) {
          const a = make(variant, 'float64', from);
          drive([a.opt], [a.grads], 3, 6);
          const sd = a.opt.stateDict();
          expect(sd.variants).toStrictEqual({ ...defaults, ...from });
          const b = make(variant, 'float64', to);
          drive([b.opt], [b.grads], 2, 7);
          const before = b.opt.stateDict();
          const params = b.params.map((p) => p.slice());
          expect(errorCode(() => b.opt.loadStateDict(sd))).toBe('ERR_KOALA_INVALID_STATE');
          expect(() => b.opt.loadStateDict(sd)).toThrow(`it was saved with ${Object.keys(from)[0]} ${JSON.stringify(Object.values(from)[0])}`);
          same(b, before, params);
          const { variants, ...old } = sd; // as 0.2.0 wrote it
          expect(variants).toBeDefined();
          b.opt.loadStateDict(old);
          expect(b.opt.stateDict()).toMatchObject({ ...old, variants: { ...defaults, ...to } });
          // The same variant loads, through JSON too.
          const c = make(variant, 'float64', from);
          c.opt.loadStateDict(JSON.parse(JSON.stringify(sd)) as KoalaStateDict);
          expect(c.opt.stateDict().filter).toEqual(sd.filter);
        }
      }
    });
  });
});

/*
 * Note [state tolerance] (lib/state.ts): every state the filter produces must load. Long random
 * runs over wide option ranges, tiny R and tiny losses (where P loses definiteness by rounding)
 * save their state after every step and load it back into themselves; the worst ratio found is
 * printed, and must stay well inside the tolerance. KOALA_STATE_RUNS=400 runs more (120 by default).
 */
test.each(BACKENDS)('%s backend: every state the filter produces loads (the PSD tolerance)', (backend) => {
  const r = rng(2024);
  const lu = (lo: number, hi: number) => Math.exp(Math.log(lo) + r() * (Math.log(hi) - Math.log(lo)));
  let worstP = 0;
  let worstSigma = 0;
  let states = 0;
  const runs = Number(process.env.KOALA_STATE_RUNS ?? 120);
  for (let run = 0; run < runs; run++) {
    const dtype = r() < 0.5 ? 'float32' : 'float64';
    const sizes = Array.from({ length: 1 + Math.floor(r() * 3) }, () => 1 + Math.floor(r() * 50));
    const params = sizes.map((n) => makeArray(dtype, n, () => r() - 0.5));
    const grads = sizes.map((n) => makeArray(dtype, n, () => 0));
    const layers = params.map((param, i) => ({ param, grad: grads[i] }));
    const momentum = r() < 0.6;
    const [sx, sp] = [lu(1e-6, 1e3), lu(1e-6, 1e3)];
    const common = { backend, threads: 1, lr: lu(1e-3, 10), weightDecay: r() < 0.5 ? 0 : lu(1e-6, 1e-1), betaR: r() < 0.3 ? 1 : lu(1e-3, 0.999), ...(r() < 0.3 ? { r: lu(1e-12, 10) } : {}) };
    const opt: Opt = momentum
      ? new KoalaM(layers, { ...common, sigmaX0: sx, sigmaP0: sp, sigmaC0: (r() * 2 - 1) * Math.sqrt(sx * sp) * 0.99, qX0: lu(1e-9, 1), qP: r() < 0.2 ? 0 : lu(1e-9, 1), kappa: r() < 0.2 ? 1 : r(), lazyPredict: r() < 0.3 })
      : new KoalaV(layers, { ...common, sigma0: lu(1e-6, 1e3), q: r() < 0.2 ? 0 : lu(1e-9, 10) });
    const [lossScale, gradScale] = [lu(1e-8, 10), lu(1e-4, 1e3)];
    for (let k = 0; k < 300; k++) {
      opt.predict();
      grads.forEach((g) => g.forEach((_, i) => (g[i] = (r() - 0.5) * gradScale)));
      const loss = lossScale * r();
      if (!opt.update(loss, loss * loss * (1 + r())).applied || !params.every((p) => p.every(Number.isFinite))) break; // the step guard's business
      const sd = opt.stateDict();
      const [a, b, c, qX, sigma] = sd.filter;
      // What the tolerance must cover: the most negative eigenvalue of P + diag(0.9 qX, 0), against its scale.
      const a9 = a + 0.9 * qX;
      if (momentum) worstP = Math.max(worstP, -((a9 + c - Math.hypot(a9 - c, 2 * b)) / 2) / Math.max(Math.abs(a9), Math.abs(b), Math.abs(c)));
      else worstSigma = Math.min(worstSigma, sigma);
      opt.loadStateDict(sd); // throws ERR_KOALA_INVALID_STATE if the tolerance is too tight
      states++;
    }
    opt.dispose();
  }
  console.log(`${backend}: ${states} states loaded; most negative eigenvalue of P / scale ${worstP.toExponential(2)}, lowest KOALA-V sigma ${worstSigma.toExponential(2)}`);
  expect(states).toBeGreaterThan(runs * 20);
  expect(worstP).toBeGreaterThan(0); // the runs do reach the regime where rounding breaks definiteness
  expect(worstP).toBeLessThan(STATE_REL_TOL / 4);
  expect(worstSigma).toBeGreaterThan(-STATE_ABS_TOL / 10);
});
