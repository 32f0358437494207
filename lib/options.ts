import { availableParallelism } from 'node:os';

import { fail } from './errors';
import type { DTypeCode, FilterState, Variant } from './protocol';

/** Which implementation runs the step. 'auto': the native addon, else the js one with a warning. */
export type BackendChoice = 'auto' | 'native' | 'js';
/** What update() does when the loss, the gradients or the parameters hold NaN or Inf. */
export type NonFinitePolicy = 'skip' | 'throw';
/**
 * The target loss of a step (paper, Theorem 1): 'relative' (1 - lr) L, the official code, moves by
 * lr L_l P / S along h; 'absolute' L - lr moves by lr P / S, whatever the loss.
 */
export type TargetLoss = 'relative' | 'absolute';
/**
 * KOALA-M's adaptive state noise q_x: 'official' 0.9 q_x + 0.1 sqrt(sum |x - a|^2) / n (the
 * official code); 'paper' |x - a|^2 / n (eq. 23-24), no square root and no second average.
 */
export type StateNoise = 'official' | 'paper';
/** KOALA-V's step direction: 'gradient' the raw g (the official code), 'regularized' g + wd x. */
export type VanillaDirection = 'gradient' | 'regularized';

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
  /** The target loss: 'relative' (1 - lr) L (default, the official code) or 'absolute' L - lr (paper eq. 27). */
  target?: TargetLoss;
  /**
   * Makes this optimizer one rank of a sharded optimizer (README, "Data-parallel and sharded
   * training"): each layer's param and grad are this rank's slice of the layer (possibly empty), and
   * the step runs through predictPartial() / finishPredict() / updatePartial() / finishUpdate().
   */
  shard?: ShardSpec;
}

/**
 * Where a rank's slices lie: for each layer, the whole layer's length and the offset of this rank's
 * slice in it (the slice's length is its param's). shardLayers() builds it from a flat range.
 */
export interface ShardSpec {
  layerLengths: number[];
  offsets: number[];
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
   * Fold the next step's element-wise predict into update(): 36 instead of 52 bytes per float32
   * parameter, but between update() and the next predict() the parameters are already the
   * predicted ones (evaluate after predict(), or not in that gap). Default false.
   */
  lazyPredict?: boolean;
  /** q_x: 'official' (default) or 'paper' |x - x_avg|^2 / n (eq. 23-24). */
  stateNoise?: StateNoise;
}

