// N-API binding of the CPU backend. Thin on purpose: lib/ validates and normalizes everything;
// this file converts arguments, re-checks cheap invariants (dtype, length, attachment, aliasing
// by address) and maps failures to errors with a stable `code`, thrown before any work is done.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "binding/config.h"
#include "core/overlap.h"
#include "cpu/optimizer.h"
#include "cpu/bench_kernels.h"
#include "cpu/kernels.h"

namespace {

using koala::CpuOptimizer;
using koala::DType;
using koala::LayerBuffers;
using koala::LayerStateKind;
using koala::binding::number_field;
using koala::binding::throw_coded;

struct TypedView {
  void* data;
  napi_typedarray_type type;
  std::size_t length;
};

TypedView typed_view(Napi::Env env, napi_value value) {
  TypedView out{nullptr, napi_uint8_array, 0};
  napi_value buffer;
  std::size_t offset;
  if (napi_get_typedarray_info(env, value, &out.type, &out.length, &out.data, &buffer, &offset) != napi_ok) {
    throw_coded(env, "ERR_KOALA_INVALID_ARRAY", "expected a typed array");
  }
  return out;
}

class NativeOptimizer : public Napi::ObjectWrap<NativeOptimizer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeOptimizer",
                       {InstanceMethod<&NativeOptimizer::Predict>("predict"),
                        InstanceMethod<&NativeOptimizer::Update>("update"),
                        InstanceMethod<&NativeOptimizer::GetFilter>("getFilter"),
                        InstanceMethod<&NativeOptimizer::SetFilter>("setFilter"),
                        InstanceMethod<&NativeOptimizer::ReadLayerState>("readLayerState"),
                        InstanceMethod<&NativeOptimizer::WriteLayerState>("writeLayerState"),
                        InstanceMethod<&NativeOptimizer::ThreadsInUse>("threadsInUse"),
                        InstanceMethod<&NativeOptimizer::Dispose>("dispose")});
  }

  // new NativeOptimizer(config, params: TypedArray[], grads: TypedArray[], skipMask: Uint8Array)
  explicit NativeOptimizer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeOptimizer>(info) {
    Napi::Env env = info.Env();
    if (info.Length() != 4 || !info[0].IsObject() || !info[1].IsArray() || !info[2].IsArray() ||
        !info[3].IsTypedArray()) {
      throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "NativeOptimizer(config, params[], grads[], skipMask)");
    }
    const Napi::Object cfg = info[0].As<Napi::Object>();
    const Napi::Array params = info[1].As<Napi::Array>();
    const Napi::Array grads = info[2].As<Napi::Array>();
    const std::size_t count = params.Length();
    if (count == 0 || grads.Length() != count) {
      throw_coded(env, "ERR_KOALA_INVALID_LAYERS", "params and grads must be non-empty and of equal count");
    }
    dtype_ = koala::binding::dtype_field(cfg);
    std::vector<std::size_t> sizes;
    for (std::size_t l = 0; l < count; ++l) {
      const TypedView p = typed_view(env, params.Get(l));
      sizes.push_back(p.length);
      params_.push_back(Napi::Persistent(params.Get(l).As<Napi::Object>()));
      grads_.push_back(Napi::Persistent(grads.Get(l).As<Napi::Object>()));
    }
    sizes_ = sizes;
    buffers_.resize(count);
    resolve(env);  // dtype and length of every array
    check_aliasing(env);
    mask_ = Napi::Persistent(info[3].As<Napi::Object>());
    if (typed_view(env, mask_.Value()).length != count) {
      throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "skipMask must have one byte per layer");
    }

    const int threads = static_cast<int>(number_field(cfg, "threads"));
    opt_ = std::make_unique<CpuOptimizer>(dtype_, std::move(sizes), koala::binding::filter_config(cfg), koala::binding::initial_state(cfg),
                                          threads < 1 ? 1 : threads, koala::binding::lazy_predict(cfg));
  }

 private:
  CpuOptimizer& live(Napi::Env env) {
    if (!opt_) throw_coded(env, "ERR_KOALA_DISPOSED", "the optimizer was disposed");
    return *opt_;
  }

  // Fetches every layer's data pointers anew (a buffer may have been detached since the last
  // call) and checks dtype and length against the layer table.
  void resolve(Napi::Env env) {
    const napi_typedarray_type want = dtype_ == DType::kFloat32 ? napi_float32_array : napi_float64_array;
    for (std::size_t l = 0; l < sizes_.size(); ++l) {
      const TypedView p = typed_view(env, params_[l].Value());
      const TypedView g = typed_view(env, grads_[l].Value());
      if (p.type != want || g.type != want) {
        throw_coded(env, "ERR_KOALA_DTYPE_MISMATCH", "layer " + std::to_string(l) + ": param and grad must match the optimizer's dtype");
      }
      if (p.length != sizes_[l] || g.length != sizes_[l] || p.data == nullptr || g.data == nullptr) {
        throw_coded(env, "ERR_KOALA_DETACHED", "layer " + std::to_string(l) + ": param or grad was detached or resized");
      }
      buffers_[l] = {p.data, g.data};
    }
  }

  // Two ArrayBuffer objects can share memory (a SharedArrayBuffer cloned within one thread), so
  // aliasing is checked on addresses here, after lib/ checked buffer identity.
  void check_aliasing(Napi::Env env) {
    std::vector<koala::MemoryRange> ranges;
    const std::size_t bytes = dtype_ == DType::kFloat32 ? 4 : 8;
    for (std::size_t l = 0; l < sizes_.size(); ++l) {
      const auto p = reinterpret_cast<std::uintptr_t>(buffers_[l].param);
      const auto g = reinterpret_cast<std::uintptr_t>(buffers_[l].grad);
      ranges.push_back({p, p + sizes_[l] * bytes, l, false});
      ranges.push_back({g, g + sizes_[l] * bytes, l, true});
    }
    const std::string overlap = koala::find_overlap(std::move(ranges));
    if (!overlap.empty()) throw_coded(env, "ERR_KOALA_OVERLAP", overlap);
  }

  Napi::Value Predict(const Napi::CallbackInfo& info) {
    CpuOptimizer& opt = live(info.Env());
    resolve(info.Env());
    opt.predict(buffers_.data());
    return info.Env().Undefined();
  }

  // update(loss, lossSq, lr) -> { status, skipped, maxGain }; the skip mask is filled in place.
  Napi::Value Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CpuOptimizer& opt = live(env);
    if (info.Length() != 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber()) {
      throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "update(loss, lossSq, lr) takes three numbers");
    }
    resolve(env);
    const TypedView mask = typed_view(env, mask_.Value());
    if (mask.length != sizes_.size() || mask.data == nullptr) {
      throw_coded(env, "ERR_KOALA_DETACHED", "the skip mask was detached");
    }
    const koala::StepReport r =
        opt.update(buffers_.data(), info[0].As<Napi::Number>().DoubleValue(), info[1].As<Napi::Number>().DoubleValue(),
                   info[2].As<Napi::Number>().DoubleValue(), static_cast<std::uint8_t*>(mask.data));
    Napi::Object out = Napi::Object::New(env);
    out.Set("status", static_cast<double>(r.status));
    out.Set("skipped", static_cast<double>(r.skipped_layers));
    out.Set("maxGain", r.max_gain);
    return out;
  }

  // [p00, p01, p11, qX, sigma, r, pending sum or -1 (Note [lazy predict]), applied steps]
  static constexpr std::size_t kFilterValues = 8;

  Napi::Value GetFilter(const Napi::CallbackInfo& info) {
    CpuOptimizer& opt = live(info.Env());
    const koala::FilterState& s = opt.state();
    Napi::Float64Array out = Napi::Float64Array::New(info.Env(), kFilterValues);
    const double values[kFilterValues] = {s.p00, s.p01, s.p11, s.q_x, s.sigma, s.r, opt.pending_sum(), opt.applied_steps()};
    std::copy(values, values + kFilterValues, out.Data());
    return out;
  }

  Napi::Value SetFilter(const Napi::CallbackInfo& info) {
    CpuOptimizer& opt = live(info.Env());
    if (info.Length() != 1 || !info[0].IsTypedArray() ||
        info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
        info[0].As<Napi::Float64Array>().ElementLength() != kFilterValues) {
      throw_coded(info.Env(), "ERR_KOALA_INVALID_ARGUMENT", "setFilter takes a Float64Array of 8");
    }
    const double* v = info[0].As<Napi::Float64Array>().Data();
    opt.state() = {v[0], v[1], v[2], v[3], v[4], v[5]};
    opt.set_pending_sum(v[6]);
    opt.set_applied_steps(v[7]);
    return info.Env().Undefined();
  }

  // Checks (kind, layer, array) and returns the layer's state and the array's data.
  std::pair<void*, void*> layer_state_args(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CpuOptimizer& opt = live(env);
    if (info.Length() != 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsTypedArray()) {
      throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "(kind, layer, array)");
    }
    const int kind = info[0].As<Napi::Number>().Int32Value();
    const int64_t layer = info[1].As<Napi::Number>().Int64Value();
    if (kind < 0 || kind > 1 || layer < 0 || static_cast<std::size_t>(layer) >= opt.num_layers()) {
      throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "no such layer state");
    }
    const TypedView arr = typed_view(env, info[2]);
    const napi_typedarray_type want = dtype_ == DType::kFloat32 ? napi_float32_array : napi_float64_array;
    if (arr.type != want || arr.length != opt.layer_size(layer) || arr.data == nullptr) {
      throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "layer state array of the wrong dtype or length");
    }
    return {opt.layer_state(static_cast<LayerStateKind>(kind), static_cast<std::size_t>(layer)), arr.data};
  }

  Napi::Value ReadLayerState(const Napi::CallbackInfo& info) {
    const auto [state, array] = layer_state_args(info);
    const std::size_t layer = info[1].As<Napi::Number>().Int64Value();
    std::copy_n(static_cast<const char*>(state), sizes_[layer] * opt_->elem_bytes(), static_cast<char*>(array));
    return info.Env().Undefined();
  }

  Napi::Value WriteLayerState(const Napi::CallbackInfo& info) {
    const auto [state, array] = layer_state_args(info);
    const std::size_t layer = info[1].As<Napi::Number>().Int64Value();
    std::copy_n(static_cast<const char*>(array), sizes_[layer] * opt_->elem_bytes(), static_cast<char*>(state));
    return info.Env().Undefined();
  }

  Napi::Value ThreadsInUse(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), live(info.Env()).threads());
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    opt_.reset();
    params_.clear();
    grads_.clear();
    mask_.Reset();
    return info.Env().Undefined();
  }

  DType dtype_ = DType::kFloat32;
  std::vector<std::size_t> sizes_;
  std::vector<Napi::ObjectReference> params_, grads_;
  Napi::ObjectReference mask_;
  std::vector<LayerBuffers> buffers_;
  std::unique_ptr<CpuOptimizer> opt_;
};

