// Shared by the Node-API addons (CPU, CUDA, development): coded errors, typed-array views, the plain config object that
// lib/options.ts normalizes (read into the core's FilterConfig and FilterState), and the protocol (koala/protocol.h) as
// JS values: its constants, filter snapshots and step reports.
#pragma once

#include <napi.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "koala/filter.h"
#include "koala/protocol.h"
#include "koala/types.h"

namespace koala {
namespace binding {

// A JS Error carrying a stable `code` (lib/errors.ts gives it the KoalaError class).
[[noreturn]] inline void throw_coded(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  throw err;
}

// A typed array's data, element type, length and size in bytes (data is null when its buffer was
// detached), and the ArrayBuffer or SharedArrayBuffer it views, at byte `offset`.
struct TypedView {
  void* data;
  napi_typedarray_type type;
  std::size_t length;
  std::size_t bytes;
  napi_value buffer;
  std::size_t offset;
};

// Bytes per element of a typed-array type.
inline std::size_t element_bytes(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array:
      return 1;
    case napi_int16_array:
    case napi_uint16_array:
      return 2;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array:
      return 4;
    default:  // float64, bigint64, biguint64
      return 8;
  }
}

inline TypedView typed_view(Napi::Env env, napi_value value) {
  TypedView out{nullptr, napi_uint8_array, 0, 0, nullptr, 0};
  if (napi_get_typedarray_info(env, value, &out.type, &out.length, &out.data, &out.buffer, &out.offset) != napi_ok) {
    throw_coded(env, "ERR_KOALA_INVALID_ARRAY", "expected a typed array");
  }
  out.bytes = out.length * element_bytes(out.type);
  return out;
}

// The typed-array type that holds elements of `dtype`.
inline napi_typedarray_type array_type(DType dtype) {
  return dtype == DType::kFloat32 ? napi_float32_array : napi_float64_array;
}

inline double number_field(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw_coded(o.Env(), "ERR_KOALA_INVALID_OPTION", std::string("config.") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

inline DType dtype_field(const Napi::Object& cfg) {
  return number_field(cfg, "dtype") == static_cast<int>(DType::kFloat32) ? DType::kFloat32 : DType::kFloat64;
}

inline Variant variant_field(const Napi::Object& cfg) {
  const double variant = number_field(cfg, "variant");
  return variant == static_cast<int>(Variant::kMomentum)   ? Variant::kMomentum
         : variant == static_cast<int>(Variant::kPlusPlus) ? Variant::kPlusPlus
                                                           : Variant::kVanilla;
}

inline FilterConfig filter_config(const Napi::Object& cfg) {
  FilterConfig config{};
  config.variant = variant_field(cfg);
  config.weight_decay = number_field(cfg, "weightDecay");
  config.eps = number_field(cfg, "eps");
  config.kappa = number_field(cfg, "kappa");
  config.q_p = number_field(cfg, "qP");
  config.q = number_field(cfg, "q");
  config.beta_r = number_field(cfg, "betaR");
  config.adaptive_r = cfg.Get("adaptiveR").ToBoolean().Value();
  config.absolute_target = cfg.Get("absoluteTarget").ToBoolean().Value();
  config.paper_state_noise = cfg.Get("paperStateNoise").ToBoolean().Value();
  config.vanilla_along_h = cfg.Get("vanillaAlongH").ToBoolean().Value();
  config.symmetric = cfg.Get("symmetric").ToBoolean().Value();
  return config;
}

inline FilterState initial_state(const Napi::Object& cfg) {
  return {number_field(cfg, "p00"), number_field(cfg, "p01"), number_field(cfg, "p11"),
          number_field(cfg, "qX"),  number_field(cfg, "sigma"), number_field(cfg, "r")};
}

inline bool lazy_predict(const Napi::Object& cfg) { return cfg.Get("lazyPredict").ToBoolean().Value(); }

// config.modelElems: a sharded rank's n of q_x, the whole model's elements (Note [sharded step],
// cpu/optimizer.h); 0 when absent, an unsharded optimizer, whose n is its own layers' total.
inline double model_elems(const Napi::Object& cfg) {
  return cfg.Get("modelElems").IsUndefined() ? 0.0 : number_field(cfg, "modelElems");
}

// The protocol's constants, as lib/protocol.ts spells them (test/parity/protocol.test.ts compares the two).
inline Napi::Object protocol_object(Napi::Env env) {
  const auto table = [&](std::initializer_list<std::pair<const char*, int>> entries) {
    Napi::Object o = Napi::Object::New(env);
    for (const auto& [name, value] : entries) o.Set(name, value);
    return o;
  };
  Napi::Object out = Napi::Object::New(env);
  out.Set("status", table({{"applied", static_cast<int>(StepStatus::kApplied)},
                           {"nonFiniteGradient", static_cast<int>(StepStatus::kNonFiniteGradient)},
                           {"nonFiniteParameter", static_cast<int>(StepStatus::kNonFiniteParameter)},
                           {"nonFiniteLoss", static_cast<int>(StepStatus::kNonFiniteLoss)},
                           {"nonFiniteStep", static_cast<int>(StepStatus::kNonFiniteStep)}}));
  out.Set("variant", table({{"momentum", static_cast<int>(Variant::kMomentum)},
                            {"vanilla", static_cast<int>(Variant::kVanilla)},
                            {"plusPlus", static_cast<int>(Variant::kPlusPlus)}}));
  out.Set("dtype", table({{"float32", static_cast<int>(DType::kFloat32)}, {"float64", static_cast<int>(DType::kFloat64)}}));
  out.Set("layerState",
          table({{"velocity", static_cast<int>(LayerStateKind::kVelocity)},
                 {"average", static_cast<int>(LayerStateKind::kAverage)},
                 {"product", static_cast<int>(LayerStateKind::kProduct)},
                 {"direction", static_cast<int>(LayerStateKind::kDirection)}}));
  out.Set("noPendingPredict", kNoPendingPredict);
  out.Set("ppLayerScalars", kPPLayerScalars);
  return out;
}

// A FilterSnapshot as { p00, p01, p11, qX, sigma, r, pending, steps }.
inline Napi::Object snapshot_object(Napi::Env env, const FilterSnapshot& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("p00", s.filter.p00);
  o.Set("p01", s.filter.p01);
  o.Set("p11", s.filter.p11);
  o.Set("qX", s.filter.q_x);
  o.Set("sigma", s.filter.sigma);
  o.Set("r", s.filter.r);
  o.Set("pending", s.pending);
  o.Set("steps", static_cast<double>(s.steps));
  return o;
}

// The inverse of snapshot_object; steps must be a non-negative integer (the facade checks the rest).
inline FilterSnapshot snapshot_arg(Napi::Env env, const Napi::Value& v) {
  if (!v.IsObject()) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "setFilter takes a filter snapshot object");
  const Napi::Object o = v.As<Napi::Object>();
  const double steps = number_field(o, "steps");
  if (!(steps >= 0 && steps <= 9007199254740991.0 && steps == static_cast<double>(static_cast<std::uint64_t>(steps)))) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "snapshot.steps must be a non-negative integer");
  }
  return {{number_field(o, "p00"), number_field(o, "p01"), number_field(o, "p11"), number_field(o, "qX"), number_field(o, "sigma"),
           number_field(o, "r")},
          number_field(o, "pending"),
          static_cast<std::uint64_t>(steps)};
}

