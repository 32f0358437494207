#include "dev/bench_kernels.h"

#include "cpu/kernels.h"
#include "cpu/pool.h"

namespace koala {

BenchKernelSet bench_set_baseline();
#ifdef KOALA_HAVE_AVX2
BenchKernelSet bench_set_avx2();
#endif
#ifdef KOALA_HAVE_AVX512
BenchKernelSet bench_set_avx512();
#endif

namespace {

// The set of the instruction set the optimizer's passes run on.
const BenchKernelSet& bench_kernels() {
  static const BenchKernelSet set = [] {
    switch (cpu::selected_isa().isa) {
#ifdef KOALA_HAVE_AVX512
      case cpu::Isa::kAvx512: return bench_set_avx512();
#endif
#ifdef KOALA_HAVE_AVX2
      case cpu::Isa::kAvx2: return bench_set_avx2();
#endif
      default: return bench_set_baseline();
    }
  }();
  return set;
}

// Runs body(begin, end) on equal shares of [0, n) on `threads` threads of the shared pool, cut
// into as many parts per thread as the optimizer's passes.
template <class Body>
void split(int threads, std::size_t n, Body&& body) {
  ThreadPool::shared().reserve(threads - 1);
  const int parts = threads == 1 ? 1 : threads * ThreadPool::kPartsPerThread;
  ThreadPool::shared().run(threads, parts, [&](int p) {
    const std::size_t count = static_cast<std::size_t>(parts);
    body(n * p / count, n * (p + 1) / count);
  });
}

}  // namespace

void stream_copy(int threads, float* a, const float* b, std::size_t n) {
  split(threads, n, [&](std::size_t begin, std::size_t end) { bench_kernels().copy(a, b, begin, end); });
}

void stream_triad(int threads, float* a, const float* b, const float* c, float s, std::size_t n) {
  split(threads, n, [&](std::size_t begin, std::size_t end) { bench_kernels().triad(a, b, c, s, begin, end); });
}

void adam_step(int threads, float* x, const float* g, float* m, float* v, const AdamStep& s, std::size_t n) {
  split(threads, n, [&](std::size_t begin, std::size_t end) { bench_kernels().adam(x, g, m, v, s, begin, end); });
}

}  // namespace koala
