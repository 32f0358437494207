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
