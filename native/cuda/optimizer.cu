// The CUDA backend: kernels and the CudaOptimizer that launches them (Note [device step] in
// cuda/optimizer.h). The per-element formulas and the scalar filter are koala/math.h and
// koala/filter.h, the same code the CPU backend runs.
#include "cuda/optimizer.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "core/plan.h"
#include "core/step.h"
#include "core/step_pp.h"
#include "koala/filter.h"
#include "koala/math.h"

namespace koala {
namespace cuda {

namespace {

// One block per chunk; 256 threads stride through the chunk's (at most kChunkElems) elements.
constexpr int kThreads = 256;
// Each layer's state starts on a 256-byte boundary (a full memory transaction segment).
constexpr std::size_t kStateAlign = 256;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Sets the device for the lifetime of a call and restores the caller's. Throws when the device
// cannot be selected, unless built with kNoThrow (for destructors, which must not throw).
class DeviceGuard {
 public:
  static constexpr bool kNoThrow = true;

  explicit DeviceGuard(int device, bool no_throw = false) {
    const cudaError_t got = cudaGetDevice(&previous_);
    if (got == cudaSuccess && previous_ != device) {
      const cudaError_t set = cudaSetDevice(device);
      if (!no_throw) check(set, "cudaSetDevice");
    } else if (!no_throw) {
      check(got, "cudaGetDevice");
    }
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

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
  return s.dtype == 0 ? static_cast<double>(*static_cast<const float*>(s.device_ptr)) : *static_cast<const double*>(s.device_ptr);
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

__global__ void predict_filter_kernel(FilterConfig config, DeviceScalars* sc, const double* chunk_diff,
                                      std::size_t num_chunks, double n) {
  __shared__ double shared[kThreads];
  __shared__ double pending;
  if (threadIdx.x == 0) pending = sc->snap.pending;
  __syncthreads();
  double sum = 0.0;
  if (config.variant == Variant::kMomentum) sum = pending != kNoPendingPredict ? pending : ordered_sum(chunk_diff, num_chunks, shared);
  if (threadIdx.x == 0) {
    filter_predict(config, sc->snap.filter, sum, n);
    sc->snap.pending = kNoPendingPredict;
  }
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

// One thread: the step sequence (Note [step sequence], core/step.h), as the CPU runs it.
__global__ void decide_kernel(FilterConfig config, DType dtype, DeviceScalars* sc, std::uint32_t num_layers, const LayerSums* layer_sums,
                              LayerGain* gains, std::uint8_t* skip_mask, ScalarArg loss_arg, ScalarArg loss_sq_arg, double lr) {
  sc->last = decide_step(config, sc->snap, layer_sums, num_layers, read_scalar(loss_arg), read_scalar(loss_sq_arg), lr, dtype, gains,
                         skip_mask);
}

template <class T>
__global__ void update_kernel(const DeviceChunk* chunks, const DeviceLayer* layers, const LayerGain* gains,
                              const DeviceScalars* sc, Variant variant, bool lazy, double wd, double kappa,
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
    for (std::uint32_t i = threadIdx.x; i < ch.size; i += kThreads) x[i] = static_cast<T>(math::vanilla_update(g[i], x[i], k.k1));
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

#include "cuda/plusplus.cuh"

template <class T>
T* device_alloc(std::size_t count) {
  void* p = nullptr;
  check(cudaMalloc(&p, count * sizeof(T) > 0 ? count * sizeof(T) : 1), "cudaMalloc");
  return static_cast<T*>(p);
}

}  // namespace

struct CudaOptimizer::Device {
  cudaStream_t stream = nullptr;
  std::size_t num_chunks = 0;
  std::size_t total = 0;
  DeviceChunk* chunks = nullptr;
  std::uint64_t* first_chunk = nullptr;
  DeviceLayer* layers = nullptr;
  void* velocity = nullptr;
  void* average = nullptr;
  std::vector<std::size_t> state_offsets;  // element offset of each layer in velocity / average
  LayerSums* chunk_sums = nullptr;
  LayerSums* layer_sums = nullptr;
  double* chunk_diff = nullptr;
  LayerGain* gains = nullptr;
  std::uint8_t* skip_mask = nullptr;
  DeviceScalars* scalars = nullptr;
  // KOALA++ (cuda/plusplus.cuh); velocity and average hold its products and directions.
  PPLayerSums* pp_chunk_sums = nullptr;
  PPLayerSums* pp_layer_sums = nullptr;
  PPLayerState* pp_layers = nullptr;
  PPLayerGain* pp_gains = nullptr;

  // cudaFree waits for the device to finish with the memory; the caller's stream, which may be
  // destroyed by now, is not touched.
  ~Device() {
    for (void* p : {static_cast<void*>(chunks), static_cast<void*>(first_chunk), static_cast<void*>(layers), velocity, average,
                    static_cast<void*>(chunk_sums), static_cast<void*>(layer_sums), static_cast<void*>(chunk_diff), static_cast<void*>(gains),
                    static_cast<void*>(skip_mask), static_cast<void*>(scalars), static_cast<void*>(pp_chunk_sums),
                    static_cast<void*>(pp_layer_sums), static_cast<void*>(pp_layers), static_cast<void*>(pp_gains)}) {
      if (p != nullptr) cudaFree(p);
    }
  }
};

CudaOptimizer::CudaOptimizer(int device, DType dtype, std::vector<std::size_t> sizes, std::vector<LayerPointers> layers,
                             const FilterConfig& config, const FilterState& initial, bool lazy_predict,
                             std::uintptr_t stream)
    : device_(device),
      dtype_(dtype),
      sizes_(std::move(sizes)),
      config_(config),
      lazy_predict_(lazy_predict && config.variant == Variant::kMomentum),
      stream_(stream),
      dev_(std::make_unique<Device>()) {
  DeviceGuard guard(device_);
  Device& d = *dev_;
  d.stream = reinterpret_cast<cudaStream_t>(stream_);
  const ChunkPlan plan(sizes_, kChunkElems);
  d.num_chunks = plan.chunks().size();
  d.total = plan.total_elems();
  const std::size_t elem = dtype_ == DType::kFloat32 ? 4 : 8;

  std::vector<DeviceChunk> chunks;
  for (const Chunk& c : plan.chunks()) chunks.push_back({c.layer, static_cast<std::uint32_t>(c.size), c.begin});
  std::vector<std::uint64_t> first(sizes_.size() + 1);
  for (std::size_t l = 0; l <= sizes_.size(); ++l) first[l] = plan.first_chunk(l);

  const StateLayout layout(sizes_, elem, kStateAlign);
  d.state_offsets = layout.offsets;
  const std::size_t offset = layout.total;
  const bool momentum = config_.variant != Variant::kVanilla;  // KOALA-M's v and a, KOALA++'s v and Hp
  if (momentum) {
    d.velocity = device_alloc<char>(offset * elem);
    d.average = device_alloc<char>(offset * elem);
    check(cudaMemsetAsync(d.velocity, 0, offset * elem, d.stream), "cudaMemsetAsync");
    check(cudaMemsetAsync(d.average, 0, offset * elem, d.stream), "cudaMemsetAsync");
  }
  std::vector<DeviceLayer> table;
  for (std::size_t l = 0; l < sizes_.size(); ++l) {
    char* v = momentum ? static_cast<char*>(d.velocity) + d.state_offsets[l] * elem : nullptr;
    char* a = momentum ? static_cast<char*>(d.average) + d.state_offsets[l] * elem : nullptr;
    table.push_back({layers[l].param, layers[l].grad, v, a});
  }
  d.chunks = device_alloc<DeviceChunk>(chunks.size());
  d.first_chunk = device_alloc<std::uint64_t>(first.size());
  d.layers = device_alloc<DeviceLayer>(table.size());
  d.chunk_sums = device_alloc<LayerSums>(d.num_chunks);
  d.layer_sums = device_alloc<LayerSums>(sizes_.size());
  d.chunk_diff = device_alloc<double>(d.num_chunks);
  d.gains = device_alloc<LayerGain>(sizes_.size());
  d.skip_mask = device_alloc<std::uint8_t>(sizes_.size());
  d.scalars = device_alloc<DeviceScalars>(1);
  if (config_.variant == Variant::kPlusPlus) {
    d.pp_chunk_sums = device_alloc<PPLayerSums>(d.num_chunks);
    d.pp_layer_sums = device_alloc<PPLayerSums>(sizes_.size());
    d.pp_layers = device_alloc<PPLayerState>(sizes_.size());
    d.pp_gains = device_alloc<PPLayerGain>(sizes_.size());
    const std::vector<PPLayerState> never(sizes_.size(), PPLayerState{0.0, 0.0, 0.0, false});
    check(cudaMemcpyAsync(d.pp_layers, never.data(), never.size() * sizeof(PPLayerState), cudaMemcpyHostToDevice, d.stream),
          "upload layer state");
    check(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize");  // `never` goes out of scope
  }
  const DeviceScalars scalars{{initial, kNoPendingPredict, 0}, {StepStatus::kApplied, 0, 0.0}};
  check(cudaMemcpyAsync(d.chunks, chunks.data(), chunks.size() * sizeof(DeviceChunk), cudaMemcpyHostToDevice, d.stream), "upload plan");
  check(cudaMemcpyAsync(d.first_chunk, first.data(), first.size() * sizeof(std::uint64_t), cudaMemcpyHostToDevice, d.stream), "upload plan");
  check(cudaMemcpyAsync(d.layers, table.data(), table.size() * sizeof(DeviceLayer), cudaMemcpyHostToDevice, d.stream), "upload layers");
  check(cudaMemcpyAsync(d.scalars, &scalars, sizeof scalars, cudaMemcpyHostToDevice, d.stream), "upload scalars");
  check(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize");  // the host vectors go out of scope
}

CudaOptimizer::~CudaOptimizer() {
  DeviceGuard guard(device_, DeviceGuard::kNoThrow);
  dev_.reset();
}

Moved CudaOptimizer::predict() {
  if (config_.variant == Variant::kPlusPlus) return Moved::kNo;  // KOALA++ predicts nothing
  DeviceGuard guard(device_);
  Device& d = *dev_;
  if (config_.variant == Variant::kMomentum) {
    if (dtype_ == DType::kFloat32) {
      predict_elements_kernel<float><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.scalars, config_.kappa, d.chunk_diff);
    } else {
      predict_elements_kernel<double><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.scalars, config_.kappa, d.chunk_diff);
    }
  }
  predict_filter_kernel<<<1, kThreads, 0, d.stream>>>(config_, d.scalars, d.chunk_diff, d.num_chunks, static_cast<double>(d.total));
  check(cudaGetLastError(), "predict launch");
  const Pending before = pending_;
  pending_ = Pending::kNone;
  if (config_.variant == Variant::kVanilla) return Moved::kNo;
  return before == Pending::kNone ? Moved::kYes : before == Pending::kSome ? Moved::kNo : Moved::kUnknown;
}

void CudaOptimizer::update(const ScalarArg& loss, const ScalarArg& loss_sq, double lr) {
  DeviceGuard guard(device_);
  Device& d = *dev_;
  const double wd = config_.weight_decay;
  if (config_.variant == Variant::kPlusPlus) {
    update_pp(loss, loss_sq, lr);
    return;
  }
  if (dtype_ == DType::kFloat32) {
    stats_kernel<float><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, wd, d.chunk_sums);
  } else {
    stats_kernel<double><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, wd, d.chunk_sums);
  }
  layer_sums_kernel<<<sizes_.size(), kThreads, 0, d.stream>>>(d.chunk_sums, d.first_chunk, d.layer_sums);
  decide_kernel<<<1, 1, 0, d.stream>>>(config_, dtype_, d.scalars, static_cast<std::uint32_t>(sizes_.size()), d.layer_sums, d.gains,
                                       d.skip_mask, loss, loss_sq, lr);
  if (dtype_ == DType::kFloat32) {
    update_kernel<float><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.gains, d.scalars, config_.variant,
                                                                  lazy_predict_, wd, config_.kappa, d.chunk_diff);
  } else {
    update_kernel<double><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.gains, d.scalars, config_.variant,
                                                                   lazy_predict_, wd, config_.kappa, d.chunk_diff);
  }
  if (lazy_predict_) lazy_finish_kernel<<<1, kThreads, 0, d.stream>>>(d.scalars, d.chunk_diff, d.num_chunks);
  check(cudaGetLastError(), "update launch");
  if (lazy_predict_) pending_ = Pending::kUnknown;
}

void CudaOptimizer::update_pp(const ScalarArg& loss, const ScalarArg& loss_sq, double lr) {
  Device& d = *dev_;
  const double wd = config_.weight_decay;
  if (dtype_ == DType::kFloat32) {
    pp_dots_kernel<float><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, wd, d.pp_chunk_sums);
  } else {
    pp_dots_kernel<double><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, wd, d.pp_chunk_sums);
  }
  pp_layer_sums_kernel<<<sizes_.size(), kThreads, 0, d.stream>>>(d.pp_chunk_sums, d.first_chunk, d.pp_layer_sums);
  pp_decide_kernel<<<1, 1, 0, d.stream>>>(config_, dtype_, d.scalars, static_cast<std::uint32_t>(sizes_.size()), d.pp_layer_sums,
                                          d.pp_layers, d.pp_gains, d.skip_mask, loss, loss_sq, lr);
  if (dtype_ == DType::kFloat32) {
    pp_update_kernel<float><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.pp_gains, d.scalars, wd, config_.q);
  } else {
    pp_update_kernel<double><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.pp_gains, d.scalars, wd, config_.q);
  }
  check(cudaGetLastError(), "update launch");
}

