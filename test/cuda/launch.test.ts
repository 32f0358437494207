// The CUDA optimizer's rules that need no GPU to test, run through the development addon over
// scripted CUDA error states and device queries: Note [launch errors] (native/cuda/launch.h) and
// Note [device scalar check] (native/binding/scalar_check.h). The same templates run in the CUDA addon.
import { devKernels } from '../../bench/dev-addon';

const dev = devKernels();
const { launchSequence, scalarCheck } = dev;

describe('launch errors', () => {
  test('an error an earlier call left behind is not reported as this call\'s', () => {
    // 101: cudaErrorInvalidDevice, left by a failed cudaSetDevice that the caller caught.
    expect(launchSequence([101, 0, 0, 0], 3, false)).toEqual({ enqueued: 3, error: '', broken: false });
  });

  test('a failed first launch stops the sequence and leaves the optimizer usable (nothing was queued)', () => {
    expect(launchSequence([0, 9], 4, false)).toEqual({ enqueued: 1, error: 'update, kernel: scripted error 9', broken: false });
  });

  test('a launch failing after others were queued stops the sequence and breaks the optimizer', () => {
    const r = launchSequence([0, 0, 0, 9, 0], 5, false);
    expect(r.enqueued).toBe(3); // the fourth launch was never made
    expect(r.broken).toBe(true);
    expect(r.error).toContain('scripted error 9');
    expect(r.error).toContain('half done');
  });

  test('a broken optimizer refuses the next call before launching anything: a retry cannot apply a step twice', () => {
    const r = launchSequence([0, 0, 0], 2, true);
    expect(r).toMatchObject({ enqueued: 0, broken: true });
    expect(r.error).toMatch(/state is unknown/);
  });
});

describe('device-scalar check and its cache', () => {
  test('a passed address is not queried again for the same element size', () => {
    expect(scalarCheck([[0, 0x1000, 4, ''], [0, 0x1000, 4, 'would fail']])).toEqual([['', true], ['', false]]);
  });

  test('the same address as float64 is checked anew, and a float64 at 4 mod 8 is refused without a query', () => {
    const res = scalarCheck([
      [0, 0x1004, 4, ''], // float32 at 4 mod 8: fine
      [0, 0x1004, 8, ''], // the same address as float64: misaligned, whatever the cache says
      [0, 0x1000, 4, ''],
      [0, 0x1000, 8, 'ends outside device memory'], // same address, 8 bytes: queried again
    ]);
    expect(res).toEqual([
      ['', true],
      ['is not aligned to its element size', false],
      ['', true],
      ['ends outside device memory', true],
    ]);
  });

  test('a failed check is not cached, and the two slots (loss, lossSq) are apart', () => {
    expect(
      scalarCheck([
        [0, 0x2000, 8, 'is not device memory'],
        [0, 0x2000, 8, ''],
        [1, 0x2000, 8, ''],
        [0, 0x2000, 8, 'x'],
      ]),
    ).toEqual([
      ['is not device memory', true],
      ['', true],
      ['', true],
      ['', false],
    ]);
  });
});

describe("the step sequence in the CUDA kernel's order decides as the CPU's fold", () => {
  const { decideStep } = dev;
  const config = { variant: 0 as const, dtype: 0 as const, threads: 1, weightDecay: 5e-4, eps: 1e-3, kappa: 0.9, qP: 0.01, q: 1, betaR: 0.9,
    adaptiveR: true, lazyPredict: false, p00: 0.1, p01: 0.02, p11: 0.1, qX: 0.01, sigma: 0.1, r: 1 };
  const snapshot = { p00: 0.3, p01: 0.05, p11: 0.2, qX: 0.01, sigma: 0.4, r: 0.7, pending: -1, steps: 12 };

  test('on random layer sums (skipped layers, NaN and Inf, negative losses, huge rates), bitwise', () => {
    let seed = 7;
    const r = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    const odd = [NaN, Infinity, 0, 1e-12, 1e300];
    for (let trial = 0; trial < 400; trial++) {
      const n = 1 + Math.floor(r() * 700);
      const sums = Float64Array.from({ length: 3 * n }, () => (r() < 0.003 ? odd[Math.floor(r() * odd.length)] : r() < 0.1 ? 0 : r() * 10));
      const loss = (r() - 0.3) * 5;
      const lr = r() < 0.05 ? 1e40 : r();
      const cfg = { ...config, variant: (trial % 2) as 0 | 1, dtype: ((trial >> 1) % 2) as 0 | 1 };
      const fold = decideStep(cfg, snapshot, sums, loss, loss * loss, lr, 0);
      for (const lanes of [256, 8]) {
        const tree = decideStep(cfg, snapshot, sums, loss, loss * loss, lr, lanes);
        expect(tree).toEqual(fold);
        expect(Object.is(tree.maxGain, fold.maxGain)).toBe(true);
      }
    }
  });

  test('the max gain is the largest over updated layers, also when every gain is negative (a negative device lossSq)', () => {
    // R' = 0.9 * 0.7 + 0.1 * lossSq < 0, so S = |h|^2 P + R' < 0 for small |h|^2: every m is negative.
    const lossSq = -20;
    const rNext = config.betaR * snapshot.r + (1 - config.betaR) * lossSq; // as filter_update_r computes it
    const sums = Float64Array.of(0, 1, 0, 1, 1, 1, 2, 1, 2, 3, 1, 3); // layer 0 skipped (g = 0)
    const m = (hh: number) => hh / (hh * snapshot.p00 + rNext);
    for (const lanes of [0, 256]) {
      const step = decideStep(config, snapshot, sums, 0.5, lossSq, 0.1, lanes);
      expect(step).toMatchObject({ status: 0, skipped: 1 });
      expect(Array.from(step.skipMask)).toEqual([1, 0, 0, 0]);
      expect(step.maxGain).toBe(Math.max(m(1), m(2), m(3)));
      expect(step.maxGain).toBeLessThan(0); // not the 0 that a max started at 0 would give
    }
  });
});
