/**
 * The optimizer's state as plain data: stateDict() builds it, loadStateDict() parses it back into
 * a snapshot that holds nothing of the caller's (every field read once, every value copied), and
 * validates all of it before the optimizer writes anything (Note [state as a transaction]).
 */
import { fail, KoalaError } from './errors';
import { dtypeOf, zeros, type DType, type FloatArray } from './layers';
import { inRange, WANT, type BackendConfig, type ShardSpec, type StateNoise, type TargetLoss, type VanillaDirection } from './options';
import type { Phase } from './koala';
import { NO_PENDING_PREDICT, VARIANT, type FilterSnapshot, type Variant } from './protocol';

/** Plain, versioned, structured-clone-able optimizer state (parameters are the caller's). */
export interface KoalaStateDict {
  format: 'koala-optim';
  version: 1;
  optimizer: 'koala-m' | 'koala-v' | 'koala-pp';
  dtype: DType;
  /** Each layer's name and length (a sharded rank's: its slice's length). */
  layers: { name: string; length: number }[];
  /**
   * A sharded rank's state holds its slices only: where they lie (option shard). null for an
   * unsharded optimizer (absent in states saved before sharding: read as null).
   */
  shard?: ShardSpec | null;
  step: number;
  phase: Phase;
  lr: number;
  /**
   * [P00, P01, P11, qX, sigma, R]; KOALA-V has zeros where KOALA-M's P and qX stand, KOALA-M a zero
   * sigma; KOALA++ zeros for P and qX, and its option sigma0 as sigma (loading leaves the
   * optimizer's own).
   */
  filter: number[];
  /**
   * With lazy predict, after an update: the sum |a - x|^2 that the next predict() will use, its
   * element-wise part being done already (a sharded rank's: its slices' partial sum). null otherwise.
   */
  pendingPredict: number | null;
  /**
   * KOALA-M: per-layer velocities and parameter averages; empty for KOALA-V. loadStateDict() also
   * takes plain number arrays, and the objects { "0": v0, "1": v1, ... } that JSON.stringify makes
   * of typed arrays, so that a state dict survives JSON.
   */
  velocities: FloatArray[];
  averages: FloatArray[];
  /** KOALA++ only (absent or null for the others). */
  plusPlus?: KoalaPPLayers | null;
  /**
   * The variant of the algorithm the state belongs to (Note [state variants]); absent in states
   * saved by 0.2.0 and earlier, which load into any variant of their optimizer.
   */
  variants?: StateVariants;
}

/**
 * Note [state variants]
 * The options that choose another algorithm, not another setting of one: KOALA-M's target loss
 * and state-noise estimate, KOALA-V's target loss and step direction (the paper's variants, Note
 * [paper variants], native/include/koala/filter.h), KOALA++'s symmetric estimate. A state is the
 * filter of one of them: the official state-noise estimate keeps an average of sqrt(|x - a|^2) / n
 * where the paper's keeps |x - a|^2 / n, so a state carried across would feed one quantity into the
 * other's formula. A state dict records its variant, and loadStateDict() refuses another one with
 * ERR_KOALA_INVALID_STATE, as it refuses another optimizer. Settings (lr, kappa, the noises, weight
 * decay, R's smoothing, lazy predict) are not recorded: a run may resume with other ones (the
 * learning rate is restored with the state; schedules set it again).
 */
export type StateVariants =
  | { target: TargetLoss; stateNoise: StateNoise }
  | { target: TargetLoss; direction: VanillaDirection }
  | { symmetric: boolean };

/** The variant of an optimizer built with `config` (Note [state variants]). */
export function stateVariants(variant: Variant, config: Pick<BackendConfig, 'absoluteTarget' | 'paperStateNoise' | 'vanillaAlongH' | 'symmetric'>): StateVariants {
  const target: TargetLoss = config.absoluteTarget === true ? 'absolute' : 'relative';
  if (variant === VARIANT.momentum) return { target, stateNoise: config.paperStateNoise === true ? 'paper' : 'official' };
  if (variant === VARIANT.vanilla) return { target, direction: config.vanillaAlongH === true ? 'regularized' : 'gradient' };
  return { symmetric: config.symmetric === true };
}

