// Misuse gets a KoalaError with a stable code before anything is modified; bad numbers (NaN, Inf)
// are data: the step is refused as a whole and reported, or thrown with onNonFinite: 'throw'.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { ERROR_CODES, KoalaError, KoalaM, KoalaPP, KoalaV, type FloatArray, type KoalaStateDict } from '../../lib';
import { bitwiseEqual, errorCode, rng, snapshot } from '../helpers';

type Opt = KoalaM | KoalaV | KoalaPP;
type Variant = 'm' | 'v' | 'pp';

function create(variant: Variant, layers: { param: FloatArray; grad: FloatArray }[], options: object): Opt {
  return variant === 'm' ? new KoalaM(layers, options) : variant === 'v' ? new KoalaV(layers, options) : new KoalaPP(layers, options);
}
const BACKENDS = ['native', 'js'] as const;

function model(backend: 'native' | 'js', variant: Variant = 'm', sizes = [12, 5, 3]) {
  const r = rng(sizes.length + sizes[0]);
  const params = sizes.map((n) => Float64Array.from({ length: n }, () => r() - 0.5));
  const grads = sizes.map((n) => Float64Array.from({ length: n }, () => r() - 0.5));
  const layers = params.map((param, i) => ({ param, grad: grads[i], name: `t${i}` }));
  const opt = create(variant, layers, { backend });
  // Two steps, so that velocities, averages and P (KOALA++: v, Hp, S) are all non-trivial.
  for (let k = 0; k < 2; k++) {
    opt.predict();
    opt.update(0.7, 0.6);
  }
  return { params, grads, layers, opt };
}

interface Snapshot {
  params: FloatArray[];
  grads: FloatArray[];
  state: KoalaStateDict;
}

function take(opt: Opt, params: FloatArray[], grads: FloatArray[]): Snapshot {
  return { params: snapshot(params), grads: snapshot(grads), state: opt.stateDict() };
}

function expectSame(after: Snapshot, before: Snapshot) {
  expect(bitwiseEqual(after.params, before.params)).toBe(true);
  expect(bitwiseEqual(after.grads, before.grads)).toBe(true);
  const { velocities, averages, plusPlus, ...rest } = after.state;
  const { velocities: v0, averages: a0, plusPlus: pp0, ...rest0 } = before.state;
  expect(rest).toStrictEqual(rest0);
  expect(bitwiseEqual(velocities, v0)).toBe(true);
  expect(bitwiseEqual(averages, a0)).toBe(true);
  if (plusPlus && pp0) {
    const { products, directions, ...scalars } = plusPlus;
    expect(scalars).toStrictEqual({ S: pp0.S, hh: pp0.hh, vh: pp0.vh, updated: pp0.updated });
    expect(bitwiseEqual(products, pp0.products)).toBe(true);
    expect(bitwiseEqual(directions, pp0.directions)).toBe(true);
  } else {
    expect(plusPlus).toStrictEqual(pp0);
  }
}

function expectCode(fn: () => unknown, code: string) {
  expect(errorCode(fn)).toBe(code);
}

function detach(a: FloatArray) {
  structuredClone(a.buffer, { transfer: [a.buffer as ArrayBuffer] });
}