// Benchmark reference kernels keep one pool per thread count, alive for the process, as an
// optimizer keeps its own: a measurement then includes no thread start-up.
koala::ThreadPool& bench_pool(int threads) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<koala::ThreadPool>> pools;
  std::lock_guard<std::mutex> lock(mu);
  auto& pool = pools[threads];
  if (!pool) pool = std::make_unique<koala::ThreadPool>(threads);
  return *pool;
}

float* float32_data(Napi::Env env, const Napi::Value& v, std::size_t n) {
  const TypedView view = typed_view(env, v);
  if (view.type != napi_float32_array || view.length != n) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "expected Float32Arrays of equal length");
  }
  return static_cast<float*>(view.data);
}

// The benchmark's reference kernels over Float32Arrays of equal length; the last argument is the
// thread count: streamCopy(a, b, threads), streamTriad(a, b, c, s, threads),
// adamStep(x, g, m, v, [lr, beta1, beta2, eps, step], threads).
int bench_threads(const Napi::CallbackInfo& info, std::size_t arity) {
  Napi::Env env = info.Env();
  if (info.Length() != arity || !info[arity - 1].IsNumber() || info[arity - 1].As<Napi::Number>().Int32Value() < 1) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "expected " + std::to_string(arity) + " arguments, the last a thread count >= 1");
  }
  return info[arity - 1].As<Napi::Number>().Int32Value();
}

