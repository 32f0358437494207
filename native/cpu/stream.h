// STREAM-style reference kernels, run on a ThreadPool with a static even split like the
// optimizer's passes, so that a benchmark can report an optimizer step against the memory bound
// measured in the same process.
#pragma once

#include <cstddef>

#include "cpu/pool.h"

namespace koala {

// a[i] = b[i] + s * c[i] over n floats (12 bytes per element counted).
void stream_triad(ThreadPool& pool, float* a, const float* b, const float* c, float s, std::size_t n);

}  // namespace koala
