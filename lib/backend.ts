import type { DeviceScalar, FloatArray } from './layers';

/**
 * What an update of a backend did. status: 0 applied, 1 non-finite gradient, 2 non-finite
 * parameter, 3 non-finite loss (read on the device).
 */
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
 * The contract that the CPU addon, the js reference and the CUDA addon fulfil. The facade
 * (koala.ts) has validated every argument before calling in; a backend only computes.
 */
export interface Backend {
  predict(): void;
  /**
   * Host backends return what the step did, having filled skipMask[l] with 1 for each layer
   * skipped by |g_l| < eps; nothing changes unless status is 0. The CUDA backend returns null: the
   * outcome stays on the device until lastStep() reads it. Losses on the device (DeviceScalar)
   * reach the CUDA backend only.
   */
  update(loss: number | DeviceScalar, lossSq: number | DeviceScalar, lr: number): BackendStep | null;
  /** CUDA backend: reads the last update's outcome and skip mask back (a synchronization). */
  lastStep?(): BackendStep;
  /**
   * [P00, P01, P11, qX, sigma, R, pending, steps]: pending is the sum |a - x|^2 of a predict whose
   * element-wise part the last update already did (lazy predict), or -1 when none is pending;
   * steps counts the applied updates.
   */
  getFilter(): Float64Array;
  setFilter(values: Float64Array): void;
  readLayerState(kind: LayerStateKind, layer: number, out: FloatArray): void;
  writeLayerState(kind: LayerStateKind, layer: number, values: FloatArray): void;
  /** CPU threads a pass runs on (the native backend uses fewer than asked on small models; 0 on CUDA). */
  threadsInUse(): number;
  dispose(): void;
}
