// Every recorded run of the authors' KOALA++ code, free-running (the whole run from the initial
// parameters) on the native and the js backend: parameters, v, Hp, S and R after every update.
import { KoalaPP, type FloatArray } from '../../lib';
import { goldenPPFiles, loadGoldenPP, optionsOfPP, relMax, relNorm, type GoldenPP } from '../helpers';

// float64: the same arithmetic up to the order of the sums (measured: below 1e-14). float32: the
// reference computes in float32 and we in double, rounded once per store (measured: ~1e-6).
const FREE_TOL = { float64: 1e-12, float32: 1e-5 };

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
