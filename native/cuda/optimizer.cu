// The CUDA optimizer: device memory, the launches of a step and the reads back (Note [device step]
// in cuda/optimizer.h). The kernels are in kernels.cuh, the runtime helpers in runtime.cuh.
#include "cuda/optimizer.h"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/plan.h"
#include "cuda/kernels.cuh"
#include "cuda/launch.h"
#include "cuda/plusplus.cuh"
#include "cuda/runtime.cuh"

namespace koala {
namespace cuda {

using kernels::DeviceChunk;
using kernels::DeviceLayer;
using kernels::DeviceScalars;
using kernels::kThreads;

namespace {

// Each layer's state starts on a 256-byte boundary (a full memory transaction segment).
constexpr std::size_t kStateAlign = 256;

template <class T>
T* device_alloc(std::size_t count) {
  void* p = nullptr;
  check(cudaMalloc(&p, count * sizeof(T) > 0 ? count * sizeof(T) : 1), "cudaMalloc");
  return static_cast<T*>(p);
}

}  // namespace

struct CudaOptimizer::Device {
  int device;
  cudaStream_t stream = nullptr;
  std::size_t num_chunks = 0;
  double total = 0;  // n of q_x: the whole model's elements (a sharded rank holds fewer)
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
  double* predict_sum = nullptr;  // the predict's sum |a - x|^2 (Note [sharded device step])
  // The last update's outcome: its scalars and skip mask copied to pinned host memory on the
  // stream, then an event, so that reading it waits for the step and not for later work.
  void* outcome = nullptr;  // DeviceScalars, then one byte per layer
  cudaEvent_t outcome_ready = nullptr;

  explicit Device(int d) : device(d) {}

