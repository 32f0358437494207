// The CPU backend: owns the per-layer state (KOALA-M's velocities and averages, KOALA++'s products,
// directions and layer scalars), the chunk plan, the partial
// sums and the threads; works in place on the caller's parameter and gradient buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/plan.h"
#include "core/step_pp.h"
#include "cpu/pool.h"
#include "koala/filter.h"
#include "koala/protocol.h"
#include "koala/types.h"

namespace koala {

// The caller's buffers of one layer, valid for the duration of one call.
struct LayerBuffers {
  void* param;
  const void* grad;
};

// Note [lazy predict]
// With lazy_predict (KOALA-M), the update pass also does the next step's element-wise predict:
// x += v, v *= kappa, and the sum |a - x|^2 on the updated x and a. A step then moves 36 bytes per
// float32 parameter instead of 52 (Note [deferred decay]), and predict() only does the scalar part, with the sum kept as
// the snapshot's pending sum. The price: between update() and the next predict() the caller's
// parameters are already the predicted ones. Layers skipped by the update still get their
// element-wise predict; a refused update does none, so the next predict() does it in full.

// Note [deferred decay]
// Without lazy predict, the KOALA-M predict's element pass only moves the parameters (x += v) and
// leaves v *= kappa pending, per layer; the update pass, which reads and writes every velocity
// anyway, does the decay first (a layer it skips gets the decay alone). The predict then writes
// 16 bytes per float32 parameter instead of 20, a step moves 52 instead of 56, and the results
// are bitwise those of the eager predict: the decay is the same operation on the same value
// (in float32 storage with a float kappa, as Note [float32 predict] says, the float product), done
// later. What must see the decayed velocity does: read_layer_state() hands it out as it would be
// after the decay; write_layer_state() stores a decayed velocity, so that layer's decay is no
// longer pending; a second predict before an update does the first one's decay then; a refused
// update leaves it pending, as it leaves everything. KOALA-V and KOALA++ have no velocity to
// decay; with lazy predict the update pass does the whole predict (Note [lazy predict]).

// Note [sharded step]
// A rank of a sharded (ZeRO-1 style) optimizer holds a slice of every layer (possibly empty) and
// the state of that slice only. The quantities a step needs whole are sums: the predict's
// sum |a - x|^2 and each layer's |h|^2, |x|^2, |g|^2. So predict() and update() are each split in
// two: a "partial" half runs the element pass over the slice and yields the slice's sums, the
// caller all-reduces them (sum) with whatever engine it has, and a "finish" half runs the rest on
// the reduced sums: filter_predict, or decide_step (Note [step sequence]) and the update pass.
// Every rank decides on the same reduced sums, so every rank takes the same decision: a NaN on one
// rank makes the reduced sums NaN and the guards refuse the step everywhere. The unsharded calls
// are the two halves back to back, with the optimizer's own sums. model_elems is the n of q_x (the
// whole model's size, not the slice's; 0: these layers' own total). With lazy predict the pending
// sum is the slice's partial sum, handed out by the next predict_partial(). The paper's variants
// (Note [paper variants], koala/filter.h) need nothing more: filter_predict takes the reduced sum
// and the global n for either q_x, and the update pass steps along direction_decay() on every rank.

// predict_partial()'s result: the slice's sum |a - x|^2, and whether the element pass moved the
// slice's parameters (it does not when a lazy update did it already, nor for KOALA-V).
struct PartialPredict {
  double sum_sq_diff;
  bool moved;
};

class CpuOptimizer {
 public:
  CpuOptimizer(DType dtype, std::vector<std::size_t> layer_sizes, const FilterConfig& config,
               const FilterState& initial, int threads, bool lazy_predict, double model_elems);
  ~CpuOptimizer();

  // Element pass (KOALA-M: x += v, v *= kappa and sum |a - x|^2) and the scalar predict. Returns
  // whether the parameters moved: not for KOALA-V, nor when the last update did the element pass
  // already (Note [lazy predict]).
  bool predict(const LayerBuffers* layers) {
    if (config_.variant == Variant::kPlusPlus) return false;  // KOALA++ predicts nothing
    const PartialPredict p = predict_partial(layers);
    predict_finish(p.sum_sq_diff);
    return p.moved;
  }
  // Stats pass, the step sequence (Note [step sequence], core/step.h), update pass. skip_mask[l] is
  // set to 1 for each layer skipped by |g_l| < eps, else 0. When the status is not kApplied nothing
  // was modified.
  // KOALA++ has its own passes (Note [KOALA++ passes], core/step_pp.h) and no sharded halves.
  StepReport update(const LayerBuffers* layers, double loss, double loss_sq, double lr, std::uint8_t* skip_mask) {
    if (config_.variant == Variant::kPlusPlus) return update_plus_plus(layers, loss, loss_sq, lr, skip_mask);
    return update_finish(layers, update_partial(layers), loss, loss_sq, lr, skip_mask);
  }

