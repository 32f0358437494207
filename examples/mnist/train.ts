/**
 * One experiment: every optimizer, for every seed, trains the same model from the same initial
 * weights on the same batches (both drawn from the seed), and is evaluated on the test set after
 * every epoch.
 */
import * as tf from '@tensorflow/tfjs-core';

import { cosineLr, LrScheduler, multiStepLr, stepLr, type LrSchedule } from '../../lib';
import { initBackend, type BackendInfo, type BackendName } from './backend';
import { CLASSES, loadSplit, PIXELS, type Split } from './data';
import { createModel, type Model, type ModelName } from './models';
import { BASE_LR, createTrainer, LABELS, type OptimizerName, type VariantName } from './optimizers';
import { rng, shuffle } from './random';

export const SCHEDULES = ['none', 'step', 'multistep', 'cosine'] as const;
export type ScheduleName = (typeof SCHEDULES)[number];

export interface ExperimentConfig {
  model: ModelName;
  optimizers: OptimizerName[];
  seeds: number[];
  epochs: number;
  batch: number;
  /**
   * 'step': x gamma every stepEpochs epochs; 'multistep': x gamma at half and three quarters of the
   * epochs, after warmupEpochs of linear warmup (the official script's rule); 'cosine': half
   * cosine to 0 after the warmup. Applied to KOALA and SGD (tfjs's Adam has no lr setter).
   */
  schedule: ScheduleName;
  gamma: number;
  stepEpochs: number;
  warmupEpochs: number;
  /** Seed of the train/test split (the same for every run). */
  splitSeed: number;
  /** Share of the 10,000 digits used (1: all; smaller for quick runs). */
  subset: number;
  backend: BackendName;
  /** KOALA's variant (the paper's options) and weight decay; SGD and Adam take neither. */
  variant: VariantName;
  weightDecay: number;
}

export const DEFAULTS: ExperimentConfig = {
  model: 'mlp',
  optimizers: ['koala-m', 'koala-v', 'sgd', 'adam'],
  seeds: [1, 2, 3],
  epochs: 8,
  batch: 64,
  schedule: 'none',
  gamma: 0.2,
  stepEpochs: 1,
  warmupEpochs: 0,
  splitSeed: 2022,
  subset: 1,
  backend: 'wasm',
  variant: 'official',
  weightDecay: 0,
};

export interface EpochPoint {
  epoch: number;
  loss: number;
  accuracy: number;
}

export interface RunResult {
  optimizer: OptimizerName;
  label: string;
  seed: number;
  model: ModelName;
  batch: number;
  /** Train loss: means over windows of steps, at fractional epochs. */
  trainLoss: { epoch: number; loss: number }[];
  /** Test loss and accuracy before training (epoch 0) and after every epoch. */
  test: EpochPoint[];
  /** Mean train loss of the last epoch. */
  finalTrainLoss: number;
  seconds: number;
  steps: number;
  /** KOALA updates refused (non-finite loss or gradient). */
  refused: number;
  /** KOALA only: the adapter's host copies and the KOALA step, per step, in ms. */
  adapter: { copyMs: number; koalaMs: number } | null;
}

export interface Experiment {
  config: ExperimentConfig;
  backend: BackendInfo;
  parameters: number;
  trainSize: number;
  testSize: number;
  runs: RunResult[];
  seconds: number;
}

/** Where the trainer reports progress (a terminal bar, plain lines, or nothing). */
export interface Reporter {
  runStart(title: string, steps: number): void;
  step(done: number, loss: number): void;
  line(text: string): void;
}

function scheduleFor(config: ExperimentConfig, baseLr: number, stepsPerEpoch: number): LrSchedule | null {
  const warmup = config.warmupEpochs * stepsPerEpoch;
  switch (config.schedule) {
    case 'none':
      return null;
    case 'step':
      return stepLr({ lr: baseLr, stepSize: config.stepEpochs * stepsPerEpoch, gamma: config.gamma });
    case 'multistep': {
      const epochs = [...new Set([Math.round(config.epochs / 2), Math.round((3 * config.epochs) / 4)])].filter((e) => e > 0);
      return multiStepLr({ lr: baseLr, milestones: epochs.map((e) => e * stepsPerEpoch), gamma: config.gamma, warmup });
    }
    case 'cosine':
      return cosineLr({ lr: baseLr, totalSteps: config.epochs * stepsPerEpoch, warmup });
  }
}

function batchTensors(split: Split, rows: number[]): { images: tf.Tensor2D; labels: tf.Tensor2D } {
  const images = new Float32Array(rows.length * PIXELS);
  const labels = new Int32Array(rows.length);
  rows.forEach((r, i) => {
    images.set(split.images.subarray(r * PIXELS, (r + 1) * PIXELS), i * PIXELS);
    labels[i] = split.labels[r];
  });
  return { images: tf.tensor2d(images, [rows.length, PIXELS]), labels: tf.oneHot(tf.tensor1d(labels, 'int32'), CLASSES) as tf.Tensor2D };
}

function perSampleLoss(model: Model, images: tf.Tensor2D, labels: tf.Tensor2D): tf.Tensor1D {
  return tf.losses.softmaxCrossEntropy(labels, model.logits(images), undefined, undefined, tf.Reduction.NONE) as tf.Tensor1D;
}