describe.each(BACKENDS)('%s backend: construction', (backend) => {
  const f64 = (n: number) => new Float64Array(n).fill(0.5);
  const build = (layers: unknown, options: object = {}) => () => new KoalaM(layers as never, { backend, ...options });
  const untouched = (arrays: FloatArray[]) => expect(arrays.every((a) => a.every((v) => v === 0.5))).toBe(true);

  test('an empty layer list', () => expectCode(build([]), 'ERR_KOALA_INVALID_LAYERS'));
  test('not an array of layers', () => expectCode(build({ param: f64(2), grad: f64(2) }), 'ERR_KOALA_INVALID_LAYERS'));
  test('an empty layer', () => expectCode(build([{ param: f64(0), grad: f64(0) }]), 'ERR_KOALA_INVALID_LAYERS'));
  test('a plain array as param', () => expectCode(build([{ param: [1, 2], grad: f64(2) }]), 'ERR_KOALA_INVALID_ARRAY'));
  test('an Int32Array as grad', () => expectCode(build([{ param: f64(2), grad: new Int32Array(2) }]), 'ERR_KOALA_INVALID_ARRAY'));
  test('a Node Buffer (bytes) as param', () => expectCode(build([{ param: Buffer.alloc(8), grad: f64(1) }]), 'ERR_KOALA_INVALID_ARRAY'));
  test('param and grad of different dtypes', () => {
    const p = f64(4);
    expectCode(build([{ param: p, grad: new Float32Array(4) }]), 'ERR_KOALA_DTYPE_MISMATCH');
    untouched([p]);
  });
  test('two layers of different dtypes', () =>
    expectCode(build([{ param: f64(4), grad: f64(4) }, { param: new Float32Array(2), grad: new Float32Array(2) }]), 'ERR_KOALA_DTYPE_MISMATCH'));
  test('param and grad of different lengths', () => {
    const [p, g] = [f64(4), f64(5)];
    expectCode(build([{ param: p, grad: g }]), 'ERR_KOALA_LENGTH_MISMATCH');
    untouched([p, g]);
  });
  test('a detached buffer', () => {
    const p = f64(4);
    detach(p);
    expectCode(build([{ param: p, grad: f64(4) }]), 'ERR_KOALA_DETACHED');
  });
  test('a grad that overlaps its param', () => {
    const all = f64(12);
    expectCode(build([{ param: all.subarray(0, 6), grad: all.subarray(5, 11) }]), 'ERR_KOALA_OVERLAP');
    untouched([all]);
  });
  test('a grad that is its param', () => {
    const p = f64(3);
    expectCode(build([{ param: p, grad: p }]), 'ERR_KOALA_OVERLAP');
  });
  test('two layers whose memory overlaps', () => {
    const all = f64(20);
    const layers = [
      { param: all.subarray(0, 5), grad: all.subarray(5, 10) },
      { param: all.subarray(10, 15), grad: all.subarray(9, 14) },
    ];
    expectCode(build(layers), 'ERR_KOALA_OVERLAP');
    untouched([all]);
  });
  test('unknown options name the reference spelling', () => {
    expect(build([{ param: f64(2), grad: f64(2) }], { weight_decay: 0.1 })).toThrow(/weightDecay/);
    expectCode(build([{ param: f64(2), grad: f64(2) }], { weight_decay: 0.1 }), 'ERR_KOALA_INVALID_OPTION');
  });
  test.each([
    ['lr', -1],
    ['lr', NaN],
    ['kappa', 1.5],
    ['betaR', -0.1],
    ['r', -2],
    ['eps', Infinity],
    ['sigmaX0', '0.1'],
    ['threads', 0],
    ['threads', 1.5],
    ['backend', 'gpu'],
    ['onNonFinite', 'ignore'],
  ])('invalid option %s = %p', (key, value) => expectCode(build([{ param: f64(2), grad: f64(2) }], { [key]: value }), 'ERR_KOALA_INVALID_OPTION'));
  test('a KOALA-V option given to KOALA-M', () => expectCode(build([{ param: f64(2), grad: f64(2) }], { sigma0: 1 }), 'ERR_KOALA_INVALID_OPTION'));
  test.each([
    ['symmetric', 'yes'],
    ['symmetric', 1],
    ['sigma0', -1],
    ['q', NaN],
    ['lazyPredict', true],
    ['kappa', 0.9],
    ['target', 'absolute'], // the paper's variants are KOALA-M's and KOALA-V's
    ['shard', { rank: 0, ranks: 2 }], // no sharded step
  ])('KoalaPP: invalid option %s = %p', (key, value) => {
    expectCode(() => new KoalaPP([{ param: f64(2), grad: f64(2) }], { backend, [key]: value }), 'ERR_KOALA_INVALID_OPTION');
  });
  test("KoalaPP: the reference's is_symmetric is named", () => {
    expect(() => new KoalaPP([{ param: f64(2), grad: f64(2) }], { backend, is_symmetric: false } as never)).toThrow(/`symmetric`/);
  });
});