Napi::Value StreamCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int threads = bench_threads(info, 3);
  const std::size_t n = typed_view(env, info[0]).length;
  koala::stream_copy(bench_pool(threads), float32_data(env, info[0], n), float32_data(env, info[1], n), n);
  return env.Undefined();
}

Napi::Value StreamTriad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int threads = bench_threads(info, 5);
  const std::size_t n = typed_view(env, info[0]).length;
  koala::stream_triad(bench_pool(threads), float32_data(env, info[0], n), float32_data(env, info[1], n),
                      float32_data(env, info[2], n), info[3].As<Napi::Number>().FloatValue(), n);
  return env.Undefined();
}

Napi::Value AdamStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int threads = bench_threads(info, 6);
  const std::size_t n = typed_view(env, info[0]).length;
  const TypedView h = typed_view(env, info[4]);
  if (h.type != napi_float64_array || h.length != 5) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "adamStep hyper-parameters: Float64Array [lr, beta1, beta2, eps, step]");
  }
  const double* p = static_cast<const double*>(h.data);
  const koala::AdamStep s{static_cast<float>(p[0]), static_cast<float>(p[1]), static_cast<float>(p[2]), static_cast<float>(p[3]),
                          static_cast<float>(1.0 - std::pow(p[1], p[4])), static_cast<float>(1.0 - std::pow(p[2], p[4]))};
  koala::adam_step(bench_pool(threads), float32_data(env, info[0], n), float32_data(env, info[1], n),
                   float32_data(env, info[2], n), float32_data(env, info[3], n), s, n);
  return env.Undefined();
}

