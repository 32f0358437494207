#include "cpu/optimizer.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "cpu/kernels.h"

namespace koala {

namespace {

constexpr std::size_t kStateAlign = 64;
// Below this many elements per thread, waking the workers costs more than it saves. Measured with
// the shared pool (Note [fast wake-up], cpu/pool.h): a helper that is still spinning joins at once
// (a 2-thread triad of 100k elements, back to back: 7.2 us against 13.1 on one thread), but one
// that sleeps takes 15 to 20 us to wake, and on a busy machine often only by taking the caller's
// core; 65,536 float32 elements are 13 to 30 us of a KOALA-M pass on one thread, so the cap stays.
constexpr std::size_t kMinElemsPerThread = std::size_t{1} << 16;

void* alloc_zeroed(std::size_t bytes) {
  const std::size_t rounded = (bytes + kStateAlign - 1) / kStateAlign * kStateAlign;
  void* p = std::aligned_alloc(kStateAlign, rounded == 0 ? kStateAlign : rounded);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return p;
}

}  // namespace

CpuOptimizer::CpuOptimizer(DType dtype, std::vector<std::size_t> layer_sizes,
                           const FilterConfig& config, const FilterState& initial, int threads,
                           bool lazy_predict)
    : dtype_(dtype),
      sizes_(std::move(layer_sizes)),
      config_(config),
      state_(initial),
      lazy_predict_(lazy_predict && config.variant == Variant::kMomentum),
      plan_(sizes_, kChunkElems),
      chunk_sums_(plan_.chunks().size()),
      chunk_diff_(plan_.chunks().size()),
      gains_(sizes_.size()) {
  const std::size_t useful = plan_.total_elems() / kMinElemsPerThread;
  if (threads > 1 && useful > 1) {
    threads_ = static_cast<int>(useful < static_cast<std::size_t>(threads) ? useful : threads);
    ThreadPool::shared().reserve(threads_ - 1);
  }
  bounds_ = plan_.partition(threads_ == 1 ? 1 : threads_ * ThreadPool::kPartsPerThread);
  if (config_.variant == Variant::kMomentum) {
    // Each layer starts on a 64-byte boundary so that its loops begin aligned.
    const std::size_t per_line = kStateAlign / elem_bytes();
    std::size_t offset = 0;
    for (std::size_t s : sizes_) {
      state_offsets_.push_back(offset);
      offset += (s + per_line - 1) / per_line * per_line;
    }
    velocity_ = alloc_zeroed(offset * elem_bytes());
    average_ = alloc_zeroed(offset * elem_bytes());
  }
}

CpuOptimizer::~CpuOptimizer() {
  std::free(velocity_);
  std::free(average_);
}

void* CpuOptimizer::layer_state(LayerStateKind kind, std::size_t l) {
  char* base = static_cast<char*>(kind == LayerStateKind::kVelocity ? velocity_ : average_);
  return base + state_offsets_[l] * elem_bytes();
}

template <class Fn>
void CpuOptimizer::for_chunks(Fn&& fn) {
  const auto run_part = [&](int t) {
    for (std::size_t c = bounds_[t]; c < bounds_[t + 1]; ++c) fn(c, plan_.chunks()[c]);
  };
  ThreadPool::shared().run(threads_, static_cast<int>(bounds_.size()) - 1, run_part);
}

void CpuOptimizer::predict(const LayerBuffers* layers) {
  if (dtype_ == DType::kFloat32) {
    predict_impl<float>(layers);
  } else {
    predict_impl<double>(layers);
  }
}

template <class T>
void CpuOptimizer::predict_impl(const LayerBuffers* layers) {
  const cpu::KernelTable<T>& kernels = cpu::cpu_kernels().table<T>();
  double sum_sq_diff = 0.0;
  if (pending_sum_ != kNoPendingPredict) {
    sum_sq_diff = pending_sum_;  // the element-wise part was done by the last update
    pending_sum_ = kNoPendingPredict;
  } else if (config_.variant == Variant::kMomentum) {
    for_chunks([&](std::size_t c, const Chunk& ch) {
      T* x = static_cast<T*>(layers[ch.layer].param) + ch.begin;
      T* v = static_cast<T*>(layer_state(LayerStateKind::kVelocity, ch.layer)) + ch.begin;
      T* a = static_cast<T*>(layer_state(LayerStateKind::kAverage, ch.layer)) + ch.begin;
      chunk_diff_[c] = kernels.momentum_predict(x, v, a, ch.size, config_.kappa);
    });
    sum_sq_diff = sum_chunk_diffs();
  }
  filter_predict(config_, state_, sum_sq_diff, static_cast<double>(plan_.total_elems()));
}

double CpuOptimizer::sum_chunk_diffs() const {
  double sum = 0.0;
  for (double d : chunk_diff_) sum += d;
  return sum;
}

StepReport CpuOptimizer::update(const LayerBuffers* layers, double loss, double loss_sq, double lr,
                                std::uint8_t* skip_mask) {
  if (dtype_ == DType::kFloat32) return update_impl<float>(layers, loss, loss_sq, lr, skip_mask);
  return update_impl<double>(layers, loss, loss_sq, lr, skip_mask);
}

template <class T>
StepReport CpuOptimizer::update_impl(const LayerBuffers* layers, double loss, double loss_sq,
                                     double lr, std::uint8_t* skip_mask) {
  const cpu::KernelTable<T>& kernels = cpu::cpu_kernels().table<T>();
  const double wd = config_.weight_decay;
  for_chunks([&](std::size_t c, const Chunk& ch) {
    const T* g = static_cast<const T*>(layers[ch.layer].grad) + ch.begin;
    const T* x = static_cast<const T*>(layers[ch.layer].param) + ch.begin;
    chunk_sums_[c] = kernels.stats(g, x, ch.size, wd);
  });

  // Reduce each layer's chunks in order (Note [deterministic sums]), then guard: a non-finite
  // sum means NaN or Inf in the data, and the whole step is refused before anything changes.
  StepReport report{StepStatus::kApplied, 0, 0.0};
  std::vector<LayerSums>& sums = chunk_sums_;  // layer totals are written over the first chunk's slot
  for (std::size_t l = 0; l < sizes_.size(); ++l) {
    LayerSums total{0.0, 0.0, 0.0};
    for (std::size_t c = plan_.first_chunk(l); c < plan_.first_chunk(l + 1); ++c) {
      total.hh += sums[c].hh;
      total.xx += sums[c].xx;
      total.gg += sums[c].gg;
    }
    if (!std::isfinite(total.xx)) return {StepStatus::kNonFiniteParameter, 0, 0.0};
    if (!std::isfinite(total.gg) || !std::isfinite(total.hh)) {
      report.status = StepStatus::kNonFiniteGradient;
    }
    sums[plan_.first_chunk(l)] = total;
  }
  if (report.status != StepStatus::kApplied) return report;

  filter_update_r(config_, state_, loss_sq);
  bool any = false;
  for (std::size_t l = 0; l < sizes_.size(); ++l) {
    gains_[l] = filter_layer_gain(config_, state_, sums[plan_.first_chunk(l)], loss, lr);
    skip_mask[l] = gains_[l].skip ? 1 : 0;
    if (gains_[l].skip) {
      ++report.skipped_layers;
    } else if (!any || gains_[l].m > report.max_gain) {
      report.max_gain = gains_[l].m;
      any = true;
    }
  }

  for_chunks([&](std::size_t c, const Chunk& ch) {
    const LayerGain& k = gains_[ch.layer];
    const T* g = static_cast<const T*>(layers[ch.layer].grad) + ch.begin;
    T* x = static_cast<T*>(layers[ch.layer].param) + ch.begin;
    if (config_.variant == Variant::kVanilla) {
      if (!k.skip) kernels.vanilla_update(g, x, ch.size, k.k1);
      return;
    }
    T* v = static_cast<T*>(layer_state(LayerStateKind::kVelocity, ch.layer)) + ch.begin;
    T* a = static_cast<T*>(layer_state(LayerStateKind::kAverage, ch.layer)) + ch.begin;
    if (!lazy_predict_) {
      if (!k.skip) kernels.momentum_update(g, x, v, a, ch.size, wd, k.k1, k.k2);
    } else if (k.skip) {
      chunk_diff_[c] = kernels.momentum_predict(x, v, a, ch.size, config_.kappa);
    } else {
      chunk_diff_[c] = kernels.momentum_update_predict(g, x, v, a, ch.size, wd, k.k1, k.k2, config_.kappa);
    }
  });
  if (lazy_predict_) pending_sum_ = sum_chunk_diffs();
  if (any) filter_finish(config_, state_, report.max_gain);
  applied_steps_ += 1;
  return report;
}

}  // namespace koala
