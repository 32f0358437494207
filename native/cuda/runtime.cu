// The CUDA runtime wrappers (cuda/runtime.h) and the device guard (Note [device guard], cuda/runtime.cuh).
#include "cuda/runtime.cuh"

#include <cuda.h>  // the driver API's types only: its functions are reached through the runtime's entry points

namespace koala {
namespace cuda {

namespace {

// Whether `device` has an active primary context, asked of the driver without creating one. True
// when the driver cannot be asked (then restoring is the safe default).
bool has_active_context(int device) {
  using DeviceGet = CUresult (*)(CUdevice*, int);
  using PrimaryCtxGetState = CUresult (*)(CUdevice, unsigned int*, int*);
  void* get = nullptr;
  void* state = nullptr;
  cudaDriverEntryPointQueryResult found;
  if (cudaGetDriverEntryPointByVersion("cuDeviceGet", &get, 12000, cudaEnableDefault, &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess ||
      cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxGetState", &state, 12000, cudaEnableDefault, &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess) {
    cudaGetLastError();
    return true;
  }
  CUdevice handle;
  unsigned int flags = 0;
  int active = 1;
  if (reinterpret_cast<DeviceGet>(get)(&handle, device) != CUDA_SUCCESS) return true;
  if (reinterpret_cast<PrimaryCtxGetState>(state)(handle, &flags, &active) != CUDA_SUCCESS) return true;
  return active != 0;
}

std::string version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

}  // namespace

DeviceGuard::DeviceGuard(int device, bool no_throw) {
  const auto fail = [&](const std::string& why, bool invalid) {
    cudaGetLastError();  // leave no error behind
    if (no_throw) return;
    if (invalid) throw InvalidDevice(why);
    throw std::runtime_error(why);
  };
  const cudaError_t got = cudaGetDevice(&previous_);
  if (got != cudaSuccess) {
    fail(std::string("cudaGetDevice: ") + cudaGetErrorString(got), false);
    return;
  }
  if (previous_ == device) return;
  int count = 0;
  const cudaError_t counted = cudaGetDeviceCount(&count);
  if (counted != cudaSuccess) {
    fail(std::string("cudaGetDeviceCount: ") + cudaGetErrorString(counted), false);
    return;
  }
  if (device < 0 || device >= count) {
    fail("cuda:" + std::to_string(device) + " does not exist (" + std::to_string(count) + " device" + (count == 1 ? "" : "s") + " visible)", true);
    return;
  }
  const cudaError_t set = cudaSetDevice(device);
  if (set != cudaSuccess) {
    fail(std::string("cudaSetDevice: ") + cudaGetErrorString(set), false);
    return;
  }
  switched_ = true;
}

DeviceGuard::~DeviceGuard() {
  if (switched_ && has_active_context(previous_)) cudaSetDevice(previous_);
}

Probe probe() {
  int driver = 0, runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
    cudaGetLastError();
    return {0, "no NVIDIA driver is loaded (no NVIDIA GPU here, or its driver is not installed)"};
  }
  if (driver < runtime) {
    return {0, "the NVIDIA driver is too old: it supports CUDA " + version_text(driver) + ", this addon was built with CUDA " +
                   version_text(runtime) + " (update the driver)"};
  }
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return {0, std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err)};
  }
  if (count == 0) return {0, "no CUDA device is visible (CUDA_VISIBLE_DEVICES?)"};
  return {count, ""};
}

std::string check_device_pointer(const void* ptr, std::size_t bytes, std::size_t alignment, int device) {
  if (reinterpret_cast<std::uintptr_t>(ptr) % alignment != 0) return "is not aligned to its element size";
  DeviceGuard guard(device);  // queries on `device` create no context on another one
  cudaPointerAttributes attr;
  const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
  if (err != cudaSuccess) {
    cudaGetLastError();
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

void copy_to_device(std::uintptr_t dst, const void* src, std::size_t bytes, int device, std::uintptr_t stream) {
  DeviceGuard guard(device);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  check(cudaMemcpyAsync(reinterpret_cast<void*>(dst), src, bytes, cudaMemcpyHostToDevice, s), "copy to device");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
}

void copy_to_host(void* dst, std::uintptr_t src, std::size_t bytes, int device, std::uintptr_t stream) {
  DeviceGuard guard(device);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  check(cudaMemcpyAsync(dst, reinterpret_cast<const void*>(src), bytes, cudaMemcpyDeviceToHost, s), "copy to host");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");
}

void device_synchronize(int device) {
  DeviceGuard guard(device);
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

}  // namespace cuda
}  // namespace koala
