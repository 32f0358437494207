/**
 * KOALA for TensorFlow.js: `koala-optim/tfjs`. KoalaMOptimizer, KoalaVOptimizer and
 * KoalaPPOptimizer are tf.Optimizer subclasses, accepted wherever tfjs takes an optimizer (minimize, computeGradients,
 * applyGradients, getWeights/setWeights, getConfig/fromConfig; both registered for serialization,
 * so a tfjs-layers model compiled with one saves and loads its optimizer, config and state).
 *
 * Note [tfjs host copies]: the KOALA step runs in this package (native or js backend) on host
 * Float32Arrays, one per variable, kept by the adapter. tfjs's public API is the only way in and
 * out, and what it costs depends on the backend (per step, at the main job's 235,146 parameters on
 * the wasm backend, in parentheses):
 * - gradients: dataSync(), then a copy into the adapter's array (the core optimizer keeps the
 *   arrays it was built with). wasm's dataSync() is itself a copy out of its heap (0.13-0.18 ms
 *   with the allocation, then 0.05 ms for ours); cpu's returns the tensor's own array (one copy).
 * - parameters, written back after every predict() that moves them (KoalaM.predict() says when it did)
 *   and after every applied update:
 *   - wasm: a new tensor made straight from the adapter's array, assigned to the variable. wasm
 *     copies the values into its heap when the tensor is made, so one copy and no copy of ours
 *     (0.06-0.08 ms; 0.14-0.19 ms with the slice() it used to take). Never in place: its matMul and
 *     conv2d cache packed weights keyed by the tensor (XNNPACK), which would not see the write.
 *   - cpu: in place, the adapter's array copied into the variable's own array (no allocation, no
 *     new tensor), when nothing else shares that data: the variable still holds the data of the
 *     adapter's last write and the backend counts one reference to it (a clone, a reshape or the
 *     tensor a variable was made from shares it and keeps its values: those get a new tensor). An
 *     array that dataSync() returned for a variable is the variable's own storage on this backend,
 *     so it shows the next step's values (copy it to keep a snapshot).
 *   - any other backend: a new tensor from a copy of the array (it may keep the values it is
 *     given, as cpu does, and read them later).
 * A variable is read back only when its data changed since the adapter's last write (its dataId
 * differs: something else assigned it). `stats` sums the time these copies take next to the time
 * of the KOALA step itself. See Note [in-loop time] for where a step's time goes.
 *
 * Note [in-loop time]: measured in the main job (MLP 784-256-128-10, 235,146 parameters, batch 64,
 * wasm backend, this 2-core machine shared with other work), per step, before this note's changes:
 * forward and backward 3.7-4.9 ms; KOALA predict 0.17-0.28 ms and update 0.67-1.09 ms at 2 threads
 * (0.23 and 0.24 ms at 1 thread); gradients read 0.13-0.30 ms; two parameter write-backs of
 * 0.13-0.29 ms each. The same KOALA step run back to back takes 0.31 ms at 2 threads and 0.45 ms
 * at 1. What made the in-loop step cost 2-4x its back-to-back time:
 * - The pool's wake-up after the forward and backward pass, not the work: tfjs-wasm runs on the
 *   main thread alone in Node (it never uses its threaded build there), so nothing of tfjs
 *   contends with the pool, but the pool's worker sleeps through the 4 ms of tfjs work and each
 *   pass must wake it. On an idle core that costs little; when the other core is busy (here:
 *   other processes) the pass waits for the slower thread's time slice. Timed alone with 4 ms of
 *   main-thread work before each pass, a 235k-parameter KOALA-M step (predict and update) takes
 *   0.83 ms mean at 1 thread against 1.15 ms at 2 under load, and 0.50 against 0.47 ms when idle;
 *   at 400k it is 0.84 against 0.61 ms, at 1M 2.05 against 1.50 ms, at 4M 9.0 against 4.8 ms.
 *   A short spin before sleeping does not reach across a gap of milliseconds. Hence
 *   Note [adapter threads].
 * - Cold caches: on the first machine, writing 16 MB before each update made its 1-thread median
 *   0.25 ms against 0.23 ms back to back (under 10%). On a later one (AMD EPYC Zen 3, whose
 *   last-level cache other tenants share) the caches empty within a millisecond whatever the
 *   process does: after 4 ms of a thread only reading the clock, the step takes 1.5-2.7x its
 *   back-to-back time, and a triad over the same bytes, our code not involved, 1.5-3x (Note
 *   [cache decay], bench/training.ts, which measures both in every run). In the loop the step
 *   then costs 1.3-1.4x that cold step more (tfjs's own memory traffic) and about 2x the
 *   back-to-back one. Software prefetching in the passes (one page ahead, or a quarter page)
 *   did not shorten the cold step beyond the noise, so the passes have none.
 * - Copies: the slice() before every write-back (see Note [tfjs host copies]), removed.
 * - The adapter's timers: koalaMs is predict() and update() as the core optimizer runs them
 *   (its checks, the native call, reading the filter for the returned info); copyMs the gradient
 *   reads and the parameter writes (tf.tensor, assign, tidy), and the read of a variable changed
 *   elsewhere. Neither includes the loss reads or the forward and backward pass.
 * Lazy predict is not used behind the user's back: it would save one write-back (0.07 ms) and
 * part of the predict pass, but the variables would hold the predicted parameters between steps,
 * which is what a user evaluates there. bench/training.ts measures the result (bench/RESULTS.md):
 * with one thread and without the slice(), KOALA-M's in-loop step is 1.02-1.2x its back-to-back
 * time, and KOALA-M's whole step about SGD's (0.91-1.08x side by side, within the noise of this
 * loaded machine: the same SGD run twice differs by up to 17%), against 1.3-1.5x before.
 */