void CudaOptimizer::read_layer_scalars(PPLayerState* out) {
  DeviceGuard guard(device_);
  check(cudaMemcpyAsync(out, dev_->pp_layers, sizes_.size() * sizeof(PPLayerState), cudaMemcpyDeviceToHost, dev_->stream),
        "read layer state");
  check(cudaStreamSynchronize(dev_->stream), "cudaStreamSynchronize");
}

void CudaOptimizer::write_layer_scalars(const PPLayerState* in) {
  DeviceGuard guard(device_);
  check(cudaMemcpyAsync(dev_->pp_layers, in, sizes_.size() * sizeof(PPLayerState), cudaMemcpyHostToDevice, dev_->stream),
        "write layer state");
  check(cudaStreamSynchronize(dev_->stream), "cudaStreamSynchronize");
}

StepReport CudaOptimizer::last_step(std::uint8_t* skip_mask_out) {
  DeviceGuard guard(device_);
  Device& d = *dev_;
  DeviceScalars s;
  check(cudaMemcpyAsync(&s, d.scalars, sizeof s, cudaMemcpyDeviceToHost, d.stream), "read scalars");
  check(cudaMemcpyAsync(skip_mask_out, d.skip_mask, sizes_.size(), cudaMemcpyDeviceToHost, d.stream), "read skip mask");
  check(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize");
  if (pending_ == Pending::kUnknown) pending_ = s.snap.pending != kNoPendingPredict ? Pending::kSome : Pending::kNone;
  return s.last;
}

FilterSnapshot CudaOptimizer::snapshot() {
  DeviceGuard guard(device_);
  DeviceScalars s;
  check(cudaMemcpyAsync(&s, dev_->scalars, sizeof s, cudaMemcpyDeviceToHost, dev_->stream), "read scalars");
  check(cudaStreamSynchronize(dev_->stream), "cudaStreamSynchronize");
  return s.snap;
}

void CudaOptimizer::restore(const FilterSnapshot& snap) {
  DeviceGuard guard(device_);
  pending_ = snap.pending != kNoPendingPredict ? Pending::kSome : Pending::kNone;
  // Only the snapshot's bytes: the last step's outcome stays as it is.
  check(cudaMemcpyAsync(&dev_->scalars->snap, &snap, sizeof snap, cudaMemcpyHostToDevice, dev_->stream), "write scalars");
  check(cudaStreamSynchronize(dev_->stream), "cudaStreamSynchronize");
}

// KOALA++'s products (kind 2) live where KOALA-M's velocities (0) do, its directions (3) where the averages (1) do.
void CudaOptimizer::read_layer_state(int kind, std::size_t layer, void* host_out) {
  DeviceGuard guard(device_);
  const std::size_t elem = dtype_ == DType::kFloat32 ? 4 : 8;
  const char* base = static_cast<const char*>(kind % 2 == 0 ? dev_->velocity : dev_->average) + dev_->state_offsets[layer] * elem;
  check(cudaMemcpyAsync(host_out, base, sizes_[layer] * elem, cudaMemcpyDeviceToHost, dev_->stream), "read layer state");
  check(cudaStreamSynchronize(dev_->stream), "cudaStreamSynchronize");
}

void CudaOptimizer::write_layer_state(int kind, std::size_t layer, const void* host_in) {
  DeviceGuard guard(device_);
  const std::size_t elem = dtype_ == DType::kFloat32 ? 4 : 8;
  char* base = static_cast<char*>(kind % 2 == 0 ? dev_->velocity : dev_->average) + dev_->state_offsets[layer] * elem;
  check(cudaMemcpyAsync(base, host_in, sizes_[layer] * elem, cudaMemcpyHostToDevice, dev_->stream), "write layer state");
  check(cudaStreamSynchronize(dev_->stream), "cudaStreamSynchronize");
}

Probe probe() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return {0, std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err)};
  if (count == 0) return {0, "no CUDA device is visible"};
  return {count, ""};
}

