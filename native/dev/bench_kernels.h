// Reference kernels for the benchmark: the memory bound (STREAM copy and triad) and a fused Adam
// step, run on the shared thread pool cut in parts like the optimizer's passes, and
// compiled for the same instruction sets, chosen the same way (Note [instruction sets],
// cpu/kernels.h), so that a benchmark reports a KOALA step against them measured in the same
// process on the same threads with the same vector width.
#pragma once

#include <cstddef>

namespace koala {

struct AdamStep {
  float lr, beta1, beta2, eps;
  float bias1, bias2;  // 1 - beta1^t and 1 - beta2^t
};

// The loops over [begin, end), one set per instruction set (dev/bench_kernels_isa.inc).
struct BenchKernelSet {
  void (*copy)(float* a, const float* b, std::size_t begin, std::size_t end);
  void (*triad)(float* a, const float* b, const float* c, float s, std::size_t begin, std::size_t end);
  void (*adam)(float* x, const float* g, float* m, float* v, const AdamStep& s, std::size_t begin,
               std::size_t end);
};

// a[i] = b[i] over n floats (8 bytes per element counted).
void stream_copy(int threads, float* a, const float* b, std::size_t n);

// a[i] = b[i] + s * c[i] over n floats (12 bytes per element counted).
void stream_triad(int threads, float* a, const float* b, const float* c, float s, std::size_t n);

// One fused Adam step over n floats: reads g, x, m, v and writes x, m, v (28 bytes per element).
void adam_step(int threads, float* x, const float* g, float* m, float* v, const AdamStep& s, std::size_t n);

}  // namespace koala
