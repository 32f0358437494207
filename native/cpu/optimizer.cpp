#include "cpu/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/step.h"
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
                           bool lazy_predict, double model_elems)
    : dtype_(dtype),
      sizes_(std::move(layer_sizes)),
      config_(config),
      scalars_{initial, kNoPendingPredict, 0},
      lazy_predict_(lazy_predict && config.variant == Variant::kMomentum),
      plan_(sizes_, kChunkElems),
      decay_pending_(sizes_.size(), 0),
      chunk_sums_(plan_.chunks().size()),
      chunk_diff_(plan_.chunks().size()),
      layer_sums_(sizes_.size()),
      gains_(sizes_.size()) {
  model_elems_ = model_elems > 0 ? model_elems : static_cast<double>(plan_.total_elems());
  const std::size_t useful = plan_.total_elems() / kMinElemsPerThread;
  if (threads > 1 && useful > 1) {
    threads_ = static_cast<int>(useful < static_cast<std::size_t>(threads) ? useful : threads);
    ThreadPool::shared().reserve(threads_ - 1);
  }
  bounds_ = plan_.partition(threads_ == 1 ? 1 : threads_ * ThreadPool::kPartsPerThread);
  if (config_.variant == Variant::kPlusPlus) {
    pp_layers_.assign(sizes_.size(), PPLayerState{0.0, 0.0, 0.0, false});
    chunk_pp_sums_.resize(plan_.chunks().size());
    layer_pp_sums_.resize(sizes_.size());
    pp_gains_.resize(sizes_.size());
  }
  if (config_.variant != Variant::kVanilla) {  // KOALA-M's velocity and average, KOALA++'s v and Hp
    const StateLayout layout(sizes_, elem_bytes(), kStateAlign);
    state_offsets_ = layout.offsets;
    velocity_ = alloc_zeroed(layout.total * elem_bytes());
    try {
      average_ = alloc_zeroed(layout.total * elem_bytes());
    } catch (...) {
      std::free(velocity_);  // the destructor does not run for a constructor that throws
      throw;
    }
  }
}

std::size_t CpuOptimizer::native_bytes() const {
  // Two state vectors per parameter for KOALA-M (velocity, average) and KOALA++ (v, Hp).
  const std::size_t state =
      config_.variant != Variant::kVanilla ? 2 * StateLayout(sizes_, elem_bytes(), kStateAlign).total * elem_bytes() : 0;
  const std::size_t plus_plus = chunk_pp_sums_.size() * sizeof(PPLayerSums) +
                                sizes_.size() * (sizeof(PPLayerState) + sizeof(PPLayerSums) + sizeof(PPLayerGain)) * (pp_layers_.empty() ? 0 : 1);
  return state + plus_plus + chunk_sums_.size() * (sizeof(LayerSums) + sizeof(double)) +
         sizes_.size() * (sizeof(LayerSums) + sizeof(LayerGain) + 2 * sizeof(std::size_t));
}

CpuOptimizer::~CpuOptimizer() {
  std::free(velocity_);
  std::free(average_);
}

void* CpuOptimizer::layer_state(LayerStateKind kind, std::size_t l) {
  const bool plus_plus = config_.variant == Variant::kPlusPlus;
  void* buffer = nullptr;
  if (kind == (plus_plus ? LayerStateKind::kProduct : LayerStateKind::kVelocity)) buffer = velocity_;
  if (kind == (plus_plus ? LayerStateKind::kDirection : LayerStateKind::kAverage)) buffer = average_;
  return buffer == nullptr ? nullptr : static_cast<char*>(buffer) + state_offsets_[l] * elem_bytes();
}

void CpuOptimizer::read_layer_state(LayerStateKind kind, std::size_t l, void* out) {
  const std::size_t n = sizes_[l];
  if (n == 0) return;  // an empty slice of a sharded layer: its arrays may have no data pointer
  std::memcpy(out, layer_state(kind, l), n * elem_bytes());
  if (kind == LayerStateKind::kVelocity && decay_pending_[l]) {  // Note [deferred decay]
    if (dtype_ == DType::kFloat32) {
      cpu::cpu_kernels().f32.momentum_decay(static_cast<float*>(out), n, config_.kappa);
    } else {
      cpu::cpu_kernels().f64.momentum_decay(static_cast<double*>(out), n, config_.kappa);
    }
  }
}

void CpuOptimizer::write_layer_state(LayerStateKind kind, std::size_t l, const void* in) {
  if (kind == LayerStateKind::kVelocity) decay_pending_[l] = 0;
  if (sizes_[l] > 0) std::memcpy(layer_state(kind, l), in, sizes_[l] * elem_bytes());
}

