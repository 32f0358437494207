// Lazy predict (KOALA-M): the update pass also does the next step's element-wise predict. Seen
// right after predict(), the trajectory is the standard one.
import { KoalaM, KoalaV, type FloatArray } from '../../lib';
import { bitwiseEqual, makeArray, relNorm, rng, snapshot } from '../helpers';

const SIZES = [40000, 3, 7, 100000, 1]; // a multi-chunk layer, tiny ones; > 2 x 65536 for 2 threads
const ZERO_GRAD_LAYER = 2;
const STEPS = 60;

describe.each(['native', 'js'] as const)('%s backend', (backend) => {
  test.each(['float64', 'float32'] as const)('%s: lazy and standard agree right after each predict()', (dtype) => {
    const r = rng(dtype === 'float64' ? 5 : 6);
    const initial = SIZES.map((n) => makeArray(dtype, n, () => r() - 0.5));
    const make = (lazyPredict: boolean, threads: number) => {
      const params = initial.map((p) => p.slice());
      const grads = initial.map((p) => p.slice().fill(0));
      const opt = new KoalaM(params.map((param, i) => ({ param, grad: grads[i] })), { backend, lazyPredict, threads, weightDecay: 1e-3 });
      return { params, grads, opt };
    };
    const runs = [make(false, 2), make(true, 2), make(true, 1)];
    const tol = dtype === 'float64' ? 1e-12 : 1e-5;
    const states = (o: KoalaM): FloatArray[] => [...o.velocities(), ...o.paramAverages()];
    const flat = new Float64Array(SIZES.reduce((a, b) => a + b));
    let at = 0;
    const g = SIZES.map((n) => flat.subarray(at, (at += n)));
    for (let step = 0; step < STEPS; step++) {
      const lr = 0.1 + r();
      const loss = 0.05 + r();
      const lossSq = loss * loss * (1 + r());
      for (let i = 0; i < flat.length; i++) flat[i] = r() - 0.5;
      g[ZERO_GRAD_LAYER].fill(0);
      for (const { opt } of runs) {
        opt.lr = lr;
        opt.predict();
      }
      const [std, lazy, lazy1] = runs;
      expect(relNorm(lazy.params, std.params)).toBeLessThanOrEqual(tol);
      expect(relNorm(states(lazy.opt), states(std.opt))).toBeLessThanOrEqual(tol);
      const [fs, fl] = [std.opt.stateDict().filter, lazy.opt.stateDict().filter];
      fl.forEach((v, i) => expect(Math.abs(v - fs[i])).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(fs[i]))));
      expect(bitwiseEqual(lazy1.params, lazy.params)).toBe(true);
      expect(lazy1.opt.stateDict().filter).toEqual(fl);
      for (const { opt, grads } of runs) {
        g.forEach((src, l) => grads[l].set(src));
        expect(opt.update(loss, lossSq)).toMatchObject({ applied: true, skippedLayers: [ZERO_GRAD_LAYER] });
      }
      // In the gap, the lazy run's parameters are already the predicted ones.
      expect(lazy.opt.stateDict().pendingPredict).not.toBeNull();
      expect(std.opt.stateDict().pendingPredict).toBeNull();
    }
  });

  test('a lazy state dict saved after update() resumes bitwise, and a refused step changes nothing (no predict folded in)', () => {
    const r = rng(11);
    const sizes = [30, 4, 9];
    const make = () => {
      const params = sizes.map((n) => makeArray('float64', n, (i) => Math.cos(i)));
      const grads = sizes.map((n) => new Float64Array(n));
      return { params, grads, opt: new KoalaM(params.map((param, i) => ({ param, grad: grads[i] })), { backend, lazyPredict: true }) };
    };
    const a = make();
    const step = (runs: ReturnType<typeof make>[], n: number) => {
      for (let k = 0; k < n; k++) {
        const gr = sizes.map((m) => Float64Array.from({ length: m }, () => r() - 0.5));
        for (const { opt, grads } of runs) {
          opt.predict();
          gr.forEach((src, l) => grads[l].set(src));
          opt.update(0.4, 0.3);
        }
      }
    };
    const twin = make(); // the same run without the refused step
    step([a, twin], 5);
    expect(a.opt.stateDict().pendingPredict).toBeGreaterThan(0);
    // A refused step changes nothing: predict() has used the pending sum, and the refused update
    // must not fold the next element-wise predict in (nor set a pending sum) as an applied one does.
    a.opt.predict();
    twin.opt.predict();
    const before = { params: snapshot(a.params), state: structuredClone(a.opt.stateDict()) };
    expect(before.state.pendingPredict).toBeNull();
    const g = sizes.map((m) => Float64Array.from({ length: m }, () => r() - 0.5));
    g.forEach((src, l) => a.grads[l].set(src));
    a.grads[0][0] = NaN;
    expect(a.opt.update(0.4, 0.3)).toMatchObject({ applied: false, reason: 'non-finite-gradient' });
    const after = a.opt.stateDict();
    expect(bitwiseEqual(a.params, before.params)).toBe(true);
    expect(bitwiseEqual(a.opt.velocities(), before.state.velocities)).toBe(true);
    expect(bitwiseEqual(a.opt.paramAverages(), before.state.averages)).toBe(true);
    expect({ ...after, velocities: [], averages: [] }).toStrictEqual({ ...before.state, velocities: [], averages: [] });
    // The retry with good data is the step the twin takes: the same parameters and the same pending sum.
    a.grads[0][0] = g[0][0];
    g.forEach((src, l) => twin.grads[l].set(src));
    expect(a.opt.update(0.4, 0.3).applied).toBe(true);
    expect(twin.opt.update(0.4, 0.3).applied).toBe(true);
    expect(bitwiseEqual(a.params, twin.params)).toBe(true);
    expect(bitwiseEqual(a.params, before.params)).toBe(false);
    expect(a.opt.stateDict().pendingPredict).toBeGreaterThan(0);
    expect(a.opt.stateDict().pendingPredict).toBe(twin.opt.stateDict().pendingPredict);
    const saved = structuredClone(a.opt.stateDict());
    expect(saved.pendingPredict).not.toBeNull();
    const b = make();
    a.params.forEach((p, l) => b.params[l].set(p));
    b.opt.loadStateDict(saved);
    step([a, b], 10);
    expect(bitwiseEqual(b.params, a.params)).toBe(true);
    expect(b.opt.stateDict().filter).toEqual(a.opt.stateDict().filter);
  });
});

