// Every recorded run of the official code, on the native and the js backend: teacher-forced (one
// predict or one update from the recorded state) and free-running (the whole run from the start).
import { KoalaM, KoalaV, type FloatArray, type KoalaStateDict } from '../../lib';
import { flatP, goldenFiles, loadGolden, optionsOf, relMax, relNorm, type Golden } from '../helpers';

type Opt = KoalaM | KoalaV;

function setup(g: Golden, backend: 'native' | 'js') {
  const Ctor = g.dtype === 'float32' ? Float32Array : Float64Array;
  const params: FloatArray[] = g.initial.params.map((p) => Ctor.from(p));
  const grads: FloatArray[] = params.map((p) => new Ctor(p.length));
  const layers = params.map((param, i) => ({ param, grad: grads[i], name: g.layers[i].name }));
  const opts = { ...optionsOf(g), backend, threads: 2 };
  const opt: Opt = g.optimizer === 'koala-m' ? new KoalaM(layers, opts) : new KoalaV(layers, opts);
  return { Ctor, params, grads, opt };
}

function write(dst: FloatArray[], src: number[][]) {
  src.forEach((s, l) => dst[l].set(s));
}

// Tolerances. float64: the reference's float32 matrices are reproduced (Note [reference float32
// rounding], native/include/koala/filter.h), so everything, P included, matches to rounding, also
// free-running (measured: <= 4e-16). float32: the reference computes in float32 and we in double
// rounded once per store, so a run differs by float32 rounding (measured: ~2e-7 free-running).
const TEACHER_TOL = { float64: 1e-12, float32: 1e-6 };
const FREE_TOL = { float64: 1e-12, float32: 1e-5 };

describe.each(goldenFiles())('golden %s', (file) => {
  const g = loadGolden(file);
  const momentum = g.optimizer === 'koala-m';
  const initialR = (g.options.r ?? 1) as number;

  describe.each(['native', 'js'] as const)('%s backend', (backend) => {
    test('teacher-forced: each predict and each update from the recorded state', () => {
      const { Ctor, params, grads, opt } = setup(g, backend);
      const tol = TEACHER_TOL[g.dtype];
      const zeros = () => params.map((p) => new Ctor(p.length));
      const base = opt.stateDict();
      g.steps.forEach((s, k) => {
        const prev = k > 0 ? g.steps[k - 1] : null;
        const prevR = prev ? prev.afterUpdate.R : initialR;
        const arr = (a: number[][] | undefined) => (a ? a.map((x) => Ctor.from(x)) : zeros());
        // predict() from the state after the previous update.
        write(params, prev ? prev.afterUpdate.params : g.initial.params);
        const before: KoalaStateDict = momentum
          ? {
              ...base,
              phase: 'updated',
              lr: s.lr,
              filter: [...(prev ? flatP(prev.afterUpdate.P!) : [base.filter[0], base.filter[1], base.filter[2]]), prev ? prev.afterPredict.Qx! : base.filter[3], 0, prevR],
              velocities: arr(prev?.afterUpdate.velocities),
              averages: arr(prev?.afterUpdate.paramAvg),
            }
          : { ...base, phase: 'updated', lr: s.lr, filter: [0, 0, 0, 0, prev ? prev.afterUpdate.sigma! : base.filter[4], prevR] };
        opt.loadStateDict(before);
        opt.predict();
        if (momentum) {
          const m = opt as KoalaM;
          expect(relNorm(params, s.afterPredict.params!)).toBeLessThanOrEqual(tol);
          expect(relNorm(m.velocities(), s.afterPredict.velocities!)).toBeLessThanOrEqual(tol);
          expect(relMax(flatP(m.state.P), flatP(s.afterPredict.P!))).toBeLessThanOrEqual(tol);
          expect(relMax([m.state.qX], [s.afterPredict.Qx!])).toBeLessThanOrEqual(tol);
        } else {
          expect(relMax([(opt as KoalaV).state.sigma], [s.afterPredict.sigma!])).toBeLessThanOrEqual(tol);
        }

        // update() from the recorded post-predict state.
        const afterPredict: KoalaStateDict = momentum
          ? {
              ...before,
              phase: 'predicted',
              filter: [...flatP(s.afterPredict.P!), s.afterPredict.Qx!, 0, prevR],
              velocities: arr(s.afterPredict.velocities),
            }
          : { ...before, phase: 'predicted', filter: [0, 0, 0, 0, s.afterPredict.sigma!, prevR] };
        if (momentum) write(params, s.afterPredict.params!);
        opt.loadStateDict(afterPredict);
        write(grads, s.grads);
        const info = opt.update(s.loss, s.lossSq);
        expect(info.applied).toBe(true);
        expect(relNorm(params, s.afterUpdate.params)).toBeLessThanOrEqual(tol);
        expect(relMax([opt.state.R], [s.afterUpdate.R])).toBeLessThanOrEqual(tol);
        if (momentum) {
          const m = opt as KoalaM;
          expect(relNorm(m.velocities(), s.afterUpdate.velocities!)).toBeLessThanOrEqual(tol);
          expect(relNorm(m.paramAverages(), s.afterUpdate.paramAvg!)).toBeLessThanOrEqual(tol);
          expect(relMax(flatP(m.state.P), flatP(s.afterUpdate.P!))).toBeLessThanOrEqual(tol);
        } else {
          expect(relMax([(opt as KoalaV).state.sigma], [s.afterUpdate.sigma!])).toBeLessThanOrEqual(tol);
        }
      });
      opt.dispose();
    });

    test('free-running: the whole run from the initial parameters', () => {
      const { params, grads, opt } = setup(g, backend);
      let worst = 0;
      for (const s of g.steps) {
        opt.lr = s.lr;
        opt.predict();
        write(grads, s.grads);
        const info = opt.update(s.loss, s.lossSq);
        expect(info.applied).toBe(true);
        // A layer whose recorded gradient is all zeros is skipped, and only it.
        const zeroLayers = s.grads.flatMap((gr, l) => (gr.every((v) => v === 0) ? [l] : []));
        expect(info.skippedLayers).toEqual(zeroLayers);
        const errs = [relNorm(params, s.afterUpdate.params), relMax([opt.state.R], [s.afterUpdate.R])];
        if (momentum) {
          const m = opt as KoalaM;
          errs.push(relNorm(m.velocities(), s.afterUpdate.velocities!), relMax(flatP(m.state.P), flatP(s.afterUpdate.P!)));
        } else {
          errs.push(relMax([(opt as KoalaV).state.sigma], [s.afterUpdate.sigma!]));
        }
        worst = Math.max(worst, ...errs);
      }
      expect(worst).toBeLessThanOrEqual(FREE_TOL[g.dtype]);
      opt.dispose();
    });
  });
});