template <class Fn>
void CpuOptimizer::for_chunks(Fn&& fn) {
  const auto run_part = [&](int t) {
    for (std::size_t c = bounds_[t]; c < bounds_[t + 1]; ++c) fn(c, plan_.chunks()[c]);
  };
  ThreadPool::shared().run(threads_, static_cast<int>(bounds_.size()) - 1, run_part);
}

PartialPredict CpuOptimizer::predict_partial(const LayerBuffers* layers) {
  if (dtype_ == DType::kFloat32) return predict_partial_impl<float>(layers);
  return predict_partial_impl<double>(layers);
}

template <class T>
PartialPredict CpuOptimizer::predict_partial_impl(const LayerBuffers* layers) {
  if (scalars_.pending != kNoPendingPredict) {
    const double sum = scalars_.pending;  // the element-wise part was done by the last update
    scalars_.pending = kNoPendingPredict;
    return {sum, false};
  }
  if (config_.variant != Variant::kMomentum) return {0.0, false};
  const cpu::KernelTable<T>& kernels = cpu::cpu_kernels().table<T>();
  const bool later = decays_later();
  for_chunks([&](std::size_t c, const Chunk& ch) {
    T* x = static_cast<T*>(layers[ch.layer].param) + ch.begin;
    T* v = static_cast<T*>(layer_state(LayerStateKind::kVelocity, ch.layer)) + ch.begin;
    T* a = static_cast<T*>(layer_state(LayerStateKind::kAverage, ch.layer)) + ch.begin;
    if (!later) {
      chunk_diff_[c] = kernels.momentum_predict(x, v, a, ch.size, config_.kappa);
      return;
    }
    // Note [deferred decay]: the last predict's decay, if no update did it, then the move.
    if (decay_pending_[ch.layer]) kernels.momentum_decay(v, ch.size, config_.kappa);
    chunk_diff_[c] = kernels.momentum_move(x, v, a, ch.size);
  });
  if (later) std::fill(decay_pending_.begin(), decay_pending_.end(), 1);
  return {sum_chunk_diffs(), true};
}

void CpuOptimizer::predict_finish(double sum_sq_diff) {
  filter_predict(config_, scalars_.filter, sum_sq_diff, model_elems_);
}

double CpuOptimizer::sum_chunk_diffs() const {
  double sum = 0.0;
  for (double d : chunk_diff_) sum += d;
  return sum;
}

const LayerSums* CpuOptimizer::update_partial(const LayerBuffers* layers) {
  if (dtype_ == DType::kFloat32) {
    update_partial_impl<float>(layers);
  } else {
    update_partial_impl<double>(layers);
  }
  return layer_sums_.data();
}

template <class T>
void CpuOptimizer::update_partial_impl(const LayerBuffers* layers) {
  const cpu::KernelTable<T>& kernels = cpu::cpu_kernels().table<T>();
  const double wd = config_.weight_decay;
  for_chunks([&](std::size_t c, const Chunk& ch) {
    const T* g = static_cast<const T*>(layers[ch.layer].grad) + ch.begin;
    const T* x = static_cast<const T*>(layers[ch.layer].param) + ch.begin;
    chunk_sums_[c] = kernels.stats(g, x, ch.size, wd);
  });
  // Each layer's chunks added up in chunk order (Note [deterministic sums]).
  for (std::size_t l = 0; l < sizes_.size(); ++l) {
    LayerSums total{0.0, 0.0, 0.0};
    for (std::size_t c = plan_.first_chunk(l); c < plan_.first_chunk(l + 1); ++c) {
      total.hh += chunk_sums_[c].hh;
      total.xx += chunk_sums_[c].xx;
      total.gg += chunk_sums_[c].gg;
    }
    layer_sums_[l] = total;
  }
}

StepReport CpuOptimizer::update_finish(const LayerBuffers* layers, const LayerSums* sums, double loss, double loss_sq,
                                       double lr, std::uint8_t* skip_mask) {
  if (dtype_ == DType::kFloat32) return update_finish_impl<float>(layers, sums, loss, loss_sq, lr, skip_mask);
  return update_finish_impl<double>(layers, sums, loss, loss_sq, lr, skip_mask);
}

