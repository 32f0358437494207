import type { Backend, BackendStep, LayerStateKind } from './backend';
import { CudaBackend } from './cuda';
import { fail, KoalaError, nativeCall } from './errors';
import {
  checkAttached,
  checkDeviceDescriptor,
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
  type KoalaVOptions,
  type NonFinitePolicy,
} from './options';
import { ReferenceBackend } from './reference';
import { parseStateDict, toStateDict, type FilterValues, type KoalaStateDict, type StateTarget } from './state';

export type { KoalaStateDict } from './state';

/**
 * Where a step stands. update() needs a predict() since the last applied update: calling it twice
 * would re-apply the filter's correction to the same prediction. predict() is always allowed (after
 * a skipped update the trainer simply goes on with the next batch).
 */
export type Phase = 'predicted' | 'updated';

export type SkipReason = 'non-finite-loss' | 'non-finite-gradient' | 'non-finite-parameter';

/** What update() returns, for the trainer to log. */
export interface UpdateInfo {
  /** False when the step was refused as a whole (see reason); nothing was changed then. */
  applied: boolean;
  reason: SkipReason | null;
  /** Applied updates so far. */
  step: number;
  /** Indices of the layers left untouched because |g_l| < eps. */
  skippedLayers: number[];
  /** max_l |h_l|^2 / S_l over the updated layers (0 when none was). */
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
  return [new ReferenceBackend(config, table.params, table.grads, skipMask), 'js'];
}

const REASONS: Record<number, SkipReason> = { 1: 'non-finite-gradient', 2: 'non-finite-parameter', 3: 'non-finite-loss' };

abstract class KoalaBase {
  /** The dtype of every param and grad, taken from the layers. */
  readonly dtype: DType;
  readonly layerNames: readonly string[];
  /** Which implementation runs the steps. */
  readonly backend: BackendName;
  protected readonly impl: Backend;
  protected readonly table: LayerTable;
  private readonly variant: 0 | 1;
  private readonly skipMask: Uint8Array;
  private readonly onNonFinite: NonFinitePolicy;
  private learningRate: number;
  private currentPhase: Phase = 'updated';
  private updates = 0; // update() calls, to tell a device step's info from a later one's
  private disposed = false;

  protected constructor(variant: 0 | 1, layers: readonly Layer[], options: unknown) {
    const opts = normalizeOptions(variant, options);
    this.table = validateLayers(layers);
    this.variant = variant;
    this.dtype = this.table.dtype;
    this.layerNames = Object.freeze([...this.table.names]);
    this.learningRate = opts.lr;
    this.onNonFinite = opts.onNonFinite;
    this.skipMask = new Uint8Array(this.table.lengths.length);
    const config: BackendConfig = { ...opts.config, dtype: this.dtype === 'float32' ? 0 : 1 };
    [this.impl, this.backend] = createBackend(opts.backend, config, this.table, this.skipMask, opts.stream);
  }

  /** The learning rate of the next update(); schedules set it between steps. */
  get lr(): number {
    this.live();
    return this.learningRate;
  }

  set lr(value: number) {
    this.live();
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
    this.live();
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
    if (loss === undefined) fail('ERR_KOALA_INVALID_LOSS', 'update(loss, lossSq?) needs the minibatch mean loss, got none');
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
    if ((typeof loss === 'number' && !Number.isFinite(loss)) || (typeof lossSqArg === 'number' && !Number.isFinite(lossSqArg))) {
      return this.outcome({ status: 3, skipped: 0, maxGain: 0 });
    }
    const step = nativeCall(() => this.impl.update(loss, lossSqArg, this.learningRate));
    // On CUDA the outcome is on the device (see above): the phase moves on as for an applied step.
    if (step === null || step.status === 0) this.currentPhase = 'updated';
    return step === null ? this.deferred() : this.outcome(step);
  }

  /** The optimizer's state as plain data (lib/state.ts); the parameters are the caller's to save. */
  stateDict(): KoalaStateDict {
    const momentum = this.variant === 0;
    const f = this.filter();
    return toStateDict(this.stateTarget(), this.table.names, f, this.currentPhase, this.learningRate,
      momentum ? this.layerStates(0) : [], momentum ? this.layerStates(1) : []);
  }

