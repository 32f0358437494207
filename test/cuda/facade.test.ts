// The device side of the facade that needs no GPU: descriptors are checked, and a machine without
// CUDA says why, before anything is allocated. Runs everywhere, in CI.
import { cuda, KoalaError, KoalaM, type DeviceTensor } from '../../lib';
import { errorCode } from '../helpers';

const dev = (ptr: bigint, length: number, extra: Partial<DeviceTensor> = {}): DeviceTensor => ({
  device: 'cuda',
  deviceId: 0,
  ptr,
  length,
  dtype: 'float32',
  ...extra,
});

const status = cuda.available();

test('cuda.available() answers, and says why not when it is not', () => {
  expect(typeof status.available).toBe('boolean');
  if (status.available) {
    expect(status.devices).toBeGreaterThan(0);
    expect(status.reason).toBe('');
  } else {
    expect(status.devices).toBe(0);
    expect(status.reason.length).toBeGreaterThan(10);
    console.log(`CUDA is not available here: ${status.reason}`);
  }
});

describe('device layers are checked before any CUDA call', () => {
  const ok = [{ param: dev(0x10000n, 100), grad: dev(0x20000n, 100) }];
  test.each([
    ['a host array mixed with device tensors', [{ param: dev(0x10000n, 4), grad: new Float32Array(4) }], 'ERR_KOALA_MIXED_MEMORY'],
    ['a device layer after a host layer', [{ param: new Float32Array(4), grad: new Float32Array(4) }, ok[0]], 'ERR_KOALA_MIXED_MEMORY'],
    ['a pointer that is not a BigInt', [{ param: { ...dev(1n, 4), ptr: 4096 }, grad: dev(0x20000n, 4) }], 'ERR_KOALA_INVALID_DEVICE_POINTER'],
    ['a null pointer', [{ param: dev(0n, 4), grad: dev(0x20000n, 4) }], 'ERR_KOALA_INVALID_DEVICE_POINTER'],
    ['an unknown device kind', [{ param: dev(0x10000n, 4, { device: 'metal' as 'cuda' }), grad: dev(0x20000n, 4) }], 'ERR_KOALA_INVALID_ARRAY'],
    ['an unknown dtype', [{ param: dev(0x10000n, 4, { dtype: 'float16' as 'float32' }), grad: dev(0x20000n, 4) }], 'ERR_KOALA_INVALID_ARRAY'],
    ['param and grad of different dtypes', [{ param: dev(0x10000n, 4), grad: dev(0x20000n, 4, { dtype: 'float64' }) }], 'ERR_KOALA_DTYPE_MISMATCH'],
    ['param and grad of different lengths', [{ param: dev(0x10000n, 4), grad: dev(0x20000n, 5) }], 'ERR_KOALA_LENGTH_MISMATCH'],
    ['tensors on two devices', [{ param: dev(0x10000n, 4), grad: dev(0x20000n, 4, { deviceId: 1 }) }], 'ERR_KOALA_INVALID_DEVICE_POINTER'],
    ['an empty device layer', [{ param: dev(0x10000n, 0), grad: dev(0x20000n, 0) }], 'ERR_KOALA_INVALID_LAYERS'],
  ])('%s', (_name, layers, code) => {
    expect(errorCode(() => new KoalaM(layers as never))).toBe(code);
  });

  test("backend: 'js' or 'native' with device layers", () => {
    expect(errorCode(() => new KoalaM(ok, { backend: 'js' }))).toBe('ERR_KOALA_INVALID_OPTION');
    expect(errorCode(() => new KoalaM(ok, { backend: 'native' }))).toBe('ERR_KOALA_INVALID_OPTION');
  });

  test('a stream with host layers, and a stream that is not a BigInt', () => {
    const host = [{ param: new Float32Array(3), grad: new Float32Array(3) }];
    expect(errorCode(() => new KoalaM(host, { stream: 0n }))).toBe('ERR_KOALA_INVALID_OPTION');
    expect(errorCode(() => new KoalaM(ok, { stream: 7 as unknown as bigint }))).toBe('ERR_KOALA_INVALID_OPTION');
  });

  test('a device scalar loss with host layers', () => {
    const host = [{ param: new Float32Array(3), grad: new Float32Array(3).fill(1) }];
    const opt = new KoalaM(host);
    opt.predict();
    const loss = { device: 'cuda', deviceId: 0, ptr: 0x40000n, dtype: 'float32' } as const;
    expect(errorCode(() => opt.update(loss, loss))).toBe('ERR_KOALA_INVALID_LOSS');
    expect(opt.update(0.5, 0.3).applied).toBe(true); // nothing was changed by the refused call
  });

  (status.available ? test.skip : test)('valid descriptors on a machine without CUDA: ERR_KOALA_CUDA_UNAVAILABLE, with the reason', () => {
    let caught: KoalaError | undefined;
    try {
      new KoalaM(ok);
    } catch (e) {
      caught = e as KoalaError;
    }
    expect(caught?.code).toBe('ERR_KOALA_CUDA_UNAVAILABLE');
    expect(caught?.message).toContain(status.reason);
    expect(errorCode(() => cuda.alloc(4))).toBe('ERR_KOALA_CUDA_UNAVAILABLE');
  });
});