template <class T>
StepReport CpuOptimizer::update_finish_impl(const LayerBuffers* layers, const LayerSums* sums, double loss,
                                            double loss_sq, double lr, std::uint8_t* skip_mask) {
  const cpu::KernelTable<T>& kernels = cpu::cpu_kernels().table<T>();
  const double wd = config_.weight_decay;
  const StepReport report =
      decide_step(config_, scalars_, sums, sizes_.size(), loss, loss_sq, lr, dtype_, gains_.data(), skip_mask);
  if (report.status != StepStatus::kApplied) return report;

  for_chunks([&](std::size_t c, const Chunk& ch) {
    const LayerGain& k = gains_[ch.layer];
    const T* g = static_cast<const T*>(layers[ch.layer].grad) + ch.begin;
    T* x = static_cast<T*>(layers[ch.layer].param) + ch.begin;
    if (config_.variant == Variant::kVanilla) {
      if (!k.skip) kernels.vanilla_update(g, x, ch.size, direction_decay(config_), k.k1);
      return;
    }
    T* v = static_cast<T*>(layer_state(LayerStateKind::kVelocity, ch.layer)) + ch.begin;
    T* a = static_cast<T*>(layer_state(LayerStateKind::kAverage, ch.layer)) + ch.begin;
    if (!lazy_predict_) {
      if (!decay_pending_[ch.layer]) {
        if (!k.skip) kernels.momentum_update(g, x, v, a, ch.size, wd, k.k1, k.k2);
      } else if (k.skip) {
        kernels.momentum_decay(v, ch.size, config_.kappa);  // Note [deferred decay]
      } else {
        kernels.momentum_decay_update(g, x, v, a, ch.size, wd, k.k1, k.k2, config_.kappa);
      }
    } else if (k.skip) {
      chunk_diff_[c] = kernels.momentum_predict(x, v, a, ch.size, config_.kappa);
    } else {
      chunk_diff_[c] = kernels.momentum_update_predict(g, x, v, a, ch.size, wd, k.k1, k.k2, config_.kappa);
    }
  });
  if (lazy_predict_) scalars_.pending = sum_chunk_diffs();
  std::fill(decay_pending_.begin(), decay_pending_.end(), 0);
  return report;
}

StepReport CpuOptimizer::update_plus_plus(const LayerBuffers* layers, double loss, double loss_sq, double lr,
                                          std::uint8_t* skip_mask) {
  if (dtype_ == DType::kFloat32) return update_pp<float>(layers, loss, loss_sq, lr, skip_mask);
  return update_pp<double>(layers, loss, loss_sq, lr, skip_mask);
}

// KOALA++: the dots pass, decide_step_pp, the update pass (Note [KOALA++ passes], core/step_pp.h).
template <class T>
StepReport CpuOptimizer::update_pp(const LayerBuffers* layers, double loss, double loss_sq, double lr,
                                   std::uint8_t* skip_mask) {
  const cpu::KernelTable<T>& kernels = cpu::cpu_kernels().table<T>();
  const double wd = config_.weight_decay;
  const auto state = [&](LayerStateKind kind, const Chunk& ch) {
    return static_cast<T*>(layer_state(kind, ch.layer)) + ch.begin;
  };
  for_chunks([&](std::size_t c, const Chunk& ch) {
    const T* g = static_cast<const T*>(layers[ch.layer].grad) + ch.begin;
    const T* x = static_cast<const T*>(layers[ch.layer].param) + ch.begin;
    chunk_pp_sums_[c] =
        kernels.pp_dots(g, x, state(LayerStateKind::kProduct, ch), state(LayerStateKind::kDirection, ch), ch.size, wd);
  });
  // Each layer's chunks added up in chunk order (Note [deterministic sums]), then the decision.
  for (std::size_t l = 0; l < sizes_.size(); ++l) {
    PPLayerSums total{0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    for (std::size_t c = plan_.first_chunk(l); c < plan_.first_chunk(l + 1); ++c) {
      const PPLayerSums& p = chunk_pp_sums_[c];
      total = {total.gg + p.gg, total.xx + p.xx, total.hh + p.hh, total.a + p.a, total.b + p.b, total.vv + p.vv};
    }
    layer_pp_sums_[l] = total;
  }
  const StepReport report = decide_step_pp(config_, scalars_, layer_pp_sums_.data(), pp_layers_.data(), sizes_.size(), loss,
                                           loss_sq, lr, dtype_, pp_gains_.data(), skip_mask);
  if (report.status != StepStatus::kApplied) return report;

  const double sigma = scalars_.filter.sigma;
  for_chunks([&](std::size_t, const Chunk& ch) {
    const PPLayerGain& k = pp_gains_[ch.layer];
    if (k.skip) return;
    kernels.pp_update(static_cast<const T*>(layers[ch.layer].grad) + ch.begin, static_cast<T*>(layers[ch.layer].param) + ch.begin,
                      state(LayerStateKind::kProduct, ch), state(LayerStateKind::kDirection, ch), ch.size, wd, k.first, sigma,
                      config_.q, k.cv, k.lambda, k.rk, k.k);
  });
  return report;
}

}  // namespace koala
