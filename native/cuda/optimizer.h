// The CUDA backend's host-side interface: plain C++ (no CUDA types), so that the Node-API binding
// compiles with the host compiler. The kernels and this class's definition are in optimizer.cu.
//
// A step is a few launches on the caller's stream and no synchronization (Note [device step]).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "koala/filter.h"
#include "koala/protocol.h"
#include "koala/types.h"

namespace koala {
namespace cuda {

// Note [device step]
// The layer list is fixed, so the chunk plan (core/plan.h, one thread block per chunk) and the
// per-layer pointers are uploaded once, at construction. predict(): an element kernel writes one
// partial sum of |a - x|^2 per chunk, then a one-block filter kernel adds them up in a fixed order
// and advances q_x and P. update(): a stats kernel writes per-chunk partial sums; a layer-sums
// kernel (one block per layer) adds each layer's partials in a fixed order; a one-block filter
// kernel checks for NaN and Inf (the loss included, which may be read from device memory),
// updates R and computes every layer's gains and the new P; an update kernel reads those gains
// from device memory (with lazy predict, a last one-block kernel keeps the pending sum). Every
// reduction is a fixed tree, so the results do not depend on scheduling. Everything scalar lives
// in one DeviceScalars record on the device; the host reads it only when asked (state, a step's
// info).

// A scalar argument: a value from the host, or a float32/float64 value in device memory.
struct ScalarArg {
  const void* device_ptr;  // null: use `value`
  int dtype;               // 0 float32, 1 float64 (for device_ptr)
  double value;
};

struct LayerPointers {
  void* param;
  const void* grad;
};

// What predict() did to the parameters, as far as the host knows without a synchronization.
enum class Moved : int { kNo = 0, kYes = 1, kUnknown = 2 };

class CudaOptimizer {
 public:
  CudaOptimizer(int device, DType dtype, std::vector<std::size_t> sizes, std::vector<LayerPointers> layers,
                const FilterConfig& config, const FilterState& initial, bool lazy_predict, std::uintptr_t stream);
  ~CudaOptimizer();
  CudaOptimizer(const CudaOptimizer&) = delete;
  CudaOptimizer& operator=(const CudaOptimizer&) = delete;

  // With lazy predict, whether the element pass runs depends on the last update's outcome, which
  // the host knows only once it was read (last_step) or set (restore).
  Moved predict();
  void update(const ScalarArg& loss, const ScalarArg& loss_sq, double lr);

  // Reads (each synchronizes with the stream).
  StepReport last_step(std::uint8_t* skip_mask_out);
  FilterSnapshot snapshot();
  void restore(const FilterSnapshot& snap);
  // Per-layer state (LayerStateKind): KOALA-M's velocity 0 and average 1, KOALA++'s product 2 and
  // direction 3 (the binding checks the kind against the variant); host buffers of the layer's size.
  void read_layer_state(int kind, std::size_t layer, void* host_out);
  void write_layer_state(int kind, std::size_t layer, const void* host_in);
  // KOALA++'s per-layer scalars, num_layers() records.
  void read_layer_scalars(PPLayerState* out);
  void write_layer_scalars(const PPLayerState* in);
  Variant variant() const { return config_.variant; }

  std::size_t num_layers() const { return sizes_.size(); }
  std::size_t layer_size(std::size_t l) const { return sizes_[l]; }

 private:
  void update_pp(const ScalarArg& loss, const ScalarArg& loss_sq, double lr);  // cuda/plusplus.cuh
  struct Device;  // device allocations, defined in optimizer.cu
  int device_;
  DType dtype_;
  std::vector<std::size_t> sizes_;
  FilterConfig config_;
  bool lazy_predict_;
  enum class Pending { kNone, kSome, kUnknown } pending_ = Pending::kNone;  // the host's view of snapshot.pending
  std::uintptr_t stream_;
  std::unique_ptr<Device> dev_;
};

// Whether a usable device is present: the number of devices, or an explanation.
struct Probe {
  int devices;
  std::string error;  // empty when devices > 0
};
Probe probe();

// Checks that [ptr, ptr + bytes) is device (or managed) memory of `device`; empty when it is, else why not.
std::string check_device_pointer(const void* ptr, std::size_t bytes, std::size_t alignment, int device);

// Thin wrappers used by tests, benchmarks and users without another CUDA library at hand. Each
// throws std::runtime_error with CUDA's message on failure.
std::uintptr_t device_malloc(std::size_t bytes, int device);
void device_free(std::uintptr_t ptr, int device);
void copy_to_device(std::uintptr_t dst, const void* src, std::size_t bytes, int device);
void copy_to_host(void* dst, std::uintptr_t src, std::size_t bytes, int device);
void device_synchronize(int device);

}  // namespace cuda
}  // namespace koala
