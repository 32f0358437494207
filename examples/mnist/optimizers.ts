/**
 * The contenders behind one interface: KOALA-M, KOALA-V and KOALA++ through the tfjs adapter
 * (default options, lr 1, or for KOALA-M and KOALA-V one of the paper's variants), and tfjs's own
 * SGD with momentum 0.9 and Adam.
 *
 * KOALA++ runs with its defaults (sigma0 1, q 1, lr 1), not the authors' CIFAR script's settings
 * (sigma 0.2, q 0.2, weight decay 5e-4, lr 2 with its own step schedule): those were chosen with a
 * ResNet and that schedule, while here every KOALA variant runs with its class defaults under the
 * job's one schedule, so that the table compares the methods and not a tuning.
 */
import * as tf from '@tensorflow/tfjs-core';

import type { HasLr, KoalaMOptions, KoalaVOptions } from '../../lib';
import type { AdapterStats } from '../../lib/tfjs';
import { KoalaMOptimizer, KoalaPPOptimizer, KoalaVOptimizer } from '../../lib/tfjs';

export const OPTIMIZERS = ['koala-m', 'koala-v', 'koala-pp', 'sgd', 'adam'] as const;
export type OptimizerName = (typeof OPTIMIZERS)[number];

export const LABELS: Record<OptimizerName, string> = {
  'koala-m': 'KOALA-M',
  'koala-v': 'KOALA-V',
  'koala-pp': 'KOALA++',
  sgd: 'SGD+momentum',
  adam: 'Adam',
};

/**
 * KOALA's variant (README, "The paper's variants"): the official code, one of the paper's forms, or
 * all three ('paper'). 'regularized' changes KOALA-V only, and only with weight decay.
 */
export const VARIANTS = ['official', 'absolute-target', 'paper-noise', 'regularized', 'paper'] as const;
export type VariantName = (typeof VARIANTS)[number];

/** The KoalaM / KoalaV options of a variant. */
export function variantOptions(variant: VariantName): KoalaMOptions & KoalaVOptions {
  const all = variant === 'paper';
  return {
    ...(all || variant === 'absolute-target' ? { target: 'absolute' as const } : {}),
    ...(all || variant === 'paper-noise' ? { stateNoise: 'paper' as const } : {}),
    ...(all || variant === 'regularized' ? { direction: 'regularized' as const } : {}),
  };
}

/** Base learning rates: KOALA's default 1, SGD 0.05 with momentum 0.9, Adam 1e-3. */
export const BASE_LR: Record<OptimizerName, number> = { 'koala-m': 1, 'koala-v': 1, 'koala-pp': 1, sgd: 0.05, adam: 1e-3 };

export interface Trainer {
  readonly name: OptimizerName;
  /**
   * What a schedule sets the learning rate through; null where the optimizer has no public
   * setter (tfjs's AdamOptimizer), which then keeps its base rate.
   */
  readonly lr: HasLr | null;
  /** One step on a batch; returns the batch's mean loss before the step. */
  step(perSampleLoss: () => tf.Tensor1D, variables: tf.Variable[]): number;
  /** The KOALA adapter's copy and step times (null for the baselines). */
  readonly stats: AdapterStats | null;
  /** Updates refused by KOALA (non-finite loss or gradient) so far. */
  readonly refused: number;
  dispose(): void;
}

function meanOf(perSampleLoss: () => tf.Tensor1D): () => tf.Scalar {
  return () => tf.mean(perSampleLoss()) as tf.Scalar;
}

function readCost(cost: tf.Scalar | null): number {
  if (cost === null) throw new Error('minimize returned no cost');
  const value = cost.dataSync()[0];
  cost.dispose();
  return value;
}

/** The KOALA optimizers' settings (SGD and Adam take none of them). */
export interface KoalaSettings {
  /** The paper's variant (README, "The paper's variants"). */
  variant: VariantName;
  weightDecay: number;
  /** The `threads` option; null: left to the adapter (Note [adapter threads], lib/tfjs.ts). */
  threads: number | null;
}

export function createTrainer(name: OptimizerName, koala: KoalaSettings = { variant: 'official', weightDecay: 0, threads: null }): Trainer {
  if (name === 'koala-m' || name === 'koala-v' || name === 'koala-pp') {
    const { target, stateNoise, direction } = variantOptions(koala.variant);
    const common = { weightDecay: koala.weightDecay, ...(koala.threads === null ? {} : { threads: koala.threads }) };
    // The paper's variants are KOALA-M's and KOALA-V's; KOALA++ takes the weight decay and threads.
    const opt = {
      'koala-m': () => new KoalaMOptimizer({ target, stateNoise, ...common }),
      'koala-v': () => new KoalaVOptimizer({ target, direction, ...common }),
      'koala-pp': () => new KoalaPPOptimizer(common),
    }[name]();
    let refused = 0;
    return {
      name,
      lr: opt,
      step: (perSampleLoss, variables) => {
        const loss = readCost(opt.minimizePerSample(perSampleLoss, true, variables));
        if (opt.lastUpdate && !opt.lastUpdate.applied) refused++;
        return loss;
      },
      stats: opt.stats,
      get refused() {
        return refused;
      },
      dispose: () => opt.dispose(),
    };
  }
  if (name === 'sgd') {
    const opt = tf.train.momentum(BASE_LR.sgd, 0.9);
    let rate = BASE_LR.sgd;
    return {
      name,
      lr: {
        get lr() {
          return rate;
        },
        set lr(v: number) {
          rate = v;
          opt.setLearningRate(v);
        },
      },
      step: (perSampleLoss, variables) => readCost(opt.minimize(meanOf(perSampleLoss), true, variables)),
      stats: null,
      refused: 0,
      dispose: () => opt.dispose(),
    };
  }
  const opt = tf.train.adam(BASE_LR.adam);
  return {
    name,
    lr: null,
    step: (perSampleLoss, variables) => readCost(opt.minimize(meanOf(perSampleLoss), true, variables)),
    stats: null,
    refused: 0,
    dispose: () => opt.dispose(),
  };
}
