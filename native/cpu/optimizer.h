// The CPU backend: owns the per-layer state (velocities, averages), the chunk plan, the partial
// sums and the threads; works in place on the caller's parameter and gradient buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/plan.h"
#include "cpu/pool.h"
#include "koala/filter.h"
#include "koala/types.h"

namespace koala {

// The caller's buffers of one layer, valid for the duration of one call.
struct LayerBuffers {
  void* param;
  const void* grad;
};

enum class LayerStateKind : int { kVelocity = 0, kAverage = 1 };

// Note [lazy predict]
// With lazy_predict (KOALA-M), the update pass also does the next step's element-wise predict:
// x += v, v *= kappa, and the sum |a - x|^2 on the updated x and a. A step then moves 36 bytes per
// float32 parameter instead of 56, and predict() only does the scalar part, with the sum kept in
// pending_sum_. The price: between update() and the next predict() the caller's parameters are
// already the predicted ones. Layers skipped by the update still get their element-wise predict.
constexpr double kNoPendingPredict = -1.0;  // pending_sum() when no element-wise predict is pending

class CpuOptimizer {
 public:
  CpuOptimizer(DType dtype, std::vector<std::size_t> layer_sizes, const FilterConfig& config,
               const FilterState& initial, int threads, bool lazy_predict);
  ~CpuOptimizer();

  // Element pass (KOALA-M: x += v, v *= kappa and sum |a - x|^2) and the scalar predict.
  void predict(const LayerBuffers* layers);
  // Stats pass, non-finite guard, filter, update pass. skip_mask[l] is set to 1 for each layer
  // skipped by |g_l| < eps, else 0. When the status is not kApplied nothing was modified.
  StepReport update(const LayerBuffers* layers, double loss, double loss_sq, double lr,
                    std::uint8_t* skip_mask);

  FilterState& state() { return state_; }
  // The sum |a - x|^2 of a predict whose element-wise part the last update already did, or
  // kNoPendingPredict (Note [lazy predict]).
  double pending_sum() const { return pending_sum_; }
  void set_pending_sum(double sum) { pending_sum_ = sum; }
  // Applied updates so far (a refused step does not count).
  double applied_steps() const { return applied_steps_; }
  void set_applied_steps(double steps) { applied_steps_ = steps; }
  DType dtype() const { return dtype_; }
  // Threads a pass runs on: the option, capped so that each gets kMinElemsPerThread elements.
  int threads() const { return threads_; }
  std::size_t num_layers() const { return sizes_.size(); }
  std::size_t layer_size(std::size_t l) const { return sizes_[l]; }
  std::size_t elem_bytes() const { return dtype_ == DType::kFloat32 ? 4 : 8; }
  // Start of layer l's velocity or average (KOALA-M), layer_size(l) elements of the dtype.
  void* layer_state(LayerStateKind kind, std::size_t l);

 private:
  template <class T> void predict_impl(const LayerBuffers* layers);
  template <class T> StepReport update_impl(const LayerBuffers* layers, double loss, double loss_sq,
                                            double lr, std::uint8_t* skip_mask);
  template <class Fn> void for_chunks(Fn&& fn);
  double sum_chunk_diffs() const;  // chunk_diff_ added up in chunk order

  DType dtype_;
  std::vector<std::size_t> sizes_;
  FilterConfig config_;
  FilterState state_;
  bool lazy_predict_;
  double pending_sum_ = kNoPendingPredict;
  double applied_steps_ = 0;
  ChunkPlan plan_;
  int threads_ = 1;                   // parts of a pass, on the shared pool (Note [shared pool])
  std::vector<std::size_t> bounds_;   // the parts of a pass: plan_.partition(a few per thread)
  std::vector<std::size_t> state_offsets_;  // element offset of each layer in velocity_/average_
  void* velocity_ = nullptr;                // 64-byte aligned, zero-initialized
  void* average_ = nullptr;
  std::vector<LayerSums> chunk_sums_;
  std::vector<double> chunk_diff_;
  std::vector<LayerGain> gains_;
};

}  // namespace koala
