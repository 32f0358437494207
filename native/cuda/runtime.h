// The CUDA runtime wrappers of the CUDA addon: what a device is there, pointer checks, and plain
// device memory for tests, benchmarks and users without another CUDA library at hand. Plain C++
// (no CUDA types), so that the Node-API binding compiles with the host compiler; defined in
// runtime.cu. Each call throws std::runtime_error with CUDA's message on failure, InvalidDevice
// for a device ordinal that does not exist.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace koala {
namespace cuda {

class InvalidDevice : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Whether a usable device is present: the number of devices, or why none is usable. No driver
// (no GPU, or the NVIDIA driver is not installed) and a driver older than the runtime the addon was
// built with are told apart.
struct Probe {
  int devices;
  std::string error;  // empty when devices > 0
};
Probe probe();

// Checks that [ptr, ptr + bytes) is device (or managed) memory of `device`, aligned to
// `alignment`; empty when it is, else why not.
std::string check_device_pointer(const void* ptr, std::size_t bytes, std::size_t alignment, int device);

// stream: a cudaStream_t as an integer (0: the legacy default stream). Copies are ordered after
// the work queued on that stream and wait for their own end.
std::uintptr_t device_malloc(std::size_t bytes, int device);
void device_free(std::uintptr_t ptr, int device);
void copy_to_device(std::uintptr_t dst, const void* src, std::size_t bytes, int device, std::uintptr_t stream);
void copy_to_host(void* dst, std::uintptr_t src, std::size_t bytes, int device, std::uintptr_t stream);
void device_synchronize(int device);

}  // namespace cuda
}  // namespace koala
