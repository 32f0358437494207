// The GPU tests' gate, shared by the test files under test/cuda/: without a usable CUDA device a
// GPU describe block is skipped and one test says why; with KOALA_REQUIRE_CUDA=1 (set by the GPU
// check, bench/gpu/run.sh) every such block fails instead, naming the reason, so that the check
// cannot pass having run nothing.
import { cuda } from '../../lib';

export const gpuStatus = cuda.available();
const required = process.env.KOALA_REQUIRE_CUDA === '1';

/** describe() where a GPU is usable; skipped without one; failing without one under KOALA_REQUIRE_CUDA=1. */
export function describeGpu(name: string, body: () => void): void {
  if (gpuStatus.available) {
    describe(name, body);
  } else if (!required) {
    describe.skip(name, body);
  } else {
    describe(name, () => {
      beforeAll(() => {
        throw new Error(`KOALA_REQUIRE_CUDA=1, but CUDA is not available: ${gpuStatus.reason}`);
      });
      body();
    });
  }
}

/** A test that runs only where the GPU tests of `what` are skipped, so that the reason shows in the output. */
export function reportGpuSkip(what: string): void {
  (gpuStatus.available || required ? test.skip : test)(`without a usable GPU the ${what} are skipped, and the reason is given`, () => {
    expect(gpuStatus.reason).not.toBe('');
    console.log(`${what} skipped: ${gpuStatus.reason}`);
  });
}