import { availableParallelism } from 'node:os';

import './tfjs-peer'; // before tfjs-core: its absence is a coded error
import * as tf from '@tensorflow/tfjs-core';

import { fail } from './errors';
import { KoalaM, KoalaPP, KoalaV, type KoalaStateDict, type UpdateInfo } from './koala';
import { checkNumber, normalizeOptions, type KoalaMOptions, type KoalaPPOptions, type KoalaVOptions } from './options';
import { VARIANT, type Variant } from './protocol';

type GradientList = Parameters<tf.Optimizer['applyGradients']>[0];
type NamedTensor = { name: string; tensor: tf.Tensor };
type ConfigDict = tf.serialization.ConfigDict;

/** What the adapter spent, summed over its steps (milliseconds). */
export interface AdapterStats {
  /** Applied updates. */
  steps: number;
  /** Host copies: gradients read, parameters written back (and read, when changed elsewhere). */
  copyMs: number;
  /** The part of copyMs spent writing parameters back. */
  writeMs: number;
  /** Parameter write-backs (of every variable at once). */
  writes: number;
  /** The KOALA predict and update themselves. */
  koalaMs: number;
}

interface Binding {
  variables: tf.Variable[];
  params: Float32Array[];
  grads: Float32Array[];
  /** The dataId each variable had after the adapter last wrote or read it. */
  synced: unknown[];
  koala: KoalaM | KoalaV | KoalaPP;
}

const STATE_NAME = 'koala/state';

/**
 * Note [adapter threads]: inside a training loop the core optimizer's pool sleeps through every
 * forward and backward pass, and each pass of a step pays the workers' wake-up, which on a busy
 * machine is a scheduler time slice (Note [in-loop time]). A second thread pays for itself from
 * about 300k parameters; below, it costs more than it saves. So when `threads` is not given, the
 * adapter asks for one thread per THREAD_PARAMS parameters (at least one, at most the cores), in
 * place of the core's default of every core (which the core caps at one per 65,536 parameters,
 * a cap tuned for steps run back to back). Results are bitwise the same for any count.
 */
const THREAD_PARAMS = 262_144;

/** The threads the adapter asks for over `total` parameters when the options name none. */
function inLoopThreads(total: number): number {
  return Math.max(1, Math.min(availableParallelism(), Math.floor(total / THREAD_PARAMS)));
}

/**
 * Writes host values into a variable (Note [tfjs host copies]) and returns the dataId it then
 * holds. `synced`: the dataId the adapter's last write or read left it with.
 */
function writeVariable(v: tf.Variable, values: Float32Array, synced: unknown): unknown {
  const backend = tf.getBackend();
  if (backend === 'cpu' && v.dataId === synced && tf.backend().refCount(v.dataId) === 1) {
    (v.dataSync() as Float32Array).set(values);
    return v.dataId;
  }
  tf.tidy(() => v.assign(tf.tensor(backend === 'wasm' ? values : values.slice(), v.shape, 'float32')));
  return v.dataId;
}

