import type { FloatArray } from './layers';

/** What update() of a backend reports. status: 0 applied, 1 non-finite gradient, 2 non-finite parameter. */
export interface BackendStep {
  status: number;
  skipped: number;
  maxGain: number;
}

/** Which per-layer state of KOALA-M: 0 velocities, 1 parameter averages. */
export type LayerStateKind = 0 | 1;

/** getFilter()[6] when no element-wise predict is pending. */
export const NO_PENDING_PREDICT = -1;

/**
 * The contract that the native addon and the js reference both fulfil. The facade (koala.ts) has
 * validated every argument before calling in; a backend only computes.
 */
export interface Backend {
  predict(): void;
  /** Fills skipMask[l] with 1 for each layer skipped by |g_l| < eps; changes nothing unless status is 0. */
  update(loss: number, lossSq: number, lr: number): BackendStep;
  /**
   * [P00, P01, P11, qX, sigma, R, pending]: pending is the sum |a - x|^2 of a predict whose
   * element-wise part the last update already did (lazy predict), or -1 when none is pending.
   */
  getFilter(): Float64Array;
  setFilter(values: Float64Array): void;
  readLayerState(kind: LayerStateKind, layer: number, out: FloatArray): void;
  writeLayerState(kind: LayerStateKind, layer: number, values: FloatArray): void;
  /** Threads a pass runs on (the native backend uses fewer than asked on small models). */
  threadsInUse(): number;
  dispose(): void;
}
