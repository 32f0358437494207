// Plain data shared by the core, the kernels and the bindings (the protocol's own types are in
// koala/protocol.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "koala/protocol.h"

namespace koala {

// Per-layer sums of one stats pass, accumulated in float64 whatever the dtype.
struct LayerSums {
  double hh;  // |g + wd x|^2
  double xx;  // |x|^2
  double gg;  // |g|^2
};

// Per-layer sums of KOALA++'s first pass (Note [KOALA++ passes], core/step_pp.h).
struct PPLayerSums {
  double gg;  // |g|^2
  double xx;  // |x|^2
  double hh;  // |H|^2
  double a;   // H . Hp
  double b;   // H . v
  double vv;  // |v|^2
};

struct StepReport {
  StepStatus status;
  std::size_t skipped_layers;  // layers with |g_l| < eps (each flagged in the caller's skip mask)
  double max_gain;             // max_l m_l over updated layers; 0 when none was updated
};

}  // namespace koala
