import type { Backend } from './backend';
import { CudaBackend } from './cuda';
import { fail, KoalaError, nativeCall } from './errors';
import {
  checkAttached,
  checkDeviceDescriptor,
  dtypeOf,
  isDeviceDescriptor,
  validateLayers,
  type DeviceScalar,
  type DType,
  type FloatArray,
  type Layer,
  type LayerTable,
} from './layers';
import { nativeModule, nativeStatus } from './native';
import {
  checkNumber,
  normalizeOptions,
  type BackendChoice,
  type BackendConfig,
  type KoalaMOptions,
  type KoalaPPOptions,
  type KoalaVOptions,
  type NonFinitePolicy,
} from './options';
import {
  DTYPE,
  LAYER_STATE,
  NO_PENDING_PREDICT,
  PP_LAYER_SCALARS,
  STEP_STATUS,
  VARIANT,
  type BackendStep,
  type FilterSnapshot,
  type LayerStateKind,
  type StepStatus,
  type Variant,
} from './protocol';
import { ReferenceBackend } from './reference';
import { ReferencePPBackend } from './reference-pp';

/**
 * Where a step stands. update() needs a predict() since the last applied update: calling it twice
 * would re-apply the filter's correction to the same prediction. predict() is always allowed (after
 * a skipped update the trainer simply goes on with the next batch).
 */
export type Phase = 'predicted' | 'updated';

/**
 * Why a step was refused: NaN or Inf in the loss, the gradients or the parameters, or in what the
 * filter computed from them (R, a gain, P or sigma; or a gain that could carry a parameter past
 * its dtype's range).
 */
export type SkipReason = 'non-finite-loss' | 'non-finite-gradient' | 'non-finite-parameter' | 'non-finite-step';

/** What update() returns, for the trainer to log. */
export interface UpdateInfo {
  /** False when the step was refused as a whole (see reason); nothing was changed then. */
  applied: boolean;
  reason: SkipReason | null;
  /** Applied updates so far. */
  step: number;
  /** Indices of the layers left untouched because |g_l| < eps. */
  skippedLayers: number[];
  /**
   * max_l |h_l|^2 / S_l over the updated layers (0 when none was); KOALA++: max_l lambda_l, the
   * largest shrink of a layer's product v_l along its previous direction.
   */
  maxGain: number;
  /** The measurement noise R after this update. */
  r: number;
}

export interface KoalaMState {
  step: number;
  phase: Phase;
  P: [[number, number], [number, number]];
  R: number;
  qX: number;
}

export interface KoalaVState {
  step: number;
  phase: Phase;
  sigma: number;
  R: number;
}

export interface KoalaPPState {
  step: number;
  phase: Phase;
  R: number;
  /** Per layer S_l, or null while the layer has never been updated. */
  S: (number | null)[];
}

/**
 * KOALA++'s per-layer state in a state dict: v_l and Hp_l, S_l and the dots carried to the next
 * step (|H_l|^2 and v_l . H_l of the layer's last update), and whether the layer was ever updated
 * (before its first update, v, Hp, S and the dots are zeros and unused).
 */
export interface KoalaPPLayers {
  products: FloatArray[];
  directions: FloatArray[];
  S: number[];
  hh: number[];
  vh: number[];
  updated: boolean[];
}

/** Plain, versioned, structured-clone-able optimizer state (parameters are the caller's). */
export interface KoalaStateDict {
  format: 'koala-optim';
  version: 1;
  optimizer: 'koala-m' | 'koala-v' | 'koala-pp';
  dtype: DType;
  layers: { name: string; length: number }[];
  step: number;
  phase: Phase;
  lr: number;
  /**
   * [P00, P01, P11, qX, sigma, R]; KOALA-V has zeros where KOALA-M's P and qX stand, KOALA++ too,
   * and its sigma is the option sigma0 (a constant: loading leaves the optimizer's own).
   */
  filter: number[];
  /**
   * With lazy predict, after an update: the sum |a - x|^2 that the next predict() will use, its
   * element-wise part being done already. null otherwise.
   */
  pendingPredict: number | null;
  /** KOALA-M: per-layer velocities and parameter averages; empty for KOALA-V and KOALA++. */
  velocities: FloatArray[];
  averages: FloatArray[];
  /** KOALA++ only (absent or null for the others). */
  plusPlus?: KoalaPPLayers | null;
}

const OPTIMIZER_NAMES = ['koala-m', 'koala-v', 'koala-pp'] as const;

const STATE_VERSION = 1;
let warnedFallback = false;

