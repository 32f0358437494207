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
// update() = a stats pass (per-layer sums |h|^2, |x|^2, |g|^2), decide_step below, then, only when
// it returns kApplied, the update pass with the gains it wrote. decide_step works on copies and
// commits nothing until every guard has passed, in this order (the first that fires is the status):
//   1. the loss and lossSq are finite                                    (kNonFiniteLoss)
//   2. every layer's |x|^2 is finite                                     (kNonFiniteParameter)
//   3. every layer's |g|^2 and |h|^2 are finite                          (kNonFiniteGradient)
//   4. R, then each layer's gains (a layer with |g| < eps is skipped), the max gain over the
//      updated layers (the first updated layer's, then any larger, so a negative gain counts as
//      on every backend), and P or sigma after the finish (none when every layer was skipped) are finite,
//      and no gain can carry a parameter past its dtype's range: |x| + |k1| |h| <= the largest
//      finite value, bounded with the layer's norms (|k1| |g| for KOALA-V)     (kNonFiniteStep)
// Then the filter, the skip mask and the step count are committed. A refused step changes nothing
// (the gains are scratch), so the phase stays at 'predicted' (lib/koala.ts).

// The largest finite value of a dtype.
KOALA_HD double dtype_max(DType dtype) { return dtype == DType::kFloat32 ? static_cast<double>(FLT_MAX) : DBL_MAX; }

KOALA_HD bool gain_is_safe(const FilterConfig& c, const LayerSums& s, const LayerGain& k, double max_value) {
  if (!isfinite(k.k1) || !isfinite(k.k2) || !isfinite(k.m)) return false;
  const double step = fabs(k.k1) * sqrt(c.variant == Variant::kVanilla ? s.gg : s.hh);
  return sqrt(s.xx) + step <= max_value;  // false for NaN or Inf too
}

// Guards 1 to 3 of Note [step sequence] (the loss, then every |x|^2, then every |g|^2 and |h|^2),
// over any per-layer sums with the members xx, gg and hh (LayerSums, PPLayerSums of core/step_pp.h).
template <class Sums>
KOALA_HD StepStatus check_inputs(const Sums* sums, std::size_t num_layers, double loss, double loss_sq) {
  if (!isfinite(loss) || !isfinite(loss_sq)) return StepStatus::kNonFiniteLoss;
  bool bad_grad = false;
  for (std::size_t l = 0; l < num_layers; ++l) {
    if (!isfinite(sums[l].xx)) return StepStatus::kNonFiniteParameter;
    if (!isfinite(sums[l].gg) || !isfinite(sums[l].hh)) bad_grad = true;
  }
  return bad_grad ? StepStatus::kNonFiniteGradient : StepStatus::kApplied;
}

// Decides one update from the layer sums: fills gains[l] (scratch), and when the step is applied,
// skip_mask[l] (1: skipped by |g_l| < eps) and the new snapshot (filter, steps). The caller runs
// the update pass only for kApplied.
KOALA_HD StepReport decide_step(const FilterConfig& c, FilterSnapshot& snap, const LayerSums* sums, std::size_t num_layers,
                                double loss, double loss_sq, double lr, DType dtype, LayerGain* gains,
                                std::uint8_t* skip_mask) {
  StepReport report{StepStatus::kApplied, 0, 0.0};
  const StepStatus inputs = check_inputs(sums, num_layers, loss, loss_sq);
  if (inputs != StepStatus::kApplied) return {inputs, 0, 0.0};

  FilterState next = snap.filter;
  filter_update_r(c, next, loss_sq);
  bool safe = isfinite(next.r);
  bool any = false;
  const double max_value = dtype_max(dtype);
  for (std::size_t l = 0; l < num_layers; ++l) {
    gains[l] = filter_layer_gain(c, next, sums[l], loss, lr);
    if (gains[l].skip) {
      ++report.skipped_layers;
      continue;
    }
    safe = safe && gain_is_safe(c, sums[l], gains[l], max_value);
    if (!any || gains[l].m > report.max_gain) report.max_gain = gains[l].m;
    any = true;
  }
  if (any) filter_finish(c, next, report.max_gain);
  safe = safe && isfinite(next.p00) && isfinite(next.p01) && isfinite(next.p11) && isfinite(next.sigma);
  if (!safe) return {StepStatus::kNonFiniteStep, 0, 0.0};

  snap.filter = next;
  snap.steps += 1;
  for (std::size_t l = 0; l < num_layers; ++l) skip_mask[l] = gains[l].skip ? 1 : 0;
  return report;
}

}  // namespace koala
