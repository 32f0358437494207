/**
 * The protocol between lib/ and the backends, mirrored from native/include/koala/protocol.h (the
 * addons export their values as `protocol`; test/parity/protocol.test.ts asserts that both agree).
 * The js reference backend speaks it too.
 */

/** Why an update() changed nothing (applied: it did). The guards fire in this order of precedence: loss, parameter, gradient, step. */
export const STEP_STATUS = {
  applied: 0,
  nonFiniteGradient: 1,
  nonFiniteParameter: 2,
  nonFiniteLoss: 3,
  nonFiniteStep: 4,
} as const;
export type StepStatus = (typeof STEP_STATUS)[keyof typeof STEP_STATUS];

/** KOALA-M, KOALA-V and KOALA++ (plusPlus). */
export const VARIANT = { momentum: 0, vanilla: 1, plusPlus: 2 } as const;
export type Variant = (typeof VARIANT)[keyof typeof VARIANT];

export const DTYPE = { float32: 0, float64: 1 } as const;
export type DTypeCode = (typeof DTYPE)[keyof typeof DTYPE];

/**
 * Which per-layer state: KOALA-M's velocities or parameter averages; KOALA++'s v_l (the estimate of
 * the covariance-direction product, `product`) or its previous direction Hp_l (`direction`).
 */
export const LAYER_STATE = { velocity: 0, average: 1, product: 2, direction: 3 } as const;
export type LayerStateKind = (typeof LAYER_STATE)[keyof typeof LAYER_STATE];

/**
 * KOALA++'s per-layer scalars cross the boundary as PP_LAYER_SCALARS numbers per layer, in this
 * order: S_l, the carried |H_l|^2 and v_l . H_l (the next step's Hp . Hp and Hp . v), and 1 once the
 * layer has been updated (0 before: its v, Hp and S are not set yet).
 */
export const PP_LAYER_SCALARS = 4;

/** FilterSnapshot.pending when no element-wise predict is pending. */
export const NO_PENDING_PREDICT = -1;

/**
 * The scalar filter. P is symmetric (p01 = P[0][1] = P[1][0]); KOALA-V uses sigma instead of P and
 * qX; KOALA++ keeps its constant initial scale in sigma and uses only sigma and r (its other state
 * is per layer).
 */
export interface FilterState {
  p00: number;
  p01: number;
  p11: number;
  qX: number;
  sigma: number;
  r: number;
}

/**
 * Everything scalar that a backend carries between steps: the filter; pending, the sum |a - x|^2 of
 * a predict whose element-wise part the last update already did (lazy predict), or
 * NO_PENDING_PREDICT; steps, the applied updates (an integer).
 */
export interface FilterSnapshot extends FilterState {
  pending: number;
  steps: number;
}

/** What an update of a backend did. Nothing changed unless status is STEP_STATUS.applied. */
export interface BackendStep {
  status: StepStatus;
  /** Layers skipped by |g_l| < eps (each flagged in the skip mask). */
  skipped: number;
  maxGain: number;
}

/**
 * What predict() did to the parameters: moved (KOALA-M's x += v), did not (KOALA-V, or lazy
 * predict with the element-wise part already done by the last update), or 'unknown' (CUDA with
 * lazy predict while the last step's outcome is still on the device: knowing would take a
 * synchronization). Host backends always know.
 */
export type PredictMoved = boolean | 'unknown';

/** The protocol's constants as the addons export them. */
export interface ProtocolConstants {
  status: typeof STEP_STATUS;
  variant: typeof VARIANT;
  dtype: typeof DTYPE;
  layerState: typeof LAYER_STATE;
  noPendingPredict: typeof NO_PENDING_PREDICT;
  ppLayerScalars: typeof PP_LAYER_SCALARS;
}

export const PROTOCOL: ProtocolConstants = {
  status: STEP_STATUS,
  variant: VARIANT,
  dtype: DTYPE,
  layerState: LAYER_STATE,
  noPendingPredict: NO_PENDING_PREDICT,
  ppLayerScalars: PP_LAYER_SCALARS,
};
