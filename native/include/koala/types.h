// Plain data shared by the core, the CPU kernels and the N-API binding.
#pragma once

#include <cstddef>
#include <cstdint>

namespace koala {

enum class Variant : int { kMomentum = 0, kVanilla = 1 };
enum class DType : int { kFloat32 = 0, kFloat64 = 1 };

// Per-layer sums of one stats pass, accumulated in float64 whatever the dtype.
struct LayerSums {
  double hh;  // |g + wd x|^2
  double xx;  // |x|^2
  double gg;  // |g|^2
};

// Why an update() left every buffer untouched. Values are part of the binding's contract.
enum class StepStatus : int {
  kApplied = 0,
  kNonFiniteGradient = 1,   // some |g_l|^2 or |g_l + wd x_l|^2 is NaN or Inf
  kNonFiniteParameter = 2,  // some |x_l|^2 is NaN or Inf
};

struct StepReport {
  StepStatus status;
  std::size_t skipped_layers;  // layers with |g_l| < eps (each flagged in the caller's skip mask)
  double max_gain;             // max_l m_l over updated layers; 0 when none was updated
};

}  // namespace koala
