#include "cpu/stream.h"

namespace koala {

void stream_triad(ThreadPool& pool, float* __restrict__ a, const float* __restrict__ b,
                  const float* __restrict__ c, float s, std::size_t n) {
  pool.run([&](int t) {
    const std::size_t parts = static_cast<std::size_t>(pool.size());
    const std::size_t begin = n * t / parts, end = n * (t + 1) / parts;
    for (std::size_t i = begin; i < end; ++i) a[i] = b[i] + s * c[i];
  });
}

}  // namespace koala
