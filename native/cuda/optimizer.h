// The CUDA optimizer's host-side interface: plain C++ (no CUDA types), so that the Node-API binding
// compiles with the host compiler. Defined in optimizer.cu, its kernels in kernels.cuh, the
// runtime wrappers in runtime.h.
//
// A step is a few launches on the caller's stream and no synchronization (Note [device step]).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "koala/filter.h"
#include "koala/protocol.h"
#include "koala/types.h"

namespace koala {
namespace cuda {

// Note [device step]
// The layer list is fixed, so the chunk plan (core/plan.h, one thread block per chunk) and the
// per-layer pointers are uploaded once, at construction. predict(): an element kernel writes one
// partial sum of |a - x|^2 per chunk, then a one-block filter kernel adds them up and advances
// q_x and P. update(): a stats kernel writes per-chunk partial sums; a layer-sums kernel (one block
// per layer) adds each layer's partials; one block runs the step sequence (Note [step sequence],
// core/step.h: the guards, the loss included, which may be read from device memory, R, the gains,
// the new P) from the CPU's pieces, its layers spread over the threads; an update kernel reads those gains from device memory (with lazy predict, a last
// one-block kernel keeps the pending sum); the outcome is copied to pinned host memory and an
// event recorded, so that reading it waits for the step only. Everything scalar lives in one
// DeviceScalars record on the device; the host reads it only when asked (state, a step's outcome).
//
// Every reduction is a fixed tree, so the results do not depend on scheduling and repeat bitwise
// run to run. They are not the CPU's sums, though: the CPU adds 8 lanes per chunk and a layer's
// chunk partials in order, the GPU 256 strided partials per chunk and a layer's chunk partials in
// a tree. The two backends agree within rounding, not bitwise (test/cuda/device.test.ts: 1e-5 in
// float32, 1e-10 in float64 against the golden runs).

// A scalar argument: a value from the host, or a float32/float64 value in device memory.
struct ScalarArg {
  const void* device_ptr;  // null: use `value`
  DType dtype;             // of *device_ptr
  double value;
};

struct LayerPointers {
  void* param;
  const void* grad;
};

// What predict() did to the parameters, as far as the host knows without a synchronization.
enum class Moved : int { kNo = 0, kYes = 1, kUnknown = 2 };

// Note [sharded device step]
// The halves of a sharded step (Note [sharded step], cpu/optimizer.h) on the device: the partial
// sums stay in device memory, in two buffers of this optimizer (device_sums(): 1 double for
// predict, 3 per layer, |h|^2 |x|^2 |g|^2, for update). predict_partial() and update_partial()
// launch the element pass and leave the slice's sums there; the caller reduces them in place on
// the same stream (ncclAllReduce(buf, buf, count, ncclFloat64, ncclSum, comm, stream)); the
// finish halves' kernels read the reduced sums from there. No host synchronization anywhere.
// A rank's slice of a layer may be empty: it has no chunks (core/plan.h), its sums are 0, and a
// rank whose slices are all empty launches no element kernel at all (a zero-block grid is an
// error). Each half is one launch sequence (Note [launch errors]); the unsharded predict() and
// update() are the same launches in one sequence each, predict() finishing in the sum kernel.
struct DeviceSums {
  std::uintptr_t predict;  // 1 double
  std::uintptr_t update;   // 3 doubles per layer
};

class CudaOptimizer {
 public:
  // stream: a cudaStream_t as an integer (0: the legacy default stream). model_elems: 0 for an
  // unsharded optimizer, whose sizes are all > 0; a sharded rank's n of q_x, the whole model's
  // elements, and then a size may be 0 (an empty slice, Note [sharded device step]).
  CudaOptimizer(int device, DType dtype, std::vector<std::size_t> sizes, std::vector<LayerPointers> layers,
                const FilterConfig& config, const FilterState& initial, bool lazy_predict, std::uintptr_t stream,
                double model_elems);
  ~CudaOptimizer();
  CudaOptimizer(const CudaOptimizer&) = delete;
  CudaOptimizer& operator=(const CudaOptimizer&) = delete;

  // Launches follow Note [launch errors] (cuda/launch.h): a call that fails half-way leaves the
  // optimizer broken, and every later predict() or update() throws BrokenOptimizer.
  //
  // With lazy predict, whether the element pass runs depends on the last update's outcome, which
  // the host knows only once it was read (last_step) or set (restore).
  Moved predict();
  void update(const ScalarArg& loss, const ScalarArg& loss_sq, double lr);
  // The halves of predict() and update() (Note [sharded device step]); predict_partial() says
  // what predict() would.
  Moved predict_partial();
  void predict_finish();
  void update_partial();
  void update_finish(const ScalarArg& loss, const ScalarArg& loss_sq, double lr);
  DeviceSums device_sums() const;

  // The last update's outcome; waits for that update only. Fills skip_mask_out (one byte per
  // layer) when the step was applied.
  StepReport last_step(std::uint8_t* skip_mask_out);
  // Reads and writes (each waits for the stream).
  FilterSnapshot snapshot();
  void restore(const FilterSnapshot& snap);
  // KOALA-M per-layer state, host buffers of the layer's size and dtype.
  void read_layer_state(LayerStateKind kind, std::size_t layer, void* host_out);
  void write_layer_state(LayerStateKind kind, std::size_t layer, const void* host_in);
  // KOALA++'s per-layer scalars, num_layers() records.
  void read_layer_scalars(PPLayerState* out);
  void write_layer_scalars(const PPLayerState* in);
  Variant variant() const { return config_.variant; }

  std::size_t num_layers() const { return sizes_.size(); }
  std::size_t layer_size(std::size_t l) const { return sizes_[l]; }

 private:
  void update_pp(const ScalarArg& loss, const ScalarArg& loss_sq, double lr);  // cuda/plusplus.cuh
  struct Device;  // device allocations, defined in optimizer.cu
  template <class Sequence> Moved launch_predict(Sequence& seq, bool finish);  // finish: the scalar predict too
  template <class Sequence> void launch_update_sums(Sequence& seq);
  template <class Sequence> void launch_update_finish(Sequence& seq, const ScalarArg& loss, const ScalarArg& loss_sq, double lr);
  template <class Sequence> void launch_update_pp(Sequence& seq, const ScalarArg& loss, const ScalarArg& loss_sq, double lr);
  template <class Sequence> void launch_outcome_copy(Sequence& seq);
  char* layer_state(LayerStateKind kind, std::size_t layer);
  void* snapshot_on_device();

  int device_;
  DType dtype_;
  std::vector<std::size_t> sizes_;
  FilterConfig config_;
  bool lazy_predict_;
  enum class Pending { kNone, kSome, kUnknown } pending_ = Pending::kNone;  // the host's view of snapshot.pending
  bool broken_ = false;  // Note [launch errors]
  std::uintptr_t stream_;
  std::unique_ptr<Device> dev_;
};

}  // namespace cuda
}  // namespace koala
