/**
 * The pure-TypeScript backend of KOALA++: the readable specification of the authors' code
 * (shared/docs/ALGORITHM.md, section "KOALA++"), and the fallback where the native addon cannot
 * load. Arithmetic is in double; a Float32Array store rounds once (Note [opmath], README), and the
 * direction H is taken as stored (rounded to the dtype), so that the carried |H|^2 is the next
 * step's Hp . Hp.
 */
import type { Backend } from './backend';
import { fail } from './errors';
import { zeros, type FloatArray } from './layers';
import type { BackendConfig } from './options';
import { DTYPE, LAYER_STATE, NO_PENDING_PREDICT, PP_LAYER_SCALARS, STEP_STATUS, type BackendStep, type FilterSnapshot, type LayerStateKind } from './protocol';

const MAX_FLOAT32 = 3.4028234663852886e38; // the largest finite float32

/** What one layer's update will write, computed on copies before anything is committed. */
interface LayerStep {
  v: FloatArray;
  h: FloatArray;
  s: number;
  hh: number;
  vh: number;
  lambda: number;
  /** The step size of x <- x - k (v + Q H). */
  k: number;
}

export class ReferencePPBackend implements Backend {
  private readonly cfg: BackendConfig;
  private readonly params: FloatArray[];
  private readonly grads: FloatArray[];
  private readonly skipMask: Uint8Array;
  // Per layer: v_l, Hp_l, S_l, the carried |H|^2 and v . H, and whether the layer was ever updated.
  private readonly v: FloatArray[];
  private readonly hp: FloatArray[];
  private readonly s: number[];
  private readonly hh: number[];
  private readonly vh: number[];
  private readonly updated: boolean[];
  private readonly sigma: number;
  private r: number;
  private steps = 0; // applied updates
  private last: BackendStep = { status: STEP_STATUS.applied, skipped: 0, maxGain: 0 };
  readonly deferred = false;

  constructor(cfg: BackendConfig, params: FloatArray[], grads: FloatArray[], skipMask: Uint8Array) {
    this.cfg = cfg;
    this.params = params;
    this.grads = grads;
    this.skipMask = skipMask;
    this.v = params.map((p) => this.make(p.length));
    this.hp = params.map((p) => this.make(p.length));
    this.s = params.map(() => 0);
    this.hh = params.map(() => 0);
    this.vh = params.map(() => 0);
    this.updated = params.map(() => false);
    this.sigma = cfg.sigma;
    this.r = cfg.r;
  }

  private make(n: number): FloatArray {
    return zeros(this.cfg.dtype === DTYPE.float32 ? 'float32' : 'float64', n);
  }

  /** KOALA++ predicts nothing. */
  predict(): boolean {
    return false;
  }

  update(loss: number, lossSq: number, lr: number): void {
    this.last = this.step(loss, lossSq, lr);
  }

  lastStep(): BackendStep {
    return this.last;
  }

  // KOALA++ has no sharded step (its options refuse `shard`): the halves are not reached.
  predictPartial(): boolean {
    return fail('ERR_KOALA_INVALID_ARGUMENT', 'KoalaPP has no sharded step');
  }

  predictFinish(): void {
    fail('ERR_KOALA_INVALID_ARGUMENT', 'KoalaPP has no sharded step');
  }

  updatePartial(): void {
    fail('ERR_KOALA_INVALID_ARGUMENT', 'KoalaPP has no sharded step');
  }

  updateFinish(): void {
    fail('ERR_KOALA_INVALID_ARGUMENT', 'KoalaPP has no sharded step');
  }

