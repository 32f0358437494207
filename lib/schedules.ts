/**
 * Learning-rate schedules. A schedule is a plain function from the step index k (the number of
 * optimizer steps taken before this one, from 0) to the learning rate of step k; an LrScheduler
 * writes it into anything with a settable `lr` before each step: KoalaM, KoalaV, the TensorFlow.js
 * adapter, or a wrapper around another optimizer. Nothing else is touched.
 *
 * Every count is in steps. For a schedule given in epochs, multiply by the steps per epoch: the
 * official training script's milestones (30, 60, 90) with 390 batches per epoch are
 * `milestones: [30, 60, 90].map((e) => e * 390)`, which switches at exactly the same steps.
 */
import { fail } from './errors';

/** The learning rate of step k (k = 0 for the first step). */
export type LrSchedule = (step: number) => number;

/** Anything whose learning rate is set through an `lr` property. */
export interface HasLr {
  lr: number;
}

export interface StepLrOptions {
  /** The learning rate at step 0. */
  lr: number;
  /** Multiply the rate by gamma every stepSize steps. */
  stepSize: number;
  /** Default 0.1. */
  gamma?: number;
}

export interface MultiStepLrOptions {
  lr: number;
  /** Steps at which the rate is multiplied by gamma, increasing. */
  milestones: readonly number[];
  /** Default 0.1. */
  gamma?: number;
  /** Linear warmup over this many steps: step k < warmup gets lr * k / warmup. Default 0. */
  warmup?: number;
}

export interface CosineLrOptions {
  lr: number;
  /** The step at which the rate reaches minLr (and stays there). */
  totalSteps: number;
  /** Default 0. */
  minLr?: number;
  /** Linear warmup, as in multiStepLr; the cosine runs from step `warmup` to totalSteps. Default 0. */
  warmup?: number;
}

function check(name: string, value: unknown, min: number, integer = false): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) {
    fail('ERR_KOALA_INVALID_OPTION', `schedule option ${name} must be ${integer ? 'an integer' : 'a finite number'} >= ${min}, got ${String(value)}`);
  }
  return value;
}

/** Linear warmup shared by the schedules: lr * k / warmup below `warmup`, else undefined. */
function warmupLr(lr: number, warmup: number, k: number): number | undefined {
  return k < warmup ? (lr * k) / warmup : undefined;
}

/** lr * gamma^floor(k / stepSize) (torch's StepLR). */
export function stepLr(options: StepLrOptions): LrSchedule {
  const lr = check('lr', options.lr, 0);
  const stepSize = check('stepSize', options.stepSize, 1, true);
  const gamma = check('gamma', options.gamma ?? 0.1, 0);
  return (k) => lr * gamma ** Math.floor(k / stepSize);
}

/**
 * lr times gamma for every milestone already reached (k >= milestone), after a linear warmup from
 * 0: the rule of the official KOALA training script (`lr_multiplier_functor`), counted in steps.
 * As there, the first warmup step has rate 0: KOALA then shrinks its covariance without moving the
 * parameters.
 */
export function multiStepLr(options: MultiStepLrOptions): LrSchedule {
  const lr = check('lr', options.lr, 0);
  const gamma = check('gamma', options.gamma ?? 0.1, 0);
  const warmup = check('warmup', options.warmup ?? 0, 0, true);
  if (!Array.isArray(options.milestones)) fail('ERR_KOALA_INVALID_OPTION', 'schedule option milestones must be an array of steps');
  const milestones = options.milestones.map((m, i) => check(`milestones[${i}]`, m, 0, true));
  if (milestones.some((m, i) => i > 0 && m <= milestones[i - 1])) {
    fail('ERR_KOALA_INVALID_OPTION', `schedule option milestones must increase, got [${milestones.join(', ')}]`);
  }
  return (k) => warmupLr(lr, warmup, k) ?? lr * gamma ** milestones.filter((m) => k >= m).length;
}

/** Linear warmup, then a half cosine from lr down to minLr at totalSteps (torch's CosineAnnealingLR, one cycle). */
export function cosineLr(options: CosineLrOptions): LrSchedule {
  const lr = check('lr', options.lr, 0);
  const minLr = check('minLr', options.minLr ?? 0, 0);
  const warmup = check('warmup', options.warmup ?? 0, 0, true);
  const totalSteps = check('totalSteps', options.totalSteps, warmup + 1, true);
  return (k) => {
    const warm = warmupLr(lr, warmup, k);
    if (warm !== undefined) return warm;
    const t = Math.min(1, (k - warmup) / (totalSteps - warmup));
    return minLr + ((lr - minLr) * (1 + Math.cos(Math.PI * t))) / 2;
  };
}

/** Sets `target.lr` from a schedule before each step: call step() once before every optimizer step. */
export class LrScheduler {
  private readonly target: HasLr;
  private readonly schedule: LrSchedule;
  private k: number;

  /** @param startStep the index of the next step (to resume a run after `startStep` steps). */
  constructor(target: HasLr, schedule: LrSchedule, startStep = 0) {
    if (typeof schedule !== 'function') fail('ERR_KOALA_INVALID_OPTION', 'LrScheduler needs a schedule function');
    this.target = target;
    this.schedule = schedule;
    this.k = check('startStep', startStep, 0, true);
  }

  /** The index of the next step. */
  get stepCount(): number {
    return this.k;
  }

  /** Sets the target's lr for the coming step and returns it. */
  step(): number {
    const lr = this.schedule(this.k);
    this.target.lr = lr;
    this.k++;
    return lr;
  }
}
