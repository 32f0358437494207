import { availableParallelism } from 'node:os';

import { fail } from './errors';

/** Which implementation runs the step. 'auto': the native addon, else the js one with a warning. */
export type BackendChoice = 'auto' | 'native' | 'js';
/** What update() does when the loss, the gradients or the parameters hold NaN or Inf. */
export type NonFinitePolicy = 'skip' | 'throw';

interface CommonOptions {
  /** Learning rate, the multiplier of the target loss (reference `lr`). Default 1. */
  lr?: number;
  /** L2 weight decay (reference `weight_decay`). Default 0. */
  weightDecay?: number;
  /** Fixed measurement noise R (reference `r`). Absent or null: adaptive, starting at 1. */
  r?: number | null;
  /** Smoothing of the adaptive R (reference `alpha_r`). Default 0.9. */
  betaR?: number;
  /** Layers whose raw gradient norm is below eps are skipped. Default 1e-9. */
  eps?: number;
  /** Threads of the native backend (the js backend runs on one). Default: os.availableParallelism(). */
  threads?: number;
  backend?: BackendChoice;
  /**
   * CUDA layers only: the caller's cudaStream_t as a BigInt; every kernel of a step runs on it.
   * Default 0n, the legacy default stream.
   */
  stream?: bigint;
  /** Default 'skip': the step is skipped as a whole and reported in the returned info. */
  onNonFinite?: NonFinitePolicy;
}

export interface KoalaMOptions extends CommonOptions {
  /** Velocity decay (reference `a`). Default 0.9. */
  kappa?: number;
  /** Initial P[0][0], the variance of the weights (reference `sw`). Default 0.1. */
  sigmaX0?: number;
  /** Initial P[0][1] = P[1][0] (reference `sc`). Default 0. */
  sigmaC0?: number;
  /** Initial P[1][1], the variance of the velocities (reference `sv`). Default 0.1. */
  sigmaP0?: number;
  /** Initial adaptive state noise of the weights (reference `qw`). Default 0.01. */
  qX0?: number;
  /** Fixed state noise of the velocities (reference `qv`). Default 0.01. */
  qP?: number;
  /**
   * Fold the next step's element-wise predict into update(): 36 instead of 56 bytes per float32
   * parameter, but between update() and the next predict() the parameters are already the
   * predicted ones (evaluate after predict(), or not in that gap). Default false.
   */
  lazyPredict?: boolean;
}

export interface KoalaVOptions extends CommonOptions {
  /** Initial P (reference `sigma`; its class default is 1, its training script uses 0.1). Default 0.1. */
  sigma0?: number;
  /** Fixed state noise (reference `q`). Default 1. */
  q?: number;
}

/**
 * KOALA++ (the authors' follow-up). sigma0 defaults to 1, the reference class's default (its CIFAR
 * script passes 0.2); KOALA-V's 0.1 is its training script's value, which KOALA++ does not share.
 */
export interface KoalaPPOptions extends CommonOptions {
  /** Initial scale of the covariance product, used on a layer's first update (reference `sigma`). Default 1. */
  sigma0?: number;
  /** Fixed state noise Q (reference `q`). Default 1. */
  q?: number;
  /** The symmetric least-squares estimate, which adds the r_k term (reference `is_symmetric`). Default true. */
  symmetric?: boolean;
}

/** The plain configuration handed to a backend (native or js); all numbers already checked. */
export interface BackendConfig {
  variant: 0 | 1 | 2; // 0 KOALA-M, 1 KOALA-V, 2 KOALA++
  dtype: 0 | 1; // 0 float32, 1 float64
  threads: number;
  weightDecay: number;
  eps: number;
  kappa: number;
  qP: number;
  q: number;
  betaR: number;
  adaptiveR: boolean;
  lazyPredict: boolean;
  /** KOALA++ only (false otherwise). */
  symmetric: boolean;
  p00: number;
  p01: number;
  p11: number;
  qX: number;
  sigma: number;
  r: number;
}

export interface Normalized {
  lr: number;
  /** null when the option was not given. */
  stream: bigint | null;
  backend: BackendChoice;
  onNonFinite: NonFinitePolicy;
  config: Omit<BackendConfig, 'dtype'>;
}

type Range = 'finite' | 'nonNegative' | 'unit';

const COMMON: Record<string, [Range, number]> = {
  lr: ['nonNegative', 1],
  weightDecay: ['nonNegative', 0],
  betaR: ['unit', 0.9],
  eps: ['nonNegative', 1e-9],
};
const MOMENTUM: Record<string, [Range, number]> = {
  ...COMMON,
  kappa: ['unit', 0.9],
  sigmaX0: ['nonNegative', 0.1],
  sigmaC0: ['finite', 0],
  sigmaP0: ['nonNegative', 0.1],
  qX0: ['nonNegative', 0.01],
  qP: ['nonNegative', 0.01],
};
const VANILLA: Record<string, [Range, number]> = { ...COMMON, sigma0: ['nonNegative', 0.1], q: ['nonNegative', 1] };
const PLUS_PLUS: Record<string, [Range, number]> = { ...COMMON, sigma0: ['nonNegative', 1], q: ['nonNegative', 1] };
/** The boolean options, per variant. */
const FLAGS: Record<0 | 1 | 2, string[]> = { 0: ['lazyPredict'], 1: [], 2: ['symmetric'] };
const NON_NUMERIC = ['r', 'threads', 'backend', 'onNonFinite', 'stream'];