/** Which implementation runs the steps: the CPU addon, the js reference, or the CUDA addon. */
export type BackendName = 'native' | 'js' | 'cuda';

function createBackend(
  choice: BackendChoice,
  config: BackendConfig,
  table: LayerTable,
  skipMask: Uint8Array,
  stream: bigint | null,
): [Backend, BackendName] {
  if (table.memory === 'cuda') {
    if (choice !== 'auto') fail('ERR_KOALA_INVALID_OPTION', `option backend '${choice}' runs on host arrays; device tensors run on the CUDA backend (leave backend out)`);
    return [new CudaBackend(config, table, skipMask, stream ?? 0n), 'cuda'];
  }
  if (stream !== null) fail('ERR_KOALA_INVALID_OPTION', 'option stream is for layers in CUDA device memory');
  if (choice !== 'js') {
    const mod = nativeModule();
    if (mod) return [nativeCall(() => new mod.NativeOptimizer(config, table.params, table.grads, skipMask)), 'native'];
    if (choice === 'native') fail('ERR_KOALA_NATIVE_UNAVAILABLE', `the native addon does not load: ${nativeStatus().reason}`);
    if (!warnedFallback) {
      warnedFallback = true;
      process.emitWarning(`koala-optim: native addon unavailable, using the js backend (${nativeStatus().reason})`);
    }
  }
  const Reference = config.variant === VARIANT.plusPlus ? ReferencePPBackend : ReferenceBackend;
  return [new Reference(config, table.params, table.grads, skipMask), 'js'];
}

const REASONS: Record<Exclude<StepStatus, 0>, SkipReason> = {
  [STEP_STATUS.nonFiniteGradient]: 'non-finite-gradient',
  [STEP_STATUS.nonFiniteParameter]: 'non-finite-parameter',
  [STEP_STATUS.nonFiniteLoss]: 'non-finite-loss',
  [STEP_STATUS.nonFiniteStep]: 'non-finite-step',
};

abstract class KoalaBase {
  /** The dtype of every param and grad, taken from the layers. */
  readonly dtype: DType;
  readonly layerNames: readonly string[];
  /** Which implementation runs the steps. */
  readonly backend: BackendName;
  protected readonly impl: Backend;
  protected readonly table: LayerTable;
  private readonly variant: Variant;
  private readonly skipMask: Uint8Array;
  private readonly onNonFinite: NonFinitePolicy;
  private learningRate: number;
  private currentPhase: Phase = 'updated';
  private updates = 0; // update() calls, to tell a device step's info from a later one's
  private disposed = false;

  protected constructor(variant: Variant, layers: readonly Layer[], options: unknown) {
    const opts = normalizeOptions(variant, options);
    this.table = validateLayers(layers);
    this.variant = variant;
    this.dtype = this.table.dtype;
    this.layerNames = Object.freeze([...this.table.names]);
    this.learningRate = opts.lr;
    this.onNonFinite = opts.onNonFinite;
    this.skipMask = new Uint8Array(this.table.lengths.length);
    const config: BackendConfig = { ...opts.config, dtype: DTYPE[this.dtype] };
    [this.impl, this.backend] = createBackend(opts.backend, config, this.table, this.skipMask, opts.stream);
  }

  /** The learning rate of the next update(); schedules set it between steps. */
  get lr(): number {
    return this.learningRate;
  }

  set lr(value: number) {
    this.learningRate = checkNumber('lr', value, 'nonNegative');
  }

  /** CPU threads the passes run on: the `threads` option, capped at one per 65,536 parameters (0 on CUDA). */
  get threads(): number {
    this.ready();
    return this.impl.threadsInUse();
  }

  /** Applied updates so far (on CUDA, reading it synchronizes with the stream). */
  get step(): number {
    return this.filter().steps;
  }

  get phase(): Phase {
    return this.currentPhase;
  }

  /** Before the forward pass: moves the parameters to the filter's prediction. */
  predict(): void {
    this.ready();
    nativeCall(() => this.impl.predict());
    this.currentPhase = 'predicted';
  }