export interface KoalaVOptions extends CommonOptions {
  /** Initial P (reference `sigma`; its class default is 1, its training script uses 0.1). Default 0.1. */
  sigma0?: number;
  /** Fixed state noise (reference `q`). Default 1. */
  q?: number;
  /** Step along the raw gradient ('gradient', default, the official code) or along g + wd x ('regularized'). */
  direction?: VanillaDirection;
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

/** The plain configuration handed to a backend (native or js), with the initial filter; all numbers already checked. */
export interface BackendConfig extends FilterState {
  variant: Variant;
  dtype: DTypeCode;
  threads: number;
  weightDecay: number;
  eps: number;
  kappa: number;
  qP: number;
  q: number;
  betaR: number;
  adaptiveR: boolean;
  lazyPredict: boolean;
  // The paper's variants (Note [paper variants], native/include/koala/filter.h); absent or false:
  // the official code (normalizeOptions always sets them).
  absoluteTarget?: boolean;
  paperStateNoise?: boolean;
  vanillaAlongH?: boolean;
  /** Elements of the whole model, the n of q_x (a sharded rank holds fewer). Absent: the layers' own total. */
  modelElems?: number;
  /** KOALA++: the symmetric least-squares estimate (normalizeOptions sets it; false for the others). */
  symmetric?: boolean;
}

export interface Normalized {
  lr: number;
  /** null when the option was not given. */
  stream: bigint | null;
  backend: BackendChoice;
  onNonFinite: NonFinitePolicy;
  config: Omit<BackendConfig, 'dtype' | 'modelElems'>;
  /** The option shard as given (lib/shard.ts checks it against the layers). */
  shard: unknown;
}

/*
 * Note [option ranges]
 * The ranges are those under which the filter cannot divide by zero or leave the double range by
 * its own arithmetic, whatever the data; what data can still do to one step (an enormous loss or
 * gradient) is the step guard's to refuse.
 * - R > 0 (r, and betaR > 0 for the adaptive R): the innovation |h|^2 P + R is then > 0 for every
 *   gradient, P being positive semidefinite. With R = 0 a zero prior (zero variances and zero
 *   noise, or a layer whose h is 0 with eps: 0) gives 0/0, and betaR = 0 makes R the last batch's
 *   lossSq alone, 0 after a batch with a zero loss. (Zero variances with zero noise are harmless
 *   once R > 0: the gain is 0 and the parameters stay where they are, so they are accepted.)
 * - The initial P of KOALA-M positive semidefinite: sigmaC0^2 <= sigmaX0 sigmaP0 (on the float32
 *   values the filter holds, with 1e-6 of slack for a sigmaC0 computed as the square root). A P
 *   that is not can make the predicted P00, the prior, negative, and |h|^2 P + R zero.
 * - Every number at most MAX_MAGNITUDE = 1e12 in size. The filter multiplies a handful of them
 *   (lr loss P, P m P, kappa^2 P + Q over many steps): an initial P of 1e300 overflows P m P into
 *   Inf - Inf = NaN, an lr of 1e300 carries the parameters to Inf. 1e12 leaves every such product
 *   hundreds of orders of magnitude inside the double range, and is far beyond any useful setting
 *   (the defaults are 1, 0.1, 0.01).
 */
export const MAX_MAGNITUDE = 1e12;
const PSD_SLACK = 1e-6;

export type Range = 'finite' | 'nonNegative' | 'positive' | 'unit' | 'unitPositive';

const COMMON: Record<string, [Range, number]> = {
  lr: ['nonNegative', 1],
  weightDecay: ['nonNegative', 0],
  betaR: ['unitPositive', 0.9],
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
const NON_NUMERIC = ['r', 'threads', 'backend', 'onNonFinite', 'stream'];
/** Options of some variants only (KOALA++ has none of the paper variants of KOALA-M and KOALA-V, nor sharding). */
const VARIANT_ONLY: Record<0 | 1 | 2, string[]> = { 0: ['lazyPredict', 'stateNoise', 'target', 'shard'], 1: ['direction', 'target', 'shard'], 2: ['symmetric'] };

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

const MAX = MAX_MAGNITUDE.toExponential().replace('+', ''); // '1e12'
export const WANT: Record<Range, string> = {
  finite: `a number in [-${MAX}, ${MAX}]`,
  nonNegative: `a number in [0, ${MAX}]`,
  positive: `a number in (0, ${MAX}]`,
  unit: 'a number in [0, 1]',
  unitPositive: 'a number in (0, 1]',
};

/** Whether `value` is a number in `range` (Note [option ranges]). */
export function inRange(value: unknown, range: Range): value is number {
  return (
    typeof value === 'number' &&
    Number.isFinite(value) &&
    Math.abs(value) <= MAX_MAGNITUDE &&
    (range === 'finite' ||
      (range === 'nonNegative' && value >= 0) ||
      (range === 'positive' && value > 0) ||
      (range === 'unit' && value >= 0 && value <= 1) ||
      (range === 'unitPositive' && value > 0 && value <= 1))
  );
}

/** Checks a numeric option. */
export function checkNumber(name: string, value: unknown, range: Range): number {
  if (!inRange(value, range)) fail('ERR_KOALA_INVALID_OPTION', `option ${name} must be ${WANT[range]}, got ${String(value)}`);
  return value;
}

/** given[name], one of `allowed` (the first when absent). */
function choice<T extends string>(given: Record<string, unknown>, name: string, allowed: readonly T[]): T {
  const value = given[name] ?? allowed[0];
  if (!allowed.includes(value as T)) {
    fail('ERR_KOALA_INVALID_OPTION', `option ${name} must be ${allowed.map((a) => `'${a}'`).join(' or ')}, got ${String(value)}`);
  }
  return value as T;
}

export function normalizeOptions(variant: 0 | 1 | 2, options: unknown): Normalized {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    fail('ERR_KOALA_INVALID_OPTION', 'options must be a plain object');
  }
  const table = [MOMENTUM, VANILLA, PLUS_PLUS][variant];
  // Own keys only, each value read once; Object.hasOwn, not `in`: `constructor`, `toString` and
  // `__proto__` are in every object's prototype chain, and must be unknown options like any other.
  const given: Record<string, unknown> = Object.create(null);
  for (const key of Object.keys(options)) {
    if (!Object.hasOwn(table, key) && !NON_NUMERIC.includes(key) && !VARIANT_ONLY[variant].includes(key)) {
      const ours = Object.hasOwn(REFERENCE_NAMES, key) ? REFERENCE_NAMES[key] : undefined;
      const hint = ours && (Object.hasOwn(table, ours) || VARIANT_ONLY[variant].includes(ours)) ? ` (the reference's \`${key}\` is \`${ours}\` here)` : '';
      fail('ERR_KOALA_INVALID_OPTION', `unknown option ${key}${hint}`);
    }
    given[key] = (options as Record<string, unknown>)[key];
  }
  const num = (name: string): number => {
    const [range, fallback] = table[name];
    return given[name] === undefined ? fallback : checkNumber(name, given[name], range);
  };
  const r = given.r === undefined || given.r === null ? null : checkNumber('r', given.r, 'positive');
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
  // The filter's initial P, as it holds it: float32 values (Note [reference float32 rounding]).
  const [p00, p01, p11] = momentum ? [num('sigmaX0'), num('sigmaC0'), num('sigmaP0')].map(Math.fround) : [0, 0, 0];
  if (p01 * p01 > p00 * p11 * (1 + PSD_SLACK)) {
    fail('ERR_KOALA_INVALID_OPTION', `options sigmaX0, sigmaC0, sigmaP0 must make the initial P positive semidefinite (sigmaC0^2 <= sigmaX0 sigmaP0), got ${p00}, ${p01}, ${p11}`);
  }
  // Only the key of the variant is accepted (the other was refused above as unknown).
  const target = choice<TargetLoss>(given, 'target', ['relative', 'absolute']);
  const stateNoise = choice<StateNoise>(given, 'stateNoise', ['official', 'paper']);
  const direction = choice<VanillaDirection>(given, 'direction', ['gradient', 'regularized']);
  return {
    lr: num('lr'),
    stream,
    backend,
    onNonFinite,
    shard: given.shard,
    config: {
      variant,
      threads,
      weightDecay: num('weightDecay'),
      eps: num('eps'),
      betaR: num('betaR'),
      adaptiveR: r === null,
      lazyPredict,
      absoluteTarget: target === 'absolute',
      paperStateNoise: stateNoise === 'paper',
      vanillaAlongH: direction === 'regularized',
      symmetric,
      r: r ?? 1,
      // The reference's F, Q and initial P are float32 tensors (Note [reference float32 rounding]
      // in native/include/koala/filter.h).
      kappa: momentum ? Math.fround(num('kappa')) : 0,
      qP: momentum ? Math.fround(num('qP')) : 0,
      p00,
      p01,
      p11,
      qX: momentum ? num('qX0') : 0,
      q: momentum ? 0 : num('q'),
      sigma: momentum ? 0 : num('sigma0'),
    },
  };
}