abstract class KoalaOptimizerBase<O extends KoalaMOptions | KoalaVOptions | KoalaPPOptions> extends tf.Optimizer {
  /** The options as given (lr is tracked apart, see `lr`). */
  protected readonly options: O;
  /** Statistics of the adapter's work, for logging its overhead. */
  readonly stats: AdapterStats = { steps: 0, copyMs: 0, writeMs: 0, writes: 0, koalaMs: 0 };
  private readonly variant: Variant;
  private learningRate: number;
  private binding: Binding | null = null;
  /** A state from setWeights() before the variables are known; loaded when they are. */
  private pendingState: KoalaStateDict | null = null;
  /** The loss seen by the last computeGradients(), waiting for applyGradients(). */
  private observation: { loss: number; lossSq: number } | null = null;
  /** Set by minimizePerSample()'s loss function during the forward pass. */
  private perSampleLossSq: number | null = null;
  private lastInfo: UpdateInfo | null = null;

  protected constructor(variant: Variant, options: O) {
    super();
    // Throws a KoalaError on a bad option, before any step. The adapter steps a whole model with
    // predict() and update(); a sharded rank (option shard) steps through the split calls.
    if (normalizeOptions(variant, options).shard !== undefined) {
      fail('ERR_KOALA_INVALID_OPTION', 'option shard is not for the tfjs adapter: it steps whole models (a sharded rank steps through KoalaM/KoalaV\'s split calls)');
    }
    this.variant = variant;
    this.options = { ...options };
    this.learningRate = options.lr ?? 1;
  }

  /**
   * Builds the optimizer from getConfig()'s options. tfjs-layers, loading a model saved with its
   * optimizer, adds its own `customObjects` key to the config: not an option, left out.
   */
  static override fromConfig<T extends tf.serialization.Serializable>(cls: tf.serialization.SerializableConstructor<T>, config: ConfigDict): T {
    const { customObjects: _tfjsKey, ...options } = config;
    return new cls(options);
  }

  /** The learning rate of the next update; schedules (LrScheduler) set it between steps. */
  get lr(): number {
    return this.binding ? this.binding.koala.lr : this.learningRate;
  }

  set lr(value: number) {
    this.learningRate = checkNumber('lr', value, 'nonNegative');
    if (this.binding) this.binding.koala.lr = value;
  }

  /** What the last KOALA update returned (applied, skipped layers, R, ...), or null before the first. */
  get lastUpdate(): UpdateInfo | null {
    return this.lastInfo;
  }

  /** The core optimizer, once the first step has bound the variables (null before). */
  get koala(): KoalaM | KoalaV | KoalaPP | null {
    return this.binding?.koala ?? null;
  }

  /**
   * KOALA's predict, then f's value and gradients at the predicted parameters; the loss is kept for
   * the applyGradients() that must follow. The first call binds the optimizer to its variables:
   * `varList` (its trainable ones), or every trainable variable registered at that time. Later
   * calls take the same variables (a varList, when given, must hold exactly those).
   */
  override computeGradients(f: () => tf.Scalar, varList?: tf.Variable[]): { value: tf.Scalar; grads: tf.NamedTensorMap } {
    const b = this.bind(varList);
    this.readChanged(b);
    const t0 = performance.now();
    // predict() says whether it moved the host arrays (a lazy predict after an applied update does not).
    const moved = b.koala.predict();
    this.stats.koalaMs += performance.now() - t0;
    if (moved) this.writeBack(b);
    this.perSampleLossSq = null;
    this.observation = null;
    const { value, grads } = tf.variableGrads(f, b.variables);
    const loss = value.dataSync()[0];
    this.observation = { loss, lossSq: this.perSampleLossSq ?? loss * loss };
    return { value, grads };
  }

  /**
   * KOALA's update with the gradients and the loss of the last computeGradients() (or minimize()).
   * A bound variable without a gradient gets zeros (its layer is then skipped, |g| < eps).
   */
  override applyGradients(variableGradients: GradientList): void {
    const b = this.binding;
    const obs = this.observation;
    if (b === null || obs === null) {
      fail('ERR_KOALA_PREDICT_REQUIRED', 'applyGradients() needs a computeGradients() (or minimize()) first: KOALA predicts before the forward pass and observes its loss, not only the gradients');
    }
    const byName = new Map<string, tf.Tensor>();
    const entries: [string, tf.Tensor | null | undefined][] = Array.isArray(variableGradients)
      ? (variableGradients as NamedTensor[]).map((g) => [g.name, g.tensor])
      : Object.entries(variableGradients);
    for (const [name, tensor] of entries) {
      if (!b.variables.some((v) => v.name === name)) {
        fail('ERR_KOALA_INVALID_LAYERS', `a gradient for variable ${name}, which this optimizer is not bound to`);
      }
      if (tensor) byName.set(name, tensor);
    }
    const t0 = performance.now();
    b.variables.forEach((v, i) => {
      const g = byName.get(v.name);
      if (g === undefined) {
        b.grads[i].fill(0);
        return;
      }
      if (g.size !== v.size) fail('ERR_KOALA_LENGTH_MISMATCH', `the gradient of ${v.name} has ${g.size} elements, the variable ${v.size}`);
      b.grads[i].set(g.dataSync() as Float32Array);
    });
    const t1 = performance.now();
    this.observation = null;
    const info = b.koala.update(obs.loss, obs.lossSq);
    this.stats.copyMs += t1 - t0;
    this.stats.koalaMs += performance.now() - t1;
    if (info.applied) {
      this.writeBack(b);
      this.incrementIterations();
      this.stats.steps++;
    }
    this.lastInfo = info;
  }

