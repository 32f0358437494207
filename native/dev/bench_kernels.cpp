#include "dev/bench_kernels.h"

#include <cmath>

namespace koala {

namespace {

// Runs body(begin, end) on each thread's equal share of [0, n).
template <class Body>
void split(ThreadPool& pool, std::size_t n, Body&& body) {
  pool.run([&](int t) {
    const std::size_t parts = static_cast<std::size_t>(pool.size());
    body(n * t / parts, n * (t + 1) / parts);
  });
}

}  // namespace

void stream_copy(ThreadPool& pool, float* __restrict__ a, const float* __restrict__ b, std::size_t n) {
  split(pool, n, [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) a[i] = b[i];
  });
}

void stream_triad(ThreadPool& pool, float* __restrict__ a, const float* __restrict__ b,
                  const float* __restrict__ c, float s, std::size_t n) {
  split(pool, n, [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) a[i] = b[i] + s * c[i];
  });
}

void adam_step(ThreadPool& pool, float* __restrict__ x, const float* __restrict__ g, float* __restrict__ m,
               float* __restrict__ v, const AdamStep& s, std::size_t n) {
  split(pool, n, [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) {
      const float mi = s.beta1 * m[i] + (1.0f - s.beta1) * g[i];
      const float vi = s.beta2 * v[i] + (1.0f - s.beta2) * g[i] * g[i];
      m[i] = mi;
      v[i] = vi;
      x[i] -= s.lr * (mi / s.bias1) / (std::sqrt(vi / s.bias2) + s.eps);
    }
  });
}

}  // namespace koala