describe('the native backend checks addresses', () => {
  test('two SharedArrayBuffer objects over the same memory', () => {
    const sab = new SharedArrayBuffer(64);
    const alias = structuredClone(sab); // a second object, the same memory
    expect(alias).not.toBe(sab);
    const layers = [
      { param: new Float64Array(sab, 0, 4), grad: new Float64Array(sab, 32, 4) },
      { param: new Float64Array(alias, 8, 2), grad: new Float64Array(new SharedArrayBuffer(16)) },
    ];
    expectCode(() => new KoalaM(layers, { backend: 'native' }), 'ERR_KOALA_OVERLAP');
  });
});

describe.each(BACKENDS)('%s backend: calls', (backend) => {
  test('a buffer detached after construction is refused at every call, nothing changed', () => {
    const { params, grads, opt } = model(backend);
    const before = snapshot(params.slice(1));
    const gradsBefore = snapshot(grads);
    // The filter state is internal: read it through a backend call that needs no layers.
    const readFilter = () => ({ ...(opt as unknown as { impl: { getFilter(): object } }).impl.getFilter() });
    const filter = readFilter();
    detach(params[0]);
    expectCode(() => opt.predict(), 'ERR_KOALA_DETACHED');
    expectCode(() => opt.update(1, 1), 'ERR_KOALA_DETACHED');
    expectCode(() => opt.stateDict(), 'ERR_KOALA_DETACHED');
    expect(bitwiseEqual(params.slice(1), before)).toBe(true);
    expect(bitwiseEqual(grads, gradsBefore)).toBe(true);
    expect(readFilter()).toEqual(filter);
  });

  test('a detached grad, after predict()', () => {
    const { params, grads, opt } = model(backend);
    opt.predict();
    const before = snapshot(params);
    detach(grads[2]);
    expectCode(() => opt.update(1, 1), 'ERR_KOALA_DETACHED');
    expect(bitwiseEqual(params, before)).toBe(true);
  });

  test('a negative lossSq', () => {
    const { params, grads, opt } = model(backend);
    opt.predict();
    const before = take(opt, params, grads);
    expectCode(() => opt.update(0.5, -0.1), 'ERR_KOALA_INVALID_LOSS');
    expectSame(take(opt, params, grads), before);
  });

  test('a loss that is not a number', () => {
    const { params, grads, opt } = model(backend);
    opt.predict();
    const before = take(opt, params, grads);
    expectCode(() => opt.update('0.5' as unknown as number, 0.3), 'ERR_KOALA_INVALID_LOSS');
    expectCode(() => opt.update(0.5, null as unknown as number), 'ERR_KOALA_INVALID_LOSS');
    expectSame(take(opt, params, grads), before);
  });

  test('update() twice without predict(), and before the first predict()', () => {
    const { params, grads, opt } = model(backend);
    const before = take(opt, params, grads);
    expectCode(() => opt.update(0.5, 0.3), 'ERR_KOALA_PREDICT_REQUIRED');
    expectSame(take(opt, params, grads), before);
    const fresh = model(backend).opt;
    const sd = fresh.stateDict();
    expect(sd.phase).toBe('updated');
  });

  test('an invalid learning rate set between steps', () => {
    const { params, grads, opt } = model(backend);
    const before = take(opt, params, grads);
    expectCode(() => (opt.lr = -0.1), 'ERR_KOALA_INVALID_OPTION');
    expectCode(() => (opt.lr = NaN), 'ERR_KOALA_INVALID_OPTION');
    expectSame(take(opt, params, grads), before);
  });

  test('calls after dispose()', () => {
    const { params, grads, opt } = model(backend);
    const p = snapshot(params);
    const g = snapshot(grads);
    opt.dispose();
    opt.dispose(); // harmless
    for (const call of [() => opt.predict(), () => opt.update(1, 1), () => opt.state, () => opt.stateDict(), () => (opt as KoalaM).velocities(), () => opt.threads]) {
      expectCode(call, 'ERR_KOALA_DISPOSED');
    }
    expect(bitwiseEqual(params, p)).toBe(true);
    expect(bitwiseEqual(grads, g)).toBe(true);
    const pp = model(backend, 'pp').opt as KoalaPP;
    pp.dispose();
    for (const call of [() => pp.state, () => pp.products(), () => pp.directions(), () => pp.stateDict()]) expectCode(call, 'ERR_KOALA_DISPOSED');
  });

  test('KoalaPP: loadStateDict with data that does not fit', () => {
    const { params, grads, opt } = model(backend, 'pp');
    const good = opt.stateDict();
    const pp = good.plusPlus!;
    const before = take(opt, params, grads);
    const bad: [string, unknown][] = [
      ['kind', { ...good, optimizer: 'koala-m' }],
      ['no plusPlus', { ...good, plusPlus: null }],
      ['products length', { ...good, plusPlus: { ...pp, products: [new Float64Array(1), ...pp.products.slice(1)] } }],
      ['directions dtype', { ...good, plusPlus: { ...pp, directions: pp.directions.map((v) => Float32Array.from(v)) } }],
      ['S NaN', { ...good, plusPlus: { ...pp, S: [NaN, 1, 1] } }],
      ['hh short', { ...good, plusPlus: { ...pp, hh: [1] } }],
      ['updated not boolean', { ...good, plusPlus: { ...pp, updated: [1, 1, 1] } }],
    ];
    for (const [, sd] of bad) expectCode(() => opt.loadStateDict(sd as KoalaStateDict), 'ERR_KOALA_INVALID_STATE');
    expectSame(take(opt, params, grads), before);
    // and a KOALA++ part in a KOALA-M state
    const m = model(backend, 'm').opt;
    expectCode(() => m.loadStateDict({ ...m.stateDict(), plusPlus: pp }), 'ERR_KOALA_INVALID_STATE');
  });

  test('KoalaPP: a direction of zero length on a first update refuses the step (non-finite-step), nothing changed', () => {
    // weightDecay 1 and g = -x: H = g + wd x = 0 exactly, so alpha = a / |H|^2 = 0 / 0.
    const params = [Float64Array.from([0.5, -0.25, 2]), Float64Array.from([1, 2])];
    const grads = [params[0].map((x) => -x), Float64Array.from([0.1, -0.2])];
    const opt = new KoalaPP(params.map((param, i) => ({ param, grad: grads[i] })), { backend, weightDecay: 1 });
    opt.predict();
    const before = take(opt, params, grads);
    expect(opt.update(0.5, 0.3)).toMatchObject({ applied: false, reason: 'non-finite-step', step: 0 });
    expectSame(take(opt, params, grads), before);
    expect(opt.state.S).toEqual([null, null]);
  });

  test('loadStateDict with data that does not fit', () => {
    const { params, grads, opt } = model(backend);
    const good = opt.stateDict();
    const before = take(opt, params, grads);
    const bad: [string, unknown][] = [
      ['version', { ...good, version: 2 }],
      ['kind', { ...good, optimizer: 'koala-v' }],
      ['dtype', { ...good, dtype: 'float32' }],
      ['layers', { ...good, layers: good.layers.slice(1) }],
      ['filter', { ...good, filter: [1, 2, 3] }],
      ['filter NaN', { ...good, filter: [NaN, 0, 0, 0, 0, 1] }],
      ['velocity length', { ...good, velocities: [new Float64Array(1), ...good.velocities.slice(1)] }],
      ['velocity dtype', { ...good, velocities: good.velocities.map((v) => Float32Array.from(v)) }],
      ['step', { ...good, step: -1 }],
      ['not an object', null],
    ];
    for (const [, sd] of bad) expectCode(() => opt.loadStateDict(sd as KoalaStateDict), 'ERR_KOALA_INVALID_STATE');
    expectSame(take(opt, params, grads), before);
  });
});