/**
 * KOALA++'s per-layer state in a state dict: v_l and Hp_l, S_l and the dots carried to the next
 * step (|H_l|^2 and v_l . H_l of the layer's last update), and whether the layer was ever updated
 * (before its first update, v, Hp, S and the dots are zeros and unused). products and directions
 * are read like velocities (typed arrays, plain arrays, JSON's objects).
 */
export interface KoalaPPLayers {
  products: FloatArray[];
  directions: FloatArray[];
  S: number[];
  hh: number[];
  vh: number[];
  updated: boolean[];
}

export const STATE_VERSION = 1;

const OPTIMIZER_NAMES = ['koala-m', 'koala-v', 'koala-pp'] as const;

/** What a state dict must fit: the optimizer that loads it. */
export interface StateTarget {
  variant: Variant;
  dtype: DType;
  lengths: readonly number[];
  /** A sharded rank's slices (checked by lib/shard.ts at construction), or null. */
  shard: ShardSpec | null;
  variants: StateVariants;
}

/** A validated state, every value copied out of the caller's data. */
export interface ParsedState {
  filter: FilterSnapshot;
  phase: Phase;
  lr: number;
  velocities: FloatArray[];
  averages: FloatArray[];
  plusPlus: KoalaPPLayers | null;
}

const QX_DECAY = 0.9; // the next predict's q_x is at least 0.9 of the state's (q_x <- 0.9 q_x + 0.1 d)

export function toStateDict(
  target: StateTarget,
  names: readonly string[],
  f: FilterSnapshot,
  phase: Phase,
  lr: number,
  velocities: FloatArray[],
  averages: FloatArray[],
  plusPlus: KoalaPPLayers | null,
): KoalaStateDict {
  return {
    format: 'koala-optim',
    version: STATE_VERSION,
    optimizer: OPTIMIZER_NAMES[target.variant],
    dtype: target.dtype,
    layers: names.map((name, i) => ({ name, length: target.lengths[i] })),
    shard: target.shard === null ? null : { layerLengths: [...target.shard.layerLengths], offsets: [...target.shard.offsets] },
    step: f.steps,
    phase,
    lr,
    filter: [f.p00, f.p01, f.p11, f.qX, f.sigma, f.r],
    pendingPredict: f.pending === NO_PENDING_PREDICT ? null : f.pending,
    velocities,
    averages,
    plusPlus,
    variants: { ...target.variants },
  };
}

/*
 * Note [state as a transaction]
 * loadStateDict() must leave the optimizer as it was unless the whole state is good, and must not
 * be fooled by data that changes while it is read: a getter, a Proxy, an own Symbol.iterator on an
 * array. So parseStateDict() reads every field exactly once, by property access and index (never by
 * iteration: spreading an array calls its iterator), copies every number into memory of its own,
 * and validates the copies; the optimizer then writes only the copies. A typed array's elements are
 * copied with TypedArray.prototype.set, which reads the memory itself, and its length is read with
 * the intrinsic getter, which an own `length` property cannot shadow.
 *
 * Note [state tolerance]
 * The filter's own arithmetic produces states a hair outside the exact ranges, so a check with no
 * tolerance would refuse states that the optimizer itself saved. The update P <- P - m p p^T (p the
 * first column of P) keeps P positive semidefinite for m <= 1/P00, but m is rounded to float32 as
 * in the reference (Note [reference float32 rounding]), so when R is tiny against |h|^2 P00 the new
 * P has an eigenvalue of about -2^-24 times the P00 *before* the update, which the state no longer
 * holds: a first update from sigmaX0 = 280 with R = 5e-12 leaves P00 = -1.7e-5 beside a P11 of
 * 1.1e-5, so no tolerance relative to P itself accepts it. What the state does hold is qX, and the
 * next predict adds at least 0.9 qX to P00 (q_x <- 0.9 q_x + 0.1 d, d >= 0): the check is on
 * P + diag(0.9 qX, 0), the part of the next prediction that the state decides. That matrix plus
 * delta I must be positive semidefinite, delta = STATE_REL_TOL * its largest entry + STATE_ABS_TOL;
 * KOALA-V's sigma must be >= -STATE_ABS_TOL. Over 120,000 states of long random runs
 * (test/unit/state.test.ts generates them, with KOALA_STATE_RUNS=400: variances from 1e-6 to 1e3,
 * R down to 1e-12, losses from 1e-8 to 10, both backends) the most negative eigenvalue was 3.6e-8
 * of the scale (the float32 rounding of m), and sigma never below -7.1e-15 (a few ulp of the sigma
 * before the update): STATE_REL_TOL = 1e-6 and STATE_ABS_TOL = 1e-12 leave a wide margin, and still
 * refuse any P whose |P01| exceeds sqrt(P00 P11) by more than rounding, and any variance below zero
 * by more than that.
 */
