// N-API binding of the CUDA backend: koala_optim_cuda.node, a module of its own so that a machine
// without CUDA never loads it (lib/cuda.ts loads it on first use). Like the CPU binding it only
// converts arguments, re-checks cheap invariants and maps failures to errors with a stable code;
// device pointers travel as BigInts. The helpers it shares with the CPU binding are in config.h.
#include <napi.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "binding/config.h"
#include "binding/guard.h"
#include "binding/scalar_check.h"
#include "core/overlap.h"
#include "cuda/optimizer.h"
#include "cuda/runtime.h"

namespace {

using koala::DType;
namespace kc = koala::cuda;
using koala::binding::throw_coded;
using koala::binding::TypedView;
using koala::binding::typed_view;

// What a C++ exception that no cuda_call mapped becomes (Note [coded native errors]).
constexpr char kCudaFailure[] = "ERR_KOALA_CUDA";

// Runs a CUDA call, turning a C++ exception into a coded error: a device that does not exist is
// ERR_KOALA_INVALID_DEVICE_POINTER, a bad argument ERR_KOALA_INVALID_ARGUMENT, the rest goes through
// the addons' one exception guard (Note [coded native errors], binding/guard.h): a host allocation
// failure ERR_KOALA_OUT_OF_MEMORY, anything else (CUDA's errors, a broken optimizer) ERR_KOALA_CUDA.
template <class Fn>
auto cuda_call(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const kc::InvalidDevice& e) {
    throw_coded(env, "ERR_KOALA_INVALID_DEVICE_POINTER", e.what());
  } catch (const std::invalid_argument& e) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", e.what());
  } catch (...) {
    koala::binding::rethrow_coded(env, kCudaFailure);
  }
}

std::uintptr_t pointer(const Napi::Value& v) {
  if (!v.IsBigInt()) throw_coded(v.Env(), "ERR_KOALA_INVALID_ARGUMENT", "a device pointer must be a BigInt");
  bool lossless = false;
  const std::uint64_t p = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless || p == 0) throw_coded(v.Env(), "ERR_KOALA_INVALID_DEVICE_POINTER", "a device pointer must be a non-zero 64-bit address");
  return static_cast<std::uintptr_t>(p);
}

// A stream handle: a BigInt (0n: the legacy default stream); undefined is 0n.
std::uintptr_t stream_arg(const Napi::Value& v) {
  if (v.IsUndefined()) return 0;
  bool lossless = false;
  if (!v.IsBigInt()) throw_coded(v.Env(), "ERR_KOALA_INVALID_ARGUMENT", "a stream must be a BigInt (a cudaStream_t)");
  const std::uint64_t s = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw_coded(v.Env(), "ERR_KOALA_INVALID_ARGUMENT", "a stream must be a 64-bit handle");
  return static_cast<std::uintptr_t>(s);
}

int device_arg(const Napi::Value& v) {
  if (!v.IsNumber() || v.As<Napi::Number>().Int32Value() < 0) throw_coded(v.Env(), "ERR_KOALA_INVALID_ARGUMENT", "deviceId must be an integer >= 0");
  return v.As<Napi::Number>().Int32Value();
}

// A layer length: a positive integer, or 0 for an empty slice of a sharded rank (Note [sharded
// device step]: it launches no element block), never for an unsharded layer.
std::size_t length_arg(const Napi::Value& v, std::size_t layer, bool sharded) {
  const double n = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(n >= (sharded ? 0 : 1) && n <= 9007199254740991.0 && n == static_cast<double>(static_cast<std::uint64_t>(n)))) {
    throw_coded(v.Env(), "ERR_KOALA_INVALID_LAYERS",
                "layer " + std::to_string(layer) + ": its length must be " + (sharded ? "an integer >= 0" : "a positive integer"));
  }
  return static_cast<std::size_t>(n);
}

// A loss argument: a number, or [ptr (BigInt), dtype (protocol dtype)] in device memory.
kc::ScalarArg scalar_arg(const Napi::Value& v) {
  if (v.IsNumber()) return {nullptr, DType::kFloat64, v.As<Napi::Number>().DoubleValue()};
  if (v.IsArray() && v.As<Napi::Array>().Length() == 2 && v.As<Napi::Array>().Get(1u).IsNumber()) {
    const Napi::Array a = v.As<Napi::Array>();
    const int dtype = a.Get(1u).As<Napi::Number>().Int32Value();
    if (dtype == static_cast<int>(DType::kFloat32) || dtype == static_cast<int>(DType::kFloat64)) {
      return {reinterpret_cast<const void*>(pointer(a.Get(0u))), static_cast<DType>(dtype), 0.0};
    }
  }
  throw_coded(v.Env(), "ERR_KOALA_INVALID_LOSS", "a loss is a number or a device scalar [ptr, dtype]");
}

