// Sharded steps on the CUDA backend (Note [sharded device step], native/cuda/optimizer.h): three
// ranks on one GPU, each a CUDA optimizer over device slices of the same model, with a reduction
// written for one GPU (each rank's device sums copied out, added in rank order, copied back),
// against the CPU backend's single optimizer. Skipped, with the reason printed, without a GPU;
// failing instead under KOALA_REQUIRE_CUDA=1 (test/cuda/gpu.ts).
import { cuda, KoalaM, KoalaV, shardLayers, type DeviceTensor, type FloatArray } from '../../lib';
import { describeGpu, reportGpuSkip } from './gpu';

reportGpuSkip('sharded CUDA tests');

test('shardLayers cuts device tensors by address', () => {
  const t = (ptr: bigint, length: number): DeviceTensor => ({ device: 'cuda', deviceId: 0, ptr, length, dtype: 'float64' });
  const { layers, shard } = shardLayers([{ param: t(0x10000n, 10), grad: t(0x20000n, 10) }, { param: t(0x30000n, 5), grad: t(0x40000n, 5) }], 7, 12);
  expect(shard).toEqual({ layerLengths: [10, 5], offsets: [7, 0] });
  expect(layers.map((l) => [(l.param as DeviceTensor).ptr, (l.grad as DeviceTensor).ptr, l.param.length])).toEqual([
    [0x10000n + 56n, 0x20000n + 56n, 3],
    [0x30000n, 0x40000n, 2],
  ]);
});

const SIZES = [20000, 3, 1, 257];
const TOTAL = SIZES.reduce((a, b) => a + b);
const RANGES: [number, number][] = [[0, 9000], [9000, 20002], [20002, TOTAL]]; // cuts inside layers 0 and 1; rank 1 has none of layer 3
const STEPS = 30;

/** The one-GPU reduction: every rank's device buffer summed in rank order, the sum written back to each. */
function reduceOnOneGpu(buffers: DeviceTensor[]): void {
  const host = buffers.map((b) => cuda.download(b) as Float64Array);
  const sum = new Float64Array(host[0].length);
  for (const h of host) h.forEach((v, i) => (sum[i] += v));
  for (const b of buffers) cuda.upload(b, sum);
}

function gradients(step: number, x: Float64Array, g: Float64Array): [number, number] {
  let sq = 0;
  for (let i = 0; i < x.length; i++) {
    const d = x[i] - Math.sin(i);
    g[i] = 0.2 * d + 0.01 * Math.cos(i * 0.37 + step);
    sq += d * d;
  }
  g.fill(0, SIZES[0], SIZES[0] + SIZES[1]); // layer 1 is always skipped
  const loss = 0.1 * (sq / x.length) + 0.05;
  return [loss, 1.3 * loss * loss];
}

