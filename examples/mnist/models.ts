/**
 * The two models, written with tfjs-core ops over plain tf.Variables: an MLP 784-256-128-10 (ReLU)
 * and a small CNN (conv 3x3x8, pool, conv 3x3x16, pool, dense 10). Initial weights come from a
 * seeded generator (Glorot uniform, zero biases), so every optimizer starts from the same point.
 *
 * Note [wasm gradients]: on tfjs-backend-wasm 4.22 a matMul with a transposed operand, which is
 * what tfjs's own MatMul gradient runs, is 5-10x slower than a plain one, and conv2d has no filter
 * gradient at all (no Conv2DBackpropFilter kernel). The layers below therefore carry their own
 * gradients (tf.customGrad), built from plain matMuls with explicit transposes, and, for the
 * filter, from the identity dK = conv2d(x^T, dy^T) (batch and channels swapped). They agree with
 * tfjs's gradients to float32 rounding; a layer fed by the data skips the input gradient.
 */
import * as tf from '@tensorflow/tfjs-core';

import { CLASSES, PIXELS } from './data';
import { rng } from './random';

export type ModelName = 'mlp' | 'cnn';

export interface Model {
  readonly variables: tf.Variable[];
  /** Logits [batch, 10] of images [batch, 784]. */
  logits(images: tf.Tensor2D): tf.Tensor2D;
  readonly parameters: number;
}

type Inputs = (tf.Tensor | tf.GradSaveFunc)[];

/** x w + b, with gradients for x, w and b. */
const dense = tf.customGrad((...args: Inputs) => {
  const [x, w, b, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
  save([x, w]);
  return {
    value: tf.add(tf.matMul(x, w), b),
    gradFunc: (dy: tf.Tensor, [xs, ws]: tf.Tensor[]) => [tf.matMul(dy, tf.transpose(ws)), tf.matMul(tf.transpose(xs), dy), tf.sum(dy, 0)],
  };
}) as (x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D) => tf.Tensor2D;

/** x w + b for data x: gradients for w and b only. */
function denseOnData(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D {
  return tf.customGrad((...args: Inputs) => {
    const [wv, bv] = args as [tf.Tensor2D, tf.Tensor1D];
    return {
      value: tf.add(tf.matMul(x, wv), bv),
      gradFunc: (dy: tf.Tensor) => [tf.matMul(tf.transpose(x), dy), tf.sum(dy, 0)],
    };
  })(w, b) as tf.Tensor2D;
}

/** dL/dK of a stride-1 'valid' conv: the batch becomes the channels (Note [wasm gradients]). */
function filterGradient(x: tf.Tensor4D, dy: tf.Tensor4D): tf.Tensor4D {
  return tf.transpose(tf.conv2d(tf.transpose(x, [3, 1, 2, 0]), tf.transpose(dy, [1, 2, 0, 3]), 1, 'valid'), [1, 2, 0, 3]);
}

/** Stride-1 'valid' conv2d with gradients for x and k. */
const conv = tf.customGrad((...args: Inputs) => {
  const [x, k, save] = args as [tf.Tensor4D, tf.Tensor4D, tf.GradSaveFunc];
  save([x, k]);
  return {
    value: tf.conv2d(x, k, 1, 'valid'),
    gradFunc: (dy: tf.Tensor, [xs, ks]: tf.Tensor[]) => {
      const [n, h, w, c] = xs.shape;
      return [tf.conv2dTranspose(dy as tf.Tensor4D, ks as tf.Tensor4D, [n, h, w, c], 1, 'valid'), filterGradient(xs as tf.Tensor4D, dy as tf.Tensor4D)];
    },
  };
}) as (x: tf.Tensor4D, k: tf.Tensor4D) => tf.Tensor4D;

/** Stride-1 'valid' conv2d of data x: gradient for k only. */
function convOnData(x: tf.Tensor4D, k: tf.Tensor4D): tf.Tensor4D {
  return tf.customGrad((...args: Inputs) => {
    const [kv] = args as [tf.Tensor4D];
    return { value: tf.conv2d(x, kv, 1, 'valid'), gradFunc: (dy: tf.Tensor) => [filterGradient(x, dy as tf.Tensor4D)] };
  })(k) as tf.Tensor4D;
}

/** Glorot-uniform weights of a given shape from the seeded generator; fans as Keras counts them. */
function glorot(random: () => number, shape: number[], fanIn: number, fanOut: number, name: string): tf.Variable {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  const size = shape.reduce((a, b) => a * b, 1);
  const values = Float32Array.from({ length: size }, () => (2 * random() - 1) * limit);
  return tf.variable(tf.tensor(values, shape), true, name);
}

function zeros(n: number, name: string): tf.Variable {
  return tf.variable(tf.zeros([n]), true, name);
}

let instances = 0;

/** A new model whose weights depend only on the seed. Variable names are unique per instance. */
export function createModel(name: ModelName, seed: number): Model {
  const random = rng(seed);
  const tag = `${name}${instances++}`;
  if (name === 'mlp') {
    const sizes = [PIXELS, 256, 128, CLASSES];
    const ws = sizes.slice(1).map((out, i) => glorot(random, [sizes[i], out], sizes[i], out, `${tag}/w${i}`));
    const bs = sizes.slice(1).map((out, i) => zeros(out, `${tag}/b${i}`));
    const variables = ws.flatMap((w, i) => [w, bs[i]]);
    return {
      variables,
      parameters: variables.reduce((n, v) => n + v.size, 0),
      logits: (images) => {
        const h1 = tf.relu(denseOnData(images, ws[0] as tf.Tensor2D, bs[0] as tf.Tensor1D));
        const h2 = tf.relu(dense(h1, ws[1] as tf.Tensor2D, bs[1] as tf.Tensor1D));
        return dense(h2, ws[2] as tf.Tensor2D, bs[2] as tf.Tensor1D);
      },
    };
  }
  const k1 = glorot(random, [3, 3, 1, 8], 9, 72, `${tag}/k1`);
  const c1 = zeros(8, `${tag}/c1`);
  const k2 = glorot(random, [3, 3, 8, 16], 72, 144, `${tag}/k2`);
  const c2 = zeros(16, `${tag}/c2`);
  const w = glorot(random, [400, CLASSES], 400, CLASSES, `${tag}/w`);
  const b = zeros(CLASSES, `${tag}/b`);
  const variables = [k1, c1, k2, c2, w, b];
  return {
    variables,
    parameters: variables.reduce((n, v) => n + v.size, 0),
    logits: (images) => {
      const x = tf.reshape(images, [-1, 28, 28, 1]) as tf.Tensor4D;
      const pool = (y: tf.Tensor4D, bias: tf.Variable) => tf.maxPool(tf.relu(tf.add(y, bias)) as tf.Tensor4D, 2, 2, 'valid');
      const h1 = pool(convOnData(x, k1 as tf.Tensor4D), c1); // 13x13x8
      const h2 = pool(conv(h1, k2 as tf.Tensor4D), c2); // 5x5x16
      return dense(tf.reshape(h2, [-1, 400]) as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D);
    },
  };
}