  // Frees with the optimizer's device current (also when a constructor failed half-way).
  // cudaFree waits for the device to finish with the memory; the caller's stream, which may be
  // destroyed by now, is not touched.
  ~Device() {
    DeviceGuard guard(device, /*no_throw=*/true);
    for (void* p : {static_cast<void*>(chunks), static_cast<void*>(first_chunk), static_cast<void*>(layers), velocity, average,
                    static_cast<void*>(chunk_sums), static_cast<void*>(layer_sums), static_cast<void*>(chunk_diff), static_cast<void*>(gains),
                    static_cast<void*>(skip_mask), static_cast<void*>(scalars), static_cast<void*>(predict_sum),
                    static_cast<void*>(pp_chunk_sums), static_cast<void*>(pp_layer_sums), static_cast<void*>(pp_layers),
                    static_cast<void*>(pp_gains)}) {
      if (p != nullptr) cudaFree(p);
    }
    if (outcome != nullptr) cudaFreeHost(outcome);
    if (outcome_ready != nullptr) cudaEventDestroy(outcome_ready);
    cudaGetLastError();  // a failure here is nobody's to report
  }
};

CudaOptimizer::CudaOptimizer(int device, DType dtype, std::vector<std::size_t> sizes, std::vector<LayerPointers> layers,
                             const FilterConfig& config, const FilterState& initial, bool lazy_predict,
                             std::uintptr_t stream, double model_elems)
    : device_(device),
      dtype_(dtype),
      sizes_(std::move(sizes)),
      config_(config),
      lazy_predict_(lazy_predict && config.variant == Variant::kMomentum),
      stream_(stream) {
  for (std::size_t s : sizes_) {
    // the binding refuses them first
    if (s == 0 && model_elems == 0) throw std::invalid_argument("a layer of zero elements in an unsharded optimizer");
  }
  DeviceGuard guard(device_);
  dev_ = std::make_unique<Device>(device_);
  Device& d = *dev_;
  d.stream = reinterpret_cast<cudaStream_t>(stream_);
  const ChunkPlan plan(sizes_, kChunkElems);
  d.num_chunks = plan.chunks().size();
  d.total = model_elems > 0 ? model_elems : static_cast<double>(plan.total_elems());
  const std::size_t elem = dtype_bytes(dtype_);

  std::vector<DeviceChunk> chunks;
  for (const Chunk& c : plan.chunks()) chunks.push_back({c.layer, static_cast<std::uint32_t>(c.size), c.begin});
  std::vector<std::uint64_t> first(sizes_.size() + 1);
  for (std::size_t l = 0; l <= sizes_.size(); ++l) first[l] = plan.first_chunk(l);

  const StateLayout layout(sizes_, elem, kStateAlign);
  d.state_offsets = layout.offsets;
  const bool momentum = config_.variant != Variant::kVanilla;  // KOALA-M's v and a, KOALA++'s v and Hp
  if (momentum) {
    d.velocity = device_alloc<char>(layout.total * elem);
    d.average = device_alloc<char>(layout.total * elem);
    check(cudaMemsetAsync(d.velocity, 0, layout.total * elem, d.stream), "cudaMemsetAsync");
    check(cudaMemsetAsync(d.average, 0, layout.total * elem, d.stream), "cudaMemsetAsync");
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
  const std::vector<PPLayerState> never(config_.variant == Variant::kPlusPlus ? sizes_.size() : 0, PPLayerState{0.0, 0.0, 0.0, false});
  if (config_.variant == Variant::kPlusPlus) {
    d.pp_chunk_sums = device_alloc<PPLayerSums>(d.num_chunks);
    d.pp_layer_sums = device_alloc<PPLayerSums>(sizes_.size());
    d.pp_layers = device_alloc<PPLayerState>(sizes_.size());
    d.pp_gains = device_alloc<PPLayerGain>(sizes_.size());
    check(cudaMemcpyAsync(d.pp_layers, never.data(), never.size() * sizeof(PPLayerState), cudaMemcpyHostToDevice, d.stream),
          "upload layer state");
  }
  d.predict_sum = device_alloc<double>(1);
  check(cudaMallocHost(&d.outcome, sizeof(DeviceScalars) + sizes_.size()), "cudaMallocHost");
  check(cudaEventCreateWithFlags(&d.outcome_ready, cudaEventDisableTiming), "cudaEventCreate");
  const DeviceScalars scalars{{initial, kNoPendingPredict, 0}, {StepStatus::kApplied, 0, 0.0}};
  check(cudaMemsetAsync(d.skip_mask, 0, sizes_.size(), d.stream), "cudaMemsetAsync");
  check(cudaMemcpyAsync(d.chunks, chunks.data(), chunks.size() * sizeof(DeviceChunk), cudaMemcpyHostToDevice, d.stream), "upload plan");
  check(cudaMemcpyAsync(d.first_chunk, first.data(), first.size() * sizeof(std::uint64_t), cudaMemcpyHostToDevice, d.stream), "upload plan");
  check(cudaMemcpyAsync(d.layers, table.data(), table.size() * sizeof(DeviceLayer), cudaMemcpyHostToDevice, d.stream), "upload layers");
  check(cudaMemcpyAsync(d.scalars, &scalars, sizeof scalars, cudaMemcpyHostToDevice, d.stream), "upload scalars");
  check(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize");  // the host vectors go out of scope
  std::memcpy(d.outcome, &scalars, sizeof scalars);
  std::memset(static_cast<char*>(d.outcome) + sizeof scalars, 0, sizes_.size());
}

CudaOptimizer::~CudaOptimizer() = default;  // Device frees with its own device current

Moved CudaOptimizer::predict() {
  if (config_.variant == Variant::kPlusPlus) return Moved::kNo;  // KOALA++ predicts nothing
  DeviceGuard guard(device_);
  RuntimeErrors errors;
  LaunchSequence<RuntimeErrors> seq(errors, broken_, "predict");
  return launch_predict(seq, /*finish=*/true);
}

Moved CudaOptimizer::predict_partial() {
  DeviceGuard guard(device_);
  RuntimeErrors errors;
  LaunchSequence<RuntimeErrors> seq(errors, broken_, "predictPartial");
  return launch_predict(seq, /*finish=*/false);
}

void CudaOptimizer::predict_finish() {
  DeviceGuard guard(device_);
  RuntimeErrors errors;
  LaunchSequence<RuntimeErrors> seq(errors, broken_, "predictFinish");
  Device& d = *dev_;
  seq.launch("filter", [&] { kernels::predict_filter_kernel<<<1, 1, 0, d.stream>>>(config_, d.scalars, d.predict_sum, d.total); });
}

template <class Sequence>
Moved CudaOptimizer::launch_predict(Sequence& seq, bool finish) {
  Device& d = *dev_;
  if (config_.variant == Variant::kMomentum && d.num_chunks > 0) {
    seq.launch("element pass", [&] {
      if (dtype_ == DType::kFloat32) {
        kernels::predict_elements_kernel<float><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.scalars, config_.kappa, d.chunk_diff);
      } else {
        kernels::predict_elements_kernel<double><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.scalars, config_.kappa, d.chunk_diff);
      }
    });
  }
  seq.launch(finish ? "filter" : "sum", [&] {
    kernels::predict_sum_kernel<<<1, kThreads, 0, d.stream>>>(config_, d.scalars, d.chunk_diff, d.num_chunks, d.predict_sum, d.total, finish);
  });
  const Pending before = pending_;
  pending_ = Pending::kNone;
  if (config_.variant == Variant::kVanilla) return Moved::kNo;
  return before == Pending::kNone ? Moved::kYes : before == Pending::kSome ? Moved::kNo : Moved::kUnknown;
}

void CudaOptimizer::update(const ScalarArg& loss, const ScalarArg& loss_sq, double lr) {
  DeviceGuard guard(device_);
  RuntimeErrors errors;
  LaunchSequence<RuntimeErrors> seq(errors, broken_, "update");
  if (config_.variant == Variant::kPlusPlus) {  // its own passes, and no sharded halves
    launch_update_pp(seq, loss, loss_sq, lr);
    return;
  }
  launch_update_sums(seq);
  launch_update_finish(seq, loss, loss_sq, lr);
}

void CudaOptimizer::update_partial() {
  DeviceGuard guard(device_);
  RuntimeErrors errors;
  LaunchSequence<RuntimeErrors> seq(errors, broken_, "updatePartial");
  launch_update_sums(seq);
}

void CudaOptimizer::update_finish(const ScalarArg& loss, const ScalarArg& loss_sq, double lr) {
  DeviceGuard guard(device_);
  RuntimeErrors errors;
  LaunchSequence<RuntimeErrors> seq(errors, broken_, "updateFinish");
  launch_update_finish(seq, loss, loss_sq, lr);
}

// The stats pass and each layer's sums, into d.layer_sums (a sharded rank's partial sums).
template <class Sequence>
void CudaOptimizer::launch_update_sums(Sequence& seq) {
  Device& d = *dev_;
  const double wd = config_.weight_decay;
  if (d.num_chunks > 0) {
    seq.launch("stats pass", [&] {
      if (dtype_ == DType::kFloat32) {
        kernels::stats_kernel<float><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, wd, d.chunk_sums);
      } else {
        kernels::stats_kernel<double><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, wd, d.chunk_sums);
      }
    });
  }
  const auto num_layers = static_cast<std::uint32_t>(sizes_.size());
  seq.launch("layer sums", [&] { kernels::layer_sums_kernel<<<num_layers, kThreads, 0, d.stream>>>(d.chunk_sums, d.first_chunk, d.layer_sums); });
}

