// The CUDA binding's checks that come before any CUDA call, driven on the addon directly (it loads
// on machines without a GPU), and why CUDA is not available here, in words a user can act on.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { cuda } from '../../lib';
import { loadAddon } from '../../lib/native';

interface RawCuda {
  NativeCudaOptimizer: new (...args: unknown[]) => unknown;
  probe(): { devices: number; error: string };
}

const path = process.env.KOALA_OPTIM_CUDA_ADDON ?? join(__dirname, '..', '..', 'build-cmake', 'Release', 'koala_optim_cuda.node');
const loaded = loadAddon<RawCuda>([path], 'not built');
const withAddon = loaded.module ? describe : describe.skip;
if (!loaded.module) console.log(`CUDA binding tests skipped: no CUDA addon (${loaded.reason})`);

const config = { variant: 0, dtype: 0, threads: 1, weightDecay: 0, eps: 1e-9, kappa: 0.9, qP: 0.01, q: 1, betaR: 0.9, adaptiveR: true,
  lazyPredict: false, p00: 0.1, p01: 0, p11: 0.1, qX: 0.01, sigma: 0.1, r: 1, deviceId: 0, stream: 0n };

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

withAddon('the CUDA binding refuses malformed layers before any CUDA call', () => {
  const make = (lengths: unknown[], mask = new Uint8Array(lengths.length)) => () =>
    new loaded.module!.NativeCudaOptimizer(config, lengths.map((_, i) => BigInt(0x10000 * (i + 1))), lengths.map((_, i) => BigInt(0x900000 + 0x10000 * i)), lengths, mask);
  test.each([
    ['a zero-length layer', [16, 0]],
    ['a negative length', [-4]],
    ['a fractional length', [2.5]],
    ['a length that is not a number', ['8']],
  ])('%s: ERR_KOALA_INVALID_LAYERS', (_name, lengths) => {
    expect(codeOf(make(lengths))).toBe('ERR_KOALA_INVALID_LAYERS');
  });

  test('a sharded rank (config.modelElems) may hold empty slices: they pass the length and overlap checks', () => {
    const rank = { ...config, modelElems: 64 };
    const opt = (lengths: number[]) => () =>
      new loaded.module!.NativeCudaOptimizer(rank, [0x30000n, 0x30000n], [0x40000n, 0x40000n], lengths, new Uint8Array(2));
    // Layer 0's empty slice lies where layer 1's begins: no bytes, so no overlap; what refuses the
    // bogus addresses is the device pointer check (or the absent driver), after both checks.
    expect(['ERR_KOALA_INVALID_DEVICE_POINTER', 'ERR_KOALA_CUDA']).toContain(codeOf(opt([0, 4])));
    expect(codeOf(opt([-1, 4]))).toBe('ERR_KOALA_INVALID_LAYERS');
    expect(codeOf(() => new loaded.module!.NativeCudaOptimizer(config, [0x30000n, 0x30000n], [0x40000n, 0x40000n], [0, 4], new Uint8Array(2)))).toBe(
      'ERR_KOALA_INVALID_LAYERS',
    ); // unsharded: never empty
  });

  test('a skip mask of the wrong size', () => {
    expect(codeOf(make([4, 4], new Uint8Array(3)))).toBe('ERR_KOALA_INVALID_ARGUMENT');
  });

  test.each([
    ['a grad overlapping its param', [0x10000n], [0x10000n + 396n], [100]],
    ['two layers sharing memory', [0x10000n, 0x20000n + 392n], [0x20000n, 0x30000n], [100, 4]],
  ])('%s: refused by address (the only aliasing check of device layers) before the device is asked', (_name, params, grads, lengths) => {
    const opt = () => new loaded.module!.NativeCudaOptimizer(config, params, grads, lengths, new Uint8Array(lengths.length));
    expect(codeOf(opt)).toBe('ERR_KOALA_OVERLAP');
  });
});

test('without a usable GPU, cuda.available() says which of the causes it is', () => {
  const status = cuda.available();
  if (status.available) return;
  console.log(`CUDA is not available here: ${status.reason}`);
  if (!loaded.module) {
    expect(status.reason).toMatch(/no CUDA addon|does not load/);
  } else if (!existsSync('/dev/nvidiactl')) {
    // No NVIDIA driver on this machine: not "driver too old" (what CUDA's own error says then).
    expect(status.reason).toMatch(/^no NVIDIA driver is loaded/);
  } else {
    expect(status.reason).toMatch(/driver is too old|no CUDA device|cudaError/);
  }
});
