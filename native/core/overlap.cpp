#include "core/overlap.h"

#include <algorithm>

namespace koala {

std::string find_overlap(std::vector<MemoryRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](const MemoryRange& a, const MemoryRange& b) { return a.begin < b.begin; });
  const auto name = [](const MemoryRange& r) {
    return std::string(r.is_grad ? "grad" : "param") + " of layer " + std::to_string(r.layer);
  };
  for (std::size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end) return name(ranges[i - 1]) + " and " + name(ranges[i]) + " share memory";
  }
  return "";
}

}  // namespace koala
