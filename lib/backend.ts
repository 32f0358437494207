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
  /** CUDA backend: reads the last update's outcome and skip mask back (a synchronization). */
  lastStep?(): BackendStep;
  getFilter(): FilterSnapshot;
  setFilter(s: FilterSnapshot): void;
  readLayerState(kind: LayerStateKind, layer: number, out: FloatArray): void;
  writeLayerState(kind: LayerStateKind, layer: number, values: FloatArray): void;
  /** KOALA++: its per-layer scalars, PP_LAYER_SCALARS numbers per layer (lib/protocol.ts). */
  readLayerScalars?(out: Float64Array): void;
  writeLayerScalars?(values: Float64Array): void;
  /** CPU threads a pass runs on (the native backend uses fewer than asked on small models; 0 on CUDA). */
  threadsInUse(): number;
  dispose(): void;
}
