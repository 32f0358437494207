// N-API binding of the CPU backend. Thin on purpose: lib/ validates and normalizes everything;
// this file converts arguments, re-checks the cheap invariants that keep it memory-safe whatever it
// is called with (argument types, dtype, length, attachment, aliasing by
// address, the variant before per-layer state) and maps every failure, C++ exceptions included
// (Note [coded native errors], binding/guard.h), to an error with a stable `code`, thrown before
// any work is done.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "binding/config.h"
#include "binding/guard.h"
#include "core/overlap.h"
#include "cpu/optimizer.h"
#include "cpu/kernels.h"

namespace {

using koala::CpuOptimizer;
using koala::DType;
using koala::LayerBuffers;
using koala::binding::number_field;
using koala::binding::throw_coded;
using koala::binding::TypedView;
using koala::binding::typed_view;

// What a C++ exception other than running out of memory becomes (Note [coded native errors]).
constexpr const char* kNativeFailure = "ERR_KOALA_NATIVE";

class NativeOptimizer : public Napi::ObjectWrap<NativeOptimizer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    // Each method under the exception guard (Guarded). A method called on anything but an instance
    // (NativeOptimizer.prototype.predict.call(x)) never reaches C++: V8 checks the receiver against
    // the class (napi_define_class gives its methods a signature) and throws "Illegal invocation".
    return DefineClass(env, "NativeOptimizer",
                       {InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::Predict>>("predict"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::Update>>("update"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::LastStep>>("lastStep"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::PredictPartial>>("predictPartial"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::PredictFinish>>("predictFinish"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::UpdatePartial>>("updatePartial"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::UpdateFinish>>("updateFinish"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::GetFilter>>("getFilter"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::SetFilter>>("setFilter"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::ReadLayerState>>("readLayerState"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::WriteLayerState>>("writeLayerState"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::ReadLayerScalars>>("readLayerScalars"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::WriteLayerScalars>>("writeLayerScalars"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::ThreadsInUse>>("threadsInUse"),
                        InstanceMethod<&NativeOptimizer::Guarded<&NativeOptimizer::Dispose>>("dispose"),
                        InstanceValue("deferred", Napi::Boolean::New(env, false), napi_enumerable)});
  }

  // new NativeOptimizer(config, params: TypedArray[], grads: TypedArray[], skipMask: Uint8Array)
  explicit NativeOptimizer(const Napi::CallbackInfo& info) try : Napi::ObjectWrap<NativeOptimizer>(info) {
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
    variant_ = koala::binding::variant_field(cfg);
    const napi_typedarray_type want = koala::binding::array_type(dtype_);
    std::vector<std::size_t> sizes;
    for (std::size_t l = 0; l < count; ++l) {
      const TypedView p = typed_view(env, params.Get(l));
      const TypedView g = typed_view(env, grads.Get(l));
      if (p.type != want || g.type != want) {
        throw_coded(env, "ERR_KOALA_DTYPE_MISMATCH", "layer " + std::to_string(l) + ": param and grad must match the optimizer's dtype");
      }
      if (g.length != p.length) throw_coded(env, "ERR_KOALA_INVALID_LAYERS", "layer " + std::to_string(l) + ": param and grad lengths differ");
      sizes.push_back(p.length);
      buffers_.push_back({p.data, g.data});
      backings_.push_back({backing(env, p), backing(env, g)});
    }
    sizes_ = sizes;
    check_aliasing(env);
    mask_ = Napi::Persistent(info[3].As<Napi::Object>());
    const TypedView mask = typed_view(env, mask_.Value());
    if (mask.type != napi_uint8_array || mask.length != count) {
      throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "skipMask must be a Uint8Array with one byte per layer");
    }

    // lib/options.ts allows [1, 256]; a NaN or an enormous count must not reach the int conversion.
    const double threads = number_field(cfg, "threads");
    opt_ = std::make_unique<CpuOptimizer>(dtype_, std::move(sizes), koala::binding::filter_config(cfg), koala::binding::initial_state(cfg),
                                          threads >= 1 && threads <= 256 ? static_cast<int>(threads) : 1, koala::binding::lazy_predict(cfg),
                                          koala::binding::model_elems(cfg));
    report_memory(env, static_cast<std::int64_t>(opt_->native_bytes()));
  } catch (...) {
    koala::binding::rethrow_coded(info.Env(), kNativeFailure);
  }

  ~NativeOptimizer() override { release_memory(); }

 private:
  using MethodPtr = Napi::Value (NativeOptimizer::*)(const Napi::CallbackInfo&);

  // Method M under the exception guard (Note [coded native errors], binding/guard.h).
  template <MethodPtr M>
  Napi::Value Guarded(const Napi::CallbackInfo& info) {
    return koala::binding::guarded(info.Env(), kNativeFailure, [&] { return (this->*M)(info); });
  }

  // Note [native memory reported]
  // V8 sees only the wrapper object, a few hundred bytes, of an optimizer that holds megabytes of
  // native state: optimizers that are dropped without dispose() would pile up until some unrelated
  // collection. So the bytes an optimizer holds are reported to V8 as external memory
  // (napi_adjust_external_memory) when it is built, and taken back once, by dispose() or by the
  // finalizer, whichever comes first; V8 then collects under that pressure. The C call, not
  // node-addon-api's wrapper, which aborts on failure: a destructor must not fail (the report only
  // fails for a null env).
  void report_memory(Napi::Env env, std::int64_t bytes) {
    std::int64_t total = 0;
    if (napi_adjust_external_memory(env, bytes, &total) == napi_ok) reported_ = bytes;
  }

  void release_memory() {
    std::int64_t total = 0;
    if (reported_ != 0) napi_adjust_external_memory(Env(), -reported_, &total);
    reported_ = 0;
  }

  CpuOptimizer& live(Napi::Env env) {
    if (!opt_) throw_coded(env, "ERR_KOALA_DISPOSED", "the optimizer was disposed");
    return *opt_;
  }

  // Note [attachment check]
  // Every call that touches the parameters first checks that the memory each layer's param and
  // grad had at construction is still theirs: the view's ArrayBuffer not detached (transferred,
  // or a wasm memory that grew) nor shrunk below the view's end (a resizable ArrayBuffer), and its
  // data where it was. The check reads the ArrayBuffer (napi_get_arraybuffer_info: its data and
  // byte length), not the view: napi_get_typedarray_info tests the view against each typed-array
  // kind in turn and took 0.25 us per array, most of a small step's time with 161 tensors
  // (bench/RESULTS.md, the cost of a tensor). A typed array's kind and its place in its buffer
  // never change, so they are checked once, at construction. A SharedArrayBuffer cannot be
  // detached or shrunk (it only grows, in place), so a view of one needs no check. lib/ checks
  // the views' lengths before each call too (Note [checks in one place], lib/koala.ts).
  struct Backing {
    Napi::ObjectReference buffer;  // the view's ArrayBuffer; empty for a SharedArrayBuffer
    std::size_t offset;            // the view's byte offset in it
    std::size_t end;               // and of its end
  };
  struct LayerBacking {
    Backing param, grad;
  };

  static Backing backing(Napi::Env env, const TypedView& v) {
    bool plain = false;
    if (napi_is_arraybuffer(env, v.buffer, &plain) != napi_ok) throw_coded(env, "ERR_KOALA_INVALID_ARRAY", "expected a typed array");
    Backing b{Napi::ObjectReference(), v.offset, v.offset + v.bytes};
    if (plain) b.buffer = Napi::Persistent(Napi::Object(env, v.buffer));
    return b;
  }

  // Whether the view that had `data` at construction (buffers_) still has it, whole.
  static bool attached(Napi::Env env, const Backing& b, const void* data) {
    if (b.buffer.IsEmpty()) return true;
    void* base = nullptr;
    std::size_t length = 0;
    if (napi_get_arraybuffer_info(env, b.buffer.Value(), &base, &length) != napi_ok) return false;
    return base != nullptr && length >= b.end && static_cast<char*>(base) + b.offset == data;
  }

  void check_attached(Napi::Env env) {
    for (std::size_t l = 0; l < sizes_.size(); ++l) {
      // An empty slice of a sharded layer holds no bytes and may have no data (Note [sharded step]).
      if (sizes_[l] == 0) continue;
      if (!attached(env, backings_[l].param, buffers_[l].param) || !attached(env, backings_[l].grad, buffers_[l].grad)) {
        throw_coded(env, "ERR_KOALA_DETACHED", "layer " + std::to_string(l) + ": param or grad was detached or resized");
      }
    }
  }

  // Two ArrayBuffer objects can share memory (a SharedArrayBuffer cloned within one thread), so
  // aliasing is checked on addresses here, after lib/ checked buffer identity.
  void check_aliasing(Napi::Env env) {
    std::vector<koala::MemoryRange> ranges;
    const std::size_t bytes = koala::dtype_bytes(dtype_);
    for (std::size_t l = 0; l < sizes_.size(); ++l) {
      if (sizes_[l] == 0) continue;  // an empty slice holds no bytes
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
    check_attached(info.Env());
    return Napi::Boolean::New(info.Env(), opt.predict(buffers_.data()));
  }

  // update(loss, lossSq, lr); the skip mask is filled in place, lastStep() tells the outcome.
  Napi::Value Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CpuOptimizer& opt = live(env);
    if (info.Length() != 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber()) {
      throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "update(loss, lossSq, lr) takes three numbers");
    }
    check_attached(env);
    std::uint8_t* mask = skip_mask(env);
    last_ = opt.update(buffers_.data(), info[0].As<Napi::Number>().DoubleValue(), info[1].As<Napi::Number>().DoubleValue(),
                       info[2].As<Napi::Number>().DoubleValue(), mask);
    return env.Undefined();
  }

  std::uint8_t* skip_mask(Napi::Env env) {
    const TypedView mask = typed_view(env, mask_.Value());
    if (mask.length != sizes_.size() || mask.data == nullptr) {
      throw_coded(env, "ERR_KOALA_DETACHED", "the skip mask was detached");
    }
    return static_cast<std::uint8_t*>(mask.data);
  }

  // lastStep() -> { status, skipped, maxGain } of the last update
  Napi::Value LastStep(const Napi::CallbackInfo& info) {
    live(info.Env());
    return koala::binding::step_object(info.Env(), last_);
  }

  // The halves of a sharded step (Note [sharded step], cpu/optimizer.h), reading and writing the
  // facade's Float64Arrays: predictPartial(out) writes the slice's sum |a - x|^2 to out[0] and
  // returns whether it moved the parameters (as predict() does), predictFinish(sums) reads the reduced one from sums[0]; updatePartial(out) writes 3 sums per layer
  // (|h|^2, |x|^2, |g|^2), updateFinish(sums, loss, lossSq, lr) reads the reduced ones.
  double* doubles_arg(Napi::Env env, const Napi::Value& v, std::size_t count) {
    if (!v.IsTypedArray()) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "the sums must be a Float64Array");
    const TypedView t = typed_view(env, v);
    if (t.type != napi_float64_array || t.length != count || t.data == nullptr) {
      throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "the sums must be a Float64Array of " + std::to_string(count) + " values");
    }
    return static_cast<double*>(t.data);
  }

  koala::LayerSums* sums_arg(Napi::Env env, const Napi::Value& v) {
    static_assert(sizeof(koala::LayerSums) == 3 * sizeof(double), "LayerSums is three doubles");
    return reinterpret_cast<koala::LayerSums*>(doubles_arg(env, v, 3 * sizes_.size()));
  }

  Napi::Value PredictPartial(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CpuOptimizer& opt = live(env);
    if (info.Length() != 1) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "predictPartial(out)");
    double* out = doubles_arg(env, info[0], 1);
    check_attached(env);
    const koala::PartialPredict p = opt.predict_partial(buffers_.data());
    *out = p.sum_sq_diff;
    return Napi::Boolean::New(env, p.moved);
  }

  Napi::Value PredictFinish(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CpuOptimizer& opt = live(env);
    if (info.Length() != 1) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "predictFinish(sums)");
    opt.predict_finish(*doubles_arg(env, info[0], 1));
    return env.Undefined();
  }

  // updatePartial(out: Float64Array) writes the slice's per-layer sums into out.
  Napi::Value UpdatePartial(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CpuOptimizer& opt = live(env);
    if (info.Length() != 1) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "updatePartial(out)");
    koala::LayerSums* out = sums_arg(env, info[0]);
    check_attached(env);
    std::copy_n(opt.update_partial(buffers_.data()), sizes_.size(), out);
    return env.Undefined();
  }

  // updateFinish(sums: Float64Array, loss, lossSq, lr), as update(): lastStep() tells the outcome.
  Napi::Value UpdateFinish(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CpuOptimizer& opt = live(env);
    if (info.Length() != 4 || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber()) {
      throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "updateFinish(sums, loss, lossSq, lr)");
    }
    const koala::LayerSums* sums = sums_arg(env, info[0]);
    check_attached(env);
    std::uint8_t* mask = skip_mask(env);
    last_ = opt.update_finish(buffers_.data(), sums, info[1].As<Napi::Number>().DoubleValue(), info[2].As<Napi::Number>().DoubleValue(),
                              info[3].As<Napi::Number>().DoubleValue(), mask);
    return env.Undefined();
  }

  Napi::Value GetFilter(const Napi::CallbackInfo& info) {
    return koala::binding::snapshot_object(info.Env(), live(info.Env()).snapshot());
  }

  // setFilter(snapshot)
  Napi::Value SetFilter(const Napi::CallbackInfo& info) {
    CpuOptimizer& opt = live(info.Env());
    if (info.Length() != 1) throw_coded(info.Env(), "ERR_KOALA_INVALID_ARGUMENT", "setFilter(snapshot)");
    opt.restore(koala::binding::snapshot_arg(info.Env(), info[0]));
    return info.Env().Undefined();
  }

  Napi::Value ReadLayerState(const Napi::CallbackInfo& info) {
    CpuOptimizer& opt = live(info.Env());
    const auto a = koala::binding::layer_state_args(info, variant_, dtype_, sizes_);
    opt.read_layer_state(a.kind, a.layer, a.data);
    return info.Env().Undefined();
  }

  Napi::Value WriteLayerState(const Napi::CallbackInfo& info) {
    CpuOptimizer& opt = live(info.Env());
    const auto a = koala::binding::layer_state_args(info, variant_, dtype_, sizes_);
    opt.write_layer_state(a.kind, a.layer, a.data);
    return info.Env().Undefined();
  }

  // KOALA++'s layer scalars, as a Float64Array of kPPLayerScalars per layer (koala/protocol.h).
  std::vector<koala::PPLayerState>& pp_layers(Napi::Env env) {
    std::vector<koala::PPLayerState>& layers = live(env).pp_layers();
    if (layers.empty()) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "layer scalars are KOALA++'s");
    return layers;
  }

  Napi::Value ReadLayerScalars(const Napi::CallbackInfo& info) {
    std::vector<koala::PPLayerState>& layers = pp_layers(info.Env());
    koala::binding::pp_scalars_out(layers.data(), layers.size(), koala::binding::pp_scalars_arg(info.Env(), info[0], layers.size()));
    return info.Env().Undefined();
  }

  Napi::Value WriteLayerScalars(const Napi::CallbackInfo& info) {
    std::vector<koala::PPLayerState>& layers = pp_layers(info.Env());
    koala::binding::pp_scalars_in(koala::binding::pp_scalars_arg(info.Env(), info[0], layers.size()), layers.size(), layers.data());
    return info.Env().Undefined();
  }

  Napi::Value ThreadsInUse(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), live(info.Env()).threads());
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    opt_.reset();
    release_memory();
    backings_.clear();
    mask_.Reset();
    return info.Env().Undefined();
  }

  DType dtype_ = DType::kFloat32;
  koala::Variant variant_ = koala::Variant::kMomentum;
  std::vector<std::size_t> sizes_;
  std::vector<LayerBacking> backings_;  // per layer (Note [attachment check])
  Napi::ObjectReference mask_;
  std::vector<LayerBuffers> buffers_;
  koala::StepReport last_{koala::StepStatus::kApplied, 0, 0.0};
  std::unique_ptr<CpuOptimizer> opt_;
  std::int64_t reported_ = 0;  // bytes reported to V8 (Note [native memory reported])
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeOptimizer", NativeOptimizer::Define(env));
  exports.Set("chunkElems", static_cast<double>(koala::kChunkElems));
  exports.Set("isa", Napi::String::New(env, koala::cpu::selected_isa().description));
  exports.Set("protocol", koala::binding::protocol_object(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(koala_optim, Init)