describeGpu('3 sharded CUDA ranks on one GPU', () => {
  test.each(['koala-m', 'koala-m lazy', 'koala-v'] as const)('%s reproduces the CPU backend within 1e-12 over 30 steps', (kind) => {
    const make = (layers: { param: FloatArray | DeviceTensor; grad: FloatArray | DeviceTensor }[], extra: object) =>
      kind === 'koala-v' ? new KoalaV(layers, { weightDecay: 1e-3, ...extra }) : new KoalaM(layers, { weightDecay: 1e-3, lazyPredict: kind === 'koala-m lazy', ...extra });
    const x0 = new Float64Array(TOTAL).map((_, i) => 0.5 * Math.cos(0.7 * i));
    // The single CPU optimizer.
    const hx = x0.slice();
    const hg = new Float64Array(TOTAL);
    let at = 0;
    const hostLayers = SIZES.map((n) => ({ param: hx.subarray(at, at + n), grad: hg.subarray(at, (at += n)) }));
    const single = make(hostLayers, { backend: 'native' });
    // The model on the device, one tensor per layer, and three ranks over slices of it.
    const dx = SIZES.map((n) => cuda.alloc(n, 'float64'));
    const dg = SIZES.map((n) => cuda.alloc(n, 'float64'));
    at = 0;
    dx.forEach((t, l) => cuda.upload(t, x0.subarray(at, (at += SIZES[l]))));
    const whole = dx.map((param, l) => ({ param, grad: dg[l] }));
    const ranks = RANGES.map(([b, e]) => {
      const { layers, shard } = shardLayers(whole, b, e);
      return make(layers, { shard });
    });
    const gx = new Float64Array(TOTAL);
    const gg = new Float64Array(TOTAL);
    try {
      for (let step = 0; step < STEPS; step++) {
        single.predict();
        const [loss, lossSq] = gradients(step, hx, hg);
        const want = single.update(loss, lossSq);

        reduceOnOneGpu(ranks.map((o) => o.predictPartial() as DeviceTensor));
        ranks.forEach((o) => o.finishPredict());
        at = 0;
        dx.forEach((t) => gx.set(cuda.download(t), (at += t.length) - t.length));
        const [l2, s2] = gradients(step, gx, gg);
        at = 0;
        dg.forEach((t) => cuda.upload(t, gg.subarray(at, (at += t.length))));
        reduceOnOneGpu(ranks.map((o) => o.updatePartial() as DeviceTensor));
        const infos = ranks.map((o) => o.finishUpdate(l2, s2));
        for (const info of infos) {
          expect(info.applied).toBe(true);
          expect(info.skippedLayers).toEqual(want.skippedLayers);
        }
      }
      at = 0;
      dx.forEach((t) => gx.set(cuda.download(t), (at += t.length) - t.length));
      let diff = 0;
      let scale = 0;
      hx.forEach((v, i) => {
        diff = Math.max(diff, Math.abs(gx[i] - v));
        scale = Math.max(scale, Math.abs(v));
      });
      expect(diff / scale).toBeLessThanOrEqual(1e-12);
      const filter = (o: KoalaM | KoalaV) => o.stateDict().filter;
      for (const o of ranks) filter(o).forEach((v, i) => expect(Math.abs(v - filter(single)[i])).toBeLessThanOrEqual(1e-12 * Math.max(1, Math.abs(filter(single)[i]))));
    } finally {
      ranks.forEach((o) => o.dispose());
      single.dispose();
      [...dx, ...dg].forEach((t) => cuda.free(t));
    }
  });

  test('a NaN on one rank refuses the step on every rank', () => {
    const dx = SIZES.map((n) => cuda.alloc(n, 'float64'));
    const dg = SIZES.map((n) => cuda.alloc(n, 'float64'));
    try {
      dx.forEach((t) => cuda.upload(t, new Float64Array(t.length).fill(0.5)));
      dg.forEach((t) => cuda.upload(t, new Float64Array(t.length).fill(0.1)));
      const ranks = RANGES.map(([b, e]) => {
        const { layers, shard } = shardLayers(dx.map((param, l) => ({ param, grad: dg[l] })), b, e);
        return new KoalaM(layers, { shard });
      });
      reduceOnOneGpu(ranks.map((o) => o.predictPartial() as DeviceTensor));
      ranks.forEach((o) => o.finishPredict());
      const g3 = new Float64Array(SIZES[3]).fill(0.1);
      g3[200] = NaN; // rank 2's slice of layer 3
      cuda.upload(dg[3], g3);
      reduceOnOneGpu(ranks.map((o) => o.updatePartial() as DeviceTensor));
      const infos = ranks.map((o) => o.finishUpdate(1, 1));
      for (const info of infos) expect([info.applied, info.reason]).toEqual([false, 'non-finite-gradient']);
      expect(ranks.every((o) => o.step === 0)).toBe(true);
      ranks.forEach((o) => o.dispose());
    } finally {
      [...dx, ...dg].forEach((t) => cuda.free(t));
    }
  });
});
