// The protocol between lib/ and the native backends, defined once: step statuses, variants, dtypes,
// layer-state kinds, the filter snapshot and the no-pending marker. The bindings export these
// values (binding/config.h, protocol_object) and lib/protocol.ts mirrors them; the test
// test/parity/protocol.test.ts asserts that the two agree. Values are part of the contract.
#pragma once

#include <cstddef>
#include <cstdint>

namespace koala {

enum class Variant : int { kMomentum = 0, kVanilla = 1, kPlusPlus = 2 };
enum class DType : int { kFloat32 = 0, kFloat64 = 1 };
// Bytes of one element of a dtype.
constexpr std::size_t dtype_bytes(DType dtype) { return dtype == DType::kFloat32 ? 4 : 8; }
// Per-layer state: KOALA-M's velocities and averages, KOALA++'s v_l (the covariance-direction
// product) and previous direction Hp_l.
enum class LayerStateKind : int { kVelocity = 0, kAverage = 1, kProduct = 2, kDirection = 3 };

// Why an update() left every buffer and the filter untouched (kApplied: it did not). The guards
// run in this order, the first that fires wins (Note [step sequence], core/step.h).
enum class StepStatus : int {
  kApplied = 0,
  kNonFiniteGradient = 1,   // some |g_l|^2 or |g_l + wd x_l|^2 is NaN or Inf
  kNonFiniteParameter = 2,  // some |x_l|^2 is NaN or Inf
  kNonFiniteLoss = 3,       // the loss or lossSq is NaN or Inf
  kNonFiniteStep = 4,       // what the filter computed (R, a gain, P or sigma) is NaN or Inf, or a
                            // gain could carry a parameter past its dtype's range
};

// pending when no element-wise predict is pending (Note [lazy predict], cpu/optimizer.h). A pending
// sum is a sum of squares, never negative, so the marker cannot be taken for one.
constexpr double kNoPendingPredict = -1.0;

// KOALA++'s per-layer scalars, kept between steps (Note [KOALA++ passes], core/step_pp.h). They
// cross the boundary as kPPLayerScalars doubles per layer in field order (updated as 0 or 1).
struct PPLayerState {
  double s;    // S_l
  double hh;   // |H_l|^2 of the layer's last update: the next update's Hp . Hp
  double vh;   // v_l . H_l of the layer's last update: the next update's Hp . v
  bool updated;  // false until the layer's first update (v, Hp and S are not set before)
};
constexpr int kPPLayerScalars = 4;

// The scalar filter. P is symmetric: p01 stands for P[0][1] = P[1][0]. KOALA-V uses sigma instead
// of P and q_x; KOALA++ keeps its constant initial scale in sigma and uses only sigma and r.
struct FilterState {
  double p00, p01, p11;
  double q_x;
  double sigma;
  double r;
};

// Everything scalar an optimizer carries between steps: what getFilter() returns and setFilter()
// takes (as { p00, p01, p11, qX, sigma, r, pending, steps } in JS).
struct FilterSnapshot {
  FilterState filter;
  double pending;       // the pending sum |a - x|^2, or kNoPendingPredict
  std::uint64_t steps;  // applied updates (a refused step does not count)
};

}  // namespace koala
