// Shared by the Node-API addons (CPU, CUDA, development): coded errors, typed-array views, and the plain config object that
// lib/options.ts normalizes, read into the core's FilterConfig and FilterState.
#pragma once

#include <napi.h>

#include <string>

#include "koala/filter.h"

namespace koala {
namespace binding {

// A JS Error carrying a stable `code` (lib/errors.ts gives it the KoalaError class).
[[noreturn]] inline void throw_coded(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  throw err;
}

// A typed array's data, element type and length (data is null when its buffer was detached).
struct TypedView {
  void* data;
  napi_typedarray_type type;
  std::size_t length;
};

inline TypedView typed_view(Napi::Env env, napi_value value) {
  TypedView out{nullptr, napi_uint8_array, 0};
  napi_value buffer;
  std::size_t offset;
  if (napi_get_typedarray_info(env, value, &out.type, &out.length, &out.data, &buffer, &offset) != napi_ok) {
    throw_coded(env, "ERR_KOALA_INVALID_ARRAY", "expected a typed array");
  }
  return out;
}

inline double number_field(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw_coded(o.Env(), "ERR_KOALA_INVALID_OPTION", std::string("config.") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

inline DType dtype_field(const Napi::Object& cfg) {
  return number_field(cfg, "dtype") == 0 ? DType::kFloat32 : DType::kFloat64;
}

inline FilterConfig filter_config(const Napi::Object& cfg) {
  FilterConfig config{};
  config.variant = number_field(cfg, "variant") == 0 ? Variant::kMomentum : Variant::kVanilla;
  config.weight_decay = number_field(cfg, "weightDecay");
  config.eps = number_field(cfg, "eps");
  config.kappa = number_field(cfg, "kappa");
  config.q_p = number_field(cfg, "qP");
  config.q = number_field(cfg, "q");
  config.beta_r = number_field(cfg, "betaR");
  config.adaptive_r = cfg.Get("adaptiveR").ToBoolean().Value();
  return config;
}

inline FilterState initial_state(const Napi::Object& cfg) {
  return {number_field(cfg, "p00"), number_field(cfg, "p01"), number_field(cfg, "p11"),
          number_field(cfg, "qX"),  number_field(cfg, "sigma"), number_field(cfg, "r")};
}

inline bool lazy_predict(const Napi::Object& cfg) { return cfg.Get("lazyPredict").ToBoolean().Value(); }

}  // namespace binding
}  // namespace koala
