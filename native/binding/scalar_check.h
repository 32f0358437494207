// The check of a loss the CUDA backend reads from device memory, with its cache. Plain C++: the
// CUDA binding passes the CUDA query in, and the development addon drives it with a scripted one
// (test/cuda/launch.test.ts), so that the rule is tested without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace koala {
namespace binding {

// Note [device scalar check]
// A loss in device memory is read by a kernel: a bad pointer would fault and poison the whole CUDA
// context, so it is checked like a layer's. The query (cudaPointerGetAttributes) is not free and
// trainers pass the same address every step, so a passed check is remembered per slot (loss,
// lossSq), keyed by the address AND the element size: the same address first passed as float32
// may be passed next as float64 at an address that is 4 mod 8 (a misaligned 8-byte load kills the
// context), or with 8 bytes running past the allocation. The alignment is checked on every call,
// before the cache.
class ScalarCheckCache {
 public:
  static constexpr int kSlots = 2;

  // Why the element at `ptr` of `elem_bytes` cannot be read, or "" when it can; calls query() (the
  // device check, returning the same) only for a (slot, address, size) not passed before.
  template <class Query>
  std::string check(int slot, std::uintptr_t ptr, std::size_t elem_bytes, Query&& query) {
    if (ptr % elem_bytes != 0) return "is not aligned to its element size";
    Passed& p = passed_[slot];
    if (p.ptr == ptr && p.elem_bytes == elem_bytes) return "";
    std::string why = query();
    if (why.empty()) p = {ptr, elem_bytes};
    return why;
  }

 private:
  struct Passed {
    std::uintptr_t ptr = 0;
    std::size_t elem_bytes = 0;
  };
  Passed passed_[kSlots];
};

}  // namespace binding
}  // namespace koala
