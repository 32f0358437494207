import type { DeviceScalar, FloatArray } from './layers';
import type { BackendStep, FilterSnapshot, LayerStateKind } from './protocol';

/**
 * The contract that the CPU addon, the js reference and the CUDA addon fulfil, in the terms of
 * lib/protocol.ts. The facade (koala.ts) has validated every argument before calling in; a backend
 * only computes.
 */
export interface Backend {
  predict(): void;
  /**
   * Host backends return what the step did, having filled skipMask[l] with 1 for each layer
   * skipped by |g_l| < eps; nothing changes unless status is applied. The CUDA backend returns null: the
   * outcome stays on the device until lastStep() reads it. Losses on the device (DeviceScalar)
   * reach the CUDA backend only.
   */
  update(loss: number | DeviceScalar, lossSq: number | DeviceScalar, lr: number): BackendStep | null;
  /**
   * The halves of a sharded step (Note [sharded step], native/cpu/optimizer.h). Host backends write
   * the slice's partial sums into `sums` (a Float64Array the facade owns: 1 value for predict, 3 per
   * layer, |h|^2 |x|^2 |g|^2, for update) and read the reduced sums from it; the CUDA backend keeps
   * them in device memory (deviceSums) and takes null. predict() and update() are the same halves
   * back to back on the optimizer's own sums.
   */
  predictPartial(sums: Float64Array | null): void;
  predictFinish(sums: Float64Array | null): void;
  updatePartial(sums: Float64Array | null): void;
  updateFinish(sums: Float64Array | null, loss: number | DeviceScalar, lossSq: number | DeviceScalar, lr: number): BackendStep | null;
  /** CUDA backend: the device addresses of the predict and update sums (float64, 1 and 3 per layer). */
  deviceSums?(): [bigint, bigint];
  /** CUDA backend: reads the last update's outcome and skip mask back (a synchronization). */
  lastStep?(): BackendStep;
  getFilter(): FilterSnapshot;
  setFilter(s: FilterSnapshot): void;
  readLayerState(kind: LayerStateKind, layer: number, out: FloatArray): void;
  writeLayerState(kind: LayerStateKind, layer: number, values: FloatArray): void;
  /** CPU threads a pass runs on (the native backend uses fewer than asked on small models; 0 on CUDA). */
  threadsInUse(): number;
  dispose(): void;
}
