// The CUDA optimizer's rules that need no GPU to test, run through the development addon over
// scripted CUDA error states and device queries: Note [launch errors] (native/cuda/launch.h) and
// Note [device scalar check] (native/binding/scalar_check.h). The same templates run in the CUDA addon.
import { devAddon, devAddonStatus } from '../../bench/dev-addon';

const dev = devAddon();
if (!dev) throw new Error(`the development addon does not load: ${devAddonStatus().reason}`);
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
