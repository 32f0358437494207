// The CUDA kernels of the optimizer (Note [device step], cuda/optimizer.h): element passes over
// the chunk plan, per-layer sums, the step sequence in one block, the scalar predict. The
// per-element formulas and the scalar filter are koala/math.h and koala/filter.h, and the step
// sequence core/step.h: the same code the CPU backend runs. Included by optimizer.cu only.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/step.h"
#include "cuda/optimizer.h"
#include "koala/filter.h"
#include "koala/math.h"
#include "koala/protocol.h"
#include "koala/types.h"

namespace koala {
namespace cuda {
namespace kernels {

// One block per chunk; 256 threads stride through the chunk's (at most kChunkElems) elements.
constexpr int kThreads = 256;

struct DeviceChunk {
  std::uint32_t layer;
  std::uint32_t size;
  std::uint64_t begin;
};

struct DeviceLayer {
  void* x;
  const void* g;
  void* v;
  void* a;
};

// The whole scalar state of a step, kept on the device.
struct DeviceScalars {
  FilterSnapshot snap;  // pending: Note [lazy predict] (cpu/optimizer.h)
  StepReport last;      // of the last update
};

__device__ double read_scalar(const ScalarArg& s) {
  if (s.device_ptr == nullptr) return s.value;
  return s.dtype == DType::kFloat32 ? static_cast<double>(*static_cast<const float*>(s.device_ptr)) : *static_cast<const double*>(s.device_ptr);
}

// Sums N values per thread across the block in a fixed tree: the result (in thread 0) does not
// depend on scheduling. `shared` holds N * kThreads doubles.
template <int N>
__device__ void block_sum(double (&v)[N], double* shared) {
  const int t = threadIdx.x;
  for (int k = 0; k < N; ++k) shared[k * kThreads + t] = v[k];
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (t < stride) {
      for (int k = 0; k < N; ++k) shared[k * kThreads + t] += shared[k * kThreads + t + stride];
    }
    __syncthreads();
  }
  for (int k = 0; k < N; ++k) v[k] = shared[k * kThreads];
}

// The sum of values[0..count) in a fixed order: strided per thread, then block_sum.
__device__ double ordered_sum(const double* values, std::size_t count, double* shared) {
  double s[1] = {0.0};
#pragma unroll 4
  for (std::size_t i = threadIdx.x; i < count; i += kThreads) s[0] += values[i];
  block_sum<1>(s, shared);
  return s[0];
}

template <class T>
__global__ void predict_elements_kernel(const DeviceChunk* chunks, const DeviceLayer* layers, const DeviceScalars* sc,
                                        double kappa, double* chunk_diff) {
  if (sc->snap.pending != kNoPendingPredict) return;  // the last (lazy) update did this part already
  __shared__ double shared[kThreads];
  const DeviceChunk ch = chunks[blockIdx.x];
  const DeviceLayer L = layers[ch.layer];
  T* x = static_cast<T*>(L.x) + ch.begin;
  T* v = static_cast<T*>(L.v) + ch.begin;
  const T* a = static_cast<const T*>(L.a) + ch.begin;
  double d[1] = {0.0};
#pragma unroll 4
  for (std::uint32_t i = threadIdx.x; i < ch.size; i += kThreads) {
    double xi = x[i], vi = v[i];
    d[0] += math::momentum_predict(xi, vi, a[i], kappa);
    x[i] = static_cast<T>(xi);
    v[i] = static_cast<T>(vi);
  }
  block_sum<1>(d, shared);
  if (threadIdx.x == 0) chunk_diff[blockIdx.x] = d[0];
}

// The predict's sum |a - x|^2 of this optimizer's chunks (or the pending sum of a lazy update), into
// *predict_sum: what a sharded rank hands to the caller's all-reduce (Note [sharded device step],
// cuda/optimizer.h). With finish (the unsharded predict()), also the scalar predict with that sum,
// in the same launch.
__global__ void predict_sum_kernel(FilterConfig config, DeviceScalars* sc, const double* chunk_diff, std::size_t num_chunks,
                                   double* predict_sum, double n, bool finish) {
  __shared__ double shared[kThreads];
  __shared__ double pending;
  if (threadIdx.x == 0) pending = sc->snap.pending;
  __syncthreads();
  double sum = 0.0;
  if (config.variant == Variant::kMomentum) sum = pending != kNoPendingPredict ? pending : ordered_sum(chunk_diff, num_chunks, shared);
  if (threadIdx.x == 0) {
    *predict_sum = sum;
    sc->snap.pending = kNoPendingPredict;
    if (finish) filter_predict(config, sc->snap.filter, sum, n);
  }
}

// One thread: the scalar predict with the reduced sum (the second half of a sharded predict).
__global__ void predict_filter_kernel(FilterConfig config, DeviceScalars* sc, const double* predict_sum, double n) {
  filter_predict(config, sc->snap.filter, *predict_sum, n);
}

template <class T>
__global__ void stats_kernel(const DeviceChunk* chunks, const DeviceLayer* layers, double wd, LayerSums* chunk_sums) {
  __shared__ double shared[3 * kThreads];
  const DeviceChunk ch = chunks[blockIdx.x];
  const T* g = static_cast<const T*>(layers[ch.layer].g) + ch.begin;
  const T* x = static_cast<const T*>(layers[ch.layer].x) + ch.begin;
  double s[3] = {0.0, 0.0, 0.0};
#pragma unroll 4
  for (std::uint32_t i = threadIdx.x; i < ch.size; i += kThreads) math::accumulate_stats(g[i], x[i], wd, s[0], s[1], s[2]);
  block_sum<3>(s, shared);
  if (threadIdx.x == 0) chunk_sums[blockIdx.x] = {s[0], s[1], s[2]};
}

// One block per layer: the layer's chunk partial sums added up in a fixed order (strided, then a
// fixed tree), so that a layer of thousands of chunks costs no long serial chain.
__global__ void layer_sums_kernel(const LayerSums* chunk_sums, const std::uint64_t* first_chunk, LayerSums* layer_sums) {
  __shared__ double shared[3 * kThreads];
  const std::uint32_t l = blockIdx.x;
  double s[3] = {0.0, 0.0, 0.0};
#pragma unroll 4
  for (std::uint64_t c = first_chunk[l] + threadIdx.x; c < first_chunk[l + 1]; c += kThreads) {
    s[0] += chunk_sums[c].hh;
    s[1] += chunk_sums[c].xx;
    s[2] += chunk_sums[c].gg;
  }
  block_sum<3>(s, shared);
  if (threadIdx.x == 0) layer_sums[l] = {s[0], s[1], s[2]};
}

// One block: the step sequence (Note [step sequence], core/step.h) from the same pieces as the
// CPU's decide_step, the layers tallied over threads and combined in a fixed tree.
__global__ void decide_kernel(FilterConfig config, DType dtype, DeviceScalars* sc, std::uint32_t num_layers, const LayerSums* layer_sums,
                              LayerGain* gains, std::uint8_t* skip_mask, ScalarArg loss_arg, ScalarArg loss_sq_arg, double lr) {
  __shared__ StepTally tallies[kThreads];
  __shared__ bool applied;
  const int t = threadIdx.x;
  const double loss = read_scalar(loss_arg), loss_sq = read_scalar(loss_sq_arg);
  const FilterState next = with_new_r(config, sc->snap.filter, loss_sq);  // read by every thread before thread 0 writes
  StepTally mine = empty_tally();
  for (std::uint32_t l = t; l < num_layers; l += kThreads) {
    mine = combine(mine, tally_layer(config, next, layer_sums[l], loss, lr, dtype_max(dtype), gains[l]));
  }
  tallies[t] = mine;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (t < stride) tallies[t] = combine(tallies[t], tallies[t + stride]);
    __syncthreads();
  }
  if (t == 0) {
    sc->last = finish_step(config, sc->snap, next, tallies[0], loss, loss_sq);
    applied = sc->last.status == StepStatus::kApplied;
  }
  __syncthreads();
  if (!applied) return;
  for (std::uint32_t l = t; l < num_layers; l += kThreads) skip_mask[l] = gains[l].skip ? 1 : 0;
}

template <class T>
__global__ void update_kernel(const DeviceChunk* chunks, const DeviceLayer* layers, const LayerGain* gains,
                              const DeviceScalars* sc, Variant variant, bool lazy, double wd, double kappa,  // wd: direction_decay()
                              double* chunk_diff) {
  if (sc->last.status != StepStatus::kApplied) return;  // the step was refused: nothing changes
  __shared__ double shared[kThreads];
  const DeviceChunk ch = chunks[blockIdx.x];
  const DeviceLayer L = layers[ch.layer];
  const LayerGain k = gains[ch.layer];
  const T* g = static_cast<const T*>(L.g) + ch.begin;
  T* x = static_cast<T*>(L.x) + ch.begin;
  if (variant == Variant::kVanilla) {
    if (k.skip) return;
    for (std::uint32_t i = threadIdx.x; i < ch.size; i += kThreads) x[i] = static_cast<T>(math::vanilla_update(g[i], x[i], wd, k.k1));
    return;
  }
  if (k.skip && !lazy) return;
  T* v = static_cast<T*>(L.v) + ch.begin;
  T* a = static_cast<T*>(L.a) + ch.begin;
  double d[1] = {0.0};
#pragma unroll 4
  for (std::uint32_t i = threadIdx.x; i < ch.size; i += kThreads) {
    double xi = x[i], vi = v[i], ai = a[i];
    if (!k.skip) math::momentum_update(g[i], xi, vi, ai, wd, k.k1, k.k2);
    if (lazy) d[0] += math::momentum_predict(xi, vi, ai, kappa);  // Note [lazy predict]
    x[i] = static_cast<T>(xi);
    v[i] = static_cast<T>(vi);
    a[i] = static_cast<T>(ai);
  }
  if (!lazy) return;
  block_sum<1>(d, shared);
  if (threadIdx.x == 0) chunk_diff[blockIdx.x] = d[0];
}

__global__ void lazy_finish_kernel(DeviceScalars* sc, const double* chunk_diff, std::size_t num_chunks) {
  __shared__ double shared[kThreads];
  __shared__ StepStatus status;
  if (threadIdx.x == 0) status = sc->last.status;
  __syncthreads();
  if (status != StepStatus::kApplied) return;
  const double sum = ordered_sum(chunk_diff, num_chunks, shared);
  if (threadIdx.x == 0) sc->snap.pending = sum;
}

}  // namespace kernels
}  // namespace cuda
}  // namespace koala