export const STATE_REL_TOL = 1e-6;
/**
 * The largest filter scalar a state may hold: far beyond what training reaches (P grows by Q per
 * step from at most 1e12, Note [option ranges]), and small enough that the step's products of
 * three of them (lr loss P, P m P) stay inside the double range.
 */
const STATE_MAX = 1e100;
export const STATE_ABS_TOL = 1e-12;

const typedLength = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Float32Array.prototype), 'length')!.get!;

const bad = (why: string): never => fail('ERR_KOALA_INVALID_STATE', `loadStateDict: ${why}`);

/**
 * Parses and validates a state dict for `target`; every failure is ERR_KOALA_INVALID_STATE, also
 * a getter or Proxy of the caller's that throws while it is read (nothing is written yet then).
 */
export function parseStateDict(sd: unknown, target: StateTarget): ParsedState {
  try {
    return parse(sd, target);
  } catch (e) {
    if (e instanceof KoalaError) throw e;
    return bad(`reading it threw ${e instanceof Error ? `${e.name}: ${e.message}` : 'a value that is not an Error'}`);
  }
}

function parse(sd: unknown, target: StateTarget): ParsedState {
  if (typeof sd !== 'object' || sd === null) bad('not a koala-optim state dict');
  const o = sd as Record<string, unknown>;
  // Each field read once, here (Note [state as a transaction]).
  const [format, version, optimizer, dtype, layers, shard, step, phase, lr, filter, pendingPredict, velocities, averages, plusPlus, variants] = [
    o.format, o.version, o.optimizer, o.dtype, o.layers, o.shard, o.step, o.phase, o.lr, o.filter, o.pendingPredict, o.velocities, o.averages,
    o.plusPlus, o.variants,
  ];
  if (format !== 'koala-optim') bad('not a koala-optim state dict');
  if (version !== STATE_VERSION) bad(`version ${String(version)} is not supported (this build reads ${STATE_VERSION})`);
  const momentum = target.variant === VARIANT.momentum;
  const pp = target.variant === VARIANT.plusPlus;
  if (optimizer !== OPTIMIZER_NAMES[target.variant]) bad(`it holds a ${String(optimizer)} state`);
  if (dtype !== target.dtype) bad(`its dtype is ${String(dtype)}, this optimizer's is ${target.dtype}`);
  checkSameVariants(variants, target.variants);
  const lengths = target.lengths;
  const layerList = plainArray(layers, lengths.length, 'layers');
  layerList.forEach((l, i) => {
    const length = typeof l === 'object' && l !== null ? (l as { length?: unknown }).length : undefined;
    if (length !== lengths[i]) bad(`its layer sizes differ from this optimizer's (layer ${i}: ${String(length)}, here ${lengths[i]})`);
  });
  checkSameShard(shard, target.shard);
  if (typeof step !== 'number' || !Number.isSafeInteger(step) || step < 0) bad('step must be a non-negative integer');
  if (phase !== 'predicted' && phase !== 'updated') bad('phase must be "predicted" or "updated"');
  if (!inRange(lr, 'nonNegative')) bad(`lr must be ${WANT.nonNegative}, as the option`);
  const values = plainArray(filter, 6, 'filter');
  if (!values.every((v) => typeof v === 'number' && Math.abs(v) <= STATE_MAX)) bad(`filter must hold 6 finite numbers, none beyond ${STATE_MAX.toExponential()} in size`);
  const [p00, p01, p11, qX, sigma, r] = values as number[];
  if (!(r > 0)) bad(`R (filter[5]) must be > 0, got ${r}`);
  if (!(qX >= 0)) bad(`qX (filter[3]) must be >= 0, got ${qX}`);
  if (momentum) {
    if (sigma !== 0) bad(`sigma (filter[4]) is KOALA-V's and must be 0 in a KOALA-M state, got ${sigma}`);
    // P + diag(0.9 qX, 0) + delta I positive semidefinite (Note [state tolerance]).
    const a = p00 + QX_DECAY * qX;
    const delta = STATE_REL_TOL * Math.max(Math.abs(a), Math.abs(p01), Math.abs(p11)) + STATE_ABS_TOL;
    if (!(a + delta >= 0 && p11 + delta >= 0 && (a + delta) * (p11 + delta) >= p01 * p01)) {
      bad(`P = [[${p00}, ${p01}], [${p01}, ${p11}]] is not positive semidefinite (qX = ${qX})`);
    }
  } else {
    if (p00 !== 0 || p01 !== 0 || p11 !== 0 || qX !== 0) bad(`P and qX (filter[0..3]) are KOALA-M's and must be 0 in a ${String(optimizer)} state`);
    if (!(sigma >= -STATE_ABS_TOL)) bad(`sigma (filter[4]) must be >= 0, got ${sigma}`);
  }
  if (pendingPredict !== null) {
    if (typeof pendingPredict !== 'number' || !Number.isFinite(pendingPredict) || pendingPredict < 0) bad('pendingPredict must be null or a finite number >= 0');
    if (!momentum) bad(`pendingPredict must be null in a ${String(optimizer)} state (lazy predict is KOALA-M's)`);
    if (phase !== 'updated') bad('pendingPredict must be null in phase "predicted" (predict() has used it)');
  }
  const perLayer = (value: unknown, key: string): FloatArray[] =>
    plainArray(value, momentum ? lengths.length : 0, key).map((a, i) => copyLayer(a, target.dtype, lengths[i], `${key}[${i}]`));
  return {
    filter: { p00, p01, p11, qX, sigma, r, pending: (pendingPredict as number | null) ?? NO_PENDING_PREDICT, steps: step as number },
    phase: phase as Phase,
    lr: lr as number,
    velocities: perLayer(velocities, 'velocities'),
    averages: perLayer(averages, 'averages'),
    plusPlus: pp ? parsePPLayers(plusPlus, target) : plusPlus === undefined || plusPlus === null ? null : bad('plusPlus is for a koala-pp state'),
  };
}

