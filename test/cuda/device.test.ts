// The CUDA backend on a GPU: the golden runs through device buffers, random layer lists against
// the CPU backend, the guards, device pointers checked. Skipped, with the reason printed, where
// no usable CUDA device is present; KOALA_REQUIRE_CUDA=1 (set by the GPU check, bench/gpu/run.sh)
// turns every one of them into a failure that says why.
import { cuda, KoalaM, KoalaV, type DeviceTensor, type DType, type FloatArray } from '../../lib';
import { errorCode, flatP, goldenFiles, loadGolden, makeArray, optionsOf, relMax, relNorm, rng } from '../helpers';

import { describeGpu, gpuStatus as status, reportGpuSkip } from './gpu';

reportGpuSkip('CUDA tests');

type Opt = KoalaM | KoalaV;

/** Device copies of host arrays, freed by release(). */
class DeviceSet {
  readonly tensors: DeviceTensor[];

  constructor(arrays: FloatArray[], dtype: DType) {
    this.tensors = arrays.map((a) => {
      const t = cuda.alloc(a.length, dtype);
      cuda.upload(t, a);
      return t;
    });
  }

  set(arrays: ArrayLike<number>[]): void {
    this.tensors.forEach((t, l) => {
      const host = t.dtype === 'float32' ? new Float32Array(t.length) : new Float64Array(t.length);
      host.set(arrays[l]);
      cuda.upload(t, host);
    });
  }

  read(): FloatArray[] {
    return this.tensors.map((t) => cuda.download(t));
  }

  release(): void {
    this.tensors.forEach((t) => cuda.free(t));
  }
}

describeGpu('golden runs through device buffers', () => {
  test.each(goldenFiles())('%s, free-running', (file) => {
    const g = loadGolden(file);
    const init = g.initial.params.map((p) => makeArray(g.dtype, p.length, (i) => p[i]));
    const params = new DeviceSet(init, g.dtype);
    const grads = new DeviceSet(init.map((p) => p.slice().fill(0)), g.dtype);
    const layers = params.tensors.map((param, i) => ({ param, grad: grads.tensors[i], name: g.layers[i].name }));
    const opt: Opt = g.optimizer === 'koala-m' ? new KoalaM(layers, optionsOf(g)) : new KoalaV(layers, optionsOf(g));
    expect(opt.backend).toBe('cuda');
    const tol = g.dtype === 'float64' ? 1e-10 : 1e-5;
    for (const s of g.steps) {
      opt.lr = s.lr;
      opt.predict();
      grads.set(s.grads);
      const info = opt.update(s.loss, s.lossSq);
      expect(info.applied).toBe(true);
      expect(info.skippedLayers).toEqual(s.grads.flatMap((gr, l) => (gr.every((v) => v === 0) ? [l] : [])));
      expect(relNorm(params.read(), s.afterUpdate.params)).toBeLessThanOrEqual(tol);
      if (opt instanceof KoalaM) {
        expect(relNorm(opt.velocities(), s.afterUpdate.velocities!)).toBeLessThanOrEqual(tol);
        expect(relMax(flatP(opt.state.P), flatP(s.afterUpdate.P!))).toBeLessThanOrEqual(tol);
      } else {
        expect(relMax([opt.state.sigma], [s.afterUpdate.sigma!])).toBeLessThanOrEqual(tol);
      }
      expect(relMax([opt.state.R], [s.afterUpdate.R])).toBeLessThanOrEqual(tol);
    }
    opt.dispose();
    params.release();
    grads.release();
  });

  test('the loss read from device memory (no host value): the same trajectory', () => {
    const g = loadGolden('m-default-f64.json');
    const init = g.initial.params.map((p) => Float64Array.from(p));
    const params = new DeviceSet(init, 'float64');
    const grads = new DeviceSet(init.map((p) => p.slice().fill(0)), 'float64');
    const losses = cuda.alloc(2, 'float64');
    const opt = new KoalaM(params.tensors.map((param, i) => ({ param, grad: grads.tensors[i] })));
    const at = (k: number) => ({ device: 'cuda' as const, deviceId: 0, ptr: losses.ptr + BigInt(8 * k), dtype: 'float64' as const });
    for (const s of g.steps) {
      opt.predict();
      grads.set(s.grads);
      cuda.upload(losses, Float64Array.of(s.loss, s.lossSq));
      opt.update(at(0), at(1));
    }
    expect(relNorm(params.read(), g.steps[g.steps.length - 1].afterUpdate.params)).toBeLessThanOrEqual(1e-10);
    opt.dispose();
    [params, grads].forEach((d) => d.release());
    cuda.free(losses);
  });
});

