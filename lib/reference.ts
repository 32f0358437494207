/**
 * The pure-TypeScript backend: the readable specification of KOALA as the official code runs it
 * (shared/docs/ALGORITHM.md), and the fallback where the native addon cannot load. Arithmetic is
 * in double; a Float32Array store rounds once, as the native backend does (Note [opmath], native/include/koala/math.h).
 */
import type { Backend } from './backend';
import { zeros, type FloatArray } from './layers';
import type { BackendConfig } from './options';
import { DTYPE, LAYER_STATE, NO_PENDING_PREDICT, STEP_STATUS, VARIANT, type BackendStep, type FilterSnapshot, type LayerStateKind } from './protocol';

const AVERAGE_DECAY = 0.9; // a <- 0.9 a + 0.1 x, hard-coded in the reference
const QX_DECAY = 0.9; // q_x <- 0.9 q_x + 0.1 d, hard-coded in the reference
const MAX_FLOAT32 = 3.4028234663852886e38; // the largest finite float32

export class ReferenceBackend implements Backend {
  private readonly cfg: BackendConfig;
  private readonly params: FloatArray[];
  private readonly grads: FloatArray[];
  private readonly skipMask: Uint8Array;
  private readonly velocities: FloatArray[];
  private readonly averages: FloatArray[];
  private readonly total: number; // the whole model's elements (a sharded rank holds fewer)
  // Filter state: P = [[p00, p01], [p01, p11]] and qX (KOALA-M), sigma (KOALA-V), R.
  private p00: number;
  private p01: number;
  private p11: number;
  private qX: number;
  private sigma: number;
  private r: number;
  // Lazy predict: the sum |a - x|^2 of a predict whose element-wise part the last update did.
  private pending = NO_PENDING_PREDICT;
  private steps = 0; // applied updates
  private last: BackendStep = { status: STEP_STATUS.applied, skipped: 0, maxGain: 0 };
  readonly deferred = false;

  constructor(cfg: BackendConfig, params: FloatArray[], grads: FloatArray[], skipMask: Uint8Array) {
    this.cfg = cfg;
    this.params = params;
    this.grads = grads;
    this.skipMask = skipMask;
    const make = (p: FloatArray) => zeros(cfg.dtype === DTYPE.float32 ? 'float32' : 'float64', p.length);
    this.velocities = cfg.variant === VARIANT.momentum ? params.map(make) : [];
    this.averages = cfg.variant === VARIANT.momentum ? params.map(make) : [];
    this.total = cfg.modelElems ?? params.reduce((n, p) => n + p.length, 0);
    ({ p00: this.p00, p01: this.p01, p11: this.p11, qX: this.qX, sigma: this.sigma, r: this.r } = cfg);
  }

  predict(): boolean {
    const { sum, moved } = this.localPredict();
    this.scalarPredict(sum);
    return moved;
  }

  /** The halves of predict() for a sharded rank (Note [sharded step], native/cpu/optimizer.h). */
  predictPartial(sums: Float64Array | null): boolean {
    const { sum, moved } = this.localPredict();
    sums![0] = sum;
    return moved;
  }

  predictFinish(sums: Float64Array | null): void {
    this.scalarPredict(sums![0]);
  }

  /** The scalar predict with the (reduced) sum |a - x|^2. */
  private scalarPredict(sumSq: number): void {
    const c = this.cfg;
    if (c.variant === VARIANT.vanilla) {
      this.sigma = this.sigma + c.q;
      return;
    }
    if (c.paperStateNoise) {
      this.qX = sumSq / this.total; // the paper's eq. 24 (Note [paper variants], filter.h)
    } else {
      const d = Math.sqrt(sumSq) / this.total;
      this.qX = QX_DECAY * this.qX + (1 - QX_DECAY) * d;
    }
    // P <- F P F^T + diag(qX, qP), F = [[1, 1], [0, kappa]].
    const fp00 = this.p00 + this.p01;
    const fp01 = this.p01 + this.p11;
    const fp11 = c.kappa * this.p11;
    this.p00 = fp00 + fp01 + Math.fround(this.qX); // Note [reference float32 rounding], filter.h
    this.p01 = c.kappa * fp01;
    this.p11 = c.kappa * fp11 + c.qP;
  }

