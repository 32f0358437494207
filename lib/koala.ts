import type { Backend } from './backend';
import { CudaBackend } from './cuda';
import { fail, KoalaError, nativeCall } from './errors';
import {
  checkAttached,
  checkDeviceDescriptor,
  checkHostOverlap,
  isDeviceDescriptor,
  validateLayers,
  zeros,
  type DeviceScalar,
  type DeviceTensor,
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
  PP_LAYER_SCALARS,
  STEP_STATUS,
  VARIANT,
  type BackendStep,
  type FilterSnapshot,
  type LayerStateKind,
  type PredictMoved,
  type StepStatus,
  type Variant,
} from './protocol';
import { ReferenceBackend } from './reference';
import { ReferencePPBackend } from './reference-pp';
import { checkShard } from './shard';
import type { ShardSpec } from './options';
import { parseStateDict, stateVariants, toStateDict, type KoalaPPLayers, type KoalaStateDict, type StateTarget, type StateVariants } from './state';

export type { KoalaPPLayers, KoalaStateDict, StateVariants } from './state';

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

let warnedFallback = false;

/** Which implementation runs the steps: the CPU addon, the js reference, or the CUDA addon. */
export type BackendName = 'native' | 'js' | 'cuda';

// Note [checks in one place]
// Each check runs once, where its facts are: the options and the layer descriptors in the facade
// (lib/options.ts, lib/layers.ts); aliasing where addresses are known, in the native and CUDA
// bindings (native/core/overlap.h), and in the js backend's own terms (buffers and offsets,
// checkHostOverlap) for the js backend only; the non-finite guards in the step sequence of each
// backend (Note [step sequence], native/core/step.h). The detachment check is the facade's
// (ready(), for every call); the native binding checks on every call that each array's memory is
// still there, for its own memory safety (Note [attachment check], native/binding/cpu_addon.cc),
// and refuses a detached or shrunk array there too, as it must when called directly.
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
  checkHostOverlap(table);
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
  // null: the last update's outcome is still on the device (Note [one phase rule]).
  private currentPhase: Phase | null = 'updated';
  private lastOutcome: BackendStep | null = null; // the last update's outcome, once read
  private updates = 0; // update() calls, to tell a device step's info from a later one's
  private disposed = false;
  /** This rank's slices (Note [sharded step]); null when unsharded. */
  private readonly shardSpec: ShardSpec | null;
  /** The variant a state dict records (Note [state variants], lib/state.ts). */
  private readonly variants: StateVariants;
  /** The sums of the split calls: host arrays, or the CUDA backend's device buffers. */
  private readonly predictSums: Float64Array | DeviceTensor;
  private readonly updateSums: Float64Array | DeviceTensor;
  /** Which split call's sums are out for reduction. */
  private reducing: 'predict' | 'update' | null = null;
  /** What the last predictPartial() said, for finishPredict() to return. */
  private partialMoved: PredictMoved = false;

  protected constructor(variant: Variant, layers: readonly Layer[], options: unknown) {
    const opts = normalizeOptions(variant, options);
    const sharded = opts.shard !== undefined;
    this.table = validateLayers(layers, sharded);
    const { shard, modelElems } = sharded ? checkShard(opts.shard, this.table) : { shard: null, modelElems: 0 };
    this.shardSpec = shard;
    this.variant = variant;
    this.variants = stateVariants(variant, opts.config);
    this.dtype = this.table.dtype;
    this.layerNames = Object.freeze([...this.table.names]);
    this.learningRate = opts.lr;
    this.onNonFinite = opts.onNonFinite;
    this.skipMask = new Uint8Array(this.table.lengths.length);
    // modelElems only for a rank (the bindings then accept its empty slices).
    const config: BackendConfig = { ...opts.config, dtype: DTYPE[this.dtype], ...(shard === null ? {} : { modelElems }) };
    [this.impl, this.backend] = createBackend(opts.backend, config, this.table, this.skipMask, opts.stream);
    const layerCount = this.table.lengths.length;
    if (this.impl.deviceSums) {
      const [predictPtr, updatePtr] = nativeCall(() => this.impl.deviceSums!());
      const deviceId = (this.table as { deviceId: number }).deviceId;
      this.predictSums = { device: 'cuda', deviceId, ptr: predictPtr, length: 1, dtype: 'float64' };
      this.updateSums = { device: 'cuda', deviceId, ptr: updatePtr, length: 3 * layerCount, dtype: 'float64' };
    } else {
      this.predictSums = new Float64Array(1);
      this.updateSums = new Float64Array(3 * layerCount);
    }
  }

  /** This rank's slices (option shard), or null for an unsharded optimizer. */
  get shard(): ShardSpec | null {
    return this.shardSpec === null ? null : { layerLengths: [...this.shardSpec.layerLengths], offsets: [...this.shardSpec.offsets] };
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

  /**
   * 'predicted' after predict() and after a refused update(), 'updated' after an applied one. On
   * CUDA, right after update(), reading it reads the step's outcome (a synchronization).
   */
  get phase(): Phase {
    this.live();
    return this.settledPhase();
  }

  /**
   * Before the forward pass: moves the parameters to the filter's prediction. Returns whether it
   * moved them (for adapters that mirror the parameters elsewhere): KOALA-M's x += v does, KOALA-V's
   * predict does not, nor a lazy predict whose element-wise part the last applied update did
   * already (after a refused one it does). Exact on host layers; on CUDA with lazy predict it is
   * 'unknown' while the last update's outcome has not been read (see PredictMoved).
   */
  predict(): PredictMoved {
    this.unsharded('predict');
    const moved = nativeCall(() => this.impl.predict());
    this.currentPhase = 'predicted';
    return moved;
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
   * the next update()), and onNonFinite: 'throw' throws then. The phase follows the outcome on
   * every backend (Note [one phase rule]).
   */
  update(loss: number | DeviceScalar, lossSq?: number | DeviceScalar): UpdateInfo {
    this.unsharded('update');
    const sq = this.checkLosses(loss, lossSq);
    this.predicted('update() needs a predict() since the last applied update (call predict() before the forward pass)');
    nativeCall(() => this.impl.update(loss, sq, this.learningRate));
    return this.updated();
  }

  /**
   * Sharded step, first half of predict() (README, "Data-parallel and sharded training"): the
   * element-wise predict of this rank's slices. Returns the slices' partial sum |a - x|^2 (1 float64:
   * a Float64Array, or a device tensor on CUDA, written on the stream): all-reduce it (sum) in place
   * across the ranks, then call finishPredict(). Allowed whenever update() is not half done.
   */
  predictPartial(): Float64Array | DeviceTensor {
    this.splitCall('predictPartial', null);
    this.partialMoved = nativeCall(() => this.impl.predictPartial(this.hostSums(this.predictSums)));
    this.reducing = 'predict';
    return this.predictSums;
  }

  /**
   * Second half of predict(): the scalar predict with the reduced sum, read from predictPartial()'s
   * buffer. Returns what predict() returns: whether predictPartial() moved this rank's parameters.
   */
  finishPredict(): PredictMoved {
    this.splitCall('finishPredict', 'predict');
    this.checkReduced(this.predictSums);
    nativeCall(() => this.impl.predictFinish(this.hostSums(this.predictSums)));
    this.reducing = null;
    this.currentPhase = 'predicted';
    return this.partialMoved;
  }

  /**
   * Sharded step, first half of update(): the stats pass over this rank's slices, once the grads
   * hold the global gradient (all-reduced, as data-parallel training does anyway). Returns 3 float64
   * per layer, |g + wd x|^2, |x|^2, |g|^2 of the slice: all-reduce them (sum) in place, then call
   * finishUpdate(loss, lossSq) with the global loss and lossSq.
   */
  updatePartial(): Float64Array | DeviceTensor {
    this.splitCall('updatePartial', null);
    this.predicted('updatePartial() needs a predict since the last applied update (predictPartial(), finishPredict())');
    nativeCall(() => this.impl.updatePartial(this.hostSums(this.updateSums)));
    this.reducing = 'update';
    return this.updateSums;
  }

  /**
   * Second half of update(), on the reduced sums: every rank decides the same step (a NaN on any
   * rank refuses it on all) and updates its slices. loss and lossSq are the global ones (the mean
   * over every rank's samples), as for update(); so are the returned info and the phase after it
   * (Note [one phase rule]: a refused step leaves it at 'predicted', and the next step starts
   * again from updatePartial()).
   */
  finishUpdate(loss: number | DeviceScalar, lossSq?: number | DeviceScalar): UpdateInfo {
    this.splitCall('finishUpdate', 'update');
    const sq = this.checkLosses(loss, lossSq);
    this.checkReduced(this.updateSums);
    nativeCall(() => this.impl.updateFinish(this.hostSums(this.updateSums), loss, sq, this.learningRate));
    this.reducing = null;
    return this.updated();
  }

  /** predict() and update() are for unsharded optimizers, between whole split steps. */
  private unsharded(call: string): void {
    this.ready();
    if (this.shardSpec !== null) {
      fail('ERR_KOALA_SHARDED', `${call}() steps an unsharded optimizer; a sharded one steps through predictPartial(), finishPredict(), updatePartial() and finishUpdate()`);
    }
    this.between(call);
  }

  /** The split calls come in pairs: `expects` is the partial call whose sums must be out (null: none may be). */
  private splitCall(call: string, expects: 'predict' | 'update' | null): void {
    if (expects === null) return this.between(call);
    this.ready();
    if (this.reducing !== expects) fail('ERR_KOALA_SHARDED', `${call}() needs ${expects}Partial() first`);
  }

  /** Whole steps and the state need every reduction finished. */
  private between(call: string): void {
    this.ready();
    if (this.reducing !== null) fail('ERR_KOALA_SHARDED', `${call}() called while the sums of ${this.reducing}Partial() are out for reduction (finish that first)`);
  }

  private hostSums(sums: Float64Array | DeviceTensor): Float64Array | null {
    return sums instanceof Float64Array ? sums : null;
  }

  /** A reduced host sum of squares can be NaN or Inf (the guards refuse the step) but never negative. */
  private checkReduced(sums: Float64Array | DeviceTensor): void {
    if (!(sums instanceof Float64Array)) return;
    const i = sums.findIndex((v) => v < 0);
    if (i >= 0) {
      fail('ERR_KOALA_INVALID_ARGUMENT', `the reduced sums are sums of squares, but value ${i} is ${sums[i]} (was the reduction a sum?)`);
    }
  }

  /** Checks update()'s loss and lossSq; returns lossSq (loss^2 when omitted). */
  private checkLosses(loss: number | DeviceScalar, lossSq: number | DeviceScalar | undefined): number | DeviceScalar {
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
    return sq as number | DeviceScalar;
  }

  /** An update (whole or its half) needs the phase 'predicted', settled (Note [one phase rule]). */
  private predicted(why: string): void {
    if (this.settledPhase() !== 'predicted') fail('ERR_KOALA_PREDICT_REQUIRED', why);
  }

  /** After update() or finishUpdate() called the backend: the phase and the info (Note [one phase rule]). */
  private updated(): UpdateInfo {
    this.updates++;
    this.lastOutcome = null;
    this.currentPhase = null;
    if (this.impl.deferred) return this.deferredInfo();
    this.settledPhase();
    return this.outcome(this.readOutcome());
  }

  /** The optimizer's state as plain data (lib/state.ts); the parameters are the caller's to save. */
  stateDict(): KoalaStateDict {
    this.between('stateDict');
    const momentum = this.variant === VARIANT.momentum;
    const f = this.filter();
    return toStateDict(this.stateTarget(), this.table.names, f, this.settledPhase(), this.learningRate,
      momentum ? this.layerStates(LAYER_STATE.velocity) : [], momentum ? this.layerStates(LAYER_STATE.average) : [],
      this.variant === VARIANT.plusPlus ? this.ppLayers() : null);
  }

  /** KOALA++'s per-layer state (KoalaPPLayers, lib/state.ts). */
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

  /**
   * Restores a stateDict() taken from an optimizer of the same kind over layers of the same sizes
   * (also after a trip through JSON). All of it is validated before anything is written. A sharded
   * rank loads only a state saved by a rank with the same slices.
   */
  loadStateDict(sd: KoalaStateDict): void {
    this.between('loadStateDict');
    const s = parseStateDict(sd, this.stateTarget());
    const pp = s.plusPlus;
    nativeCall(() => {
      // KOALA++'s sigma is its option sigma0, not state: the optimizer keeps its own.
      this.impl.setFilter(pp ? { ...s.filter, sigma: this.readFilter().sigma } : s.filter);
      s.velocities.forEach((v, i) => this.impl.writeLayerState(LAYER_STATE.velocity, i, v));
      s.averages.forEach((a, i) => this.impl.writeLayerState(LAYER_STATE.average, i, a));
      if (pp) {
        pp.products.forEach((v, i) => this.impl.writeLayerState(LAYER_STATE.product, i, v));
        pp.directions.forEach((h, i) => this.impl.writeLayerState(LAYER_STATE.direction, i, h));
        const scalars = new Float64Array(pp.S.length * PP_LAYER_SCALARS);
        pp.S.forEach((_, l) => scalars.set([pp.S[l], pp.hh[l], pp.vh[l], pp.updated[l] ? 1 : 0], l * PP_LAYER_SCALARS));
        this.impl.writeLayerScalars!(scalars);
      }
    });
    this.currentPhase = s.phase;
    this.lastOutcome = null;
    this.learningRate = s.lr;
  }

  /** Frees the native state; any later call throws ERR_KOALA_DISPOSED. Calling it twice is harmless. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.impl.dispose();
  }

  protected filter(): FilterSnapshot {
    this.ready();
    return this.readFilter();
  }

  /** The backend's filter, without the call checks of ready(). */
  private readFilter(): FilterSnapshot {
    return nativeCall(() => this.impl.getFilter());
  }

  private stateTarget(): StateTarget {
    return { variant: this.variant, dtype: this.dtype, lengths: this.table.lengths, shard: this.shardSpec, variants: this.variants };
  }

  /**
   * KOALA-M's per-layer state. The variant is checked here, at the edge: velocities() called on a
   * KoalaV (KoalaM.prototype.velocities.call(v)) must not reach a backend that holds none.
   */
  protected static layerStatesOf(o: unknown, kind: LayerStateKind): FloatArray[] {
    const plusPlus = kind === LAYER_STATE.product || kind === LAYER_STATE.direction;
    const owner = plusPlus ? VARIANT.plusPlus : VARIANT.momentum;
    if (!KoalaBase.isOptimizer(o) || o.variant !== owner) {
      const method = ['velocities', 'paramAverages', 'products', 'directions'][kind];
      const cls = plusPlus ? 'KoalaPP' : 'KoalaM';
      fail('ERR_KOALA_INVALID_ARGUMENT', `${method}() is a ${cls} method, called on ${KoalaBase.isOptimizer(o) ? `a ${OPTIMIZER_CLASSES[o.variant]}` : `an object that is not a ${cls}`}`);
    }
    return o.layerStates(kind);
  }

  private layerStates(kind: LayerStateKind): FloatArray[] {
    this.ready();
    return this.table.lengths.map((n, i) => {
      const out = zeros(this.dtype, n);
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

  // Note [one phase rule]
  // Every backend follows one rule: update() leaves the phase at 'predicted' when the step was
  // refused (nothing changed, the trainer may try again) and moves it to 'updated' when it was
  // applied. The host backends know the outcome when update() returns. CUDA does not without a
  // synchronization, so its phase stays unsettled (null) until something needs it: the `phase`
  // getter, stateDict() and the next update() read the outcome then (a wait for the step), while
  // predict() needs no outcome (it is allowed in either phase) and settles the phase itself. The
  // split calls of a sharded step follow the same rule: finishPredict() settles the phase as
  // predict() does, updatePartial() needs it settled at 'predicted' as update() does, and
  // finishUpdate() leaves it as update() does (a refused step is retried from updatePartial()).
  private settledPhase(): Phase {
    this.currentPhase ??= this.readOutcome().status === STEP_STATUS.applied ? 'updated' : 'predicted';
    return this.currentPhase;
  }

  /** The last update's outcome, read from the backend once. */
  private readOutcome(): BackendStep {
    this.lastOutcome ??= nativeCall(() => this.impl.lastStep());
    return this.lastOutcome;
  }

  /**
   * The info of a step from its outcome; a refused step throws with onNonFinite: 'throw'. Called
   * right after update()'s own checks (or a device read), so it reads the filter without repeating them.
   */
  private outcome(step: BackendStep): UpdateInfo {
    const f = this.readFilter();
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
  private deferredInfo(): UpdateInfo {
    const seq = this.updates;
    let info: UpdateInfo | null = null;
    const read = (): UpdateInfo => {
      if (info) return info;
      if (seq !== this.updates) fail('ERR_KOALA_STALE_INFO', 'this info belongs to an earlier update(): read it before the next update()');
      this.settledPhase();
      info = this.outcome(this.readOutcome());
      return info;
    };
    const fields = ['applied', 'reason', 'step', 'skippedLayers', 'maxGain', 'r'] as const;
    return Object.defineProperties(
      {},
      Object.fromEntries(fields.map((k) => [k, { enumerable: true, get: () => read()[k] }])),
    ) as UpdateInfo;
  }
}

const OPTIMIZER_CLASSES = ['KoalaM', 'KoalaV', 'KoalaPP'] as const;

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
    return KoalaBase.layerStatesOf(this, LAYER_STATE.velocity);
  }

  /** Copies of the per-layer parameter averages (the EMA that drives q_x). */
  paramAverages(): FloatArray[] {
    return KoalaBase.layerStatesOf(this, LAYER_STATE.average);
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
    return KoalaBase.layerStatesOf(this, LAYER_STATE.product);
  }

  /** Copies of the per-layer previous directions Hp_l = g_l + wd x_l of the last update (zeros before the first). */
  directions(): FloatArray[] {
    return KoalaBase.layerStatesOf(this, LAYER_STATE.direction);
  }
}
