// The TensorFlow.js adapter: the same parameters as KoalaM driven by hand with the same gradients,
// its state and config round trips, tfjs-layers' fit, and its errors.
import { availableParallelism } from 'node:os';

import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';

import { initBackend, type BackendName } from '../../examples/mnist/backend';
import { KoalaError, KoalaM, KoalaPP, KoalaV, type KoalaMOptions } from '../../lib';
import { KoalaMOptimizer, KoalaPPOptimizer, KoalaVOptimizer } from '../../lib/tfjs';
import { bitwiseEqual, relNorm, rng } from '../helpers';

let X: tf.Tensor2D;
let Y: tf.Tensor2D;

beforeAll(async () => {
  await initBackend('cpu');
  X = tf.tensor2d(Array.from({ length: 8 * 4 }, (_, i) => Math.sin(i + 1)), [8, 4]);
  Y = tf.tensor2d(Array.from({ length: 8 * 3 }, (_, i) => Math.cos(2 * i)), [8, 3]);
});

function initialValues(seed: number): [Float32Array, Float32Array] {
  const r = rng(seed);
  return [Float32Array.from({ length: 12 }, () => r() - 0.5), Float32Array.from({ length: 3 }, () => 0.1 * r())];
}

/** A linear model y = x W + b over two variables; per-sample squared errors. */
function model(values: [Float32Array, Float32Array]) {
  const w = tf.variable(tf.tensor2d(values[0], [4, 3]));
  const b = tf.variable(tf.tensor1d(values[1]));
  const perSample = () => tf.tidy(() => tf.mean(tf.square(tf.sub(tf.add(tf.matMul(X, w), b), Y)), 1));
  const vars: tf.Variable[] = [w, b];
  return { vars, perSample, mean: () => tf.mean(perSample()) as tf.Scalar, dispose: () => tf.dispose([w, b]) };
}

/** KoalaM (or V) over host arrays, with gradients computed by tfjs at the predicted parameters. */
function byHand(Koala: typeof KoalaM | typeof KoalaV | typeof KoalaPP, options: KoalaMOptions, values: [Float32Array, Float32Array], steps: number, perSample: boolean, before?: (step: number, params: Float32Array[]) => void): Float32Array[] {
  const params = values.map((v) => v.slice());
  const grads = params.map((p) => new Float32Array(p.length));
  const koala = new Koala(params.map((param, i) => ({ param, grad: grads[i] })), options);
  const m = model(values);
  for (let s = 0; s < steps; s++) {
    before?.(s, params);
    koala.predict();
    m.vars.forEach((v, i) => v.assign(tf.tensor(params[i].slice(), v.shape)));
    const { value, grads: g } = tf.variableGrads(m.mean, m.vars);
    m.vars.forEach((v, i) => grads[i].set(g[v.name].dataSync() as Float32Array));
    const loss = value.dataSync()[0];
    const per = perSample ? m.perSample().dataSync() : [loss];
    const lossSq = Array.from(per).reduce((a, l) => a + l * l, 0) / per.length;
    koala.update(loss, lossSq);
    tf.dispose([value, g]);
  }
  koala.dispose();
  m.dispose();
  return params;
}

function read(vars: tf.Variable[]): Float32Array[] {
  return vars.map((v) => Float32Array.from(v.dataSync() as Float32Array));
}

