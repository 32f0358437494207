/**
 * The contenders a TensorFlow.js user would reach for, on the wasm backend: KOALA-M and KOALA++
 * ported op by op from the official PyTorch code (per-layer tensor ops, host reads per layer for
 * the norms and dot products, parameters written back with assign), and tfjs's own Adam.
 */
import { dirname, join } from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';

/** Selects the wasm backend, its .wasm files taken from the installed package. */
export async function useWasm(): Promise<string> {
  setWasmPaths(join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm')), '/'));
  if (!(await tf.setBackend('wasm'))) throw new Error('the tfjs wasm backend did not initialize');
  await tf.ready();
  return tf.getBackend();
}

interface Stepper {
  step(): void;
  dispose(): void;
}

function variables(sizes: number[], value: number, name: string): tf.Variable[] {
  return sizes.map((n, i) => {
    const init = tf.fill([n], value);
    const variable = tf.variable(init, true, `${name}${i}`); // holds a reference of its own
    init.dispose();
    return variable;
  });
}

function gradients(sizes: number[]): tf.Tensor1D[] {
  return sizes.map((n, i) => tf.tidy(() => tf.mul(tf.sin(tf.range(i, n + i)), 1e-3) as tf.Tensor1D));
}

/**
 * KOALA-M as the official code does it, restated with tfjs ops one layer at a time: per layer a
 * handful of element-wise kernels and three host reads (|g| for the eps test, |h|^2, |x|^2), with
 * the paper's training setting (weight decay 5e-4) and the default options otherwise.
 */
export function tfjsKoalaM(sizes: number[]): Stepper {
  const x = variables(sizes, 0.01, 'kx');
  const v = variables(sizes, 0, 'kv');
  const a = variables(sizes, 0, 'ka');
  const g = gradients(sizes);
  const n = sizes.reduce((s, m) => s + m, 0);
  const [kappa, wd, eps] = [0.9, 5e-4, 1e-9];
  let [p00, p01, p11, qx, r] = [0.1, 0, 0.1, 0.01, 1];
  const predict = () => {
    let sumSq = 0;
    for (let l = 0; l < sizes.length; l++) sumSq += tf.tidy(() => tf.sum(tf.square(tf.sub(a[l], x[l]))).dataSync()[0]);
    qx = 0.9 * qx + 0.1 * (Math.sqrt(sumSq) / n);
    for (let l = 0; l < sizes.length; l++) {
      tf.tidy(() => {
        x[l].assign(tf.add(x[l], v[l]));
        v[l].assign(tf.mul(v[l], kappa));
      });
    }
    const [f00, f01] = [p00 + p01, p01 + p11];
    [p00, p01, p11] = [f00 + f01 + qx, kappa * f01, kappa * kappa * p11 + 0.01];
  };
  const update = (loss: number, lossSq: number) => {
    r = 0.9 * r + 0.1 * lossSq;
    let maxGain = 0;
    for (let l = 0; l < sizes.length; l++) {
      tf.tidy(() => {
        if (tf.norm(g[l]).dataSync()[0] < eps) return;
        const h = tf.add(g[l], tf.mul(x[l], wd));
        const hh = tf.sum(tf.square(h)).dataSync()[0];
        const lossL = loss + 0.5 * wd * tf.sum(tf.square(x[l])).dataSync()[0];
        const s = hh * p00 + r;
        maxGain = Math.max(maxGain, hh / s);
        x[l].assign(tf.sub(x[l], tf.mul(h, (lossL * p00) / s)));
        v[l].assign(tf.sub(v[l], tf.mul(h, (lossL * p01) / s)));
        a[l].assign(tf.add(tf.mul(a[l], 0.9), tf.mul(x[l], 0.1)));
      });
    }
    [p00, p01, p11] = [p00 - p00 * maxGain * p00, p01 - p00 * maxGain * p01, p11 - p01 * maxGain * p01];
  };
  return {
    step: () => {
      predict();
      update(0.5, 0.3);
    },
    dispose: () => [...x, ...v, ...a, ...g].forEach((t) => t.dispose()),
  };
}

/**
 * KOALA++ as the authors' code does it (ALGORITHM.md, "KOALA++"), restated with tfjs ops one layer
 * at a time: per layer the gradient norm for the eps test, H = g + wd x, the dot products Hp . Hp,
 * Hp . v, H . Hp, H . v and |x|^2 read to the host (in one read, which is kinder than the
 * reference's one .item() each), the new v, S = (v + Q H) . H + R (another read), x and Hp; with
 * weight decay 5e-4 and the default options otherwise (sigma 1, q 1, symmetric, lr 1).
 */
export function tfjsKoalaPP(sizes: number[]): Stepper {
  const x = variables(sizes, 0.01, 'ppx');
  const v = variables(sizes, 0, 'ppv');
  const hp = variables(sizes, 0, 'pph');
  const g = gradients(sizes);
  const s = sizes.map(() => 0);
  const started = sizes.map(() => false);
  const [sigma, q, wd, eps] = [1, 1, 5e-4, 1e-9];
  let r = 1;
  const update = (loss: number, lossSq: number) => {
    r = 0.9 * r + 0.1 * lossSq;
    for (let l = 0; l < sizes.length; l++) {
      tf.tidy(() => {
        if (tf.norm(g[l]).dataSync()[0] < eps) return;
        const h = tf.add(g[l], tf.mul(x[l], wd));
        const first = !started[l];
        const vPrev = first ? tf.mul(h, sigma) : v[l];
        const hPrev = first ? h : hp[l];
        const dot = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(a, b));
        const [xx, y, a, b, x2] = tf.stack([dot(hPrev, hPrev), dot(hPrev, vPrev), dot(h, hPrev), dot(h, vPrev), dot(x[l], x[l])]).dataSync();
        const sPrev = first ? y + q * xx + r : s[l];
        const lambda = (b + q * a) / sPrev;
        const alpha = a / xx;
        const rk = b / xx - (a * y) / (xx * xx);
        const vNew = tf.add(tf.add(tf.mul(vPrev, alpha - lambda), tf.mul(tf.sub(h, tf.mul(hPrev, lambda)), q)), tf.mul(hPrev, rk));
        const dir = tf.add(vNew, tf.mul(h, q));
        s[l] = dot(dir, h).dataSync()[0] + r;
        x[l].assign(tf.sub(x[l], tf.mul(dir, (loss + 0.5 * wd * x2) / s[l])));
        v[l].assign(vNew);
        hp[l].assign(h);
        started[l] = true;
      });
    }
  };
  return {
    step: () => update(0.5, 0.3),
    dispose: () => [...x, ...v, ...hp, ...g].forEach((t) => t.dispose()),
  };
}

/** tfjs's Adam (lr 1e-3) applying fixed gradients to the same list. */
export function tfjsAdam(sizes: number[]): Stepper {
  const x = variables(sizes, 0.01, 'adam_x');
  const g = gradients(sizes);
  const grads = x.map((xv, i) => ({ name: xv.name, tensor: g[i] }));
  const opt = tf.train.adam(1e-3);
  return {
    step: () => {
      opt.applyGradients(grads);
      tf.tidy(() => tf.slice(x[0], 0, 1).dataSync()); // wait for the step to finish
    },
    dispose: () => {
      opt.dispose();
      [...x, ...g].forEach((t) => t.dispose());
    },
  };
}