  /**
   * The element-wise predict of this optimizer's layers (or the pending sum of a lazy update):
   * their |a - x|^2, and whether the parameters moved.
   */
  private localPredict(): { sum: number; moved: boolean } {
    const pending = this.pending;
    this.pending = NO_PENDING_PREDICT;
    if (pending !== NO_PENDING_PREDICT) return { sum: pending, moved: false };
    if (this.cfg.variant === VARIANT.vanilla) return { sum: 0, moved: false };
    return { sum: this.params.reduce((s, _, l) => s + this.predictLayer(l), 0), moved: true };
  }

  /** Element-wise predict of layer l: returns |a - x|^2 on the x before it, then x += v, v *= kappa. */
  private predictLayer(l: number): number {
    const x = this.params[l];
    const v = this.velocities[l];
    const a = this.averages[l];
    let sumSq = 0;
    for (let i = 0; i < x.length; i++) {
      const d = a[i] - x[i];
      sumSq += d * d;
      x[i] = x[i] + v[i];
      v[i] = this.cfg.kappa * v[i];
    }
    return sumSq;
  }

  /** The step sequence of native/core/step.h (Note [step sequence]): every guard before any change. */
  update(loss: number, lossSq: number, lr: number): void {
    this.last = this.decideAndApply(this.layerSums(), loss, lossSq, lr);
  }

  /** The halves of update() for a sharded rank (Note [sharded step], native/cpu/optimizer.h). */
  updatePartial(sums: Float64Array | null): void {
    this.layerSums().forEach(({ hh, xx, gg }, l) => sums!.set([hh, xx, gg], 3 * l));
  }

  updateFinish(sums: Float64Array | null, loss: number, lossSq: number, lr: number): void {
    const s = sums!;
    this.last = this.decideAndApply(this.params.map((_, l) => ({ hh: s[3 * l], xx: s[3 * l + 1], gg: s[3 * l + 2] })), loss, lossSq, lr);
  }

  lastStep(): BackendStep {
    return this.last;
  }

  /** The stats pass: per layer |h|^2, |x|^2, |g|^2. */
  private layerSums(): { hh: number; xx: number; gg: number }[] {
    const wd = this.cfg.weightDecay;
    return this.params.map((x, l) => {
      const g = this.grads[l];
      let hh = 0;
      let xx = 0;
      let gg = 0;
      for (let i = 0; i < x.length; i++) {
        const h = g[i] + wd * x[i];
        hh += h * h;
        xx += x[i] * x[i];
        gg += g[i] * g[i];
      }
      return { hh, xx, gg };
    });
  }

