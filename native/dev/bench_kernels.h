// Reference kernels for the benchmark: the memory bound (STREAM copy and triad) and a fused Adam
// step, run on a ThreadPool with a static even split like the optimizer's passes, so that a
// benchmark reports a KOALA step against them measured in the same process on the same threads.
#pragma once

#include <cstddef>

#include "cpu/pool.h"

namespace koala {

// a[i] = b[i] over n floats (8 bytes per element counted).
void stream_copy(ThreadPool& pool, float* a, const float* b, std::size_t n);

// a[i] = b[i] + s * c[i] over n floats (12 bytes per element counted).
void stream_triad(ThreadPool& pool, float* a, const float* b, const float* c, float s, std::size_t n);

struct AdamStep {
  float lr, beta1, beta2, eps;
  float bias1, bias2;  // 1 - beta1^t and 1 - beta2^t
};

// One fused Adam step over n floats: reads g, x, m, v and writes x, m, v (28 bytes per element).
void adam_step(ThreadPool& pool, float* x, const float* g, float* m, float* v, const AdamStep& s,
               std::size_t n);

}  // namespace koala