// The step sequence on d.layer_sums (reduced, for a sharded rank), the update pass and the outcome copy.
template <class Sequence>
void CudaOptimizer::launch_update_finish(Sequence& seq, const ScalarArg& loss, const ScalarArg& loss_sq, double lr) {
  Device& d = *dev_;
  const auto num_layers = static_cast<std::uint32_t>(sizes_.size());
  seq.launch("step sequence", [&] {
    kernels::decide_kernel<<<1, kThreads, 0, d.stream>>>(config_, dtype_, d.scalars, num_layers, d.layer_sums, d.gains, d.skip_mask, loss, loss_sq, lr);
  });
  if (d.num_chunks > 0) {
    seq.launch("update pass", [&] {
      if (dtype_ == DType::kFloat32) {
        kernels::update_kernel<float><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.gains, d.scalars, config_.variant,
                                                                               lazy_predict_, direction_decay(config_), config_.kappa, d.chunk_diff);
      } else {
        kernels::update_kernel<double><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.gains, d.scalars, config_.variant,
                                                                                lazy_predict_, direction_decay(config_), config_.kappa, d.chunk_diff);
      }
    });
  }
  if (lazy_predict_) {
    seq.launch("lazy predict sum", [&] { kernels::lazy_finish_kernel<<<1, kThreads, 0, d.stream>>>(d.scalars, d.chunk_diff, d.num_chunks); });
  }
  launch_outcome_copy(seq);
  if (lazy_predict_) pending_ = Pending::kUnknown;
}

// The last update's outcome to pinned host memory, then its event (Device::outcome).
template <class Sequence>
void CudaOptimizer::launch_outcome_copy(Sequence& seq) {
  Device& d = *dev_;
  seq.launch("outcome copy", [&] {
    cudaMemcpyAsync(d.outcome, d.scalars, sizeof(DeviceScalars), cudaMemcpyDeviceToHost, d.stream);
    cudaMemcpyAsync(static_cast<char*>(d.outcome) + sizeof(DeviceScalars), d.skip_mask, sizes_.size(), cudaMemcpyDeviceToHost, d.stream);
    cudaEventRecord(d.outcome_ready, d.stream);
  });
}