  /**
   * minimize() for a loss given per sample: f returns the losses of the batch as a 1-D tensor. The
   * optimizer minimizes their mean and feeds the mean of their squares to the adaptive R, both from
   * the same forward pass (as the official training loop does).
   */
  minimizePerSample(f: () => tf.Tensor, returnCost = false, varList?: tf.Variable[]): tf.Scalar | null {
    return this.minimize(() => {
      const losses = f();
      if (losses.rank !== 1) fail('ERR_KOALA_INVALID_LOSS', `minimizePerSample: f must return a 1-D tensor of per-sample losses, got shape [${losses.shape.join(', ')}]`);
      const values = losses.dataSync();
      let sumSq = 0;
      for (let i = 0; i < values.length; i++) sumSq += values[i] * values[i];
      this.perSampleLossSq = sumSq / values.length;
      return tf.mean(losses) as tf.Scalar;
    }, returnCost, varList);
  }

  /**
   * [iterations, the filter state (JSON, exact; KOALA++'s layer scalars too), then per variable its
   * velocity and its parameter average (KOALA-M), or its product and its direction (KOALA++)].
   * Before the first step: the iterations alone (and a state given to setWeights).
   */
  override async getWeights(): Promise<NamedTensor[]> {
    const out: NamedTensor[] = [await this.saveIterations()];
    const sd = this.binding ? this.binding.koala.stateDict() : this.pendingState;
    if (sd) {
      const { velocities, averages, plusPlus, ...scalars } = sd;
      const { products, directions, ...ppScalars } = plusPlus ?? { products: [], directions: [] };
      out.push({ name: STATE_NAME, tensor: tf.scalar(JSON.stringify({ ...scalars, plusPlus: plusPlus ? ppScalars : null }), 'string') });
      for (const [arrays, kind] of [[velocities, 'velocity'], [averages, 'average'], [products, 'product'], [directions, 'direction']] as const) {
        sd.layers.forEach(({ name }, i) => {
          if (arrays[i]) out.push({ name: `${name}/${kind}`, tensor: tf.tensor1d(arrays[i] as Float32Array, 'float32') });
        });
      }
    }
    return out;
  }

  /** Restores getWeights(), matched to the variables by position (as tfjs's own optimizers do). */
  override async setWeights(weightValues: NamedTensor[]): Promise<void> {
    const rest = await this.extractIterations(weightValues);
    if (rest.length === 0) return;
    const bad = (why: string): never => fail('ERR_KOALA_INVALID_STATE', `setWeights: ${why}`);
    if (rest[0].name !== STATE_NAME || rest[0].tensor.dtype !== 'string') bad(`the first weight after the iterations must be ${STATE_NAME}`);
    let scalars: Omit<KoalaStateDict, 'velocities' | 'averages'>;
    try {
      scalars = JSON.parse(String((await rest[0].tensor.data())[0]));
    } catch {
      return bad(`${STATE_NAME} does not hold a KOALA state`);
    }
    const arrays = await Promise.all(rest.slice(1).map(async (w) => Float32Array.from(await w.tensor.data())));
    const plusPlus = scalars.optimizer === 'koala-pp';
    const perKind = (scalars.optimizer === 'koala-m' || plusPlus) && Array.isArray(scalars.layers) ? scalars.layers.length : 0;
    if (arrays.length !== 2 * perKind) bad(`expected ${2 * perKind} per-variable weights, got ${arrays.length}`);
    const [first, second] = [arrays.slice(0, perKind), arrays.slice(perKind)];
    const sd: KoalaStateDict = plusPlus
      ? { ...scalars, velocities: [], averages: [], plusPlus: { ...scalars.plusPlus!, products: first, directions: second } }
      : { ...scalars, velocities: first, averages: second };
    if (this.binding) {
      this.binding.koala.loadStateDict(sd);
      this.learningRate = this.binding.koala.lr;
    } else {
      this.pendingState = sd;
      this.learningRate = typeof sd.lr === 'number' ? sd.lr : this.learningRate;
    }
  }

