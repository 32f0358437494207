// Every recorded run of the authors' KOALA++ code on the native and the js backend: free-running
// (the whole run from the initial parameters: parameters, v, Hp, S and R after every update) and
// teacher-forced (each update from the recorded state, loaded through a state dict).
import { KoalaPP, type FloatArray, type KoalaStateDict } from '../../lib';
import { goldenPPFiles, loadGoldenPP, optionsOfPP, relMax, relNorm, type GoldenPP } from '../helpers';

// float64: the same arithmetic up to the order of the sums (measured: below 1e-14). float32: the
// reference computes in float32 and we in double, rounded once per store (measured: ~1e-6).
const FREE_TOL = { float64: 1e-12, float32: 1e-5 };
const TEACHER_TOL = { float64: 1e-12, float32: 1e-6 };

function setup(g: GoldenPP, backend: 'native' | 'js') {
  const Ctor = g.dtype === 'float32' ? Float32Array : Float64Array;
  const params: FloatArray[] = g.initial.params.map((p) => Ctor.from(p));
  const grads: FloatArray[] = params.map((p) => new Ctor(p.length));
  const layers = params.map((param, i) => ({ param, grad: grads[i], name: g.layers[i].name }));
  return { params, grads, opt: new KoalaPP(layers, { ...optionsOfPP(g), backend, threads: 2 }) };
}

/** relNorm over the layers the reference has set (the others must still be unset here). */
function relNormSet(ours: FloatArray[], recorded: (number[] | null)[]): number {
  const set = recorded.flatMap((r, l) => (r === null ? [] : [l]));
  return relNorm(set.map((l) => ours[l]), set.map((l) => recorded[l]!));
}

describe.each(goldenPPFiles())('golden KOALA++ %s', (file) => {
  const g = loadGoldenPP(file);

  test.each(['native', 'js'] as const)('free-running on the %s backend', (backend) => {
    const { params, grads, opt } = setup(g, backend);
    expect(opt.backend).toBe(backend);
    let worst = 0;
    for (const s of g.steps) {
      opt.lr = s.lr;
      opt.predict();
      s.grads.forEach((gr, l) => grads[l].set(gr));
      const info = opt.update(s.loss, s.lossSq);
      expect(info.applied).toBe(true);
      // A layer whose recorded gradient is all zeros is skipped, and only it.
      expect(info.skippedLayers).toEqual(s.grads.flatMap((gr, l) => (gr.every((v) => v === 0) ? [l] : [])));
      const a = s.afterUpdate;
      const state = opt.state;
      // Which layers have been updated: exactly those the reference has an S for.
      expect(state.S.map((v) => v === null)).toEqual(a.Sk.map((v) => v === null));
      const errs = [
        relNorm(params, a.params),
        relNormSet(opt.products(), a.vk),
        relNormSet(opt.directions(), a.Hk),
        relMax(state.S.filter((v) => v !== null) as number[], a.Sk.filter((v) => v !== null) as number[]),
        relMax([state.R], [a.R]),
      ];
      worst = Math.max(worst, ...errs);
    }
    console.log(`${file} ${backend}: worst relative error ${worst.toExponential(2)}`);
    expect(worst).toBeLessThanOrEqual(FREE_TOL[g.dtype]);
    opt.dispose();
  });
});

describe.each(goldenPPFiles())('golden KOALA++ %s', (file) => {
  const g = loadGoldenPP(file);

  test.each(['native', 'js'] as const)('teacher-forced on the %s backend: each update from the recorded state', (backend) => {
    const { params, grads, opt } = setup(g, backend);
    const Ctor = g.dtype === 'float32' ? Float32Array : Float64Array;
    const base = opt.stateDict();
    const dot = (a: number[], b: number[]) => a.reduce((sum, x, i) => sum + x * b[i], 0);
    let worst = 0;
    g.steps.forEach((s, k) => {
      const prev = k > 0 ? g.steps[k - 1].afterUpdate : null;
      const layer = (l: number, key: 'vk' | 'Hk') => prev?.[key][l] ?? null;
      const sd: KoalaStateDict = {
        ...base,
        step: k,
        phase: 'predicted',
        lr: s.lr,
        filter: [0, 0, 0, 0, base.filter[4], prev ? prev.R : (g.options.r as number | undefined) ?? 1],
        plusPlus: {
          products: params.map((p, l) => Ctor.from(layer(l, 'vk') ?? new Array<number>(p.length).fill(0))),
          directions: params.map((p, l) => Ctor.from(layer(l, 'Hk') ?? new Array<number>(p.length).fill(0))),
          S: params.map((_, l) => prev?.Sk[l] ?? 0),
          hh: params.map((_, l) => (layer(l, 'Hk') ? dot(layer(l, 'Hk')!, layer(l, 'Hk')!) : 0)),
          vh: params.map((_, l) => (layer(l, 'Hk') ? dot(layer(l, 'vk')!, layer(l, 'Hk')!) : 0)),
          updated: params.map((_, l) => (prev?.Sk[l] ?? null) !== null),
        },
      };
      (prev ? prev.params : g.initial.params).forEach((p, l) => params[l].set(p));
      opt.loadStateDict(sd);
      s.grads.forEach((gr, l) => grads[l].set(gr));
      expect(opt.update(s.loss, s.lossSq).applied).toBe(true);
      const a = s.afterUpdate;
      const S = opt.state.S;
      worst = Math.max(
        worst,
        relNorm(params, a.params),
        relNormSet(opt.products(), a.vk),
        relMax(S.filter((v) => v !== null) as number[], a.Sk.filter((v) => v !== null) as number[]),
        relMax([opt.state.R], [a.R]),
      );
    });
    expect(worst).toBeLessThanOrEqual(TEACHER_TOL[g.dtype]);
    opt.dispose();
  });
});