describeGpu('random layer lists against the CPU backend (float32, 1e-5 per step)', () => {
  const r = rng(2024);
  const tiny = Array.from({ length: 320 }, () => 1 + Math.floor(r() * 40));
  const sizes = [...tiny.slice(0, 100), 600000, ...tiny.slice(100, 200), 400001, 16384, ...tiny.slice(200), 7];
  test.each([
    ['KOALA-M', false],
    ['KOALA-M lazy', true],
    ['KOALA-V', false],
  ] as const)('%s', (name, lazyPredict) => {
    const init = sizes.map((n) => makeArray('float32', n, () => r() - 0.5));
    const hostParams = init.map((p) => p.slice());
    const hostGrads = init.map((p) => p.slice().fill(0));
    const params = new DeviceSet(init, 'float32');
    const grads = new DeviceSet(hostGrads, 'float32');
    const options = { weightDecay: 5e-4, ...(name === 'KOALA-V' ? {} : { lazyPredict }) };
    const make = (layers: { param: FloatArray | DeviceTensor; grad: FloatArray | DeviceTensor }[]): Opt =>
      name === 'KOALA-V' ? new KoalaV(layers, options) : new KoalaM(layers, options);
    const gpu = make(params.tensors.map((param, i) => ({ param, grad: grads.tensors[i] })));
    const cpu = make(hostParams.map((param, i) => ({ param, grad: hostGrads[i] })));
    expect([gpu.backend, cpu.backend]).toEqual(['cuda', 'native']);
    for (let step = 0; step < 20; step++) {
      const loss = 0.1 + r();
      const g = sizes.map((n, l) => Float32Array.from({ length: n }, () => (l === 3 ? 0 : r() - 0.5)));
      gpu.predict();
      cpu.predict();
      grads.set(g);
      g.forEach((src, l) => hostGrads[l].set(src));
      const [a, b] = [gpu.update(loss, loss * loss * 1.2), cpu.update(loss, loss * loss * 1.2)];
      expect(a.skippedLayers).toEqual(b.skippedLayers);
      expect(relNorm(params.read(), hostParams)).toBeLessThanOrEqual(1e-5);
      const [fg, fc] = [gpu.stateDict().filter, cpu.stateDict().filter];
      expect(relMax(fg, fc)).toBeLessThanOrEqual(1e-5);
    }
    [gpu, cpu].forEach((o) => o.dispose());
    [params, grads].forEach((d) => d.release());
  });
});