  /** The options, lr as it is now; fromConfig() builds the optimizer back from them. */
  override getConfig(): ConfigDict {
    return { ...(this.options as unknown as ConfigDict), lr: this.lr };
  }

  /** Frees the core optimizer (its native memory) with the tfjs state. */
  override dispose(): void {
    this.binding?.koala.dispose();
    super.dispose();
  }

  private bind(varList: tf.Variable[] | undefined): Binding {
    const given = varList?.filter((v) => v.trainable);
    if (this.binding) {
      const bound = this.binding.variables;
      if (given && (given.length !== bound.length || !given.every((v) => bound.includes(v)))) {
        fail('ERR_KOALA_INVALID_LAYERS', `this optimizer is bound to the variables of its first step (${bound.map((v) => v.name).join(', ')}); got ${given.map((v) => v.name).join(', ')}`);
      }
      return this.binding;
    }
    const variables = given ?? Object.values(tf.engine().registeredVariables).filter((v) => v.trainable);
    if (variables.length === 0) fail('ERR_KOALA_INVALID_LAYERS', 'no trainable variable to optimize');
    for (const v of variables) {
      if (v.dtype !== 'float32') fail('ERR_KOALA_INVALID_ARRAY', `variable ${v.name} is ${v.dtype}; KOALA optimizes float32 variables`);
    }
    const params = variables.map((v) => Float32Array.from(v.dataSync() as Float32Array));
    const grads = variables.map((v) => new Float32Array(v.size));
    const layers = variables.map((v, i) => ({ name: v.name, param: params[i], grad: grads[i] }));
    const total = variables.reduce((n, v) => n + v.size, 0);
    const options = { ...this.options, threads: this.options.threads ?? inLoopThreads(total), lr: this.learningRate };
    const koala = {
      [VARIANT.momentum]: () => new KoalaM(layers, options),
      [VARIANT.vanilla]: () => new KoalaV(layers, options as KoalaVOptions),
      [VARIANT.plusPlus]: () => new KoalaPP(layers, options as KoalaPPOptions),
    }[this.variant]();
    if (this.pendingState) {
      try {
        koala.loadStateDict(this.pendingState);
      } catch (e) {
        koala.dispose();
        throw e;
      }
      this.pendingState = null;
    }
    this.binding = { variables, params, grads, synced: variables.map((v) => v.dataId), koala };
    return this.binding;
  }

  /** Reads the variables that something other than this optimizer assigned since its last write. */
  private readChanged(b: Binding): void {
    const t0 = performance.now();
    b.variables.forEach((v, i) => {
      if (v.dataId !== b.synced[i]) {
        b.params[i].set(v.dataSync() as Float32Array);
        b.synced[i] = v.dataId;
      }
    });
    this.stats.copyMs += performance.now() - t0;
  }

  /** Writes every host parameter array into its variable (Note [tfjs host copies]). */
  private writeBack(b: Binding): void {
    const t0 = performance.now();
    b.variables.forEach((v, i) => {
      b.synced[i] = writeVariable(v, b.params[i], b.synced[i]);
    });
    const ms = performance.now() - t0;
    this.stats.copyMs += ms;
    this.stats.writeMs += ms;
    this.stats.writes++;
  }
}

/** KOALA-M (the paper's recommended variant) as a tf.Optimizer. Options: those of KoalaM. */
export class KoalaMOptimizer extends KoalaOptimizerBase<KoalaMOptions> {
  static readonly className = 'KoalaM';

  constructor(options: KoalaMOptions = {}) {
    super(VARIANT.momentum, options);
  }
}

/** KOALA-V as a tf.Optimizer. Options: those of KoalaV. */
export class KoalaVOptimizer extends KoalaOptimizerBase<KoalaVOptions> {
  static readonly className = 'KoalaV';

  constructor(options: KoalaVOptions = {}) {
    super(VARIANT.vanilla, options);
  }
}

/** KOALA++ as a tf.Optimizer. Options: those of KoalaPP. */
export class KoalaPPOptimizer extends KoalaOptimizerBase<KoalaPPOptions> {
  static readonly className = 'KoalaPP';

  constructor(options: KoalaPPOptions = {}) {
    super(VARIANT.plusPlus, options);
  }
}

tf.serialization.registerClass(KoalaMOptimizer);
tf.serialization.registerClass(KoalaVOptimizer);
tf.serialization.registerClass(KoalaPPOptimizer);

export type { KoalaMOptions, KoalaPPOptions, KoalaVOptions } from './options';