describe.each(BACKENDS)('%s backend: bad numbers are data', (backend) => {
  describe.each(['m', 'v', 'pp'] as const)('KOALA-%s', (variant) => {
    const cases: [string, (p: FloatArray[], g: FloatArray[]) => [number, number], string][] = [
      ['a NaN loss', () => [NaN, 0.3], 'non-finite-loss'],
      ['an Inf lossSq', () => [0.5, Infinity], 'non-finite-loss'],
      ['a NaN gradient', (_p, g) => ((g[1][2] = NaN), [0.5, 0.3]), 'non-finite-gradient'],
      ['an Inf gradient', (_p, g) => ((g[2][0] = -Infinity), [0.5, 0.3]), 'non-finite-gradient'],
      ['a NaN parameter', (p) => ((p[0][3] = NaN), [0.5, 0.3]), 'non-finite-parameter'],
    ];
    test.each(cases)('%s: the step is skipped and reported, nothing changed', (_name, spoil, reason) => {
      const { params, grads, opt } = model(backend, variant);
      opt.predict();
      const [loss, lossSq] = spoil(params, grads);
      const before = take(opt, params, grads);
      const info = opt.update(loss, lossSq);
      expect(info).toMatchObject({ applied: false, reason, step: 2, skippedLayers: [] });
      expectSame(take(opt, params, grads), before);
      // With good data again, the same optimizer takes the step.
      params.forEach((p) => p.forEach((v, i) => Number.isFinite(v) || (p[i] = 0)));
      grads.forEach((g) => g.forEach((v, i) => Number.isFinite(v) || (g[i] = 0)));
      expect(opt.update(0.5, 0.3)).toMatchObject({ applied: true, step: 3 });
    });

    test.each(cases)("%s with onNonFinite: 'throw'", (_name, spoil) => {
      const { params, grads, layers } = model(backend, variant);
      const opt = create(variant, layers, { backend, onNonFinite: 'throw' });
      opt.predict();
      const [loss, lossSq] = spoil(params, grads);
      const before = take(opt, params, grads);
      expectCode(() => opt.update(loss, lossSq), 'ERR_KOALA_NON_FINITE');
      expectSame(take(opt, params, grads), before);
    });

    test('a negative loss is legal and reverses the step', () => {
      const a = model(backend, variant);
      const b = model(backend, variant);
      a.opt.predict();
      b.opt.predict();
      const predicted = snapshot(a.params);
      expect(a.opt.update(0.4, 0.2).applied).toBe(true);
      expect(b.opt.update(-0.4, 0.2).applied).toBe(true);
      a.params.forEach((p, l) =>
        p.forEach((x, i) => expect(b.params[l][i] - predicted[l][i]).toBeCloseTo(-(x - predicted[l][i]), 14)),
      );
    });

    test('a step in which every layer is skipped leaves P (or sigma) unchanged', () => {
      const { params, grads, opt } = model(backend, variant);
      opt.predict();
      grads.forEach((g) => g.fill(0));
      const before = take(opt, params, grads);
      const info = opt.update(0.5, 0.3);
      expect(info).toMatchObject({ applied: true, skippedLayers: [0, 1, 2], maxGain: 0 });
      const after = take(opt, params, grads);
      expect(bitwiseEqual(after.params, before.params)).toBe(true);
      const [f0, f1] = [before.state.filter, after.state.filter];
      expect(f1.slice(0, 5)).toEqual(f0.slice(0, 5)); // P, qX, sigma
      expect(f1[5]).toBeCloseTo(0.9 * f0[5] + 0.1 * 0.3, 15); // R still follows the loss
    });
  });
});

