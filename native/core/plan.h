// The chunk plan: the fixed mapping of the layer list to work units, built once per optimizer.
//
// Note [deterministic sums]
// Every layer is cut into chunks of at most kChunkElems elements; a chunk never crosses a layer.
// Each pass writes one partial sum per chunk, summed inside the chunk in a fixed order, and a
// layer's total is the sum of its chunks' partials in chunk order. Which thread ran which chunk
// does not enter the result, so any thread count gives bitwise the same numbers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace koala {

// 16384 elements: 64 KiB of float32 per stream, large enough to amortize the per-chunk work and
// small enough that a 2-thread split of a large layer stays balanced.
constexpr std::size_t kChunkElems = std::size_t{1} << 14;

struct Chunk {
  std::uint32_t layer;
  std::size_t begin;  // element offset inside the layer
  std::size_t size;
};

class ChunkPlan {
 public:
  ChunkPlan(const std::vector<std::size_t>& layer_sizes, std::size_t chunk_elems);

  const std::vector<Chunk>& chunks() const { return chunks_; }
  // Chunks of layer l are [first_chunk(l), first_chunk(l + 1)).
  std::size_t first_chunk(std::size_t layer) const { return layer_first_chunk_[layer]; }
  std::size_t num_layers() const { return layer_first_chunk_.size() - 1; }
  std::size_t total_elems() const { return total_elems_; }

  // Splits the chunk list into `parts` contiguous ranges of about equal element counts:
  // part p runs chunks [bounds[p], bounds[p + 1]).
  std::vector<std::size_t> partition(int parts) const;

 private:
  std::vector<Chunk> chunks_;
  std::vector<std::size_t> layer_first_chunk_;
  std::size_t total_elems_ = 0;
};

// Where each layer's per-layer state (KOALA-M's velocities and averages) starts in one buffer per
// kind: layer l at offsets[l] elements, each layer on an `align_bytes` boundary so that its loops
// begin aligned; `total` elements in all. One layout for both backends (the CPU aligns to cache
// lines, CUDA to 256-byte segments).
struct StateLayout {
  StateLayout(const std::vector<std::size_t>& layer_sizes, std::size_t elem_bytes, std::size_t align_bytes);
  std::vector<std::size_t> offsets;
  std::size_t total = 0;
};

}  // namespace koala