/** KOALA++'s per-layer state, each field read once and copied (Note [state as a transaction]). */
function parsePPLayers(value: unknown, target: StateTarget): KoalaPPLayers {
  if (typeof value !== 'object' || value === null) bad('plusPlus must hold the KOALA++ layer state');
  const o = value as Record<string, unknown>;
  const [products, directions, S, hh, vh, updated] = [o.products, o.directions, o.S, o.hh, o.vh, o.updated];
  const n = target.lengths.length;
  const perLayer = (v: unknown, key: string): FloatArray[] =>
    plainArray(v, n, `plusPlus.${key}`).map((a, i) => copyLayer(a, target.dtype, target.lengths[i], `plusPlus.${key}[${i}]`));
  const scalars = (v: unknown, key: string): number[] => {
    const out = plainArray(v, n, `plusPlus.${key}`);
    if (!out.every((x) => typeof x === 'number' && Math.abs(x) <= STATE_MAX)) bad(`plusPlus.${key} must hold ${n} finite numbers, none beyond ${STATE_MAX} in size`);
    return out as number[];
  };
  const flags = plainArray(updated, n, 'plusPlus.updated');
  if (!flags.every((u) => typeof u === 'boolean')) bad('plusPlus.updated must hold one boolean per layer');
  return {
    products: perLayer(products, 'products'),
    directions: perLayer(directions, 'directions'),
    S: scalars(S, 'S'),
    hh: scalars(hh, 'hh'),
    vh: scalars(vh, 'vh'),
    updated: flags as boolean[],
  };
}

/**
 * A state holds one rank's slices (Note [sharded step], native/cpu/optimizer.h): it loads only into
 * an optimizer with the same slices, and an unsharded state (shard null or absent) only into an
 * unsharded optimizer. Layer lengths alone cannot tell: two ranks' slices may have equal lengths.
 */