// The arguments of readLayerState/writeLayerState(kind, layer, array), checked for an optimizer of
// `variant` and `dtype` over layers of `sizes`: KOALA-M's kinds or KOALA++'s, an existing layer, an attached array
// of the layer's dtype and length.
struct LayerStateArgs {
  LayerStateKind kind;
  std::size_t layer;
  void* data;
};

inline LayerStateArgs layer_state_args(const Napi::CallbackInfo& info, Variant variant, DType dtype, const std::vector<std::size_t>& sizes) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsTypedArray()) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "(kind, layer, array)");
  }
  if (variant == Variant::kVanilla) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "KOALA-V keeps no per-layer state");
  const double kind = info[0].As<Napi::Number>().DoubleValue();
  const double layer = info[1].As<Napi::Number>().DoubleValue();
  // KOALA-M keeps velocities and averages, KOALA++ products and directions.
  const bool plus_plus = variant == Variant::kPlusPlus;
  const double first_kind = static_cast<int>(plus_plus ? LayerStateKind::kProduct : LayerStateKind::kVelocity);
  if ((kind != first_kind && kind != first_kind + 1) || !(layer >= 0) ||
      layer >= static_cast<double>(sizes.size()) || layer != static_cast<double>(static_cast<std::size_t>(layer))) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "no such layer state");
  }
  const auto l = static_cast<std::size_t>(layer);
  const TypedView arr = typed_view(env, info[2]);
  // An empty slice of a sharded layer (Note [sharded step]) may have no data pointer.
  if (arr.type != array_type(dtype) || arr.length != sizes[l] || (sizes[l] > 0 && arr.data == nullptr)) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "layer state array of the wrong dtype or length, or detached");
  }
  return {static_cast<LayerStateKind>(static_cast<int>(kind)), l, arr.data};
}

// KOALA++'s layer scalars (koala/protocol.h PPLayerState) to and from kPPLayerScalars doubles per
// layer, the layout of lib/protocol.ts PP_LAYER_SCALARS.
inline void pp_scalars_out(const PPLayerState* layers, std::size_t n, double* out) {
  for (std::size_t l = 0; l < n; ++l, out += kPPLayerScalars) {
    out[0] = layers[l].s;
    out[1] = layers[l].hh;
    out[2] = layers[l].vh;
    out[3] = layers[l].updated ? 1.0 : 0.0;
  }
}

inline void pp_scalars_in(const double* in, std::size_t n, PPLayerState* layers) {
  for (std::size_t l = 0; l < n; ++l, in += kPPLayerScalars) layers[l] = {in[0], in[1], in[2], in[3] != 0.0};
}

// Checks that `v` is a Float64Array of kPPLayerScalars per layer for `num_layers` layers; its data.
inline double* pp_scalars_arg(Napi::Env env, const Napi::Value& v, std::size_t num_layers) {
  const TypedView arr = v.IsTypedArray() ? typed_view(env, v) : TypedView{nullptr, napi_uint8_array, 0, 0, nullptr, 0};
  if (arr.type != napi_float64_array || arr.data == nullptr || arr.length != num_layers * kPPLayerScalars) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "layer scalars: a Float64Array of 4 numbers per layer");
  }
  return static_cast<double*>(arr.data);
}

// A step's outcome as { status, skipped, maxGain }.
inline Napi::Object step_object(Napi::Env env, const StepReport& r) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("status", static_cast<int>(r.status));
  out.Set("skipped", static_cast<double>(r.skipped_layers));
  out.Set("maxGain", r.max_gain);
  return out;
}

}  // namespace binding
}  // namespace koala
