// Learning-rate schedules: their values, the official script's rule, and that they only set lr.
import { cosineLr, KoalaError, KoalaM, LrScheduler, multiStepLr, stepLr } from '../../lib';

const values = (f: (k: number) => number, n: number) => Array.from({ length: n }, (_, k) => f(k));

test('stepLr multiplies by gamma every stepSize steps', () => {
  expect(values(stepLr({ lr: 1, stepSize: 2, gamma: 0.5 }), 6)).toEqual([1, 1, 0.5, 0.5, 0.25, 0.25]);
});

test('multiStepLr follows the official lr_multiplier_functor, counted in steps', () => {
  // The official rule, in epochs and iterations, restated: warmup over warmup_iters, then
  // base_lr * gamma for every milestone epoch reached.
  const batchesPerEpoch = 5;
  const official = (epoch: number, iter: number) => {
    const total = iter + epoch * batchesPerEpoch;
    if (total < 7) return (0.8 * total) / 7;
    return 0.8 * 0.2 ** [2, 4].filter((m) => epoch >= m).length;
  };
  const ours = multiStepLr({ lr: 0.8, milestones: [2, 4].map((e) => e * batchesPerEpoch), gamma: 0.2, warmup: 7 });
  for (let epoch = 0; epoch < 6; epoch++) {
    for (let iter = 0; iter < batchesPerEpoch; iter++) {
      expect(ours(epoch * batchesPerEpoch + iter)).toBeCloseTo(official(epoch, iter), 15);
    }
  }
  expect(ours(0)).toBe(0);
});

test('cosineLr warms up, then falls along a half cosine to minLr and stays there', () => {
  const f = cosineLr({ lr: 1, totalSteps: 12, minLr: 0.1, warmup: 2 });
  expect(f(0)).toBe(0);
  expect(f(1)).toBe(0.5);
  expect(f(2)).toBe(1);
  expect(f(7)).toBeCloseTo(0.55, 15);
  expect(f(12)).toBeCloseTo(0.1, 15);
  expect(f(50)).toBeCloseTo(0.1, 15);
  const falling = values(f, 13).slice(2);
  expect(falling.every((v, i) => i === 0 || v < falling[i - 1])).toBe(true);
});

test('an LrScheduler sets KoalaM.lr before each step and nothing else', () => {
  const layers = [{ param: new Float32Array([1, 2]), grad: new Float32Array([0.5, -0.5]) }];
  const opt = new KoalaM(layers, { backend: 'js' });
  const sched = new LrScheduler(opt, stepLr({ lr: 0.5, stepSize: 1, gamma: 0.5 }));
  const seen: number[] = [];
  for (let i = 0; i < 3; i++) {
    expect(sched.step()).toBe(opt.lr);
    seen.push(opt.lr);
    opt.predict();
    opt.update(1, 1);
  }
  expect(seen).toEqual([0.5, 0.25, 0.125]);
  expect(sched.stepCount).toBe(3);
  expect(new LrScheduler(opt, stepLr({ lr: 1, stepSize: 1 }), 2).step()).toBeCloseTo(0.01, 15);
  opt.dispose();
});

test('bad schedule options throw ERR_KOALA_INVALID_OPTION', () => {
  const bad = [
    () => stepLr({ lr: 1, stepSize: 0 }),
    () => stepLr({ lr: -1, stepSize: 1 }),
    () => multiStepLr({ lr: 1, milestones: [5, 3] }),
    () => multiStepLr({ lr: 1, milestones: [1.5] }),
    () => cosineLr({ lr: 1, totalSteps: 2, warmup: 2 }),
    () => cosineLr({ lr: Number.NaN, totalSteps: 10 }),
  ];
  for (const f of bad) {
    expect(f).toThrow(KoalaError);
    expect(f).toThrow(expect.objectContaining({ code: 'ERR_KOALA_INVALID_OPTION' }));
  }
});
