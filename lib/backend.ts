import type { DeviceScalar, FloatArray } from './layers';
import type { BackendStep, FilterSnapshot, LayerStateKind, PredictMoved } from './protocol';

/**
 * The contract that the CPU addon, the js reference and the CUDA addon fulfil, in the terms of
 * lib/protocol.ts. The facade (koala.ts) has validated every argument before calling in; a backend
 * only computes. Every backend follows one sequence (Note [step sequence], native/core/step.h):
 * a refused update changes nothing.
 */
export interface Backend {
  /**
   * Whether lastStep() waits for the device (CUDA: update() only queues the step, its outcome stays
   * on the device until read). Host backends know the outcome when update() returns.
   */
  readonly deferred: boolean;
  /** Whether this predict moved the parameters (exact on host backends; see PredictMoved). */
  predict(): PredictMoved;
  /** One update. Losses on the device (DeviceScalar) reach the CUDA backend only. */
  update(loss: number | DeviceScalar, lossSq: number | DeviceScalar, lr: number): void;
  /**
   * The halves of a sharded step (Note [sharded step], native/cpu/optimizer.h). Host backends write
   * the slice's partial sums into `sums` (a Float64Array the facade owns: 1 value for predict, 3 per
   * layer, |h|^2 |x|^2 |g|^2, for update) and read the reduced sums from it; the CUDA backend keeps
   * them in device memory (deviceSums) and takes null. predict() and update() are the same halves
   * back to back on the optimizer's own sums: predictPartial() returns what predict() would, and
   * updateFinish() leaves its outcome to lastStep() as update() does.
   */
  predictPartial(sums: Float64Array | null): PredictMoved;
  predictFinish(sums: Float64Array | null): void;
  updatePartial(sums: Float64Array | null): void;
  updateFinish(sums: Float64Array | null, loss: number | DeviceScalar, lossSq: number | DeviceScalar, lr: number): void;
  /** CUDA backend: the device addresses of the predict and update sums (float64, 1 and 3 per layer). */
  deviceSums?(): [bigint, bigint];
  /**
   * What the last update did, having filled the skip mask (one byte per layer, 1 for each layer
   * skipped by |g_l| < eps; left as it was when the step was refused).
   */
  lastStep(): BackendStep;
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