  // The halves of a sharded step (Note [sharded step]). predict_partial: the element pass over this
  // slice (or the pending sum of a lazy update), returning the slice's sum |a - x|^2 (0 for KOALA-V)
  // and whether it moved the slice's parameters (as predict() says); predict_finish: the scalar predict with the reduced sum. update_partial: the stats pass,
  // returning the slice's per-layer sums (num_layers() of them, valid until the next call);
  // update_finish: decide_step on `sums` (reduced) and the update pass over the slice.
  PartialPredict predict_partial(const LayerBuffers* layers);
  void predict_finish(double sum_sq_diff);
  const LayerSums* update_partial(const LayerBuffers* layers);
  StepReport update_finish(const LayerBuffers* layers, const LayerSums* sums, double loss, double loss_sq, double lr,
                           std::uint8_t* skip_mask);

  // The filter, the pending predict sum (Note [lazy predict]) and the applied steps.
  const FilterSnapshot& snapshot() const { return scalars_; }
  void restore(const FilterSnapshot& s) { scalars_ = s; }
  DType dtype() const { return dtype_; }
  // Threads a pass runs on: the option, capped so that each gets kMinElemsPerThread elements.
  int threads() const { return threads_; }
  std::size_t num_layers() const { return sizes_.size(); }
  std::size_t layer_size(std::size_t l) const { return sizes_[l]; }
  std::size_t elem_bytes() const { return dtype_bytes(dtype_); }
  // Bytes of native memory this optimizer holds: per-layer state and per-chunk sums (reported to V8
  // by the binding, Note [native memory reported]).
  std::size_t native_bytes() const;
  // Layer l's state of that kind, layer_size(l) elements of the dtype, copied out of or into the
  // optimizer (a velocity as it is after any pending decay: Note [deferred decay]). The kind must
  // be one this variant keeps (KOALA-M: velocity, average; KOALA++: product, direction).
  void read_layer_state(LayerStateKind kind, std::size_t l, void* out);
  void write_layer_state(LayerStateKind kind, std::size_t l, const void* in);
  // KOALA++'s per-layer scalars (empty for the other variants).
  std::vector<PPLayerState>& pp_layers() { return pp_layers_; }

 private:
  template <class T> PartialPredict predict_partial_impl(const LayerBuffers* layers);
  template <class T> void update_partial_impl(const LayerBuffers* layers);
  template <class T> StepReport update_finish_impl(const LayerBuffers* layers, const LayerSums* sums, double loss,
                                                   double loss_sq, double lr, std::uint8_t* skip_mask);
  StepReport update_plus_plus(const LayerBuffers* layers, double loss, double loss_sq, double lr, std::uint8_t* skip_mask);
  template <class T> StepReport update_pp(const LayerBuffers* layers, double loss, double loss_sq, double lr,
                                          std::uint8_t* skip_mask);
  template <class Fn> void for_chunks(Fn&& fn);
  void* layer_state(LayerStateKind kind, std::size_t l);  // null for a kind this variant does not keep
  bool decays_later() const { return config_.variant == Variant::kMomentum && !lazy_predict_; }
  double sum_chunk_diffs() const;  // chunk_diff_ added up in chunk order

  DType dtype_;
  std::vector<std::size_t> sizes_;
  FilterConfig config_;
  FilterSnapshot scalars_;
  bool lazy_predict_;
  double model_elems_ = 0;  // n of q_x: the whole model's element count (Note [sharded step])
  ChunkPlan plan_;
  int threads_ = 1;                   // parts of a pass, on the shared pool (Note [shared pool])
  std::vector<std::size_t> bounds_;   // the parts of a pass: plan_.partition(a few per thread)
  std::vector<std::size_t> state_offsets_;  // element offset of each layer in velocity_/average_
  void* velocity_ = nullptr;                // 64-byte aligned, zero-initialized; KOALA++: the products v
  void* average_ = nullptr;                 // KOALA++: the directions Hp
  std::vector<std::uint8_t> decay_pending_;  // per layer: 1 while v *= kappa waits (Note [deferred decay])
  std::vector<LayerSums> chunk_sums_;
  std::vector<double> chunk_diff_;
  std::vector<LayerSums> layer_sums_;
  std::vector<LayerGain> gains_;
  std::vector<PPLayerState> pp_layers_;    // KOALA++ (Note [KOALA++ passes], core/step_pp.h)
  std::vector<PPLayerSums> chunk_pp_sums_;
  std::vector<PPLayerSums> layer_pp_sums_;
  std::vector<PPLayerGain> pp_gains_;
};

}  // namespace koala
