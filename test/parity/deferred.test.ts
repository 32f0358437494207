// Note [deferred decay] (native/cpu/optimizer.h): the native KOALA-M predict moves the parameters
// and leaves the velocity's decay v *= kappa to the update pass. Nothing of it may show: the
// velocity read after predict() is the decayed one, and a run whose decay is forced to happen at
// predict time (a state dict read and loaded back after every predict) is bitwise the same run,
// through second predicts, skipped layers (with velocities to decay) and refused updates.
import { KoalaM, type FloatArray } from '../../lib';
import { bitwiseEqual, makeArray, rng } from '../helpers';

const SIZES = [40000, 3, 7, 100000, 1]; // a multi-chunk layer, tiny ones; > 2 x 65536 for 2 threads
const SKIPPED_LAYER = 2;

describe.each(['float64', 'float32'] as const)('%s', (dtype) => {
  const make = (backend: 'native' | 'js', initial: FloatArray[]) => {
    const params = initial.map((p) => p.slice());
    const grads = initial.map((p) => p.slice().fill(0));
    const opt = new KoalaM(params.map((param, i) => ({ param, grad: grads[i] })), { backend, threads: 2, weightDecay: 1e-3 });
    return { params, grads, opt };
  };
  const states = (o: KoalaM): FloatArray[] => [...o.velocities(), ...o.paramAverages()];

  test('after predict(), the parameters and velocities are bitwise those of the js backend', () => {
    const r = rng(dtype === 'float64' ? 21 : 22);
    const initial = SIZES.map((n) => makeArray(dtype, n, () => r() - 0.5));
    const native = make('native', initial);
    for (let step = 0; step < 5; step++) {
      native.opt.predict();
      native.grads.forEach((g) => g.forEach((_, i) => (g[i] = r() - 0.5)));
      expect(native.opt.update(0.5 + r(), 0.5 + r()).applied).toBe(true);
    }
    // The js backend from the native one's state: the same element-wise predict in double, each
    // value rounded once to the dtype, as the native float32 operations round.
    const js = make('js', native.params);
    js.opt.loadStateDict(native.opt.stateDict());
    for (let again = 0; again < 2; again++) {
      native.opt.predict();
      js.opt.predict();
      expect(bitwiseEqual(native.params, js.params)).toBe(true);
      expect(bitwiseEqual(native.opt.velocities(), js.opt.velocities())).toBe(true);
      expect(bitwiseEqual(native.opt.paramAverages(), js.opt.paramAverages())).toBe(true);
    }
  });

  test('a run whose decay is done at predict() time is bitwise the same, whatever the call order', () => {
    const r = rng(dtype === 'float64' ? 31 : 32);
    const initial = SIZES.map((n) => makeArray(dtype, n, () => r() - 0.5));
    const [deferred, eager] = [make('native', initial), make('native', initial)];
    const tally = { second: 0, refused: 0, skipped: 0 };
    for (let step = 0; step < 40; step++) {
      const predicts = r() < 0.25 ? 2 : 1;
      tally.second += predicts - 1;
      for (let p = 0; p < predicts; p++) {
        deferred.opt.predict();
        eager.opt.predict();
        // Writing the velocities back stores them decayed: no decay is left for the update pass.
        eager.opt.loadStateDict(eager.opt.stateDict());
        expect(bitwiseEqual(deferred.params, eager.params)).toBe(true);
        expect(bitwiseEqual(states(deferred.opt), states(eager.opt))).toBe(true);
      }
      const refuse = r() < 0.2;
      // Some steps skip a layer (|g| < eps) that other steps moved, so its velocity is not zero.
      const skip = r() < 0.4;
      const grads = SIZES.map((n, l) => makeArray(dtype, n, () => (skip && l === SKIPPED_LAYER ? 0 : r() - 0.5)));
      if (refuse) grads[3][77] = Number.NaN;
      const [loss, lossSq] = [0.05 + r(), 0.5 + r()];
      for (const run of [deferred, eager]) {
        run.grads.forEach((g, l) => g.set(grads[l]));
        const info = run.opt.update(loss, lossSq);
        expect(info.applied).toBe(!refuse);
        if (!refuse) expect(info.skippedLayers).toEqual(skip ? [SKIPPED_LAYER] : []);
      }
      tally.refused += refuse ? 1 : 0;
      tally.skipped += !refuse && skip && deferred.opt.velocities()[SKIPPED_LAYER].some((v) => v !== 0) ? 1 : 0;
      expect(bitwiseEqual(deferred.params, eager.params)).toBe(true);
      expect(bitwiseEqual(states(deferred.opt), states(eager.opt))).toBe(true);
      expect(deferred.opt.stateDict().filter).toEqual(eager.opt.stateDict().filter);
    }
    // The seeded draws took every path.
    expect(tally.second).toBeGreaterThan(0);
    expect(tally.refused).toBeGreaterThan(0);
    expect(tally.skipped).toBeGreaterThan(0);
  });
});
