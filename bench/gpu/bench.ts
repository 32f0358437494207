/**
 * The CUDA step timings of the GPU check (bench/gpu/run.sh runs it on the device machine; see
 * bench/README.md): KOALA-M (standard and lazy) and KOALA-V on float32 device tensors, for 1M, 16M
 * and 64M parameters in four tensors and for the ResNet-50-shaped list (a size range that fits the
 * check's time budget: the 64M list is well past every cache). Steps are launched back to
 * back with no host synchronization; one cudaDeviceSynchronize closes each timed batch.
 *
 *   node bench/gpu/bench.js OUT.json
 */
import { writeFileSync } from 'node:fs';

import { cuda, KoalaM, KoalaV, type DeviceTensor } from '../../lib';
import { fourTensors, resnet50, total, type ParamList } from '../lists';

interface Timing {
  list: string;
  params: number;
  tensors: number;
  sizes: number[];
  contender: string;
  bytesPerParam: number;
  /** Milliseconds per step, one value per timed batch. */
  msPerStep: number[];
}

const BATCHES = 5;

function stepsPerBatch(params: number): number {
  return params >= 64e6 ? 10 : params >= 4e6 ? 40 : 100;
}

function main(): void {
  const out = process.argv[2] ?? 'koala-gpu.json';
  const status = cuda.available();
  if (!status.available) throw new Error(`CUDA is not available: ${status.reason}`);
  const lists: ParamList[] = [...[1e6, 16e6, 64e6].map((n) => fourTensors(n)), resnet50()];
  const contenders: [string, number, (layers: { param: DeviceTensor; grad: DeviceTensor }[]) => KoalaM | KoalaV][] = [
    ['KOALA-M', 56, (l) => new KoalaM(l, { weightDecay: 5e-4 })],
    ['KOALA-M lazy', 36, (l) => new KoalaM(l, { weightDecay: 5e-4, lazyPredict: true })],
    ['KOALA-V', 20, (l) => new KoalaV(l, { weightDecay: 5e-4 })],
  ];
  const timings: Timing[] = [];
  for (const list of lists) {
    const params = list.sizes.map((n) => cuda.alloc(n, 'float32'));
    const grads = list.sizes.map((n, i) => {
      const g = cuda.alloc(n, 'float32');
      // A 4096-value pattern, doubled into place: filling 64M values one by one would take seconds.
      const host = new Float32Array(n);
      for (let j = 0; j < Math.min(n, 4096); j++) host[j] = Math.sin(i + j) * 1e-3;
      for (let have = Math.min(n, 4096); have < n; have *= 2) host.copyWithin(have, 0, Math.min(have, n - have));
      cuda.upload(g, host);
      return g;
    });
    for (const [name, bytes, make] of contenders) {
      params.forEach((p) => cuda.upload(p, new Float32Array(p.length).fill(0.01)));
      const opt = make(params.map((param, i) => ({ param, grad: grads[i] })));
      const steps = stepsPerBatch(total(list));
      const run = (n: number) => {
        for (let k = 0; k < n; k++) {
          opt.predict();
          opt.update(0.5, 0.3);
        }
        cuda.synchronize();
      };
      run(3); // warm-up
      const msPerStep: number[] = [];
      for (let b = 0; b < BATCHES; b++) {
        const t0 = process.hrtime.bigint();
        run(steps);
        msPerStep.push(Number(process.hrtime.bigint() - t0) / 1e6 / steps);
      }
      if (!opt.stateDict().filter.every(Number.isFinite)) throw new Error(`${name} on ${list.name}: the filter state is not finite`);
      opt.dispose();
      timings.push({ list: list.name, params: total(list), tensors: list.sizes.length, sizes: list.sizes, contender: name, bytesPerParam: bytes, msPerStep });
      console.log(`${list.name.padEnd(28)} ${name.padEnd(14)} ${Math.min(...msPerStep).toFixed(4)} ms/step (best of ${BATCHES} batches of ${steps})`);
    }
    [...params, ...grads].forEach((t) => cuda.free(t));
  }
  writeFileSync(out, JSON.stringify({ devices: status.devices, timings }, null, 2));
}

main();