// planChunks(sizes: number[], chunkElems, parts) -> { layer, begin, size, firstChunk, bounds }: the
// chunk plan both backends run on (one CUDA block per chunk), exposed for its tests.
Napi::Value PlanChunks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !info[0].IsArray() || !info[1].IsNumber() || !info[2].IsNumber()) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "planChunks(sizes, chunkElems, parts)");
  }
  const Napi::Array sizes_arg = info[0].As<Napi::Array>();
  std::vector<std::size_t> sizes;
  for (std::uint32_t i = 0; i < sizes_arg.Length(); ++i) sizes.push_back(static_cast<std::size_t>(sizes_arg.Get(i).As<Napi::Number>().Int64Value()));
  const std::int64_t chunk = info[1].As<Napi::Number>().Int64Value();
  const int parts = info[2].As<Napi::Number>().Int32Value();
  if (chunk < 1 || parts < 1) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "chunkElems and parts must be >= 1");
  const koala::ChunkPlan plan(sizes, static_cast<std::size_t>(chunk));
  const auto& chunks = plan.chunks();
  Napi::Float64Array layer = Napi::Float64Array::New(env, chunks.size()), begin = Napi::Float64Array::New(env, chunks.size()),
                     size = Napi::Float64Array::New(env, chunks.size()), first = Napi::Float64Array::New(env, sizes.size() + 1);
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    layer[c] = chunks[c].layer;
    begin[c] = static_cast<double>(chunks[c].begin);
    size[c] = static_cast<double>(chunks[c].size);
  }
  for (std::size_t l = 0; l <= sizes.size(); ++l) first[l] = static_cast<double>(plan.first_chunk(l));
  const std::vector<std::size_t> b = plan.partition(parts);
  Napi::Float64Array bounds = Napi::Float64Array::New(env, b.size());
  for (std::size_t i = 0; i < b.size(); ++i) bounds[i] = static_cast<double>(b[i]);
  Napi::Object out = Napi::Object::New(env);
  out.Set("layer", layer);
  out.Set("begin", begin);
  out.Set("size", size);
  out.Set("firstChunk", first);
  out.Set("bounds", bounds);
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("planChunks", Napi::Function::New<PlanChunks>(env, "planChunks"));
  exports.Set("streamCopy", Napi::Function::New<StreamCopy>(env, "streamCopy"));
  exports.Set("streamTriad", Napi::Function::New<StreamTriad>(env, "streamTriad"));
  exports.Set("adamStep", Napi::Function::New<AdamStep>(env, "adamStep"));
  exports.Set("NativeOptimizer", NativeOptimizer::Define(env));
  exports.Set("chunkElems", static_cast<double>(koala::kChunkElems));
  exports.Set("isa", Napi::String::New(env, koala::cpu::cpu_kernels().isa));
  return exports;
}

}  // namespace

NODE_API_MODULE(koala_optim, Init)
