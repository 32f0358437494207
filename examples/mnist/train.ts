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
import { BASE_LR, createTrainer, LABELS, type OptimizerName, type Trainer, type VariantName } from './optimizers';
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
  /** Threads of the KOALA optimizers; null: the adapter's choice (Note [adapter threads], lib/tfjs.ts). */
  koalaThreads: number | null;
  /** KOALA's variant (the paper's options) and weight decay; SGD and Adam take neither. */
  variant: VariantName;
  weightDecay: number;
}

export const DEFAULTS: ExperimentConfig = {
  model: 'mlp',
  optimizers: ['koala-m', 'koala-v', 'koala-pp', 'sgd', 'adam'],
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
  koalaThreads: null,
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
  /**
   * KOALA only, per step: the adapter's host copies (of which the parameter write-backs), the
   * KOALA step (ms), and the write-backs (count).
   */
  adapter: { copyMs: number; writeMs: number; koalaMs: number; writes: number } | null;
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

/** The training rows of every epoch of a seed, shuffled: the same for every optimizer of the seed. */
export function epochOrders(seed: number, size: number): () => number[] {
  const random = rng(seed * 1_000_003 + 17);
  const order = Array.from({ length: size }, (_, i) => i);
  return () => shuffle(order, random);
}

/** Steps per epoch at this batch size; the last partial batch is dropped. */
export function stepsPerEpoch(config: ExperimentConfig, train: Split): number {
  const steps = Math.floor(train.size / config.batch);
  if (steps === 0) throw new RangeError(`batch ${config.batch} is larger than the ${train.size} training samples`);
  return steps;
}

/**
 * One optimizer training its model (drawn from the seed): steps on the batches it is given, a
 * test evaluation at its start and after every epoch. The caller owns the batch order and the
 * timing (the main job runs one at a time; bench/training.ts runs several in lockstep).
 */
export class Training {
  readonly result: RunResult;
  private readonly model: Model;
  private readonly trainer: Trainer;
  private readonly scheduler: LrScheduler | null;
  private readonly perEpoch: number;
  private readonly window: number;
  private stepInEpoch = 0;
  private epochSum = 0;
  private windowSum = 0;

  constructor(
    config: ExperimentConfig,
    optimizer: OptimizerName,
    seed: number,
    private readonly train: Split,
    private readonly test: Split,
  ) {
    this.model = createModel(config.model, seed);
    this.trainer = createTrainer(optimizer, { variant: config.variant, weightDecay: config.weightDecay, threads: config.koalaThreads });
    this.perEpoch = stepsPerEpoch(config, train);
    const schedule = this.trainer.lr ? scheduleFor(config, BASE_LR[optimizer], this.perEpoch) : null;
    this.scheduler = this.trainer.lr && schedule ? new LrScheduler(this.trainer.lr, schedule) : null;
    this.window = Math.max(1, Math.floor(this.perEpoch / 8));
    this.result = {
      optimizer,
      label: LABELS[optimizer],
      seed,
      model: config.model,
      batch: config.batch,
      trainLoss: [],
      test: [{ epoch: 0, ...evaluate(this.model, test) }],
      finalTrainLoss: Number.NaN,
      seconds: 0,
      steps: 0,
      refused: 0,
      adapter: null,
    };
  }

  /** One step on the given training rows; returns the batch's mean loss before the step. */
  step(rows: number[]): number {
    this.scheduler?.step();
    const { model, trainer } = this;
    const loss = tf.tidy(() => {
      const { images, labels } = batchTensors(this.train, rows);
      return trainer.step(() => perSampleLoss(model, images, labels), model.variables);
    });
    this.stepInEpoch++;
    this.epochSum += loss;
    this.windowSum += loss;
    if (this.stepInEpoch % this.window === 0) {
      const epoch = this.result.test.length - 1;
      this.result.trainLoss.push({ epoch: epoch + this.stepInEpoch / this.perEpoch, loss: this.windowSum / this.window });
      this.windowSum = 0;
    }
    return loss;
  }

  /** Closes an epoch: its mean train loss, and the test evaluation. */
  endEpoch(): EpochPoint {
    this.result.steps += this.stepInEpoch;
    this.result.finalTrainLoss = this.epochSum / this.stepInEpoch;
    const point = { epoch: this.result.test.length, ...evaluate(this.model, this.test) };
    this.result.test.push(point);
    this.stepInEpoch = 0;
    this.epochSum = 0;
    this.windowSum = 0;
    return point;
  }

  /** Frees the model and the optimizer; the result, with the run's time. */
  finish(seconds: number): RunResult {
    const r = this.result;
    r.seconds = seconds;
    r.refused = this.trainer.refused;
    if (this.trainer.stats) {
      const { copyMs, writeMs, koalaMs, writes } = this.trainer.stats;
      r.adapter = { copyMs: copyMs / r.steps, writeMs: writeMs / r.steps, koalaMs: koalaMs / r.steps, writes: writes / r.steps };
    }
    this.trainer.dispose();
    tf.dispose(this.model.variables);
    return r;
  }
}

function trainOne(config: ExperimentConfig, optimizer: OptimizerName, seed: number, train: Split, test: Split, reporter: Reporter): RunResult {
  const started = performance.now();
  const run = new Training(config, optimizer, seed, train, test);
  const perEpoch = stepsPerEpoch(config, train);
  const nextOrder = epochOrders(seed, train.size);
  const { label } = run.result;
  for (let epoch = 1; epoch <= config.epochs; epoch++) {
    reporter.runStart(`${label} seed ${seed} epoch ${epoch}/${config.epochs}`, perEpoch);
    const epochStart = performance.now();
    const order = nextOrder();
    for (let s = 0; s < perEpoch; s++) reporter.step(s + 1, run.step(order.slice(s * config.batch, (s + 1) * config.batch)));
    const point = run.endEpoch();
    const secs = (performance.now() - epochStart) / 1000;
    reporter.line(`${label.padEnd(12)} seed ${seed}  epoch ${epoch}/${config.epochs}  train loss ${run.result.finalTrainLoss.toFixed(4)}  test loss ${point.loss.toFixed(4)}  test acc ${(100 * point.accuracy).toFixed(2)}%  (${secs.toFixed(1)} s)`);
  }
  return run.finish((performance.now() - started) / 1000);
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