describeGpu('guards and device checks', () => {
  const setup = () => {
    const init = [Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i)), Float32Array.from({ length: 10 }, (_, i) => i / 10)];
    const params = new DeviceSet(init, 'float32');
    const grads = new DeviceSet(init.map((p) => p.map((v) => v * 0.1)), 'float32');
    const opt = new KoalaM(params.tensors.map((param, i) => ({ param, grad: grads.tensors[i] })));
    const release = () => {
      opt.dispose();
      [params, grads].forEach((d) => d.release());
    };
    return { params, grads, opt, release };
  };

  test('NaN in a gradient, or a NaN loss on the device: refused, device state exactly as before', () => {
    const { params, grads, opt, release } = setup();
    opt.predict();
    opt.update(0.5, 0.3);
    opt.predict();
    const before = { params: params.read(), state: opt.stateDict() };
    const g = grads.read();
    g[1][3] = NaN;
    grads.set(g);
    const info = opt.update(0.5, 0.3);
    expect(info).toMatchObject({ applied: false, reason: 'non-finite-gradient' });
    expect(params.read()).toEqual(before.params);
    const after = opt.stateDict();
    expect(after.filter).toEqual(before.state.filter);
    expect(after.step).toBe(before.state.step);
    const loss = cuda.alloc(1, 'float32');
    cuda.upload(loss, Float32Array.of(NaN));
    g[1][3] = 0;
    grads.set(g);
    opt.predict();
    expect(opt.update({ ...loss }, 0.3)).toMatchObject({ applied: false, reason: 'non-finite-loss' });
    cuda.free(loss);
    release();
  });

  test('every layer skipped: P unchanged', () => {
    const { grads, opt, release } = setup();
    opt.predict();
    grads.set(grads.tensors.map((t) => new Float32Array(t.length)));
    const P = opt.state.P;
    expect(opt.update(0.5, 0.3)).toMatchObject({ applied: true, skippedLayers: [0, 1], maxGain: 0 });
    expect(opt.state.P).toEqual(P);
    release();
  });

  test('a loss at an address that is not device memory, or misaligned: refused before any launch', () => {
    const { params, opt, release } = setup();
    opt.predict();
    const before = params.read();
    const host = { device: 'cuda', deviceId: 0, ptr: 0x1000n, dtype: 'float32' } as const;
    expect(errorCode(() => opt.update(host, 0.3))).toBe('ERR_KOALA_INVALID_DEVICE_POINTER');
    const t = cuda.alloc(4, 'float64');
    expect(errorCode(() => opt.update(0.5, { ...t, ptr: t.ptr + 4n }))).toBe('ERR_KOALA_INVALID_DEVICE_POINTER');
    expect(params.read()).toEqual(before);
    expect(opt.update(0.5, 0.3).applied).toBe(true);
    cuda.free(t);
    release();
  });

  test('an info read after the next update() is refused', () => {
    const { opt, release } = setup();
    opt.predict();
    const first = opt.update(0.5, 0.3);
    opt.predict();
    opt.update(0.5, 0.3);
    expect(errorCode(() => first.applied)).toBe('ERR_KOALA_STALE_INFO');
    release();
  });

  test('pointers that are not device memory of the device, or misaligned', () => {
    const t = cuda.alloc(64, 'float32');
    const other = cuda.alloc(64, 'float32');
    const layer = (param: DeviceTensor) => [{ param, grad: other }];
    expect(errorCode(() => new KoalaM(layer({ ...t, ptr: 0x1000n })))).toBe('ERR_KOALA_INVALID_DEVICE_POINTER');
    expect(errorCode(() => new KoalaM([{ param: { ...t, ptr: t.ptr + 2n, length: 8 }, grad: { ...other, length: 8 } }]))).toBe('ERR_KOALA_INVALID_DEVICE_POINTER');
    if (status.devices < 2) expect(errorCode(() => new KoalaM([{ param: { ...t, deviceId: 1 }, grad: { ...other, deviceId: 1 } }]))).toBe('ERR_KOALA_INVALID_DEVICE_POINTER');
    cuda.free(t);
    cuda.free(other);
  });

  test('a refused step leaves the phase at predicted, as on the host; the outcome settles it', () => {
    const { grads, opt, release } = setup();
    opt.predict();
    const g = grads.read();
    g[0][0] = Infinity;
    grads.set(g);
    const info = opt.update(0.5, 0.3);
    expect(opt.phase).toBe('predicted'); // read from the device
    expect(info).toMatchObject({ applied: false, reason: 'non-finite-gradient' });
    g[0][0] = 0.25;
    grads.set(g);
    expect(opt.update(0.5, 0.3).applied).toBe(true); // no second predict() needed
    expect(opt.phase).toBe('updated');
    release();
  });

  test('lazy predict: predict() says unknown until the outcome is read, then what happened', () => {
    const params = new DeviceSet([Float32Array.from({ length: 300 }, (_, i) => Math.sin(i))], 'float32');
    const grads = new DeviceSet([Float32Array.from({ length: 300 }, (_, i) => Math.cos(i))], 'float32');
    const opt = new KoalaM([{ param: params.tensors[0], grad: grads.tensors[0] }], { lazyPredict: true });
    expect(opt.predict()).toBe(true); // nothing pending yet
    opt.update(0.5, 0.3);
    expect(opt.predict()).toBe('unknown');
    expect(opt.update(0.5, 0.3).applied).toBe(true); // read: an applied lazy update did the element pass
    expect(opt.predict()).toBe(false);
    expect(opt.update(NaN, 0.3).applied).toBe(false);
    expect(opt.predict()).toBe(true); // after a refused step the element pass runs in full
    opt.dispose();
    [params, grads].forEach((d) => d.release());
  });

  test('a device that does not exist: ERR_KOALA_INVALID_DEVICE_POINTER, and no error is left for the next call', () => {
    const t = cuda.alloc(64, 'float32');
    const other = cuda.alloc(64, 'float32');
    const missing = status.devices; // the first ordinal past the last device
    expect(errorCode(() => new KoalaM([{ param: { ...t, deviceId: missing }, grad: { ...other, deviceId: missing } }]))).toBe('ERR_KOALA_INVALID_DEVICE_POINTER');
    const { opt, release } = setup();
    opt.predict(); // threw "invalid device ordinal" when the failed selection's error stayed recorded
    expect(opt.update(0.5, 0.3).applied).toBe(true);
    release();
    cuda.free(t);
    cuda.free(other);
  });

  test('a loss address checked as float32 is checked again as float64 (4 mod 8 is refused)', () => {
    const { params, opt, release } = setup();
    const buf = cuda.alloc(4, 'float32');
    cuda.upload(buf, Float32Array.of(0.5, 0.5, 0.5, 0.5));
    const at4 = { device: 'cuda', deviceId: 0, ptr: buf.ptr + 4n, dtype: 'float32' } as const;
    opt.predict();
    expect(opt.update(at4, 0.3).applied).toBe(true);
    opt.predict();
    const before = params.read();
    expect(errorCode(() => opt.update({ ...at4, dtype: 'float64' }, 0.3))).toBe('ERR_KOALA_INVALID_DEVICE_POINTER');
    expect(params.read()).toEqual(before);
    expect(opt.update(0.5, 0.3).applied).toBe(true); // the context is alive
    cuda.free(buf);
    release();
  });

  test('upload and download on an explicit stream', () => {
    const t = cuda.alloc(5, 'float64');
    cuda.upload(t, Float64Array.of(1, 2, 3, 4, 5), 0n);
    expect(Array.from(cuda.download(t, 0n))).toEqual([1, 2, 3, 4, 5]);
    cuda.free(t);
  });

  test('stateDict() from the device resumes bitwise on another device optimizer', () => {
    const a = setup();
    for (let k = 0; k < 3; k++) {
      a.opt.predict();
      a.opt.update(0.4, 0.2);
    }
    const b = setup();
    b.params.set(a.params.read());
    b.opt.loadStateDict(structuredClone(a.opt.stateDict()));
    for (const o of [a, b]) {
      o.opt.predict();
      o.opt.update(0.3, 0.1);
    }
    expect(b.params.read()).toEqual(a.params.read());
    expect(b.opt.stateDict().filter).toEqual(a.opt.stateDict().filter);
    a.release();
    b.release();
  });
});
