// The paper's variants (target, stateNoise, direction) on the CUDA backend against the CPU backend,
// float64, with weight decay, a skipped layer and lazy predict. Skipped, with the reason printed,
// where no usable CUDA device is present, failing instead under KOALA_REQUIRE_CUDA=1 (the CPU side is checked against a restatement of
// ALGORITHM.md in test/parity/variants.test.ts).
import { cuda, KoalaM, KoalaV, type DeviceTensor, type FloatArray, type KoalaMOptions, type KoalaVOptions } from '../../lib';
import { makeArray, relMax, relNorm, rng } from '../helpers';
import { describeGpu, reportGpuSkip } from './gpu';

reportGpuSkip('CUDA variant tests');

const SIZES = [70000, 3, 17, 16384, 1];
const ZERO_GRAD_LAYER = 1;

const CASES: [string, boolean, KoalaMOptions & KoalaVOptions][] = [
  ['KOALA-M, absolute target', true, { target: 'absolute' }],
  ['KOALA-M, paper state noise', true, { stateNoise: 'paper' }],
  ['KOALA-M, both, lazy predict', true, { target: 'absolute', stateNoise: 'paper', lazyPredict: true }],
  ['KOALA-V, absolute target', false, { target: 'absolute' }],
  ['KOALA-V, along h', false, { direction: 'regularized' }],
  ['KOALA-V, both', false, { target: 'absolute', direction: 'regularized' }],
];

describeGpu('variants on the device against the CPU backend (float64, 1e-10 over 30 steps)', () => {
  test.each(CASES)('%s', (_, momentum, given) => {
    const r = rng(77);
    const init = SIZES.map((n) => makeArray('float64', n, () => r() - 0.5));
    const upload = (arrays: FloatArray[]) =>
      arrays.map((a) => {
        const t = cuda.alloc(a.length, 'float64');
        cuda.upload(t, a);
        return t;
      });
    const hostParams = init.map((p) => p.slice());
    const hostGrads = init.map((p) => p.slice().fill(0));
    const params = upload(init);
    const grads = upload(hostGrads);
    const options = { weightDecay: 0.01, ...given };
    const make = (layers: { param: FloatArray | DeviceTensor; grad: FloatArray | DeviceTensor }[]) =>
      momentum ? new KoalaM(layers, options) : new KoalaV(layers, options as KoalaVOptions);
    const gpu = make(params.map((param, i) => ({ param, grad: grads[i] })));
    const cpu = make(hostParams.map((param, i) => ({ param, grad: hostGrads[i] })));
    expect([gpu.backend, cpu.backend]).toEqual(['cuda', 'native']);
    for (let step = 0; step < 30; step++) {
      gpu.lr = cpu.lr = 0.1 + r();
      const loss = 0.5 + r();
      // Gradients of norm about 1 per layer (Note [conditioned test problem], test/parity/variants.test.ts).
      const g = SIZES.map((n, l) => Float64Array.from({ length: n }, () => (l === ZERO_GRAD_LAYER ? 0 : (r() - 0.5) / Math.sqrt(n))));
      gpu.predict();
      cpu.predict();
      g.forEach((src, l) => {
        cuda.upload(grads[l], src);
        hostGrads[l].set(src);
      });
      const [a, b] = [gpu.update(loss, loss * loss * 1.2), cpu.update(loss, loss * loss * 1.2)];
      expect(a.skippedLayers).toEqual([ZERO_GRAD_LAYER]);
      expect(b.skippedLayers).toEqual([ZERO_GRAD_LAYER]);
      expect(relNorm(params.map((t) => cuda.download(t)), hostParams)).toBeLessThanOrEqual(1e-10);
      const [fg, fc] = [gpu.stateDict().filter, cpu.stateDict().filter];
      expect(relMax(fg, fc)).toBeLessThanOrEqual(1e-10);
    }
    [gpu, cpu].forEach((o) => o.dispose());
    [...params, ...grads].forEach((t) => cuda.free(t));
  });
});