  /**
   * After the backward pass has written every layer's grad: one Kalman update.
   * @param loss the minibatch mean loss. A negative loss is legal and reverses the step. With
   *   CUDA layers it may be a DeviceScalar, read on the device.
   * @param lossSq the minibatch mean of the squared per-sample losses (feeds the adaptive R);
   *   defaults to loss^2, the value for a batch of one sample (required with a device loss).
   *
   * With CUDA layers the step is launched on the stream and nothing is read back: the returned
   * info reads the outcome from the device when one of its fields is first read (read it before
   * the next update()), and onNonFinite: 'throw' throws then.
   */
  update(loss: number | DeviceScalar, lossSq?: number | DeviceScalar): UpdateInfo {
    this.ready();
    const sq = lossSq === undefined && typeof loss === 'number' ? loss * loss : lossSq;
    for (const [value, name] of [[loss, 'loss'], [sq, 'lossSq']] as const) {
      if (typeof value === 'number') continue;
      if (value === undefined) fail('ERR_KOALA_INVALID_LOSS', 'lossSq must be given when the loss is on the device');
      if (!isDeviceDescriptor(value)) fail('ERR_KOALA_INVALID_LOSS', `${name} must be a number${this.table.memory === 'cuda' ? ' or a device scalar' : ''}, got ${typeof value}`);
      if (this.table.memory !== 'cuda') fail('ERR_KOALA_INVALID_LOSS', `${name} is a device scalar, but this optimizer's layers are host arrays`);
      const d = checkDeviceDescriptor(value, name, false);
      if (d.deviceId !== this.table.deviceId) fail('ERR_KOALA_INVALID_DEVICE_POINTER', `${name} is on cuda:${d.deviceId}, the layers on cuda:${this.table.deviceId}`);
    }
    if (typeof sq === 'number' && sq < 0) fail('ERR_KOALA_INVALID_LOSS', `lossSq is a mean of squares and cannot be negative, got ${sq}`);
    if (this.currentPhase !== 'predicted') {
      fail('ERR_KOALA_PREDICT_REQUIRED', 'update() needs a predict() since the last applied update (call predict() before the forward pass)');
    }
    const lossSqArg = sq as number | DeviceScalar;
    this.updates++;
    const step = nativeCall(() => this.impl.update(loss, lossSqArg, this.learningRate));
    // On CUDA the outcome is on the device (see above): the phase moves on as for an applied step.
    if (step === null || step.status === STEP_STATUS.applied) this.currentPhase = 'updated';
    return step === null ? this.deferred() : this.outcome(step);
  }

  stateDict(): KoalaStateDict {
    const momentum = this.variant === VARIANT.momentum;
    const f = this.filter();
    return {
      format: 'koala-optim',
      version: STATE_VERSION,
      optimizer: OPTIMIZER_NAMES[this.variant],
      dtype: this.dtype,
      layers: this.table.names.map((name, i) => ({ name, length: this.table.lengths[i] })),
      step: f.steps,
      phase: this.currentPhase,
      lr: this.learningRate,
      filter: [f.p00, f.p01, f.p11, f.qX, f.sigma, f.r],
      pendingPredict: f.pending === NO_PENDING_PREDICT ? null : f.pending,
      velocities: momentum ? this.layerStates(LAYER_STATE.velocity) : [],
      averages: momentum ? this.layerStates(LAYER_STATE.average) : [],
      plusPlus: this.variant === VARIANT.plusPlus ? this.ppLayers() : null,
    };
  }

  /** KOALA++'s per-layer state (KoalaPPLayers). */
  protected ppLayers(): KoalaPPLayers {
    const n = this.table.lengths.length;
    const scalars = new Float64Array(n * PP_LAYER_SCALARS);
    nativeCall(() => this.impl.readLayerScalars!(scalars));
    const field = (k: number) => Array.from({ length: n }, (_, l) => scalars[l * PP_LAYER_SCALARS + k]);
    return {
      products: this.layerStates(LAYER_STATE.product),
      directions: this.layerStates(LAYER_STATE.direction),
      S: field(0),
      hh: field(1),
      vh: field(2),
      updated: field(3).map((u) => u !== 0),
    };
  }

