// Finds two memory ranges that share bytes: the aliasing check of both bindings (host arrays and
// device pointers), done on addresses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace koala {

struct MemoryRange {
  std::uintptr_t begin, end;  // [begin, end)
  std::size_t layer;
  bool is_grad;
};

// Empty when no two ranges overlap; else a message naming two that do.
std::string find_overlap(std::vector<MemoryRange> ranges);

}  // namespace koala
