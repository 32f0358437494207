// The scalar Kalman filter of KOALA (P or sigma, R, q_x), written once for the CPU and CUDA
// backends. Everything here is float64 and per step, never per element.
#pragma once

#include <cmath>

#include "koala/math.h"
#include "koala/protocol.h"
#include "koala/types.h"

namespace koala {

// Note [reference float32 rounding]
// The official code builds its 2x2 matrices F = [[1, 1], [0, kappa]], Q = diag(q_x, q_p) and
// H = [[m, 0], [0, 0]], and its initial P, as float32 tensors, so kappa, q_x, q_p, m and the
// initial P enter the filter rounded to float32 (everything else is float64). The golden runs show
// it to the last bit; we do the same. kappa, q_p and the initial P are rounded once where the
// options are normalized (lib/options.ts); q_x and m change every step and are rounded here.
KOALA_HD double as_float32(double v) { return static_cast<double>(static_cast<float>(v)); }

// The reference hard-codes the smoothing of the adaptive state noise q_x <- 0.9 q_x + 0.1 d.
constexpr double kQxDecay = 0.9;

struct FilterConfig {
  Variant variant;
  double weight_decay;  // wd
  double eps;           // layers with |g_l| < eps are skipped
  double kappa;         // KOALA-M velocity decay (reference `a`)
  double q_p;           // KOALA-M fixed velocity noise (reference `qv`)
  double q;             // KOALA-V and KOALA++ fixed state noise (reference `q`)
  double beta_r;        // smoothing of the adaptive R (reference `alpha_r`)
  bool adaptive_r;      // false: R stays at its initial (fixed) value
  // The paper's variants (Note [paper variants]); all false is the official code.
  bool absolute_target;    // target L - lr instead of (1 - lr) L
  bool paper_state_noise;  // KOALA-M: q_x = |x - a|^2 / n (eq. 23-24)
  bool vanilla_along_h;    // KOALA-V: step along h = g + wd x instead of the raw g
  bool symmetric;       // KOALA++: the symmetric least-squares estimate (reference `is_symmetric`)
};

// Note [paper variants]
// Where the paper and the official code differ, the code is the default and the paper is an
// option (shared/docs/ALGORITHM.md, "Paper variants"):
// - absolute_target: the target L - lr (Theorem 1 (a)) instead of (1 - lr) L (Theorem 1 (b)), so
//   the innovation L_l - target is lr instead of lr L_l, whatever the loss (in filter_layer_gain).
// - paper_state_noise: q_x = |x - a|^2 / n (eq. 23-24, the paper's q_x^2) from the pre-predict x
//   and the average a of the last update, replacing the official sqrt(sum) / n smoothed by 0.9
//   (in filter_predict). With lazy predict the pending sum is the same |x - a|^2, so the two combine.
// - vanilla_along_h: KOALA-V moves x along h = g + wd x, as KOALA-M does, instead of the raw g
//   (the update passes take direction_decay(); the range guard takes the direction's norm).
// Only the scalar filter and the decay inside KOALA-V's direction change: the passes, the state
// and the step sequence are the same for every combination.

// The weight decay inside the update's direction h = g + wd x: 0 where the official KOALA-V steps
// along the raw gradient.
KOALA_HD bool steps_along_raw_gradient(const FilterConfig& c) {
  return c.variant == Variant::kVanilla && !c.vanilla_along_h;
}
KOALA_HD double direction_decay(const FilterConfig& c) { return steps_along_raw_gradient(c) ? 0.0 : c.weight_decay; }

// Per-layer coefficients of one update: x -= k1 h (or k1 g for the official KOALA-V), v -= k2 h.
struct LayerGain {
  bool skip;
  double k1, k2;
  double m;  // |h|^2 / S, the layer's gain entering max_l m_l
};

// Scalar part of predict(). sum_sq_diff = sum_l |a_l - x_l|^2 over the pre-predict x; n = total size.
KOALA_HD void filter_predict(const FilterConfig& c, FilterState& s, double sum_sq_diff, double n) {
  if (c.variant == Variant::kVanilla) {
    s.sigma = s.sigma + c.q;
    return;
  }
  if (c.paper_state_noise) {
    s.q_x = sum_sq_diff / n;  // eq. 24 (Note [paper variants])
  } else {
    // Official code: the norm (not its square) divided by n (not sqrt(n)), then a second EMA.
    const double d = sqrt(sum_sq_diff) / n;
    s.q_x = kQxDecay * s.q_x + (1.0 - kQxDecay) * d;
  }
  // P <- F P F^T + diag(q_x, q_p) with F = [[1, 1], [0, kappa]].
  const double fp00 = s.p00 + s.p01, fp01 = s.p01 + s.p11;
  const double fp11 = c.kappa * s.p11;  // (F P)[1][0] is not needed: F P F^T is symmetric
  s.p00 = fp00 + fp01 + as_float32(s.q_x);
  s.p01 = c.kappa * fp01;
  s.p11 = c.kappa * fp11 + c.q_p;
}

// Step 1 of update(): the measurement noise follows the mean squared per-sample loss.
KOALA_HD void filter_update_r(const FilterConfig& c, FilterState& s, double loss_sq) {
  if (c.adaptive_r) s.r = c.beta_r * s.r + (1.0 - c.beta_r) * loss_sq;
}

// Step 2 of update(), one layer, with the P of predict (not yet changed by any layer).
KOALA_HD LayerGain filter_layer_gain(const FilterConfig& c, const FilterState& s,
                                     const LayerSums& sums, double loss, double lr) {
  LayerGain out{true, 0.0, 0.0, 0.0};
  if (sqrt(sums.gg) < c.eps) return out;
  const double loss_l = loss + 0.5 * c.weight_decay * sums.xx;
  const double prior = c.variant == Variant::kMomentum ? s.p00 : s.sigma;
  const double innov = sums.hh * prior + s.r;
  // The innovation L_l - target: lr L_l for the relative target, lr for the absolute one.
  const double target_gap = c.absolute_target ? lr : lr * loss_l;
  out.skip = false;
  out.k1 = target_gap * prior / innov;
  out.k2 = c.variant == Variant::kMomentum ? target_gap * s.p01 / innov : 0.0;
  out.m = sums.hh / innov;
  return out;
}

// Step 3 of update(): only when at least one layer was updated (else P stays as it is).
KOALA_HD void filter_finish(const FilterConfig& c, FilterState& s, double max_gain) {
  if (c.variant == Variant::kPlusPlus) return;  // KOALA++ keeps no P or sigma to finish (core/step_pp.h)
  if (c.variant == Variant::kVanilla) {
    s.sigma = s.sigma - s.sigma * s.sigma * max_gain;
    return;
  }
  // P <- P - P H P^T with H = [[m, 0], [0, 0]] (m in float32, Note [reference float32 rounding]).
  const double m = as_float32(max_gain);
  const double p00 = s.p00, p01 = s.p01;
  s.p00 = p00 - p00 * m * p00;
  s.p01 = s.p01 - p00 * m * p01;
  s.p11 = s.p11 - p01 * m * p01;
}

}  // namespace koala