describe.each<BackendName>(['cpu', 'wasm'])('on the %s backend', (backendName) => {
  beforeAll(async () => {
    const info = await initBackend(backendName);
    expect(info).toEqual({ name: backendName, fallback: null });
  });

  test.each([
    ['KoalaM', 'minimize'],
    ['KoalaM', 'minimizePerSample'],
    ['KoalaV', 'minimizePerSample'],
    ['KoalaPP', 'minimizePerSample'],
  ] as const)('%s through the adapter (%s) gives the parameters of the core optimizer driven by hand, bitwise', (variant, how) => {
    const values = initialValues(7);
    const options = { weightDecay: 1e-3, backend: 'js' as const };
    const m = model(values);
    const opt = { KoalaM: () => new KoalaMOptimizer(options), KoalaV: () => new KoalaVOptimizer(options), KoalaPP: () => new KoalaPPOptimizer(options) }[variant]();
    for (let s = 0; s < 3; s++) {
      if (how === 'minimize') opt.minimize(m.mean, false, m.vars);
      else opt.minimizePerSample(m.perSample, false, m.vars);
    }
    const expected = byHand({ KoalaM, KoalaV, KoalaPP }[variant], options, values, 3, how === 'minimizePerSample');
    expect(bitwiseEqual(read(m.vars), expected)).toBe(true);
    expect(opt.iterations).toBe(3);
    expect(opt.stats.steps).toBe(3);
    // KOALA-M writes the parameters back after predict and after update; KOALA-V and KOALA++ after update only.
    expect(opt.stats.writes).toBe(variant === 'KoalaM' ? 6 : 3);
    expect(opt.lastUpdate?.applied).toBe(true);
    opt.dispose();
    m.dispose();
  });

  test('with lazyPredict and a refused step in the middle, every forward pass runs at the parameters of a standard run', () => {
    const values = initialValues(13);
    const refusedAt = 3;
    const run = (lazyPredict: boolean) => {
      const m = model(values);
      const opt = new KoalaMOptimizer({ lazyPredict, weightDecay: 1e-3 });
      const seen: Float32Array[][] = [];
      for (let s = 0; s < 7; s++) {
        const f = () => {
          seen.push(read(m.vars));
          return s === refusedAt ? (tf.mul(m.mean(), NaN) as tf.Scalar) : m.mean();
        };
        opt.minimize(f, false, m.vars);
        expect(opt.lastUpdate?.applied).toBe(s !== refusedAt);
      }
      opt.dispose();
      m.dispose();
      return seen;
    };
    const [standard, lazy] = [run(false), run(true)];
    expect(lazy).toHaveLength(7);
    standard.forEach((params, s) => expect(relNorm(lazy[s], params)).toBeLessThanOrEqual(1e-6));
    // The velocities move the parameters at every predict: a stale forward pass would show.
    expect(relNorm(standard[refusedAt + 1], standard[refusedAt])).toBeGreaterThan(1e-3);
  });

  test('a variable assigned elsewhere between steps is read back before the next predict', () => {
    const values = initialValues(3);
    const moved = values.map((v) => v.map((x) => x + 0.25));
    const m = model(values);
    const opt = new KoalaMOptimizer({ backend: 'js' });
    opt.minimize(m.mean, false, m.vars);
    m.vars.forEach((v, i) => v.assign(tf.tensor(moved[i], v.shape)));
    opt.minimize(m.mean, false, m.vars);
    const expected = byHand(KoalaM, { backend: 'js' }, values, 2, false, (s, params) => s === 1 && params.forEach((p, i) => p.set(moved[i])));
    expect(bitwiseEqual(read(m.vars), expected)).toBe(true);
    opt.dispose();
    m.dispose();
  });
});