class NativeCudaOptimizer : public Napi::ObjectWrap<NativeCudaOptimizer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeCudaOptimizer",
                       {InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::Predict>>("predict"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::Update>>("update"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::PredictPartial>>("predictPartial"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::PredictFinish>>("predictFinish"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::UpdatePartial>>("updatePartial"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::UpdateFinish>>("updateFinish"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::DeviceSums>>("deviceSums"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::LastStep>>("lastStep"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::GetFilter>>("getFilter"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::SetFilter>>("setFilter"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::ReadLayerState>>("readLayerState"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::WriteLayerState>>("writeLayerState"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::ReadLayerScalars>>("readLayerScalars"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::WriteLayerScalars>>("writeLayerScalars"),
                        InstanceMethod<&NativeCudaOptimizer::Guarded<&NativeCudaOptimizer::Dispose>>("dispose"),
                        InstanceValue("deferred", Napi::Boolean::New(env, true), napi_enumerable)});
  }

  // new NativeCudaOptimizer(config, params: BigInt[], grads: BigInt[], lengths: number[], skipMask: Uint8Array)
  // config: the CPU config plus deviceId and stream (a BigInt, 0n for the legacy default stream).
  // Every argument is checked before any CUDA call.
  explicit NativeCudaOptimizer(const Napi::CallbackInfo& info) try : Napi::ObjectWrap<NativeCudaOptimizer>(info) {
    Napi::Env env = info.Env();
    if (info.Length() != 5 || !info[0].IsObject() || !info[1].IsArray() || !info[2].IsArray() || !info[3].IsArray() ||
        !info[4].IsTypedArray()) {
      throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "NativeCudaOptimizer(config, params[], grads[], lengths[], skipMask)");
    }
    const Napi::Object cfg = info[0].As<Napi::Object>();
    const Napi::Array params = info[1].As<Napi::Array>(), grads = info[2].As<Napi::Array>(), lengths = info[3].As<Napi::Array>();
    const std::size_t count = params.Length();
    if (count == 0 || grads.Length() != count || lengths.Length() != count) {
      throw_coded(env, "ERR_KOALA_INVALID_LAYERS", "params, grads and lengths must be non-empty and of equal count");
    }
    const TypedView mask = typed_view(env, info[4]);
    if (mask.type != napi_uint8_array || mask.length != count) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "skipMask must have one byte per layer");
    device_ = device_arg(cfg.Get("deviceId"));
    dtype_ = koala::binding::dtype_field(cfg);
    variant_ = koala::binding::variant_field(cfg);
    const koala::FilterConfig config = koala::binding::filter_config(cfg);
    const koala::FilterState initial = koala::binding::initial_state(cfg);
    const bool lazy = koala::binding::lazy_predict(cfg);
    const std::uintptr_t stream = stream_arg(cfg.Get("stream"));
    const double model_elems = koala::binding::model_elems(cfg);
    const std::size_t elem = koala::dtype_bytes(dtype_);
    std::vector<kc::LayerPointers> layers;
    std::vector<koala::MemoryRange> ranges;
    for (std::size_t l = 0; l < count; ++l) {
      const std::size_t n = length_arg(lengths.Get(l), l, model_elems > 0);
      const std::uintptr_t p = pointer(params.Get(l)), g = pointer(grads.Get(l));
      sizes_.push_back(n);
      layers.push_back({reinterpret_cast<void*>(p), reinterpret_cast<const void*>(g)});
      if (n == 0) continue;  // an empty slice is never read: no range to check
      ranges.push_back({p, p + n * elem, l, false});
      ranges.push_back({g, g + n * elem, l, true});
    }
    const std::string overlap = koala::find_overlap(ranges);
    if (!overlap.empty()) throw_coded(env, "ERR_KOALA_OVERLAP", overlap);
    for (const koala::MemoryRange& r : ranges) {
      const std::string why = cuda_call(env, [&] { return kc::check_device_pointer(reinterpret_cast<void*>(r.begin), r.end - r.begin, elem, device_); });
      if (!why.empty()) {
        throw_coded(env, "ERR_KOALA_INVALID_DEVICE_POINTER", std::string(r.is_grad ? "grad" : "param") + " of layer " + std::to_string(r.layer) + " " + why);
      }
    }
    opt_ = cuda_call(env, [&] {
      return std::make_unique<kc::CudaOptimizer>(device_, dtype_, sizes_, std::move(layers), config, initial, lazy, stream, model_elems);
    });
    mask_ = Napi::Persistent(info[4].As<Napi::Object>());
  } catch (...) {
    koala::binding::rethrow_coded(info.Env(), kCudaFailure);
  }

 private:
  using MethodPtr = Napi::Value (NativeCudaOptimizer::*)(const Napi::CallbackInfo&);

  // Method M under the exception guard (Note [coded native errors], binding/guard.h); the CUDA
  // calls inside it go through cuda_call, which maps CUDA's own errors first.
  template <MethodPtr M>
  Napi::Value Guarded(const Napi::CallbackInfo& info) {
    return koala::binding::guarded(info.Env(), kCudaFailure, [&] { return (this->*M)(info); });
  }

  // Note [device scalar check] (binding/scalar_check.h).
  void check_scalar(Napi::Env env, const kc::ScalarArg& s, int slot) {
    if (s.device_ptr == nullptr) return;
    const std::size_t elem = koala::dtype_bytes(s.dtype);
    const std::string why = checked_scalars_.check(slot, reinterpret_cast<std::uintptr_t>(s.device_ptr), elem, [&] {
      return cuda_call(env, [&] { return kc::check_device_pointer(s.device_ptr, elem, elem, device_); });
    });
    if (!why.empty()) throw_coded(env, "ERR_KOALA_INVALID_DEVICE_POINTER", std::string(slot == 0 ? "loss " : "lossSq ") + why);
  }

  kc::CudaOptimizer& live(Napi::Env env) {
    if (!opt_) throw_coded(env, "ERR_KOALA_DISPOSED", "the optimizer was disposed");
    return *opt_;
  }

  // predict() -> true | false | 'unknown' (PredictMoved, lib/protocol.ts)
  Napi::Value Predict(const Napi::CallbackInfo& info) {
    kc::CudaOptimizer& opt = live(info.Env());
    return moved_value(info.Env(), cuda_call(info.Env(), [&] { return opt.predict(); }));
  }

  static Napi::Value moved_value(Napi::Env env, kc::Moved moved) {
    if (moved == kc::Moved::kUnknown) return Napi::String::New(env, "unknown");
    return Napi::Boolean::New(env, moved == kc::Moved::kYes);
  }

  // update(loss, lossSq, lr): each loss a number or [ptr, dtype]; nothing is read back.
  Napi::Value Update(const Napi::CallbackInfo& info) {
    kc::CudaOptimizer& opt = live(info.Env());
    const StepArgs a = step_args(info, "update(loss, lossSq, lr)");
    cuda_call(info.Env(), [&] { opt.update(a.loss, a.loss_sq, a.lr); });
    return info.Env().Undefined();
  }

  struct StepArgs {
    kc::ScalarArg loss, loss_sq;
    double lr;
  };

  // The arguments of update() and updateFinish(), the device losses' pointers checked.
  StepArgs step_args(const Napi::CallbackInfo& info, const char* usage) {
    Napi::Env env = info.Env();
    if (info.Length() != 3 || !info[2].IsNumber()) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", usage);
    const StepArgs a{scalar_arg(info[0]), scalar_arg(info[1]), info[2].As<Napi::Number>().DoubleValue()};
    check_scalar(env, a.loss, 0);
    check_scalar(env, a.loss_sq, 1);
    return a;
  }

  // The halves of a sharded step (Note [sharded device step], cuda/optimizer.h): launches only;
  // predictPartial() says what predict() would.
  Napi::Value PredictPartial(const Napi::CallbackInfo& info) {
    kc::CudaOptimizer& opt = live(info.Env());
    return moved_value(info.Env(), cuda_call(info.Env(), [&] { return opt.predict_partial(); }));
  }

  Napi::Value PredictFinish(const Napi::CallbackInfo& info) {
    kc::CudaOptimizer& opt = live(info.Env());
    cuda_call(info.Env(), [&] { opt.predict_finish(); });
    return info.Env().Undefined();
  }

  Napi::Value UpdatePartial(const Napi::CallbackInfo& info) {
    kc::CudaOptimizer& opt = live(info.Env());
    cuda_call(info.Env(), [&] { opt.update_partial(); });
    return info.Env().Undefined();
  }

  // updateFinish(loss, lossSq, lr), as update().
  Napi::Value UpdateFinish(const Napi::CallbackInfo& info) {
    kc::CudaOptimizer& opt = live(info.Env());
    const StepArgs a = step_args(info, "updateFinish(loss, lossSq, lr)");
    cuda_call(info.Env(), [&] { opt.update_finish(a.loss, a.loss_sq, a.lr); });
    return info.Env().Undefined();
  }

  // deviceSums() -> [predict, update]: the device addresses of the sums (BigInts).
  Napi::Value DeviceSums(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const kc::DeviceSums sums = live(env).device_sums();
    Napi::Array out = Napi::Array::New(env, 2);
    out.Set(0u, Napi::BigInt::New(env, static_cast<std::uint64_t>(sums.predict)));
    out.Set(1u, Napi::BigInt::New(env, static_cast<std::uint64_t>(sums.update)));
    return out;
  }

  // lastStep() -> { status, skipped, maxGain }, the skip mask filled (a wait for that step only)
  Napi::Value LastStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    kc::CudaOptimizer& opt = live(env);
    const TypedView mask = typed_view(env, mask_.Value());
    if (mask.data == nullptr) throw_coded(env, "ERR_KOALA_DETACHED", "the skip mask was detached");
    return koala::binding::step_object(env, cuda_call(env, [&] { return opt.last_step(static_cast<std::uint8_t*>(mask.data)); }));
  }

  Napi::Value GetFilter(const Napi::CallbackInfo& info) {
    kc::CudaOptimizer& opt = live(info.Env());
    return koala::binding::snapshot_object(info.Env(), cuda_call(info.Env(), [&] { return opt.snapshot(); }));
  }

  // setFilter(snapshot)
  Napi::Value SetFilter(const Napi::CallbackInfo& info) {
    kc::CudaOptimizer& opt = live(info.Env());
    if (info.Length() != 1) throw_coded(info.Env(), "ERR_KOALA_INVALID_ARGUMENT", "setFilter(snapshot)");
    const koala::FilterSnapshot snap = koala::binding::snapshot_arg(info.Env(), info[0]);
    cuda_call(info.Env(), [&] { opt.restore(snap); });
    return info.Env().Undefined();
  }

  Napi::Value ReadLayerState(const Napi::CallbackInfo& info) {
    kc::CudaOptimizer& opt = live(info.Env());
    const auto a = koala::binding::layer_state_args(info, variant_, dtype_, sizes_);
    cuda_call(info.Env(), [&] { opt.read_layer_state(a.kind, a.layer, a.data); });
    return info.Env().Undefined();
  }

  Napi::Value WriteLayerState(const Napi::CallbackInfo& info) {
    kc::CudaOptimizer& opt = live(info.Env());
    const auto a = koala::binding::layer_state_args(info, variant_, dtype_, sizes_);
    cuda_call(info.Env(), [&] { opt.write_layer_state(a.kind, a.layer, a.data); });
    return info.Env().Undefined();
  }

  // KOALA++'s layer scalars, as a Float64Array of kPPLayerScalars per layer (koala/protocol.h).
  Napi::Value ReadLayerScalars(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    kc::CudaOptimizer& opt = live(env);
    if (opt.variant() != koala::Variant::kPlusPlus) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "layer scalars are KOALA++'s");
    double* out = koala::binding::pp_scalars_arg(env, info[0], opt.num_layers());
    std::vector<koala::PPLayerState> layers(opt.num_layers());
    cuda_call(env, [&] { opt.read_layer_scalars(layers.data()); });
    koala::binding::pp_scalars_out(layers.data(), layers.size(), out);
    return env.Undefined();
  }

  Napi::Value WriteLayerScalars(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    kc::CudaOptimizer& opt = live(env);
    if (opt.variant() != koala::Variant::kPlusPlus) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "layer scalars are KOALA++'s");
    std::vector<koala::PPLayerState> layers(opt.num_layers());
    koala::binding::pp_scalars_in(koala::binding::pp_scalars_arg(env, info[0], opt.num_layers()), layers.size(), layers.data());
    cuda_call(env, [&] { opt.write_layer_scalars(layers.data()); });
    return env.Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    opt_.reset();
    mask_.Reset();
    return info.Env().Undefined();
  }

  DType dtype_ = DType::kFloat32;
  koala::Variant variant_ = koala::Variant::kMomentum;
  int device_ = 0;
  std::vector<std::size_t> sizes_;
  koala::binding::ScalarCheckCache checked_scalars_;
  Napi::ObjectReference mask_;
  std::unique_ptr<kc::CudaOptimizer> opt_;
};

// probe() -> { devices, error }
Napi::Value Probe(const Napi::CallbackInfo& info) {
  const kc::Probe p = kc::probe();
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("devices", p.devices);
  out.Set("error", p.error);
  return out;
}

// malloc(bytes, deviceId) -> BigInt
Napi::Value Malloc(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber() || !(info[0].As<Napi::Number>().DoubleValue() >= 0)) throw_coded(info.Env(), "ERR_KOALA_INVALID_ARGUMENT", "malloc(bytes, deviceId): bytes must be a number >= 0");
  const std::size_t bytes = static_cast<std::size_t>(info[0].As<Napi::Number>().Int64Value());
  const int device = device_arg(info[1]);
  return Napi::BigInt::New(info.Env(), static_cast<std::uint64_t>(cuda_call(info.Env(), [&] { return kc::device_malloc(bytes, device); })));
}

// free(ptr, deviceId)
Napi::Value Free(const Napi::CallbackInfo& info) {
  const std::uintptr_t p = pointer(info[0]);
  const int device = device_arg(info[1]);
  cuda_call(info.Env(), [&] { kc::device_free(p, device); });
  return info.Env().Undefined();
}

// copyToDevice(ptr, typedArray, deviceId, stream?): the array's bytes to ptr, ordered on the stream
Napi::Value CopyToDevice(const Napi::CallbackInfo& info) {
  const std::uintptr_t p = pointer(info[0]);
  const TypedView v = typed_view(info.Env(), info[1]);
  const int device = device_arg(info[2]);
  const std::uintptr_t stream = stream_arg(info[3]);
  cuda_call(info.Env(), [&] { kc::copy_to_device(p, v.data, v.bytes, device, stream); });
  return info.Env().Undefined();
}

// copyToHost(typedArray, ptr, deviceId, stream?): the array's length in bytes from ptr, ordered on the stream
Napi::Value CopyToHost(const Napi::CallbackInfo& info) {
  const TypedView v = typed_view(info.Env(), info[0]);
  const std::uintptr_t p = pointer(info[1]);
  const int device = device_arg(info[2]);
  const std::uintptr_t stream = stream_arg(info[3]);
  cuda_call(info.Env(), [&] { kc::copy_to_host(v.data, p, v.bytes, device, stream); });
  return info.Env().Undefined();
}

// synchronize(deviceId)
Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  const int device = device_arg(info[0]);
  cuda_call(info.Env(), [&] { kc::device_synchronize(device); });
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeCudaOptimizer", NativeCudaOptimizer::Define(env));
  exports.Set("protocol", koala::binding::protocol_object(env));
  exports.Set("probe", Napi::Function::New<koala::binding::guard_fn<kCudaFailure, Probe>>(env, "probe"));
  exports.Set("malloc", Napi::Function::New<koala::binding::guard_fn<kCudaFailure, Malloc>>(env, "malloc"));
  exports.Set("free", Napi::Function::New<koala::binding::guard_fn<kCudaFailure, Free>>(env, "free"));
  exports.Set("copyToDevice", Napi::Function::New<koala::binding::guard_fn<kCudaFailure, CopyToDevice>>(env, "copyToDevice"));
  exports.Set("copyToHost", Napi::Function::New<koala::binding::guard_fn<kCudaFailure, CopyToHost>>(env, "copyToHost"));
  exports.Set("synchronize", Napi::Function::New<koala::binding::guard_fn<kCudaFailure, Synchronize>>(env, "synchronize"));
  return exports;
}

}  // namespace

NODE_API_MODULE(koala_optim_cuda, Init)