/** Mean cross-entropy and accuracy over a split, in chunks. */
function evaluate(model: Model, split: Split, chunk = 1000): { loss: number; accuracy: number } {
  let lossSum = 0;
  let correct = 0;
  for (let start = 0; start < split.size; start += chunk) {
    const rows = Array.from({ length: Math.min(chunk, split.size - start) }, (_, i) => start + i);
    const [l, c] = tf.tidy(() => {
      const { images, labels } = batchTensors(split, rows);
      const logits = model.logits(images);
      const losses = tf.losses.softmaxCrossEntropy(labels, logits, undefined, undefined, tf.Reduction.NONE);
      const hits = tf.equal(tf.argMax(logits, 1), tf.argMax(labels, 1));
      return [tf.sum(losses).dataSync()[0], tf.sum(tf.cast(hits, 'float32')).dataSync()[0]];
    });
    lossSum += l;
    correct += c;
  }
  return { loss: lossSum / split.size, accuracy: correct / split.size };
}

function trainOne(config: ExperimentConfig, optimizer: OptimizerName, seed: number, train: Split, test: Split, reporter: Reporter): RunResult {
  const model = createModel(config.model, seed);
  const trainer = createTrainer(optimizer, config.variant, config.weightDecay);
  const stepsPerEpoch = Math.floor(train.size / config.batch); // the last partial batch is dropped
  if (stepsPerEpoch === 0) throw new RangeError(`batch ${config.batch} is larger than the ${train.size} training samples`);
  const schedule = trainer.lr ? scheduleFor(config, BASE_LR[optimizer], stepsPerEpoch) : null;
  const scheduler = trainer.lr && schedule ? new LrScheduler(trainer.lr, schedule) : null;
  const random = rng(seed * 1_000_003 + 17); // the batches: the same for every optimizer of a seed
  const order = Array.from({ length: train.size }, (_, i) => i);
  const window = Math.max(1, Math.floor(stepsPerEpoch / 8));
  const label = LABELS[optimizer];
  const started = performance.now();

  const result: RunResult = {
    optimizer,
    label,
    seed,
    model: config.model,
    batch: config.batch,
    trainLoss: [],
    test: [{ epoch: 0, ...evaluate(model, test) }],
    finalTrainLoss: Number.NaN,
    seconds: 0,
    steps: 0,
    refused: 0,
    adapter: null,
  };
  for (let epoch = 1; epoch <= config.epochs; epoch++) {
    reporter.runStart(`${label} seed ${seed} epoch ${epoch}/${config.epochs}`, stepsPerEpoch);
    const epochStart = performance.now();
    shuffle(order, random);
    let epochSum = 0;
    let windowSum = 0;
    for (let s = 0; s < stepsPerEpoch; s++) {
      scheduler?.step();
      const rows = order.slice(s * config.batch, (s + 1) * config.batch);
      const loss = tf.tidy(() => {
        const { images, labels } = batchTensors(train, rows);
        return trainer.step(() => perSampleLoss(model, images, labels), model.variables);
      });
      epochSum += loss;
      windowSum += loss;
      if ((s + 1) % window === 0) {
        result.trainLoss.push({ epoch: epoch - 1 + (s + 1) / stepsPerEpoch, loss: windowSum / window });
        windowSum = 0;
      }
      reporter.step(s + 1, loss);
    }
    result.steps += stepsPerEpoch;
    result.finalTrainLoss = epochSum / stepsPerEpoch;
    const point = { epoch, ...evaluate(model, test) };
    result.test.push(point);
    const secs = (performance.now() - epochStart) / 1000;
    reporter.line(`${label.padEnd(12)} seed ${seed}  epoch ${epoch}/${config.epochs}  train loss ${result.finalTrainLoss.toFixed(4)}  test loss ${point.loss.toFixed(4)}  test acc ${(100 * point.accuracy).toFixed(2)}%  (${secs.toFixed(1)} s)`);
  }
  result.seconds = (performance.now() - started) / 1000;
  result.refused = trainer.refused;
  if (trainer.stats) result.adapter = { copyMs: trainer.stats.copyMs / result.steps, koalaMs: trainer.stats.koalaMs / result.steps };
  trainer.dispose();
  tf.dispose(model.variables);
  return result;
}

export async function runExperiment(config: ExperimentConfig, reporter: Reporter): Promise<Experiment> {
  const started = performance.now();
  const backend = await initBackend(config.backend);
  if (backend.fallback) reporter.line(`tfjs: ${backend.fallback}; using the cpu backend`);
  const { train, test } = loadSplit({ seed: config.splitSeed, subset: config.subset });
  const probe = createModel(config.model, 0);
  const parameters = probe.parameters;
  tf.dispose(probe.variables);
  reporter.line(`MNIST (mnist package): ${train.size} train / ${test.size} test digits; ${config.model.toUpperCase()} with ${parameters} parameters; tfjs ${backend.name} backend; batch ${config.batch}, ${config.epochs} epochs, seeds ${config.seeds.join(', ')}, schedule ${config.schedule}`);
  const runs: RunResult[] = [];
  for (const seed of config.seeds) {
    for (const optimizer of config.optimizers) runs.push(trainOne(config, optimizer, seed, train, test, reporter));
  }
  return { config, backend, parameters, trainSize: train.size, testSize: test.size, runs, seconds: (performance.now() - started) / 1000 };
}
