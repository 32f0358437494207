// KOALA++'s step, written once for every backend: the per-layer scalar decisions from the dots of
// the first pass (plain C++, KOALA_HD so that a CUDA thread can run it too), the per-element formula
// of the second, and the guards of Note [step sequence] (core/step.h).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/step.h"
#include "koala/filter.h"
#include "koala/math.h"
#include "koala/protocol.h"
#include "koala/types.h"

namespace koala {

// Note [KOALA++ passes]
// The authors' update of a layer (shared/docs/ALGORITHM.md, "KOALA++"), with H = g + wd x:
//   xx = Hp . Hp, y = Hp . v, a = H . Hp, b = H . v, lambda = (b + Q a) / S, alpha = a / xx,
//   r = b / xx - a y / xx^2 (symmetric; else 0),
//   v' = (alpha - lambda) v + Q (H - lambda Hp) + r Hp,  S' = (v' + Q H) . H + R,
//   x' = x - lr L_l (v' + Q H) / S',  Hp' = H.
// Two dots per step carry over: xx and y are the previous update's |H|^2 and v' . H. And S' needs
// no pass of its own: v' is a combination of v, H and Hp, so
//   v' . H = (alpha - lambda) b + Q (|H|^2 - lambda a) + r a,
// all from the first pass's dots. So a step is two passes over a layer, every decision made
// between them: (1) read g, x, v, Hp and reduce |g|^2, |x|^2, |H|^2, a, b and |v|^2 (the last
// bounds v' for the range guard); (2) read g, x, v, Hp and write v', Hp' = H and x'. That is 44
// bytes per float32 parameter (16 + 28), fewer than the 56 of a separate v-and-S pass and an x
// pass, and it keeps the contract that a refused step changes nothing: S', the step size and the
// bounds are all known before the first write. The price is rounding: S' and the carried v' . H
// are the algebraic form, not a dot over the stored v' (the golden runs agree to 5e-16 relative in
// float64). H is rounded to the dtype where it is formed, as the reference's float32 tensors are,
// so the carried |H|^2 is exactly the next step's Hp . Hp. On a layer's first update Hp = H and
// v = sigma H (rounded to the dtype), so xx = a = |H|^2 and y = b = sigma |H|^2 without any dot.

// One layer's decision: the coefficients of the second pass and the scalars it leaves behind.
struct PPLayerGain {
  bool skip;
  bool first;     // the layer's first update: Hp = H and v = sigma H
  double lambda;  // (b + Q a) / S
  double cv;      // alpha - lambda, the coefficient of v
  double rk;      // the symmetric term r (0 when not symmetric)
  double k;       // lr L_l / S': x' = x - k (v' + Q H)
  PPLayerState next;
};

// The scalar part of one layer's update, from its first-pass sums and its carried state.
KOALA_HD PPLayerGain pp_layer_gain(const FilterConfig& c, double sigma, double r, const PPLayerSums& s,
                                   const PPLayerState& carry, double loss, double lr) {
  PPLayerGain g{};
  g.skip = sqrt(s.gg) < c.eps;
  if (g.skip) return g;
  g.first = !carry.updated;
  const double xx = g.first ? s.hh : carry.hh;
  const double y = g.first ? sigma * s.hh : carry.vh;
  const double a = g.first ? s.hh : s.a;
  const double b = g.first ? sigma * s.hh : s.b;
  const double s_prev = g.first ? y + c.q * xx + r : carry.s;
  g.lambda = (b + c.q * a) / s_prev;
  const double alpha = a / xx;
  g.rk = c.symmetric ? b / xx - a * y / (xx * xx) : 0.0;
  g.cv = alpha - g.lambda;
  const double vh = g.cv * b + c.q * (s.hh - g.lambda * a) + g.rk * a;
  g.next = {vh + c.q * s.hh + r, s.hh, vh, true};
  g.k = lr * (loss + 0.5 * c.weight_decay * s.xx) / g.next.s;
  return g;
}

// Guard 4 for one updated layer: its scalars are finite, and neither v' nor x' can leave the
// dtype's range, bounded by norms: |v'| <= |cv| |v| + Q (|H| + |lambda| |Hp|) + |r| |Hp|, and
// |x'| <= |x| + |k| (|v'| + Q |H|).
KOALA_HD bool pp_gain_is_safe(const FilterConfig& c, double sigma, const PPLayerSums& s, const PPLayerState& carry,
                              const PPLayerGain& g, double max_value) {
  if (!isfinite(g.lambda) || !isfinite(g.cv) || !isfinite(g.rk) || !isfinite(g.k) || !isfinite(g.next.s) ||
      !isfinite(g.next.vh)) {
    return false;
  }
  const double h = sqrt(s.hh);
  const double hp = g.first ? h : sqrt(carry.hh);
  const double v = g.first ? fabs(sigma) * h : sqrt(s.vv);
  const double v_next = fabs(g.cv) * v + c.q * (h + fabs(g.lambda) * hp) + fabs(g.rk) * hp;
  return v_next <= max_value && sqrt(s.xx) + fabs(g.k) * (v_next + c.q * h) <= max_value;  // false for NaN too
}

// KOALA++'s step sequence (Note [step sequence], core/step.h), from the pieces of decide_step: each
// layer's data guard and decision folded in layer order, then finish_step's guards in their order
// (KOALA++ has no P to finish) and, only when applied, the skip mask and the carried layer state
// (gains[l] is scratch the update pass reads). max_gain is max_l lambda_l.
KOALA_HD StepReport decide_step_pp(const FilterConfig& c, FilterSnapshot& snap, const PPLayerSums* sums, PPLayerState* carry,
                                   std::size_t num_layers, double loss, double loss_sq, double lr, DType dtype,
                                   PPLayerGain* gains, std::uint8_t* skip_mask) {
  const FilterState next = with_new_r(c, snap.filter, loss_sq);
  const double max_value = dtype_max(dtype);
  StepTally t = empty_tally();
  for (std::size_t l = 0; l < num_layers; ++l) {
    StepTally layer = empty_tally();
    layer.data = data_status(sums[l]);
    gains[l] = pp_layer_gain(c, next.sigma, next.r, sums[l], carry[l], loss, lr);
    if (gains[l].skip) {
      layer.skipped = 1;
    } else {
      layer.any = true;
      layer.max_gain = gains[l].lambda;
      layer.safe = pp_gain_is_safe(c, next.sigma, sums[l], carry[l], gains[l], max_value);
    }
    t = combine(t, layer);
  }
  const StepReport report = finish_step(c, snap, next, t, loss, loss_sq);
  if (report.status == StepStatus::kApplied) {
    for (std::size_t l = 0; l < num_layers; ++l) {
      skip_mask[l] = gains[l].skip ? 1 : 0;
      if (!gains[l].skip) carry[l] = gains[l].next;
    }
  }
  return report;
}

}  // namespace koala
