// The step sequence of update(), written once: the guards, R, the gains, the skip decisions, the
// max gain, the finish and the step count. Plain C++ over per-layer sums; the CPU backend calls it
// on the host, the CUDA backend from one device thread (KOALA_HD), so both decide alike.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "koala/filter.h"
#include "koala/math.h"
#include "koala/protocol.h"
#include "koala/types.h"

namespace koala {

#if !defined(__CUDACC__)
using std::fabs;
using std::isfinite;
using std::sqrt;
#endif

// Note [step sequence]
// update() = a stats pass (per-layer sums |h|^2, |x|^2, |g|^2), the decision below, then, only when
// it returns kApplied, the update pass with the gains it wrote. The decision works on copies and
// commits nothing until every guard has passed, in this order (the first that fires is the status):
//   1. the loss and lossSq are finite                                    (kNonFiniteLoss)
//   2. every layer's |x|^2 is finite                                     (kNonFiniteParameter)
//   3. every layer's |g|^2 and |h|^2 are finite                          (kNonFiniteGradient)
//   4. R, then each layer's gains (a layer with |g| < eps is skipped), the max gain over the
//      updated layers (the first updated layer's, then any larger, so a negative gain counts as
//      on every backend), and P or sigma after the finish (none when every layer was skipped) are finite,
//      and no gain can carry a parameter past its dtype's range: |x| + |k1| |h| <= the largest
//      finite value, bounded with the layer's norms (|k1| |g| for KOALA-V along g)     (kNonFiniteStep)
// Then the filter, the skip mask and the step count are committed. A refused step changes nothing
// (the gains are scratch), so the phase stays at 'predicted' (lib/koala.ts).

// The largest finite value of a dtype.
KOALA_HD double dtype_max(DType dtype) { return dtype == DType::kFloat32 ? static_cast<double>(FLT_MAX) : DBL_MAX; }

KOALA_HD bool gain_is_safe(const FilterConfig& c, const LayerSums& s, const LayerGain& k, double max_value) {
  if (!isfinite(k.k1) || !isfinite(k.k2) || !isfinite(k.m)) return false;
  const double step = fabs(k.k1) * sqrt(steps_along_raw_gradient(c) ? s.gg : s.hh);
  return sqrt(s.xx) + step <= max_value;  // false for NaN or Inf too
}

// The per-layer part of the decision and how two parts combine. combine() is associative and
// commutative wherever the outcome depends on it (a NaN gain makes `safe` false, and then the
// max is not used), so a fold in layer order (the CPU) and a tree over threads (CUDA) decide alike.
struct StepTally {
  StepStatus data;  // kApplied, kNonFiniteGradient or kNonFiniteParameter: the worst layer's
  bool safe;        // every updated layer's gains finite and in range
  bool any;         // some layer updated
  double max_gain;  // over the updated layers (when any)
  std::size_t skipped;
};

KOALA_HD StepTally empty_tally() { return {StepStatus::kApplied, true, false, 0.0, 0}; }

// Guards 2 and 3 of Note [step sequence] for one layer's sums (any sums with the members xx, gg and
// hh: LayerSums, PPLayerSums): a non-finite |x|^2 is a bad parameter, else a non-finite |g|^2 or
// |h|^2 a bad gradient.
template <class Sums>
KOALA_HD StepStatus data_status(const Sums& s) {
  if (!isfinite(s.xx)) return StepStatus::kNonFiniteParameter;
  if (!isfinite(s.gg) || !isfinite(s.hh)) return StepStatus::kNonFiniteGradient;
  return StepStatus::kApplied;
}

// One layer: its data guard, its gains (written to `gain`, scratch), skipped or not. `next` is the
// filter with this step's R.
KOALA_HD StepTally tally_layer(const FilterConfig& c, const FilterState& next, const LayerSums& s, double loss, double lr, double max_value,
                               LayerGain& gain) {
  StepTally t = empty_tally();
  t.data = data_status(s);
  gain = filter_layer_gain(c, next, s, loss, lr);
  if (gain.skip) {
    t.skipped = 1;
    return t;
  }
  t.any = true;
  t.max_gain = gain.m;
  t.safe = gain_is_safe(c, s, gain, max_value);
  return t;
}

KOALA_HD StepTally combine(const StepTally& a, const StepTally& b) {
  // A non-finite parameter outranks a non-finite gradient, which outranks none (the enum's values).
  const StepStatus data = static_cast<int>(b.data) > static_cast<int>(a.data) ? b.data : a.data;
  // The first updated layer's gain, then any larger one: the max, whatever the order.
  const double max_gain = !b.any ? a.max_gain : (!a.any || b.max_gain > a.max_gain) ? b.max_gain : a.max_gain;
  return {data, a.safe && b.safe, a.any || b.any, max_gain, a.skipped + b.skipped};
}

// The filter with this step's R (the gains use it).
KOALA_HD FilterState with_new_r(const FilterConfig& c, const FilterState& s, double loss_sq) {
  FilterState next = s;
  filter_update_r(c, next, loss_sq);
  return next;
}

// The guards in their order, the finish, and the commit of the filter and the step count.
KOALA_HD StepReport finish_step(const FilterConfig& c, FilterSnapshot& snap, FilterState next, const StepTally& t, double loss,
                                double loss_sq) {
  if (!isfinite(loss) || !isfinite(loss_sq)) return {StepStatus::kNonFiniteLoss, 0, 0.0};
  if (t.data != StepStatus::kApplied) return {t.data, 0, 0.0};
  if (t.any) filter_finish(c, next, t.max_gain);
  const bool safe = t.safe && isfinite(next.r) && isfinite(next.p00) && isfinite(next.p01) && isfinite(next.p11) && isfinite(next.sigma);
  if (!safe) return {StepStatus::kNonFiniteStep, 0, 0.0};
  snap.filter = next;
  snap.steps += 1;
  return {StepStatus::kApplied, t.skipped, t.any ? t.max_gain : 0.0};
}

// Decides one update from the layer sums, in layer order: fills gains[l] (scratch), and when the
// step is applied, skip_mask[l] (1: skipped by |g_l| < eps) and the new snapshot (filter, steps).
// The caller runs the update pass only for kApplied. (The CUDA kernel runs the same pieces over
// threads, cuda/kernels.cuh.)
KOALA_HD StepReport decide_step(const FilterConfig& c, FilterSnapshot& snap, const LayerSums* sums, std::size_t num_layers,
                                double loss, double loss_sq, double lr, DType dtype, LayerGain* gains,
                                std::uint8_t* skip_mask) {
  const FilterState next = with_new_r(c, snap.filter, loss_sq);
  StepTally t = empty_tally();
  for (std::size_t l = 0; l < num_layers; ++l) t = combine(t, tally_layer(c, next, sums[l], loss, lr, dtype_max(dtype), gains[l]));
  const StepReport report = finish_step(c, snap, next, t, loss, loss_sq);
  if (report.status == StepStatus::kApplied) {
    for (std::size_t l = 0; l < num_layers; ++l) skip_mask[l] = gains[l].skip ? 1 : 0;
  }
  return report;
}

}  // namespace koala
