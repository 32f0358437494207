// The protocol is defined once in C++ (native/include/koala/protocol.h) and mirrored once in
// TypeScript (lib/protocol.ts): every addon that speaks it exports its values, and they must agree.
import { join } from 'node:path';

import { loadAddon, nativeModule, nativeStatus } from '../../lib/native';
import { PROTOCOL, type FilterSnapshot } from '../../lib/protocol';
import { ReferenceBackend } from '../../lib/reference';

test('the CPU addon exports the protocol of lib/protocol.ts', () => {
  expect(nativeModule()?.protocol).toEqual(PROTOCOL);
});

test('the CUDA addon exports the same protocol (where it is built; it loads without a GPU)', () => {
  const path = process.env.KOALA_OPTIM_CUDA_ADDON ?? join(__dirname, '..', '..', 'build-cmake', 'Release', 'koala_optim_cuda.node');
  const l = loadAddon<{ protocol: unknown }>([path], 'not built');
  if (!l.module) {
    console.log(`no CUDA addon to compare: ${l.reason}`);
    return;
  }
  expect(l.module.protocol).toEqual(PROTOCOL);
});

test('a filter snapshot crosses the boundary by name, both ways, on every host backend', () => {
  const snap: FilterSnapshot = { p00: 0.25, p01: -0.125, p11: 3, qX: 0.01, sigma: 7, r: 0.5, pending: 12.5, steps: 41 };
  const config = {
    variant: PROTOCOL.variant.momentum,
    dtype: PROTOCOL.dtype.float64,
    threads: 1,
    weightDecay: 0,
    eps: 1e-9,
    kappa: 0.9,
    qP: 0.01,
    q: 1,
    betaR: 0.9,
    adaptiveR: true,
    lazyPredict: true,
    symmetric: false,
    p00: 0.1,
    p01: 0,
    p11: 0.1,
    qX: 0.01,
    sigma: 0.1,
    r: 1,
  };
  const params = [new Float64Array(3)];
  const grads = [new Float64Array(3)];
  const mod = nativeModule();
  if (!mod) throw new Error(nativeStatus().reason);
  for (const backend of [new mod.NativeOptimizer(config, params, grads, new Uint8Array(1)), new ReferenceBackend(config, params, grads, new Uint8Array(1))]) {
    expect(backend.getFilter()).toEqual({ p00: 0.1, p01: 0, p11: 0.1, qX: 0.01, sigma: 0.1, r: 1, pending: PROTOCOL.noPendingPredict, steps: 0 });
    backend.setFilter(snap);
    expect(backend.getFilter()).toEqual(snap);
    backend.dispose();
  }
});

test('the native binding refuses a snapshot whose step count is not an integer', () => {
  const mod = nativeModule()!;
  const opt = new mod.NativeOptimizer(
    { variant: 1, dtype: 0, threads: 1, weightDecay: 0, eps: 0, kappa: 0.9, qP: 0, q: 1, betaR: 0.9, adaptiveR: true, lazyPredict: false, symmetric: false, p00: 0, p01: 0, p11: 0, qX: 0, sigma: 0.1, r: 1 },
    [new Float32Array(2)],
    [new Float32Array(2)],
    new Uint8Array(1),
  );
  const good = opt.getFilter();
  for (const steps of [1.5, -1, NaN]) {
    expect(() => opt.setFilter({ ...good, steps })).toThrow(expect.objectContaining({ code: 'ERR_KOALA_INVALID_ARGUMENT' }));
  }
  expect(opt.getFilter()).toEqual(good);
  opt.dispose();
});

test('layer-state calls are checked once for both bindings: KOALA-V has none, kinds and layers must exist', () => {
  const mod = nativeModule()!;
  const make = (variant: 0 | 1) =>
    new mod.NativeOptimizer(
      { variant, dtype: 1, threads: 1, weightDecay: 0, eps: 0, kappa: 0.9, qP: 0, q: 1, betaR: 0.9, adaptiveR: true, lazyPredict: false, p00: 0.1, p01: 0, p11: 0.1, qX: 0, sigma: 0.1, r: 1 },
      [new Float64Array(3)],
      [new Float64Array(3)],
      new Uint8Array(1),
    );
  const code = (fn: () => void) => {
    try {
      fn();
    } catch (e) {
      return (e as { code?: string }).code;
    }
    return undefined;
  };
  const v = make(PROTOCOL.variant.vanilla);
  expect(code(() => v.readLayerState(PROTOCOL.layerState.velocity, 0, new Float64Array(3)))).toBe('ERR_KOALA_INVALID_ARGUMENT');
  const m = make(PROTOCOL.variant.momentum);
  expect(code(() => m.readLayerState(2 as 0, 0, new Float64Array(3)))).toBe('ERR_KOALA_INVALID_ARGUMENT');
  expect(code(() => m.readLayerState(PROTOCOL.layerState.average, 1, new Float64Array(3)))).toBe('ERR_KOALA_INVALID_ARGUMENT');
  expect(code(() => m.readLayerState(PROTOCOL.layerState.average, 0, new Float32Array(3)))).toBe('ERR_KOALA_INVALID_ARGUMENT');
  m.writeLayerState(PROTOCOL.layerState.average, 0, Float64Array.of(1, 2, 3));
  const out = new Float64Array(3);
  m.readLayerState(PROTOCOL.layerState.average, 0, out);
  expect(Array.from(out)).toEqual([1, 2, 3]);
  [v, m].forEach((o) => o.dispose());
});
