// KOALA++'s device passes (Note [KOALA++ passes], core/step_pp.h), as multi-tensor launches like
// the other variants' (Note [device step], cuda/optimizer.h): a dots kernel (one block per chunk,
// six per-chunk partial sums), a layer-sums kernel (one block per layer, a fixed order), one
// device thread running decide_step_pp (the code the CPU runs) on the carried layer state, and the
// update kernel (v, Hp and x), which reads the decisions from device memory and does nothing when
// the step was refused. No host synchronization.
//
// The kernels' shared pieces (block_sum, DeviceChunk, DeviceLayer with v: the products and a: the
// directions, DeviceScalars, read_scalar) are cuda/kernels.cuh's.
#pragma once

#include "core/step_pp.h"
#include "cuda/kernels.cuh"

namespace koala {
namespace cuda {
namespace kernels {

template <class T>
__global__ void pp_dots_kernel(const DeviceChunk* chunks, const DeviceLayer* layers, double wd, PPLayerSums* chunk_sums) {
  __shared__ double shared[6 * kThreads];
  const DeviceChunk ch = chunks[blockIdx.x];
  const DeviceLayer L = layers[ch.layer];
  const T* g = static_cast<const T*>(L.g) + ch.begin;
  const T* x = static_cast<const T*>(L.x) + ch.begin;
  const T* v = static_cast<const T*>(L.v) + ch.begin;
  const T* hp = static_cast<const T*>(L.a) + ch.begin;
  double s[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
#pragma unroll 4
  for (std::uint32_t i = threadIdx.x; i < ch.size; i += kThreads) {
    const double gi = g[i], xi = x[i], vi = v[i];
    const double h = static_cast<T>(math::decayed_grad(gi, xi, wd));
    s[0] += gi * gi;
    s[1] += xi * xi;
    s[2] += h * h;
    s[3] += h * static_cast<double>(hp[i]);
    s[4] += h * vi;
    s[5] += vi * vi;
  }
  block_sum<6>(s, shared);
  if (threadIdx.x == 0) chunk_sums[blockIdx.x] = {s[0], s[1], s[2], s[3], s[4], s[5]};
}

__global__ void pp_layer_sums_kernel(const PPLayerSums* chunk_sums, const std::uint64_t* first_chunk, PPLayerSums* layer_sums) {
  __shared__ double shared[6 * kThreads];
  const std::uint32_t l = blockIdx.x;
  double s[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  for (std::uint64_t c = first_chunk[l] + threadIdx.x; c < first_chunk[l + 1]; c += kThreads) {
    const PPLayerSums& p = chunk_sums[c];
    s[0] += p.gg;
    s[1] += p.xx;
    s[2] += p.hh;
    s[3] += p.a;
    s[4] += p.b;
    s[5] += p.vv;
  }
  block_sum<6>(s, shared);
  if (threadIdx.x == 0) layer_sums[l] = {s[0], s[1], s[2], s[3], s[4], s[5]};
}

// One thread: KOALA++'s step sequence (core/step_pp.h), as the CPU runs it.
__global__ void pp_decide_kernel(FilterConfig config, DType dtype, DeviceScalars* sc, std::uint32_t num_layers,
                                 const PPLayerSums* layer_sums, PPLayerState* carry, PPLayerGain* gains, std::uint8_t* skip_mask,
                                 ScalarArg loss_arg, ScalarArg loss_sq_arg, double lr) {
  sc->last = decide_step_pp(config, sc->snap, layer_sums, carry, num_layers, read_scalar(loss_arg), read_scalar(loss_sq_arg), lr,
                            dtype, gains, skip_mask);
}

template <class T>
__global__ void pp_update_kernel(const DeviceChunk* chunks, const DeviceLayer* layers, const PPLayerGain* gains,
                                 const DeviceScalars* sc, double wd, double q) {
  if (sc->last.status != StepStatus::kApplied) return;  // the step was refused: nothing changes
  const DeviceChunk ch = chunks[blockIdx.x];
  const PPLayerGain k = gains[ch.layer];
  if (k.skip) return;
  const double sigma = sc->snap.filter.sigma;
  const DeviceLayer L = layers[ch.layer];
  const T* g = static_cast<const T*>(L.g) + ch.begin;
  T* x = static_cast<T*>(L.x) + ch.begin;
  T* v = static_cast<T*>(L.v) + ch.begin;
  T* hp = static_cast<T*>(L.a) + ch.begin;
#pragma unroll 4
  for (std::uint32_t i = threadIdx.x; i < ch.size; i += kThreads) {
    const double xi = x[i];
    const double h = static_cast<T>(math::decayed_grad(g[i], xi, wd));
    const double v_prev = k.first ? static_cast<double>(static_cast<T>(sigma * h)) : static_cast<double>(v[i]);
    const double h_prev = k.first ? h : static_cast<double>(hp[i]);
    const double v_next = static_cast<T>(math::pp_product(h, v_prev, h_prev, k.cv, q, k.lambda, k.rk));
    x[i] = static_cast<T>(xi - k.k * (v_next + q * h));
    v[i] = static_cast<T>(v_next);
    hp[i] = static_cast<T>(h);
  }
}

}  // namespace kernels
}  // namespace cuda
}  // namespace koala