test("backend: 'native' where the addon does not load", () => {
  const saved = process.env.KOALA_OPTIM_ADDON;
  process.env.KOALA_OPTIM_ADDON = '/nonexistent/koala_optim.node';
  try {
    jest.isolateModules(() => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const fresh = require('../../lib') as typeof import('../../lib');
      expect(fresh.nativeStatus()).toMatchObject({ available: false, path: null });
      expect(fresh.nativeStatus().reason).toMatch(/nonexistent/);
      const layer = { param: new Float64Array(2), grad: new Float64Array(2) };
      let caught: unknown;
      try {
        new fresh.KoalaM([layer], { backend: 'native' });
      } catch (e) {
        caught = e;
      }
      expect((caught as { code?: string }).code).toBe('ERR_KOALA_NATIVE_UNAVAILABLE');
    });
  } finally {
    if (saved === undefined) delete process.env.KOALA_OPTIM_ADDON;
    else process.env.KOALA_OPTIM_ADDON = saved;
  }
});

describe.each(BACKENDS)('%s backend: the edges of the API', (backend) => {
  const layer = () => ({ param: new Float64Array(4).fill(0.5), grad: new Float64Array(4).fill(0.1) });

  test.each(['constructor', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', 'propertyIsEnumerable', 'toLocaleString', '__defineGetter__'])(
    'an option named like an Object.prototype member, %s, is unknown',
    (key) => {
      expectCode(() => new KoalaM([layer()], { backend, [key]: 1 } as never), 'ERR_KOALA_INVALID_OPTION');
      expectCode(() => new KoalaV([layer()], { backend, [key]: 1 } as never), 'ERR_KOALA_INVALID_OPTION');
    },
  );

  test('an own __proto__ option (as JSON.parse makes it) is unknown', () => {
    expectCode(() => new KoalaM([layer()], { ...JSON.parse('{"__proto__": {"lr": 2}}'), backend }), 'ERR_KOALA_INVALID_OPTION');
  });

  test('every option is read once (a getter cannot pass the check with one value and build with another)', () => {
    const reads: Record<string, number> = {};
    const values: Record<string, number[]> = { r: [0.5, -1], lr: [0.5, NaN], sigmaX0: [0.1, 1e300] };
    const options = { backend };
    for (const [key, seq] of Object.entries(values)) {
      Object.defineProperty(options, key, { enumerable: true, get: () => seq[Math.min((reads[key] = (reads[key] ?? 0) + 1) - 1, seq.length - 1)] });
    }
    const opt = new KoalaM([layer()], options);
    expect(reads).toEqual({ r: 1, lr: 1, sigmaX0: 1 });
    expect(opt.lr).toBe(0.5);
    opt.predict();
    expect(opt.update(0.5, 0.3).applied).toBe(true);
    expect(opt.state.R).toBe(0.5);
  });

  // Note [option ranges] in lib/options.ts: each of these made a finite step end in NaN or Inf.
  test.each([
    ['r', 0, 'R = 0: 0/0 with a zero prior'],
    ['betaR', 0, 'R = the last lossSq alone, 0 after a zero loss'],
    ['lr', 1e13, 'beyond the magnitude bound'],
    ['lr', 1e300, 'carries the parameters to Inf'],
    ['sigmaX0', 1e300, 'P m P overflows into Inf - Inf'],
    ['sigmaP0', 1e13, 'beyond the magnitude bound'],
    ['qX0', 1e300, 'beyond the magnitude bound'],
    ['qP', Infinity, 'not finite'],
    ['weightDecay', 1e300, 'beyond the magnitude bound'],
    ['sigmaC0', 0.5, 'an initial P that is not positive semidefinite (0.5^2 > 0.1 * 0.1)'],
    ['sigmaC0', -1e-1 * 1.001, 'just beyond sqrt(sigmaX0 sigmaP0)'],
  ])('KOALA-M option %s = %p is refused (%s)', (key, value) => {
    expectCode(() => new KoalaM([layer()], { backend, [key]: value }), 'ERR_KOALA_INVALID_OPTION');
  });

  test.each([
    ['sigma0', 1e300],
    ['q', 1e13],
    ['r', 0],
    ['betaR', 0],
  ])('KOALA-V option %s = %p is refused', (key, value) => {
    expectCode(() => new KoalaV([layer()], { backend, [key]: value }), 'ERR_KOALA_INVALID_OPTION');
  });

  test('the edges of the ranges are accepted: sigmaC0 at sqrt(sigmaX0 sigmaP0), magnitudes of 1e12, betaR 1', () => {
    expect(() => new KoalaM([layer()], { backend, sigmaX0: 0.04, sigmaP0: 0.09, sigmaC0: -Math.sqrt(0.04 * 0.09) })).not.toThrow();
    expect(() => new KoalaM([layer()], { backend, lr: 1e12, sigmaX0: 1e12, sigmaP0: 1e12, qX0: 1e12, qP: 1e12, r: 1e12, betaR: 1 })).not.toThrow();
  });

  test('zero variances with zero noise are harmless once R > 0: every step applied and finite', () => {
    for (const [variant, options] of [['m', { sigmaX0: 0, sigmaC0: 0, sigmaP0: 0, qX0: 0, qP: 0 }], ['v', { sigma0: 0, q: 0 }]] as const) {
      for (const r of [undefined, 1e-12]) {
        const l = layer();
        const opt: Opt = variant === 'm' ? new KoalaM([l], { backend, r, ...options }) : new KoalaV([l], { backend, r, ...options });
        for (let k = 0; k < 5; k++) {
          opt.predict();
          expect(opt.update(k === 0 ? 0 : 0.5, k === 0 ? 0 : 0.25).applied).toBe(true);
          expect(l.param.every(Number.isFinite)).toBe(true);
        }
        expect(Object.values(opt.stateDict().filter).every(Number.isFinite)).toBe(true);
      }
    }
  });

  test('lr (get and set) and phase after dispose()', () => {
    const opt = new KoalaM([layer()], { backend });
    opt.dispose();
    expectCode(() => (opt.lr = 0.5), 'ERR_KOALA_DISPOSED');
    expectCode(() => opt.lr, 'ERR_KOALA_DISPOSED');
    expectCode(() => opt.phase, 'ERR_KOALA_DISPOSED');
    expectCode(() => opt.step, 'ERR_KOALA_DISPOSED');
    expectCode(() => opt.loadStateDict({} as KoalaStateDict), 'ERR_KOALA_DISPOSED');
  });

  test('update() with no loss says so (not a word of device losses), nothing changed', () => {
    const { params, grads, opt } = model(backend);
    opt.predict();
    const before = take(opt, params, grads);
    let message = '';
    try {
      (opt.update as () => unknown)();
    } catch (e) {
      expect((e as KoalaError).code).toBe('ERR_KOALA_INVALID_LOSS');
      message = (e as Error).message;
    }
    expect(message).toMatch(/needs the minibatch mean loss/);
    expect(message).not.toMatch(/device/);
    expectSame(take(opt, params, grads), before);
  });

  test('KoalaM.prototype.velocities / paramAverages called on a KoalaV or a plain object: a coded error, no crash', () => {
    const v = new KoalaV([layer()], { backend });
    for (const method of [KoalaM.prototype.velocities, KoalaM.prototype.paramAverages]) {
      expectCode(() => method.call(v), 'ERR_KOALA_INVALID_ARGUMENT');
      expectCode(() => method.call({} as KoalaM), 'ERR_KOALA_INVALID_ARGUMENT');
      expectCode(() => method.call(Object.create(KoalaM.prototype)), 'ERR_KOALA_INVALID_ARGUMENT');
    }
    v.predict();
    expect(v.update(0.5, 0.3).applied).toBe(true);
  });
});

test("the README's error table lists every code, and no other", () => {
  const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');
  const table = [...readme.matchAll(/^\| `(ERR_KOALA_[A-Z_]+)` \|/gm)].map((m) => m[1]);
  expect([...table].sort()).toEqual([...ERROR_CODES].sort());
});