function checkSameShard(theirs: unknown, mine: ShardSpec | null): void {
  if (theirs === undefined || theirs === null) {
    if (mine !== null) bad('it holds an unsharded optimizer\'s state, this optimizer is a sharded rank');
    return;
  }
  if (mine === null) bad('it holds a sharded rank\'s slices, this optimizer is unsharded');
  if (typeof theirs !== 'object') bad('shard must be null or { layerLengths, offsets }');
  const o = theirs as Record<string, unknown>;
  const [layerLengths, offsets] = [o.layerLengths, o.offsets];
  const count = mine!.layerLengths.length;
  const same = (value: unknown, key: 'layerLengths' | 'offsets'): boolean =>
    plainArray(value, count, `shard.${key}`).every((v, i) => v === mine![key][i]);
  if (!same(layerLengths, 'layerLengths') || !same(offsets, 'offsets')) bad('its shard (the slices it holds) differs from this rank\'s');
}

/** A state of another variant is refused (Note [state variants]); one saved before they were recorded is not checked. */
function checkSameVariants(theirs: unknown, mine: StateVariants): void {
  if (theirs === undefined) return;
  if (typeof theirs !== 'object' || theirs === null || Array.isArray(theirs)) bad('variants must be an object');
  const keys = Object.keys(mine) as (keyof StateVariants)[];
  const own = Object.keys(theirs as object);
  const extra = own.find((k) => !(keys as string[]).includes(k));
  if (extra !== undefined || own.length !== keys.length) bad(`variants must name ${keys.join(' and ')}, got ${own.join(', ') || 'nothing'}`);
  for (const key of keys) {
    const value = (theirs as Record<string, unknown>)[key];
    if (value !== mine[key]) bad(`it was saved with ${key} ${JSON.stringify(value)}, this optimizer's is ${JSON.stringify(mine[key])}: another variant of the algorithm`);
  }
}

/** The elements of a real Array of `length` elements, each read once. */
function plainArray(value: unknown, length: number, what: string): unknown[] {
  if (!Array.isArray(value) || value.length !== length) bad(`${what} must be an array of ${length}`);
  const out = new Array<unknown>(length);
  for (let i = 0; i < length; i++) out[i] = (value as unknown[])[i];
  return out;
}

/**
 * A copy of one layer's state: a typed array of the state's dtype, a plain array of numbers, or
 * the index-keyed object JSON makes of a typed array; every value finite in the dtype (a float32
 * state from JSON holds the same numbers, which round to themselves).
 */
function copyLayer(a: unknown, dtype: DType, length: number, what: string): FloatArray {
  const out = zeros(dtype, length);
  const kind = dtypeOf(a);
  if (kind !== null) {
    if (kind !== dtype) bad(`${what} is a ${kind} array; this state's dtype is ${dtype}`);
    if (typedLength.call(a) !== length) bad(`${what} must hold ${length} values, the layer's length`);
    out.set(a as FloatArray);
  } else if (ArrayBuffer.isView(a)) {
    bad(`${what} must hold ${dtype} values, not a ${Object.prototype.toString.call(a).slice(8, -1)}`);
  } else if (Array.isArray(a)) {
    if (a.length !== length) bad(`${what} must hold ${length} values, the layer's length`);
    for (let i = 0; i < length; i++) out[i] = number(a[i], what, i);
  } else if (typeof a === 'object' && a !== null) {
    // JSON.stringify writes a typed array as { "0": .., "1": .., ... }.
    if (Object.keys(a).length !== length) bad(`${what} must hold ${length} values, the layer's length`);
    const rec = a as Record<number, unknown>;
    for (let i = 0; i < length; i++) out[i] = number(Object.hasOwn(rec, i) ? rec[i] : undefined, what, i);
  } else {
    bad(`${what} must be a ${dtype} array or an array of numbers`);
  }
  for (let i = 0; i < length; i++) if (!Number.isFinite(out[i])) bad(`${what}[${i}] is ${out[i]}: the state must be finite`);
  return out;
}

function number(v: unknown, what: string, i: number): number {
  if (typeof v !== 'number') bad(`${what}[${i}] must be a number, got ${typeof v}`);
  return v as number;
}