/** The reference's option names, to point a user porting from it at ours. */
const REFERENCE_NAMES: Record<string, string> = {
  weight_decay: 'weightDecay',
  a: 'kappa',
  sw: 'sigmaX0',
  sc: 'sigmaC0',
  sv: 'sigmaP0',
  qw: 'qX0',
  qv: 'qP',
  alpha_r: 'betaR',
  sigma: 'sigma0',
  is_symmetric: 'symmetric',
};

export function checkNumber(name: string, value: unknown, range: Range): number {
  const ok =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (range === 'finite' ||
      (range === 'nonNegative' && value >= 0) ||
      (range === 'unit' && value >= 0 && value <= 1));
  if (!ok) {
    const want = { finite: 'a finite number', nonNegative: 'a finite number >= 0', unit: 'a number in [0, 1]' }[range];
    fail('ERR_KOALA_INVALID_OPTION', `option ${name} must be ${want}, got ${String(value)}`);
  }
  return value as number;
}

export function normalizeOptions(variant: 0 | 1 | 2, options: unknown): Normalized {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    fail('ERR_KOALA_INVALID_OPTION', 'options must be a plain object');
  }
  const table = [MOMENTUM, VANILLA, PLUS_PLUS][variant];
  const given = options as Record<string, unknown>;
  for (const key of Object.keys(given)) {
    if (!(key in table) && !NON_NUMERIC.includes(key) && !FLAGS[variant].includes(key)) {
      const ours = REFERENCE_NAMES[key];
      const hint = ours && (ours in table || FLAGS[variant].includes(ours)) ? ` (the reference's \`${key}\` is \`${ours}\` here)` : '';
      fail('ERR_KOALA_INVALID_OPTION', `unknown option ${key}${hint}`);
    }
  }
  const num = (name: string): number => {
    const [range, fallback] = table[name];
    return given[name] === undefined ? fallback : checkNumber(name, given[name], range);
  };
  const r = given.r === undefined || given.r === null ? null : checkNumber('r', given.r, 'nonNegative');
  const threads = given.threads === undefined ? availableParallelism() : given.threads;
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > 256) {
    fail('ERR_KOALA_INVALID_OPTION', `option threads must be an integer in [1, 256], got ${String(threads)}`);
  }
  const backend = given.backend ?? 'auto';
  if (backend !== 'auto' && backend !== 'native' && backend !== 'js') {
    fail('ERR_KOALA_INVALID_OPTION', `option backend must be 'auto', 'native' or 'js', got ${String(backend)}`);
  }
  const onNonFinite = given.onNonFinite ?? 'skip';
  if (onNonFinite !== 'skip' && onNonFinite !== 'throw') {
    fail('ERR_KOALA_INVALID_OPTION', `option onNonFinite must be 'skip' or 'throw', got ${String(onNonFinite)}`);
  }
  const stream = given.stream ?? null;
  if (stream !== null && (typeof stream !== 'bigint' || stream < 0n || stream >= 2n ** 64n)) {
    fail('ERR_KOALA_INVALID_OPTION', `option stream must be a cudaStream_t as a BigInt (0n: the default stream), got ${String(stream)}`);
  }
  const flag = (name: string, fallback: boolean): boolean => {
    const value = given[name] ?? fallback;
    if (typeof value !== 'boolean') fail('ERR_KOALA_INVALID_OPTION', `option ${name} must be a boolean, got ${String(value)}`);
    return value as boolean;
  };
  const lazyPredict = flag('lazyPredict', false);
  const symmetric = flag('symmetric', true) && variant === 2;
  const momentum = variant === 0;
  return {
    lr: num('lr'),
    stream,
    backend,
    onNonFinite,
    config: {
      variant,
      threads,
      weightDecay: num('weightDecay'),
      eps: num('eps'),
      betaR: num('betaR'),
      adaptiveR: r === null,
      lazyPredict,
      symmetric,
      r: r ?? 1,
      // The reference's F, Q and initial P are float32 tensors (Note [reference float32 rounding]
      // in native/include/koala/filter.h).
      kappa: momentum ? Math.fround(num('kappa')) : 0,
      qP: momentum ? Math.fround(num('qP')) : 0,
      p00: momentum ? Math.fround(num('sigmaX0')) : 0,
      p01: momentum ? Math.fround(num('sigmaC0')) : 0,
      p11: momentum ? Math.fround(num('sigmaP0')) : 0,
      qX: momentum ? num('qX0') : 0,
      q: momentum ? 0 : num('q'),
      sigma: momentum ? 0 : num('sigma0'),
    },
  };
}
