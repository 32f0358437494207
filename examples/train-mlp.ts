/**
 * A small trainer with plain Float32Arrays: a tanh MLP fits a random "teacher" network on
 * synthetic data, with KOALA-M at its default options. Parameters and gradients are views into
 * two flat buffers that KOALA reads and writes in place.
 *
 *   npm start -- [--epochs 12] [--batch 32] [--seed 1]
 */
import { KoalaM, type BackendName, type Layer } from '../lib';
import { rng, shuffle } from './mnist/random';

const IN = 8;
const HIDDEN = 32;
const SAMPLES = 4096;

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** A one-hidden-layer tanh network y = w2 . tanh(W1 x + b1) + b2 over flat storage. */
class Mlp {
  readonly flat: Float32Array;
  readonly w1: Float32Array;
  readonly b1: Float32Array;
  readonly w2: Float32Array;
  readonly b2: Float32Array;

  constructor(flat: Float32Array) {
    this.flat = flat;
    let at = 0;
    const take = (n: number) => flat.subarray(at, (at += n));
    this.w1 = take(HIDDEN * IN);
    this.b1 = take(HIDDEN);
    this.w2 = take(HIDDEN);
    this.b2 = take(1);
  }

  static size(): number {
    return HIDDEN * IN + HIDDEN + HIDDEN + 1;
  }

  /** Output for sample x; fills h with the hidden activations. */
  forward(x: Float32Array, h: Float32Array): number {
    let y = this.b2[0];
    for (let j = 0; j < HIDDEN; j++) {
      let z = this.b1[j];
      for (let i = 0; i < IN; i++) z += this.w1[j * IN + i] * x[i];
      h[j] = Math.tanh(z);
      y += this.w2[j] * h[j];
    }
    return y;
  }

  /** Adds d(scale * (y - t)^2 / 2)/dparams for one sample into grad (same layout as flat). */
  backward(x: Float32Array, h: Float32Array, dy: number, grad: Mlp): void {
    grad.b2[0] += dy;
    for (let j = 0; j < HIDDEN; j++) {
      grad.w2[j] += dy * h[j];
      const dz = dy * this.w2[j] * (1 - h[j] * h[j]);
      grad.b1[j] += dz;
      for (let i = 0; i < IN; i++) grad.w1[j * IN + i] += dz * x[i];
    }
  }
}

export interface TrainResult {
  /** Test loss before training and after each epoch. */
  testLoss: number[];
  backend: BackendName;
}

export function train({ epochs = 12, batch = 32, seed = 1, log = console.log } = {}): TrainResult {
  const r = rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());

  // Data: inputs ~ N(0, 1), targets from a random teacher MLP plus a little noise.
  const teacher = new Mlp(Float32Array.from({ length: Mlp.size() }, () => gauss() * 0.6));
  const xs = Array.from({ length: SAMPLES }, () => Float32Array.from({ length: IN }, gauss));
  const h = new Float32Array(HIDDEN);
  const ys = xs.map((x) => teacher.forward(x, h) + 0.05 * gauss());
  const trainN = (SAMPLES * 3) / 4;

  // The student, and its gradient buffer with the same layout.
  const model = new Mlp(Float32Array.from({ length: Mlp.size() }, () => gauss() * 0.3));
  const grad = new Mlp(new Float32Array(Mlp.size()));
  const names = ['w1', 'b1', 'w2', 'b2'] as const;
  const layers: Layer[] = names.map((name) => ({ name, param: model[name], grad: grad[name] }));
  const opt = new KoalaM(layers);

  const meanLoss = (from: number, to: number) => {
    let sum = 0;
    for (let s = from; s < to; s++) sum += 0.5 * (model.forward(xs[s], h) - ys[s]) ** 2;
    return sum / (to - from);
  };
  log(`KOALA-M (${opt.backend} backend), ${Mlp.size()} parameters in ${layers.length} tensors, batch ${batch}`);
  const testLoss = [meanLoss(trainN, SAMPLES)];
  log(`epoch  0  train loss ${meanLoss(0, trainN).toFixed(5)}  test loss ${testLoss[0].toFixed(5)}`);
  const order = Array.from({ length: trainN }, (_, i) => i);
  for (let epoch = 1; epoch <= epochs; epoch++) {
    shuffle(order, r);
    let skipped = 0;
    for (let start = 0; start + batch <= trainN; start += batch) {
      opt.predict();
      grad.flat.fill(0);
      let loss = 0;
      let lossSq = 0;
      for (let k = start; k < start + batch; k++) {
        const s = order[k];
        const err = model.forward(xs[s], h) - ys[s];
        const l = 0.5 * err * err; // per-sample loss
        loss += l / batch;
        lossSq += (l * l) / batch;
        model.backward(xs[s], h, err / batch, grad);
      }
      const info = opt.update(loss, lossSq);
      skipped += info.applied ? 0 : 1;
    }
    testLoss.push(meanLoss(trainN, SAMPLES));
    const line = `epoch ${String(epoch).padStart(2)}  train loss ${meanLoss(0, trainN).toFixed(5)}  test loss ${testLoss[epoch].toFixed(5)}`;
    log(skipped ? `${line}  (${skipped} steps skipped)` : line);
  }
  const { P, R } = opt.state;
  log(`done: ${opt.step} steps, P00 ${P[0][0].toExponential(3)}, R ${R.toExponential(3)}`);
  const backend = opt.backend;
  opt.dispose();
  return { testLoss, backend };
}

if (require.main === module) train({ epochs: arg('epochs', 12), batch: arg('batch', 32), seed: arg('seed', 1) });