describe('state, config, tfjs-layers and errors (cpu backend)', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  test('getWeights/setWeights carry the KOALA-M state: a restored optimizer continues bitwise the same', async () => {
    const values = initialValues(11);
    const a = model(values);
    const optA = new KoalaMOptimizer({ backend: 'js' });
    for (let s = 0; s < 2; s++) optA.minimizePerSample(a.perSample, false, a.vars);
    const weights = await optA.getWeights();
    expect(weights.map((w) => w.name)).toEqual(['iter', 'koala/state', ...a.vars.map((v) => `${v.name}/velocity`), ...a.vars.map((v) => `${v.name}/average`)]);

    const b = model(read(a.vars) as [Float32Array, Float32Array]);
    const optB = new KoalaMOptimizer({ backend: 'js' });
    await optB.setWeights(weights);
    expect(optB.iterations).toBe(2);
    for (let s = 0; s < 2; s++) {
      optA.minimizePerSample(a.perSample, false, a.vars);
      optB.minimizePerSample(b.perSample, false, b.vars);
    }
    expect(bitwiseEqual(read(b.vars), read(a.vars))).toBe(true);
    expect(optB.koala?.stateDict().filter).toEqual(optA.koala?.stateDict().filter);
    expect(optB.iterations).toBe(4);
    tf.dispose(weights.map((w) => w.tensor));
    [optA, optB, a, b].forEach((x) => x.dispose());
  });

  test('the weights carry the state\'s variant: another variant\'s refuses them with nothing changed (Note [state variants])', async () => {
    const a = model(initialValues(12));
    const optA = new KoalaMOptimizer({ backend: 'js', stateNoise: 'paper' });
    for (let s = 0; s < 2; s++) optA.minimizePerSample(a.perSample, false, a.vars);
    const weights = await optA.getWeights();
    const b = model(initialValues(13));
    const optB = new KoalaMOptimizer({ backend: 'js' });
    optB.minimizePerSample(b.perSample, false, b.vars);
    const before = optB.koala!.stateDict();
    const params = read(b.vars);
    await expect(optB.setWeights(weights)).rejects.toMatchObject({ code: 'ERR_KOALA_INVALID_STATE' });
    expect(optB.koala!.stateDict()).toEqual(before);
    expect(bitwiseEqual(read(b.vars), params)).toBe(true);
    const optC = new KoalaMOptimizer({ backend: 'js', stateNoise: 'paper' });
    optC.minimizePerSample(b.perSample, false, b.vars);
    await optC.setWeights(weights);
    expect(optC.koala!.stateDict().variants).toEqual({ target: 'relative', stateNoise: 'paper' });
    tf.dispose(weights.map((w) => w.tensor));
    [optA, optB, optC, a, b].forEach((x) => x.dispose());
  });

  test('getConfig/fromConfig round-trip, and both classes are registered for serialization', () => {
    const opt = new KoalaMOptimizer({ kappa: 0.8, weightDecay: 5e-4, r: null });
    opt.lr = 0.5;
    const config = opt.getConfig();
    expect(config).toEqual({ kappa: 0.8, weightDecay: 5e-4, r: null, lr: 0.5 });
    const registry = tf.serialization.SerializationMap.getMap().classNameMap;
    expect(registry.KoalaM[0]).toBe(KoalaMOptimizer);
    expect(registry.KoalaV[0]).toBe(KoalaVOptimizer);
    expect(registry.KoalaPP[0]).toBe(KoalaPPOptimizer);
    const back = registry.KoalaM[1](KoalaMOptimizer, config) as KoalaMOptimizer;
    expect(back).toBeInstanceOf(KoalaMOptimizer);
    expect(back.getConfig()).toEqual(config);
    expect(back.getClassName()).toBe('KoalaM');
    const v = KoalaVOptimizer.fromConfig(KoalaVOptimizer, new KoalaVOptimizer({ sigma0: 0.2, q: 0.5 }).getConfig());
    expect(v.getConfig()).toEqual({ sigma0: 0.2, q: 0.5, lr: 1 });
  });

  test.each(['KoalaM', 'KoalaV', 'KoalaPP'] as const)('a tfjs-layers model saved with its %s optimizer (includeOptimizer) loads and continues training bitwise', async (variant) => {
    const make = () =>
      tfl.sequential({ layers: [tfl.layers.dense({ units: 8, activation: 'tanh', inputShape: [4], kernelInitializer: tfl.initializers.glorotUniform({ seed: 3 }) }), tfl.layers.dense({ units: 3, kernelInitializer: tfl.initializers.glorotUniform({ seed: 4 }) })] });
    const original = make();
    const opt = {
      KoalaM: () => new KoalaMOptimizer({ weightDecay: 1e-3, kappa: 0.8 }),
      KoalaV: () => new KoalaVOptimizer({ weightDecay: 1e-3, q: 0.05 }),
      KoalaPP: () => new KoalaPPOptimizer({ weightDecay: 1e-3, sigma0: 0.2, q: 0.2 }),
    }[variant]();
    original.compile({ optimizer: opt, loss: 'meanSquaredError' });
    const fit = (m: tfl.LayersModel) => m.fit(X, Y, { epochs: 2, batchSize: 4, shuffle: false, verbose: 0 });
    await fit(original);
    let saved: tf.io.ModelArtifacts | null = null;
    await original.save(
      tf.io.withSaveHandler(async (artifacts) => {
        saved = artifacts;
        return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
      }),
      { includeOptimizer: true },
    );
    const loaded = await tfl.loadLayersModel(tf.io.fromMemory(saved!));
    expect(loaded.optimizer).toBeInstanceOf({ KoalaM: KoalaMOptimizer, KoalaV: KoalaVOptimizer, KoalaPP: KoalaPPOptimizer }[variant]);
    const restored = loaded.optimizer as KoalaMOptimizer | KoalaVOptimizer | KoalaPPOptimizer;
    expect(restored.getConfig()).toEqual(opt.getConfig());
    expect(restored.iterations).toBe(4);
    await fit(original);
    await fit(loaded);
    const weights = (m: tfl.LayersModel) => m.getWeights().map((w) => Float32Array.from(w.dataSync() as Float32Array));
    expect(bitwiseEqual(weights(loaded), weights(original))).toBe(true);
    expect(restored.koala?.stateDict().filter).toEqual(opt.koala?.stateDict().filter);
    expect(restored.koala?.stateDict().plusPlus).toEqual(opt.koala?.stateDict().plusPlus);
    expect(restored.iterations).toBe(8);
    original.dispose();
    loaded.dispose();
    opt.dispose();
    restored.dispose();
  });

  test('on the cpu backend the parameters are written in place, unless another tensor shares their data', () => {
    const values = initialValues(17);
    const m = model(values);
    const opt = new KoalaMOptimizer({ backend: 'js' });
    opt.minimize(m.mean, false, m.vars); // the variables share their data with the tensors they were made from: new tensors
    const ids = m.vars.map((v) => v.dataId);
    opt.minimize(m.mean, false, m.vars);
    expect(m.vars.map((v) => v.dataId)).toEqual(ids);
    const kept = tf.clone(m.vars[0]);
    const before = Float32Array.from(kept.dataSync() as Float32Array);
    opt.minimize(m.mean, false, m.vars);
    expect(bitwiseEqual([kept.dataSync() as Float32Array], [before])).toBe(true);
    expect(m.vars[0].dataId).not.toBe(ids[0]);
    expect(m.vars[1].dataId).toBe(ids[1]);
    expect(bitwiseEqual(read(m.vars), byHand(KoalaM, { backend: 'js' }, values, 3, false))).toBe(true);
    kept.dispose();
    opt.dispose();
    m.dispose();
  });

  test('threads: one per 262,144 parameters unless the options name them', () => {
    const layerOf = (n: number) => [{ param: new Float32Array(n), grad: new Float32Array(n) }];
    const threadsFor = (n: number, options: KoalaMOptions) => {
      const v = tf.variable(tf.zeros([n]));
      const opt = new KoalaMOptimizer(options);
      opt.minimize(() => tf.sum(tf.square(v)) as tf.Scalar, false, [v]);
      const threads = opt.koala!.threads;
      opt.dispose();
      v.dispose();
      return threads;
    };
    const coreThreads = (n: number, threads: number) => {
      const k = new KoalaM(layerOf(n), { threads });
      const t = k.threads;
      k.dispose();
      return t;
    };
    expect(threadsFor(250_000, {})).toBe(1);
    expect(threadsFor(250_000, { threads: 2 })).toBe(coreThreads(250_000, 2));
    expect(threadsFor(600_000, {})).toBe(coreThreads(600_000, Math.min(2, availableParallelism())));
  });

  test('a tfjs-layers model compiled with KoalaMOptimizer fits', async () => {
    const model = tfl.sequential({ layers: [tfl.layers.dense({ units: 8, activation: 'tanh', inputShape: [4], kernelInitializer: tfl.initializers.glorotUniform({ seed: 1 }) }), tfl.layers.dense({ units: 3, kernelInitializer: tfl.initializers.glorotUniform({ seed: 2 }) })] });
    const opt = new KoalaMOptimizer();
    model.compile({ optimizer: opt, loss: 'meanSquaredError' });
    const history = await model.fit(X, Y, { epochs: 15, batchSize: 4, shuffle: false, verbose: 0 });
    const losses = history.history.loss as number[];
    expect(losses[losses.length - 1]).toBeLessThan(0.5 * losses[0]);
    expect(opt.iterations).toBe(30);
    expect(opt.koala?.layerNames).toHaveLength(4);
    model.dispose();
    opt.dispose();
  });

  test('misuse throws KoalaErrors with their codes', () => {
    const m = model(initialValues(5));
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(KoalaError);
        return (e as KoalaError).code;
      }
      return 'no error';
    };
    expect(code(() => new KoalaMOptimizer({ kapa: 0.9 } as KoalaMOptions))).toBe('ERR_KOALA_INVALID_OPTION');
    // A sharded rank steps through the split calls, which the adapter does not make: refused up front.
    const shard = { layerLengths: [4], offsets: [0] };
    expect(code(() => new KoalaMOptimizer({ shard }))).toBe('ERR_KOALA_INVALID_OPTION');
    expect(code(() => new KoalaVOptimizer({ shard }))).toBe('ERR_KOALA_INVALID_OPTION');
    const opt = new KoalaMOptimizer({ backend: 'js' });
    expect(code(() => opt.applyGradients({}))).toBe('ERR_KOALA_PREDICT_REQUIRED');
    expect(code(() => opt.minimizePerSample(m.mean, false, m.vars))).toBe('ERR_KOALA_INVALID_LOSS');
    opt.minimize(m.mean, false, m.vars);
    expect(code(() => opt.minimize(m.mean, false, m.vars.slice(0, 1)))).toBe('ERR_KOALA_INVALID_LAYERS');
    expect(code(() => (opt.lr = -1))).toBe('ERR_KOALA_INVALID_OPTION');
    const other = tf.variable(tf.zeros([2]));
    const { grads } = opt.computeGradients(m.mean, m.vars);
    expect(code(() => opt.applyGradients({ ...grads, [other.name]: tf.zeros([2]) }))).toBe('ERR_KOALA_INVALID_LAYERS');
    opt.dispose();
    m.dispose();
    other.dispose();
  });
});