  /** Restores a stateDict() taken from an optimizer of the same kind over layers of the same sizes. */
  loadStateDict(sd: KoalaStateDict): void {
    this.ready();
    const bad = (why: string): never => fail('ERR_KOALA_INVALID_STATE', `loadStateDict: ${why}`);
    if (typeof sd !== 'object' || sd === null || sd.format !== 'koala-optim') bad('not a koala-optim state dict');
    if (sd.version !== STATE_VERSION) bad(`version ${String(sd.version)} is not supported (this build reads ${STATE_VERSION})`);
    const momentum = this.variant === VARIANT.momentum;
    const plusPlus = this.variant === VARIANT.plusPlus;
    if (sd.optimizer !== OPTIMIZER_NAMES[this.variant]) bad(`it holds a ${String(sd.optimizer)} state`);
    if (sd.dtype !== this.dtype) bad(`its dtype is ${String(sd.dtype)}, this optimizer's is ${this.dtype}`);
    const lengths = this.table.lengths;
    if (!Array.isArray(sd.layers) || sd.layers.length !== lengths.length || sd.layers.some((l, i) => l?.length !== lengths[i])) {
      bad('its layer sizes differ from this optimizer\'s');
    }
    if (!Number.isSafeInteger(sd.step) || sd.step < 0) bad('step must be a non-negative integer');
    if (sd.phase !== 'predicted' && sd.phase !== 'updated') bad('phase must be "predicted" or "updated"');
    if (typeof sd.lr !== 'number' || !Number.isFinite(sd.lr) || sd.lr < 0) bad('lr must be a finite number >= 0');
    if (!Array.isArray(sd.filter) || sd.filter.length !== 6 || !sd.filter.every((v) => typeof v === 'number' && Number.isFinite(v))) {
      bad('filter must hold 6 finite numbers');
    }
    const pending = sd.pendingPredict;
    if (pending !== null && !(typeof pending === 'number' && Number.isFinite(pending) && pending >= 0)) {
      bad('pendingPredict must be null or a finite number >= 0');
    }
    const perLayer = momentum ? lengths.length : 0;
    for (const key of ['velocities', 'averages'] as const) {
      const arrays = sd[key];
      // dtypeOf, not instanceof: a state cloned through another realm (a vm, a worker) holds its arrays.
      if (!Array.isArray(arrays) || arrays.length !== perLayer || arrays.some((a, i) => dtypeOf(a) !== this.dtype || a.length !== lengths[i])) {
        bad(`${key} must hold one ${this.dtype} array per layer, of the layer's length`);
      }
    }
    const pp = sd.plusPlus ?? null;
    if (!plusPlus && pp !== null) bad('plusPlus is for a KOALA++ state');
    if (plusPlus) this.checkPPLayers(pp, bad);
    nativeCall(() => {
      const [p00, p01, p11, qX, saved, r] = sd.filter;
      const sigma = plusPlus ? this.impl.getFilter().sigma : saved; // KOALA++'s sigma is its option sigma0
      this.impl.setFilter({ p00, p01, p11, qX, sigma, r, pending: pending ?? NO_PENDING_PREDICT, steps: sd.step });
      sd.velocities.forEach((v, i) => this.impl.writeLayerState(LAYER_STATE.velocity, i, v));
      sd.averages.forEach((a, i) => this.impl.writeLayerState(LAYER_STATE.average, i, a));
      if (pp) {
        pp.products.forEach((v, i) => this.impl.writeLayerState(LAYER_STATE.product, i, v));
        pp.directions.forEach((h, i) => this.impl.writeLayerState(LAYER_STATE.direction, i, h));
        const scalars = new Float64Array(lengths.length * PP_LAYER_SCALARS);
        lengths.forEach((_, l) => scalars.set([pp.S[l], pp.hh[l], pp.vh[l], pp.updated[l] ? 1 : 0], l * PP_LAYER_SCALARS));
        this.impl.writeLayerScalars!(scalars);
      }
    });
    this.currentPhase = sd.phase;
    this.learningRate = sd.lr;
  }

  /** Checks a state dict's KoalaPPLayers against this optimizer's layers (before anything is changed). */
  private checkPPLayers(pp: KoalaPPLayers | null, bad: (why: string) => never): asserts pp is KoalaPPLayers {
    const lengths = this.table.lengths;
    const n = lengths.length;
    if (typeof pp !== 'object' || pp === null) bad('plusPlus must hold the KOALA++ layer state');
    for (const key of ['products', 'directions'] as const) {
      const arrays = pp[key];
      if (!Array.isArray(arrays) || arrays.length !== n || arrays.some((a, i) => dtypeOf(a) !== this.dtype || a.length !== lengths[i])) {
        bad(`plusPlus.${key} must hold one ${this.dtype} array per layer, of the layer's length`);
      }
    }
    for (const key of ['S', 'hh', 'vh'] as const) {
      const values = pp[key];
      if (!Array.isArray(values) || values.length !== n || !values.every((v) => typeof v === 'number' && Number.isFinite(v))) {
        bad(`plusPlus.${key} must hold one finite number per layer`);
      }
    }
    if (!Array.isArray(pp.updated) || pp.updated.length !== n || !pp.updated.every((u) => typeof u === 'boolean')) {
      bad('plusPlus.updated must hold one boolean per layer');
    }
  }

