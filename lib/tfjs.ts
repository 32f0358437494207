/**
 * KOALA for TensorFlow.js: `koala-optim/tfjs`. KoalaMOptimizer and KoalaVOptimizer are
 * tf.Optimizer subclasses, accepted wherever tfjs takes an optimizer (minimize, computeGradients,
 * applyGradients, getWeights/setWeights, getConfig/fromConfig; both registered for serialization,
 * so a tfjs-layers model compiled with one saves and loads its optimizer config).
 *
 * Note [tfjs host copies]: the KOALA step runs in this package (native or js backend) on host
 * Float32Arrays, one per variable, kept by the adapter. tfjs's public API is the only way in and
 * out: gradients are read with dataSync(), parameters are written back with Variable.assign() of a
 * new tensor. Never in place: the wasm backend caches packed weights for matMul and conv2d, so an
 * in-place write into a weight's memory would not be seen by them. A variable is read back only when
 * its data changed since the adapter's last write (its dataId differs: something else assigned it).
 * Per step: KOALA-M reads the gradients and writes the parameters twice (after predict, which
 * moves them, and after update); KOALA-V, whose predict leaves the parameters alone, writes once.
 * `stats` accumulates the time these copies take next to the time of the KOALA step itself.
 */
import * as tf from '@tensorflow/tfjs-core';

import { fail } from './errors';
import { KoalaM, KoalaV, type KoalaStateDict, type UpdateInfo } from './koala';
import { checkNumber, normalizeOptions, type KoalaMOptions, type KoalaVOptions } from './options';
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
  /** The KOALA predict and update themselves. */
  koalaMs: number;
}

interface Binding {
  variables: tf.Variable[];
  params: Float32Array[];
  grads: Float32Array[];
  /** The dataId each variable had after the adapter last wrote or read it. */
  synced: unknown[];
  koala: KoalaM | KoalaV;
}

const STATE_NAME = 'koala/state';

abstract class KoalaOptimizerBase<O extends KoalaMOptions | KoalaVOptions> extends tf.Optimizer {
  /** The options as given (lr is tracked apart, see `lr`). */
  protected readonly options: O;
  /** Statistics of the adapter's work, for logging its overhead. */
  readonly stats: AdapterStats = { steps: 0, copyMs: 0, koalaMs: 0 };
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
    normalizeOptions(variant, options); // throws a KoalaError on a bad option, before any step
    this.variant = variant;
    this.options = { ...options };
    this.learningRate = options.lr ?? 1;
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
  get koala(): KoalaM | KoalaV | null {
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
    // Host arrays: predict() knows whether it moved them (a lazy predict after an applied update does not).
    const moved = b.koala.predict();
    const t1 = performance.now();
    this.stats.koalaMs += t1 - t0;
    if (moved) this.writeBack(b);
    this.stats.copyMs += performance.now() - t1;
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
    const t2 = performance.now();
    if (info.applied) {
      this.writeBack(b);
      this.incrementIterations();
      this.stats.steps++;
    }
    this.stats.copyMs += t1 - t0 + (performance.now() - t2);
    this.stats.koalaMs += t2 - t1;
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
   * [iterations, the filter state (JSON, exact), then per variable its velocity and its parameter
   * average (KOALA-M)]. Before the first step: the iterations alone (and a state given to setWeights).
   */
  override async getWeights(): Promise<NamedTensor[]> {
    const out: NamedTensor[] = [await this.saveIterations()];
    const sd = this.binding ? this.binding.koala.stateDict() : this.pendingState;
    if (sd) {
      const { velocities, averages, ...scalars } = sd;
      out.push({ name: STATE_NAME, tensor: tf.scalar(JSON.stringify(scalars), 'string') });
      sd.layers.forEach(({ name }, i) => {
        if (velocities[i]) out.push({ name: `${name}/velocity`, tensor: tf.tensor1d(velocities[i] as Float32Array, 'float32') });
      });
      sd.layers.forEach(({ name }, i) => {
        if (averages[i]) out.push({ name: `${name}/average`, tensor: tf.tensor1d(averages[i] as Float32Array, 'float32') });
      });
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
    const perKind = scalars.optimizer === 'koala-m' && Array.isArray(scalars.layers) ? scalars.layers.length : 0;
    if (arrays.length !== 2 * perKind) bad(`expected ${2 * perKind} per-variable weights, got ${arrays.length}`);
    const sd: KoalaStateDict = { ...scalars, velocities: arrays.slice(0, perKind), averages: arrays.slice(perKind) };
    if (this.binding) {
      this.binding.koala.loadStateDict(sd);
      this.learningRate = this.binding.koala.lr;
    } else {
      this.pendingState = sd;
      this.learningRate = typeof sd.lr === 'number' ? sd.lr : this.learningRate;
    }
  }

  /** The options, lr as it is now; the inherited fromConfig() builds the optimizer back from them. */
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
    const options = { ...this.options, lr: this.learningRate };
    const koala = this.variant === VARIANT.momentum ? new KoalaM(layers, options) : new KoalaV(layers, options as KoalaVOptions);
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

  /** Assigns every host parameter array to its variable, through a new tensor (Note [tfjs host copies]). */
  private writeBack(b: Binding): void {
    tf.tidy(() => {
      b.variables.forEach((v, i) => {
        v.assign(tf.tensor(b.params[i].slice(), v.shape, 'float32'));
        b.synced[i] = v.dataId;
      });
    });
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

tf.serialization.registerClass(KoalaMOptimizer);
tf.serialization.registerClass(KoalaVOptimizer);

export type { KoalaMOptions, KoalaVOptions } from './options';