test('native and js agree in lazy mode', () => {
  const r = rng(21);
  const sizes = [20000, 5, 70000];
  const initial = sizes.map((n) => makeArray('float64', n, () => r() - 0.5));
  const runs = (['native', 'js'] as const).map((backend) => {
    const params = initial.map((p) => p.slice());
    const grads = initial.map((p) => p.slice().fill(0));
    return { params, grads, opt: new KoalaM(params.map((param, i) => ({ param, grad: grads[i] })), { backend, lazyPredict: true }) };
  });
  for (let k = 0; k < 40; k++) {
    const gr = sizes.map((m) => Float64Array.from({ length: m }, () => r() - 0.5));
    for (const { opt, grads } of runs) {
      opt.predict();
      gr.forEach((src, l) => grads[l].set(src));
      opt.update(0.3 + 0.01 * k, 0.2);
    }
  }
  expect(relNorm(runs[0].params, runs[1].params)).toBeLessThanOrEqual(1e-12);
  expect(relNorm(runs[0].opt.velocities(), runs[1].opt.velocities())).toBeLessThanOrEqual(1e-12);
  const [fn, fj] = [runs[0].opt.stateDict(), runs[1].opt.stateDict()];
  expect(Math.abs(fn.pendingPredict! - fj.pendingPredict!)).toBeLessThanOrEqual(1e-12 * fj.pendingPredict!);
});

test('lazyPredict is a KoalaM option only, and a boolean', () => {
  const layer = { param: new Float64Array(2), grad: new Float64Array(2) };
  expect(() => new KoalaM([layer], { lazyPredict: 1 as unknown as boolean })).toThrow(expect.objectContaining({ code: 'ERR_KOALA_INVALID_OPTION' }));
  expect(() => new KoalaV([layer], { lazyPredict: true } as never)).toThrow(expect.objectContaining({ code: 'ERR_KOALA_INVALID_OPTION' }));
});