// KOALA++: its dots, its step sequence, its update (Note [KOALA++ passes], core/step_pp.h), the outcome copy.
template <class Sequence>
void CudaOptimizer::launch_update_pp(Sequence& seq, const ScalarArg& loss, const ScalarArg& loss_sq, double lr) {
  Device& d = *dev_;
  const double wd = config_.weight_decay;
  const auto num_layers = static_cast<std::uint32_t>(sizes_.size());
  seq.launch("dots pass", [&] {
    if (dtype_ == DType::kFloat32) {
      kernels::pp_dots_kernel<float><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, wd, d.pp_chunk_sums);
    } else {
      kernels::pp_dots_kernel<double><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, wd, d.pp_chunk_sums);
    }
  });
  seq.launch("layer sums", [&] { kernels::pp_layer_sums_kernel<<<num_layers, kThreads, 0, d.stream>>>(d.pp_chunk_sums, d.first_chunk, d.pp_layer_sums); });
  seq.launch("step sequence", [&] {
    kernels::pp_decide_kernel<<<1, 1, 0, d.stream>>>(config_, dtype_, d.scalars, num_layers, d.pp_layer_sums, d.pp_layers, d.pp_gains,
                                                     d.skip_mask, loss, loss_sq, lr);
  });
  seq.launch("update pass", [&] {
    if (dtype_ == DType::kFloat32) {
      kernels::pp_update_kernel<float><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.pp_gains, d.scalars, wd, config_.q);
    } else {
      kernels::pp_update_kernel<double><<<d.num_chunks, kThreads, 0, d.stream>>>(d.chunks, d.layers, d.pp_gains, d.scalars, wd, config_.q);
    }
  });
  launch_outcome_copy(seq);
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

DeviceSums CudaOptimizer::device_sums() const {
  static_assert(sizeof(LayerSums) == 3 * sizeof(double), "LayerSums is three doubles");
  return {reinterpret_cast<std::uintptr_t>(dev_->predict_sum), reinterpret_cast<std::uintptr_t>(dev_->layer_sums)};
}

StepReport CudaOptimizer::last_step(std::uint8_t* skip_mask_out) {
  DeviceGuard guard(device_);
  Device& d = *dev_;
  check(cudaEventSynchronize(d.outcome_ready), "waiting for the step");  // not for the work queued after it
  DeviceScalars s;
  std::memcpy(&s, d.outcome, sizeof s);
  if (s.last.status == StepStatus::kApplied) std::memcpy(skip_mask_out, static_cast<const char*>(d.outcome) + sizeof s, sizes_.size());
  if (pending_ == Pending::kUnknown) pending_ = s.snap.pending != kNoPendingPredict ? Pending::kSome : Pending::kNone;
  return s.last;
}

// The device address of the scalars' snapshot (computed, never dereferenced on the host).
void* CudaOptimizer::snapshot_on_device() {
  return reinterpret_cast<char*>(dev_->scalars) + offsetof(DeviceScalars, snap);
}

FilterSnapshot CudaOptimizer::snapshot() {
  DeviceGuard guard(device_);
  FilterSnapshot s;
  check(cudaMemcpyAsync(&s, snapshot_on_device(), sizeof s, cudaMemcpyDeviceToHost, dev_->stream), "read scalars");
  check(cudaStreamSynchronize(dev_->stream), "cudaStreamSynchronize");
  return s;
}

void CudaOptimizer::restore(const FilterSnapshot& snap) {
  DeviceGuard guard(device_);
  pending_ = snap.pending != kNoPendingPredict ? Pending::kSome : Pending::kNone;
  // Only the snapshot's bytes: the last step's outcome stays as it is.
  check(cudaMemcpyAsync(snapshot_on_device(), &snap, sizeof snap, cudaMemcpyHostToDevice, dev_->stream), "write scalars");
  check(cudaStreamSynchronize(dev_->stream), "cudaStreamSynchronize");
}

char* CudaOptimizer::layer_state(LayerStateKind kind, std::size_t layer) {
  // KOALA++'s products live where KOALA-M's velocities do, its directions where the averages do.
  const bool first = kind == LayerStateKind::kVelocity || kind == LayerStateKind::kProduct;
  void* base = first ? dev_->velocity : dev_->average;
  if (base == nullptr) throw std::invalid_argument("KOALA-V keeps no per-layer state");  // the binding refuses first
  return static_cast<char*>(base) + dev_->state_offsets[layer] * dtype_bytes(dtype_);
}

void CudaOptimizer::read_layer_state(LayerStateKind kind, std::size_t layer, void* host_out) {
  DeviceGuard guard(device_);
  const std::size_t bytes = sizes_[layer] * dtype_bytes(dtype_);
  check(cudaMemcpyAsync(host_out, layer_state(kind, layer), bytes, cudaMemcpyDeviceToHost, dev_->stream), "read layer state");
  check(cudaStreamSynchronize(dev_->stream), "cudaStreamSynchronize");
}

void CudaOptimizer::write_layer_state(LayerStateKind kind, std::size_t layer, const void* host_in) {
  DeviceGuard guard(device_);
  const std::size_t bytes = sizes_[layer] * dtype_bytes(dtype_);
  check(cudaMemcpyAsync(layer_state(kind, layer), host_in, bytes, cudaMemcpyHostToDevice, dev_->stream), "write layer state");
  check(cudaStreamSynchronize(dev_->stream), "cudaStreamSynchronize");
}

}  // namespace cuda
}  // namespace koala
