// CUDA-side helpers shared by the optimizer and the runtime wrappers (optimizer.cu, runtime.cu):
// error checks, the device guard, the runtime's error state as a LaunchSequence ErrorSource.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/runtime.h"

namespace koala {
namespace cuda {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// The CUDA runtime's per-thread error state (Note [launch errors], cuda/launch.h).
struct RuntimeErrors {
  int take() { return static_cast<int>(cudaGetLastError()); }
  std::string message(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }
};

// Note [device guard]
// Every call selects its optimizer's device for its duration and gives the caller's back after.
// It gives it back only when it changed it, and only to a device whose primary context is active:
// cudaSetDevice creates a context (hundreds of MB) on a device that has none, and a thread that
// never chose one reads device 0, so a user who works only on device 1 would find a context on
// device 0. A device ordinal that does not exist is InvalidDevice, and the failed selection leaves
// no error behind (Note [launch errors]).
class DeviceGuard {
 public:
  // no_throw: for destructors, which must not throw (a failure then leaves the device as it is).
  explicit DeviceGuard(int device, bool no_throw = false);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

}  // namespace cuda
}  // namespace koala