  /** Frees the native state; any later call throws ERR_KOALA_DISPOSED. Calling it twice is harmless. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.impl.dispose();
  }

  protected filter(): FilterSnapshot {
    this.ready();
    return nativeCall(() => this.impl.getFilter());
  }

  protected layerStates(kind: LayerStateKind): FloatArray[] {
    this.ready();
    const Ctor = this.dtype === 'float32' ? Float32Array : Float64Array;
    return this.table.lengths.map((n, i) => {
      const out = new Ctor(n);
      nativeCall(() => this.impl.readLayerState(kind, i, out));
      return out;
    });
  }

  protected ready(): void {
    if (this.disposed) fail('ERR_KOALA_DISPOSED', 'this optimizer was disposed');
    checkAttached(this.table);
  }

  /**
   * The info of a step from its outcome; a refused step throws with onNonFinite: 'throw'. Called
   * right after update()'s own checks (or a device read), so it reads the filter without repeating them.
   */
  private outcome(step: BackendStep): UpdateInfo {
    const f = nativeCall(() => this.impl.getFilter());
    if (step.status !== STEP_STATUS.applied) {
      const reason = REASONS[step.status];
      if (this.onNonFinite === 'throw') {
        throw new KoalaError('ERR_KOALA_NON_FINITE', `update refused: ${reason.replace(/-/g, ' ')} (nothing was changed)`);
      }
      return { applied: false, reason, step: f.steps, skippedLayers: [], maxGain: 0, r: f.r };
    }
    const skippedLayers: number[] = [];
    if (step.skipped > 0) this.skipMask.forEach((s, i) => s && skippedLayers.push(i));
    return { applied: true, reason: null, step: f.steps, skippedLayers, maxGain: step.maxGain, r: f.r };
  }

  /** A device step's info: read from the device on first access to a field. */
  private deferred(): UpdateInfo {
    const seq = this.updates;
    let info: UpdateInfo | null = null;
    const read = (): UpdateInfo => {
      if (info) return info;
      if (seq !== this.updates) fail('ERR_KOALA_STALE_INFO', 'this info belongs to an earlier update(): read it before the next update()');
      info = this.outcome(nativeCall(() => this.impl.lastStep!()));
      return info;
    };
    const fields = ['applied', 'reason', 'step', 'skippedLayers', 'maxGain', 'r'] as const;
    return Object.defineProperties(
      {},
      Object.fromEntries(fields.map((k) => [k, { enumerable: true, get: () => read()[k] }])),
    ) as UpdateInfo;
  }
}

/** KOALA-M: the Kalman filter over parameters and velocities (momentum). */
export class KoalaM extends KoalaBase {
  constructor(layers: readonly Layer[], options: KoalaMOptions = {}) {
    super(VARIANT.momentum, layers, options);
  }

  get state(): KoalaMState {
    const f = this.filter();
    return { step: f.steps, phase: this.phase, P: [[f.p00, f.p01], [f.p01, f.p11]], R: f.r, qX: f.qX };
  }

  /** Copies of the per-layer velocities. */
  velocities(): FloatArray[] {
    return this.layerStates(LAYER_STATE.velocity);
  }

  /** Copies of the per-layer parameter averages (the EMA that drives q_x). */
  paramAverages(): FloatArray[] {
    return this.layerStates(LAYER_STATE.average);
  }
}

/** KOALA-V: the Kalman filter over the parameters alone. */
export class KoalaV extends KoalaBase {
  constructor(layers: readonly Layer[], options: KoalaVOptions = {}) {
    super(VARIANT.vanilla, layers, options);
  }

  get state(): KoalaVState {
    const f = this.filter();
    return { step: f.steps, phase: this.phase, sigma: f.sigma, R: f.r };
  }
}

/**
 * KOALA++ (Xia, Davtyan, Favaro, NeurIPS 2025): per layer, an estimate v_l of the product of the
 * parameter covariance with the gradient direction instead of a scalar variance. predict() does
 * nothing (it is kept so that one training loop serves every variant).
 */
export class KoalaPP extends KoalaBase {
  constructor(layers: readonly Layer[], options: KoalaPPOptions = {}) {
    super(VARIANT.plusPlus, layers, options);
  }

  get state(): KoalaPPState {
    const f = this.filter();
    const pp = this.ppLayers();
    return { step: f.steps, phase: this.phase, R: f.r, S: pp.S.map((s, l) => (pp.updated[l] ? s : null)) };
  }

  /** Copies of the per-layer products v_l (zeros before a layer's first update). */
  products(): FloatArray[] {
    return this.layerStates(LAYER_STATE.product);
  }

  /** Copies of the per-layer previous directions Hp_l = g_l + wd x_l of the last update (zeros before the first). */
  directions(): FloatArray[] {
    return this.layerStates(LAYER_STATE.direction);
  }
}