std::string check_device_pointer(const void* ptr, std::size_t bytes, std::size_t alignment, int device) {
  if (reinterpret_cast<std::uintptr_t>(ptr) % alignment != 0) return "is not aligned to its element size";
  DeviceGuard guard(device);  // queries on `device` create no context on another one
  cudaPointerAttributes attr;
  const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state of this query
    return std::string("is not a CUDA pointer (") + cudaGetErrorString(err) + ")";
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) return "is not device memory (host or unregistered memory)";
  if (attr.device != device) return "is memory of device " + std::to_string(attr.device) + ", not of device " + std::to_string(device);
  // The last byte must be device memory of the same device too (not proof that one allocation
  // holds the whole range, which the runtime API cannot tell, but it catches lengths that run off).
  if (bytes > 1) {
    cudaPointerAttributes end;
    if (cudaPointerGetAttributes(&end, static_cast<const char*>(ptr) + bytes - 1) != cudaSuccess ||
        (end.type != cudaMemoryTypeDevice && end.type != cudaMemoryTypeManaged) || end.device != device) {
      cudaGetLastError();
      return "ends outside device memory of its device (is its length right?)";
    }
  }
  return "";
}

std::uintptr_t device_malloc(std::size_t bytes, int device) {
  DeviceGuard guard(device);
  void* p = nullptr;
  check(cudaMalloc(&p, bytes), "cudaMalloc");
  return reinterpret_cast<std::uintptr_t>(p);
}

void device_free(std::uintptr_t ptr, int device) {
  DeviceGuard guard(device);
  check(cudaFree(reinterpret_cast<void*>(ptr)), "cudaFree");
}

void copy_to_device(std::uintptr_t dst, const void* src, std::size_t bytes, int device) {
  DeviceGuard guard(device);
  check(cudaMemcpy(reinterpret_cast<void*>(dst), src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
}

void copy_to_host(void* dst, std::uintptr_t src, std::size_t bytes, int device) {
  DeviceGuard guard(device);
  check(cudaMemcpy(dst, reinterpret_cast<const void*>(src), bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
}

void device_synchronize(int device) {
  DeviceGuard guard(device);
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

}  // namespace cuda
}  // namespace koala