  /** The step sequence of native/core/step.h (Note [step sequence]): every guard before any change. */
  private step(loss: number, lossSq: number, lr: number): BackendStep {
    const c = this.cfg;
    const refused = (status: BackendStep['status']): BackendStep => ({ status, skipped: 0, maxGain: 0 });
    if (!Number.isFinite(loss) || !Number.isFinite(lossSq)) return refused(STEP_STATUS.nonFiniteLoss);
    // H = g + wd x, as stored (rounded to the dtype).
    const hs = this.params.map((x, l) => {
      const h = this.make(x.length);
      for (let i = 0; i < x.length; i++) h[i] = this.grads[l][i] + c.weightDecay * x[i];
      return h;
    });
    const sums = this.params.map((x, l) => ({ xx: dot(x, x), gg: dot(this.grads[l], this.grads[l]), hh: dot(hs[l], hs[l]) }));
    if (sums.some((s) => !Number.isFinite(s.xx))) return refused(STEP_STATUS.nonFiniteParameter);
    if (sums.some((s) => !Number.isFinite(s.gg) || !Number.isFinite(s.hh))) return refused(STEP_STATUS.nonFiniteGradient);

    const r = c.adaptiveR ? c.betaR * this.r + (1 - c.betaR) * lossSq : this.r;
    const largest = c.dtype === DTYPE.float32 ? MAX_FLOAT32 : Number.MAX_VALUE;
    let safe = Number.isFinite(r);
    let maxGain = 0;
    let any = false;
    const steps = hs.map((h, l): LayerStep | null => {
      if (Math.sqrt(sums[l].gg) < c.eps) return null;
      const x = this.params[l];
      const first = !this.updated[l];
      // The previous direction and product: on the layer's first update Hp = H and v = sigma H.
      const vPrev = first ? h.map((e) => this.sigma * e) : this.v[l];
      const hPrev = first ? h : this.hp[l];
      const xx = first ? dot(hPrev, hPrev) : this.hh[l];
      const y = first ? dot(hPrev, vPrev) : this.vh[l];
      const sPrev = first ? y + c.q * xx + r : this.s[l];
      const a = dot(h, hPrev);
      const b = dot(h, vPrev);
      const lambda = (b + c.q * a) / sPrev;
      const alpha = a / xx;
      const rk = c.symmetric ? b / xx - (a * y) / (xx * xx) : 0;
      const v = this.make(x.length);
      const dir = this.make(x.length); // v + Q H, the step's direction
      for (let i = 0; i < x.length; i++) {
        v[i] = (alpha - lambda) * vPrev[i] + c.q * (h[i] - lambda * hPrev[i]) + rk * hPrev[i];
        dir[i] = v[i] + c.q * h[i];
      }
      const s = dot(dir, h) + r;
      const lossL = loss + 0.5 * c.weightDecay * sums[l].xx;
      const k = (lr * lossL) / s;
      // Nothing may leave the dtype's range: v, and x moved by k (v + Q H), bounded by norms.
      const reach = Math.sqrt(sums[l].xx) + Math.abs(k) * Math.sqrt(dot(dir, dir));
      safe &&= [lambda, alpha, rk, s, k].every(Number.isFinite) && Math.sqrt(dot(v, v)) <= largest && reach <= largest;
      if (!any || lambda > maxGain) maxGain = lambda;
      any = true;
      return { v, h, s, hh: sums[l].hh, vh: dot(v, h), lambda, k };
    });
    if (!safe) return refused(STEP_STATUS.nonFiniteStep);

    this.r = r;
    this.steps++;
    steps.forEach((st, l) => {
      this.skipMask[l] = st === null ? 1 : 0;
      if (st === null) return;
      const x = this.params[l];
      for (let i = 0; i < x.length; i++) x[i] = x[i] - st.k * (st.v[i] + c.q * st.h[i]);
      this.v[l].set(st.v);
      this.hp[l].set(st.h);
      [this.s[l], this.hh[l], this.vh[l], this.updated[l]] = [st.s, st.hh, st.vh, true];
    });
    return { status: STEP_STATUS.applied, skipped: steps.filter((st) => st === null).length, maxGain };
  }

  getFilter(): FilterSnapshot {
    return { p00: 0, p01: 0, p11: 0, qX: 0, sigma: this.sigma, r: this.r, pending: NO_PENDING_PREDICT, steps: this.steps };
  }

  /** sigma is an option of KOALA++, not state: only R and the step count are taken. */
  setFilter(s: FilterSnapshot): void {
    ({ r: this.r, steps: this.steps } = s);
  }

  readLayerState(kind: LayerStateKind, layer: number, out: FloatArray): void {
    out.set((kind === LAYER_STATE.product ? this.v : this.hp)[layer]);
  }

  writeLayerState(kind: LayerStateKind, layer: number, values: FloatArray): void {
    (kind === LAYER_STATE.product ? this.v : this.hp)[layer].set(values);
  }

  readLayerScalars(out: Float64Array): void {
    this.s.forEach((s, l) => out.set([s, this.hh[l], this.vh[l], this.updated[l] ? 1 : 0], l * PP_LAYER_SCALARS));
  }

  writeLayerScalars(values: Float64Array): void {
    this.s.forEach((_, l) => {
      const at = l * PP_LAYER_SCALARS;
      [this.s[l], this.hh[l], this.vh[l]] = [values[at], values[at + 1], values[at + 2]];
      this.updated[l] = values[at + 3] !== 0;
    });
  }

  threadsInUse(): number {
    return 1;
  }

  dispose(): void {
    this.v.length = 0;
    this.hp.length = 0;
  }
}

/** The plain sequential dot product (the reference's, at the golden runs' sizes). */
function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
