// The step sequence (Note [step sequence], native/core/step.h) on both host backends: the guards in
// their order, each refusing the whole step with its own status, nothing changed, the phase kept.
import { KoalaM, KoalaV } from '../../lib';
import { bitwiseEqual, makeArray, snapshot } from '../helpers';

const BACKENDS = ['native', 'js'] as const;

function model(backend: (typeof BACKENDS)[number], variant: 'm' | 'v', dtype: 'float32' | 'float64', scale = 1) {
  const params = [makeArray(dtype, 50, (i) => scale * Math.sin(i)), makeArray(dtype, 7, (i) => scale * (i - 3))];
  const grads = params.map((p) => makeArray(dtype, p.length, (i) => Math.cos(i)));
  const layers = params.map((param, i) => ({ param, grad: grads[i] }));
  const opt = variant === 'm' ? new KoalaM(layers, { backend, weightDecay: 1e-3 }) : new KoalaV(layers, { backend, weightDecay: 1e-3 });
  return { params, grads, opt };
}

describe.each(BACKENDS)('%s backend', (backend) => {
  test.each(['m', 'v'] as const)('KOALA-%s: a non-finite loss or lossSq is refused by the backend, nothing changed, phase kept', (variant) => {
    const { params, opt } = model(backend, variant, 'float64');
    opt.predict();
    const before = { params: snapshot(params), state: opt.stateDict() };
    for (const [loss, lossSq] of [[NaN, 1], [1, Infinity], [-Infinity, undefined]] as const) {
      expect(opt.update(loss, lossSq)).toMatchObject({ applied: false, reason: 'non-finite-loss', step: 0 });
      expect(opt.phase).toBe('predicted');
    }
    expect(bitwiseEqual(params, before.params)).toBe(true);
    expect(opt.stateDict()).toEqual(before.state);
    expect(opt.update(0.5).applied).toBe(true);
  });

  test('the loss guard fires before the parameter guard, which fires before the gradient guard', () => {
    const { params, grads, opt } = model(backend, 'm', 'float32');
    opt.predict();
    grads[0][3] = NaN;
    expect(opt.update(0.5).reason).toBe('non-finite-gradient');
    params[1][2] = Infinity;
    expect(opt.update(0.5).reason).toBe('non-finite-parameter');
    expect(opt.update(NaN).reason).toBe('non-finite-loss');
  });

  test.each([
    ['m', 'float32'],
    ['v', 'float32'],
    ['m', 'float64'],
  ] as const)('KOALA-%s %s: a gain that could carry a parameter past its dtype range refuses the step', (variant, dtype) => {
    const { params, opt } = model(backend, variant, dtype);
    // With lossSq 1 (R stays near 1), |k1| |h| ~ lr loss / 6 here: past float32's range for the
    // first, float64's for the second (lr stays inside the option's range, [0, 1e12]).
    opt.lr = dtype === 'float32' ? 1 : 1e12;
    opt.predict();
    const before = { params: snapshot(params), state: opt.stateDict() };
    const loss = dtype === 'float32' ? 1e40 : 1e300;
    const info = opt.update(loss, 1);
    expect(info).toMatchObject({ applied: false, reason: 'non-finite-step', step: 0, skippedLayers: [], maxGain: 0 });
    expect(bitwiseEqual(params, before.params)).toBe(true);
    expect(opt.stateDict()).toEqual(before.state);
    expect(opt.phase).toBe('predicted');
    expect(opt.update(loss, 1).applied).toBe(false); // still predicted: update() may be tried again
    opt.lr = 1e-3;
    expect(opt.update(0.5).applied).toBe(true);
    expect(params.every((p) => p.every(Number.isFinite))).toBe(true);
  });

  test('onNonFinite: throw names a refused filter step', () => {
    const params = [new Float32Array(4).fill(3e38)];
    const opt = new KoalaV([{ param: params[0], grad: new Float32Array(4).fill(1) }], { backend, onNonFinite: 'throw' });
    opt.predict();
    expect(() => opt.update(1e30, 1)).toThrow(/non finite step/);
    expect(params[0].every((v) => v === Math.fround(3e38))).toBe(true);
  });
});

test('native and js agree on every guard, step by step', () => {
  const runs = BACKENDS.map((backend) => {
    const { params, grads, opt } = model(backend, 'm', 'float32', 1);
    const reasons: (string | null)[] = [];
    for (let k = 0; k < 12; k++) {
      opt.predict();
      grads[0][k] = k === 3 ? NaN : Math.cos(k);
      const loss = k === 5 ? 1e40 : k === 8 ? NaN : 0.5 + k / 10;
      reasons.push(opt.update(loss, k === 5 ? 1 : undefined).reason);
      grads[0][k] = Math.cos(k);
    }
    return { reasons, params: params.map((p) => Array.from(p)), state: opt.stateDict() };
  });
  expect(runs[0].reasons).toEqual([null, null, null, 'non-finite-gradient', null, 'non-finite-step', null, null, 'non-finite-loss', null, null, null]);
  expect(runs[1].reasons).toEqual(runs[0].reasons);
  expect(runs[1].state.step).toBe(9);
  expect(runs[0].state.step).toBe(9);
});

describe.each(BACKENDS)('%s backend: predict() tells whether it moved the parameters', (backend) => {
  const run = (variant: 'm' | 'v', lazyPredict: boolean) => {
    const params = [Float64Array.from({ length: 9 }, (_, i) => Math.sin(i))];
    const grads = [Float64Array.from({ length: 9 }, (_, i) => Math.cos(i))];
    const layers = [{ param: params[0], grad: grads[0] }];
    const opt = variant === 'm' ? new KoalaM(layers, { backend, lazyPredict }) : new KoalaV(layers, { backend });
    const moves: boolean[] = [];
    const predict = () => {
      const before = params[0].slice();
      const moved = opt.predict();
      expect(typeof moved).toBe('boolean'); // host backends know
      expect(moved).toBe(!before.every((v, i) => v === params[0][i])); // and say what happened
      moves.push(moved as boolean);
    };
    expect(opt.predict()).toBe(variant === 'm'); // the element pass runs (on zero velocities: no value changes)
    opt.update(0.5); // applied: the velocities are not zero any more
    predict();
    expect(opt.update(NaN).applied).toBe(false); // refused: a lazy update did no element pass
    predict();
    return moves;
  };
  test('KOALA-M: always', () => expect(run('m', false)).toEqual([true, true]));
  test('KOALA-M lazy: only when the last update was refused', () => expect(run('m', true)).toEqual([false, true]));
  test('KOALA-V: never', () => expect(run('v', false)).toEqual([false, false]));
});