  private decideAndApply(sums: { hh: number; xx: number; gg: number }[], loss: number, lossSq: number, lr: number): BackendStep {
    const c = this.cfg;
    const momentum = c.variant === VARIANT.momentum;
    // The decay inside the step's direction h = g + wd x: 0 where KOALA-V steps along the raw g (the official code).
    const alongG = !momentum && !c.vanillaAlongH;
    const directionDecay = alongG ? 0 : c.weightDecay;
    const refused = (status: BackendStep['status']): BackendStep => ({ status, skipped: 0, maxGain: 0 });
    if (!Number.isFinite(loss) || !Number.isFinite(lossSq)) return refused(STEP_STATUS.nonFiniteLoss);
    if (sums.some((s) => !Number.isFinite(s.xx))) return refused(STEP_STATUS.nonFiniteParameter);
    if (sums.some((s) => !Number.isFinite(s.gg) || !Number.isFinite(s.hh))) return refused(STEP_STATUS.nonFiniteGradient);

    // The filter's step, on copies: R, the gains (null: skipped by |g| < eps), max gain, P or sigma.
    const r = c.adaptiveR ? c.betaR * this.r + (1 - c.betaR) * lossSq : this.r;
    const prior = momentum ? this.p00 : this.sigma; // P of predict, the same for every layer
    const largest = c.dtype === DTYPE.float32 ? MAX_FLOAT32 : Number.MAX_VALUE;
    let maxGain = 0;
    let any = false;
    let safe = Number.isFinite(r);
    const gains = sums.map(({ hh, xx, gg }) => {
      if (Math.sqrt(gg) < c.eps) return null;
      const lossL = loss + 0.5 * c.weightDecay * xx;
      const innov = hh * prior + r;
      const gap = c.absoluteTarget ? lr : lr * lossL; // L_l - target: absolute L - lr, relative (1 - lr) L_l
      const k = { k1: (gap * prior) / innov, k2: momentum ? (gap * this.p01) / innov : 0, m: hh / innov };
      // No gain may carry a parameter past its dtype's range: |x| + |k1| |h| (|k1| |g| along g), by norms.
      const reach = Math.sqrt(xx) + Math.abs(k.k1) * Math.sqrt(alongG ? gg : hh);
      safe &&= Number.isFinite(k.k1) && Number.isFinite(k.k2) && Number.isFinite(k.m) && reach <= largest;
      if (!any || k.m > maxGain) maxGain = k.m;
      any = true;
      return k;
    });
    let { p00, p01, p11, sigma } = this;
    if (any && momentum) {
      // P <- P - P H P^T, H = [[m, 0], [0, 0]], m in float32 (Note [reference float32 rounding]).
      const m = Math.fround(maxGain);
      [p00, p01, p11] = [p00 - p00 * m * p00, p01 - p00 * m * p01, p11 - p01 * m * p01];
    } else if (any) {
      sigma = sigma - sigma * sigma * maxGain;
    }
    if (!(safe && [p00, p01, p11, sigma].every(Number.isFinite))) return refused(STEP_STATUS.nonFiniteStep);
    [this.r, this.p00, this.p01, this.p11, this.sigma] = [r, p00, p01, p11, sigma];
    this.steps++;

    // The update pass. With lazy predict, every layer (updated or skipped) also gets the next element-wise predict.
    const lazy = momentum && c.lazyPredict;
    let pending = 0;
    gains.forEach((k, l) => {
      this.skipMask[l] = k === null ? 1 : 0;
      if (k !== null) {
        const x = this.params[l];
        const g = this.grads[l];
        if (momentum) {
          const v = this.velocities[l];
          const a = this.averages[l];
          for (let i = 0; i < x.length; i++) {
            const h = g[i] + c.weightDecay * x[i];
            x[i] = x[i] - k.k1 * h;
            v[i] = v[i] - k.k2 * h;
            a[i] = AVERAGE_DECAY * a[i] + (1 - AVERAGE_DECAY) * x[i];
          }
        } else {
          for (let i = 0; i < x.length; i++) x[i] = x[i] - k.k1 * (g[i] + directionDecay * x[i]); // directionDecay 0: the raw g
        }
      }
      if (lazy) pending += this.predictLayer(l);
    });
    if (lazy) this.pending = pending;
    return { status: STEP_STATUS.applied, skipped: gains.filter((k) => k === null).length, maxGain };
  }

  getFilter(): FilterSnapshot {
    const { p00, p01, p11, qX, sigma, r, pending, steps } = this;
    return { p00, p01, p11, qX, sigma, r, pending, steps };
  }

  setFilter(s: FilterSnapshot): void {
    ({ p00: this.p00, p01: this.p01, p11: this.p11, qX: this.qX, sigma: this.sigma, r: this.r, pending: this.pending, steps: this.steps } = s);
  }

  readLayerState(kind: LayerStateKind, layer: number, out: FloatArray): void {
    out.set((kind === LAYER_STATE.velocity ? this.velocities : this.averages)[layer]);
  }

  writeLayerState(kind: LayerStateKind, layer: number, values: FloatArray): void {
    (kind === LAYER_STATE.velocity ? this.velocities : this.averages)[layer].set(values);
  }

  threadsInUse(): number {
    return 1;
  }

  dispose(): void {
    this.velocities.length = 0;
    this.averages.length = 0;
  }
}