  /**
   * Restores a stateDict() taken from an optimizer of the same kind over layers of the same sizes
   * (also after a trip through JSON). All of it is validated before anything is written.
   */
  loadStateDict(sd: KoalaStateDict): void {
    this.ready();
    const s = parseStateDict(sd, this.stateTarget());
    const f = s.filter;
    nativeCall(() => {
      this.impl.setFilter(Float64Array.of(f.p00, f.p01, f.p11, f.qX, f.sigma, f.r, f.pending, f.steps));
      s.velocities.forEach((v, i) => this.impl.writeLayerState(0, i, v));
      s.averages.forEach((a, i) => this.impl.writeLayerState(1, i, a));
    });
    this.currentPhase = s.phase;
    this.learningRate = s.lr;
  }

  /** Frees the native state; any later call throws ERR_KOALA_DISPOSED. Calling it twice is harmless. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.impl.dispose();
  }

  protected filter(): FilterValues {
    this.ready();
    return this.readFilter();
  }

  /** The backend's filter by name, without the call checks of ready(). */
  private readFilter(): FilterValues {
    const [p00, p01, p11, qX, sigma, r, pending, steps] = nativeCall(() => this.impl.getFilter());
    return { p00, p01, p11, qX, sigma, r, pending, steps };
  }

  private stateTarget(): StateTarget {
    return { variant: this.variant, dtype: this.dtype, lengths: this.table.lengths };
  }

  /**
   * KOALA-M's per-layer state. The variant is checked here, at the edge: velocities() called on a
   * KoalaV (KoalaM.prototype.velocities.call(v)) must not reach a backend that holds none.
   */
  protected static layerStatesOf(o: unknown, kind: LayerStateKind): FloatArray[] {
    if (!KoalaBase.isOptimizer(o) || o.variant !== 0) {
      fail('ERR_KOALA_INVALID_ARGUMENT', `${kind === 0 ? 'velocities' : 'paramAverages'}() is a KoalaM method, called on ${KoalaBase.isOptimizer(o) ? 'a KoalaV' : 'an object that is not a KoalaM'}`);
    }
    return o.layerStates(kind);
  }

  private layerStates(kind: LayerStateKind): FloatArray[] {
    this.ready();
    const Ctor = this.dtype === 'float32' ? Float32Array : Float64Array;
    return this.table.lengths.map((n, i) => {
      const out = new Ctor(n);
      nativeCall(() => this.impl.readLayerState(kind, i, out));
      return out;
    });
  }

  /** Whether `o` was built by this class (a brand check, which a prototype chain cannot fake). */
  private static isOptimizer(o: unknown): o is KoalaBase {
    return typeof o === 'object' && o !== null && #brand in o;
  }

  readonly #brand = true;

  /** Every call but dispose(): not after dispose(). */
  protected live(): void {
    if (this.disposed) fail('ERR_KOALA_DISPOSED', 'this optimizer was disposed');
  }

  /** Every call that touches the layers: live, and their buffers attached. */
  protected ready(): void {
    this.live();
    checkAttached(this.table);
  }

  /**
   * The info of a step from its outcome; a refused step throws with onNonFinite: 'throw'. Called
   * right after update()'s own checks (or a device read), so it reads the filter without repeating them.
   */
  private outcome(step: BackendStep): UpdateInfo {
    const f = this.readFilter();
    if (step.status !== 0) {
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
    super(0, layers, options);
  }

  get state(): KoalaMState {
    const f = this.filter();
    return { step: f.steps, phase: this.phase, P: [[f.p00, f.p01], [f.p01, f.p11]], R: f.r, qX: f.qX };
  }

  /** Copies of the per-layer velocities. */
  velocities(): FloatArray[] {
    return KoalaBase.layerStatesOf(this, 0);
  }

  /** Copies of the per-layer parameter averages (the EMA that drives q_x). */
  paramAverages(): FloatArray[] {
    return KoalaBase.layerStatesOf(this, 1);
  }
}

/** KOALA-V: the Kalman filter over the parameters alone. */
export class KoalaV extends KoalaBase {
  constructor(layers: readonly Layer[], options: KoalaVOptions = {}) {
    super(1, layers, options);
  }

  get state(): KoalaVState {
    const f = this.filter();
    return { step: f.steps, phase: this.phase, sigma: f.sigma, R: f.r };
  }
}
