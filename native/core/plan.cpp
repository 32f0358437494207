#include "plan.h"

namespace koala {

ChunkPlan::ChunkPlan(const std::vector<std::size_t>& layer_sizes, std::size_t chunk_elems) {
  layer_first_chunk_.reserve(layer_sizes.size() + 1);
  for (std::size_t l = 0; l < layer_sizes.size(); ++l) {
    layer_first_chunk_.push_back(chunks_.size());
    for (std::size_t begin = 0; begin < layer_sizes[l]; begin += chunk_elems) {
      const std::size_t rest = layer_sizes[l] - begin;
      chunks_.push_back({static_cast<std::uint32_t>(l), begin, rest < chunk_elems ? rest : chunk_elems});
    }
    total_elems_ += layer_sizes[l];
  }
  layer_first_chunk_.push_back(chunks_.size());
}

std::vector<std::size_t> ChunkPlan::partition(int parts) const {
  std::vector<std::size_t> bounds(static_cast<std::size_t>(parts) + 1, chunks_.size());
  bounds[0] = 0;
  std::size_t c = 0, done = 0;
  for (int p = 1; p < parts; ++p) {
    // Part p starts at the first chunk whose start lies at or past p/parts of all elements.
    const std::size_t target = total_elems_ * static_cast<std::size_t>(p) / static_cast<std::size_t>(parts);
    while (c < chunks_.size() && done < target) done += chunks_[c++].size;
    bounds[p] = c;
  }
  return bounds;
}

StateLayout::StateLayout(const std::vector<std::size_t>& layer_sizes, std::size_t elem_bytes, std::size_t align_bytes) {
  const std::size_t per_line = align_bytes / elem_bytes;
  for (std::size_t s : layer_sizes) {
    offsets.push_back(total);
    total += (s + per_line - 1) / per_line * per_line;
  }
}

}  // namespace koala
