// koala_optim_dev.node: the development addon. It holds the benchmark's reference kernels (the
// memory bound and a fused Adam, native/dev/bench_kernels.h) and the test hooks (the chunk plan,
// and the CUDA optimizer's launch-error and device-scalar rules driven without a GPU),
// so that the production koala_optim.node exports the optimizer and its constants only. The
// library never loads this addon; bench/ and test/ do (bench/dev-addon.ts).
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "binding/config.h"
#include "binding/guard.h"
#include "binding/scalar_check.h"
#include "core/plan.h"
#include "core/step.h"
#include "cpu/kernels.h"
#include "cuda/launch.h"
#include "dev/bench_kernels.h"

namespace {

using koala::binding::throw_coded;
using koala::binding::TypedView;
using koala::binding::typed_view;

// What a C++ exception in a hook or a benchmark kernel becomes (Note [coded native errors]).
constexpr char kDevFailure[] = "ERR_KOALA_NATIVE";

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
  koala::stream_copy(threads, float32_data(env, info[0], n), float32_data(env, info[1], n), n);
  return env.Undefined();
}

Napi::Value StreamTriad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int threads = bench_threads(info, 5);
  const std::size_t n = typed_view(env, info[0]).length;
  koala::stream_triad(threads, float32_data(env, info[0], n), float32_data(env, info[1], n),
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
  koala::adam_step(threads, float32_data(env, info[0], n), float32_data(env, info[1], n),
                   float32_data(env, info[2], n), float32_data(env, info[3], n), s, n);
  return env.Undefined();
}

// mxcsr([value]) -> the calling thread's SSE control and status register (MXCSR) before the call,
// set to `value` when one is given; -1 where there is none (not x86-64). For the tests of Note
// [pinned floating-point mode] (cpu/pool.h): a caller in flush-to-zero / denormals-are-zero mode.
Napi::Value Mxcsr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 1 || (info.Length() == 1 && !info[0].IsNumber())) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "mxcsr([value])");
  }
#if defined(__x86_64__) || defined(_M_X64)
  const unsigned int before = _mm_getcsr();
  if (info.Length() == 1) _mm_setcsr(info[0].As<Napi::Number>().Uint32Value());
  return Napi::Number::New(env, before);
#else
  return Napi::Number::New(env, -1);
#endif
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

// externalMemory() -> the bytes V8 counts as external memory of this isolate (Node-API reports the
// count when adjusting it by 0), for the test of Note [native memory reported]. Node's own
// process.memoryUsage().external leaves out what addons report.
Napi::Value ExternalMemory(const Napi::CallbackInfo& info) {
  std::int64_t total = 0;
  if (napi_adjust_external_memory(info.Env(), 0, &total) != napi_ok) throw_coded(info.Env(), "ERR_KOALA_NATIVE", "napi_adjust_external_memory failed");
  return Napi::Number::New(info.Env(), static_cast<double>(total));
}

// CUDA's error state as a script: take() returns the next code (0 when the script is done).
struct ScriptedErrors {
  std::vector<int> codes;
  std::size_t next = 0;
  int take() { return next < codes.size() ? codes[next++] : 0; }
  std::string message(int code) { return "scripted error " + std::to_string(code); }
};

// launchSequence(errors: number[], launches, broken) -> { enqueued, error, broken }: the
// LaunchSequence of the CUDA optimizer (Note [launch errors], cuda/launch.h) driven by a scripted
// error state: errors[0] is what an earlier call left behind, errors[1 + i] the error of launch i.
Napi::Value LaunchSequenceHook(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !info[0].IsArray() || !info[1].IsNumber() || !info[2].IsBoolean()) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "launchSequence(errors, launches, broken)");
  }
  ScriptedErrors errors;
  const Napi::Array codes = info[0].As<Napi::Array>();
  for (std::uint32_t i = 0; i < codes.Length(); ++i) errors.codes.push_back(codes.Get(i).As<Napi::Number>().Int32Value());
  bool broken = info[2].As<Napi::Boolean>().Value();
  int enqueued = 0;
  std::string error;
  try {
    koala::cuda::LaunchSequence<ScriptedErrors> seq(errors, broken, "update");
    for (int i = 0; i < info[1].As<Napi::Number>().Int32Value(); ++i) seq.launch("kernel", [&] { ++enqueued; });
  } catch (const std::exception& e) {
    error = e.what();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("enqueued", enqueued);
  out.Set("error", error);
  out.Set("broken", broken);
  return out;
}

// scalarCheck(calls: [slot, address, elemBytes, verdict][]) -> [result, queried][]: the CUDA
// binding's device-scalar check and its cache (Note [device scalar check]), with the device query
// scripted: `verdict` is what the query would answer ('' = a good pointer).
Napi::Value ScalarCheckHook(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsArray()) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "scalarCheck(calls)");
  koala::binding::ScalarCheckCache cache;
  const Napi::Array calls = info[0].As<Napi::Array>();
  Napi::Array out = Napi::Array::New(env, calls.Length());
  for (std::uint32_t i = 0; i < calls.Length(); ++i) {
    const Napi::Array c = calls.Get(i).As<Napi::Array>();
    bool queried = false;
    const std::string verdict = c.Get(3u).As<Napi::String>().Utf8Value();
    const std::string result = cache.check(c.Get(0u).As<Napi::Number>().Int32Value(), static_cast<std::uintptr_t>(c.Get(1u).As<Napi::Number>().Int64Value()),
                                           static_cast<std::size_t>(c.Get(2u).As<Napi::Number>().Int64Value()), [&] {
                                             queried = true;
                                             return verdict;
                                           });
    Napi::Array r = Napi::Array::New(env, 2);
    r.Set(0u, result);
    r.Set(1u, queried);
    out.Set(i, r);
  }
  return out;
}

// decideStep(config, snapshot, sums: Float64Array [hh, xx, gg per layer], loss, lossSq, lr, lanes)
// -> { status, skipped, maxGain, snapshot, skipMask }: the step sequence (core/step.h) over given
// layer sums. lanes 0: decide_step, the CPU's fold in layer order; lanes n (a power of two): the
// CUDA kernel's order, layer l tallied on lane l % n, each lane folding its layers, then a pairwise
// tree over the lanes (cuda/kernels.cuh, decide_kernel), so that the two orders can be compared.
Napi::Value DecideStepHook(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 7 || !info[0].IsObject() || !info[1].IsObject() || !info[2].IsTypedArray()) {
    throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "decideStep(config, snapshot, sums, loss, lossSq, lr, lanes)");
  }
  const Napi::Object cfg = info[0].As<Napi::Object>();
  const koala::FilterConfig config = koala::binding::filter_config(cfg);
  const koala::DType dtype = koala::binding::dtype_field(cfg);
  koala::FilterSnapshot snap = koala::binding::snapshot_arg(env, info[1]);
  const TypedView raw = typed_view(env, info[2]);
  if (raw.type != napi_float64_array || raw.length % 3 != 0) throw_coded(env, "ERR_KOALA_INVALID_ARGUMENT", "sums: a Float64Array of 3 per layer");
  const std::size_t n = raw.length / 3;
  std::vector<koala::LayerSums> sums(n);
  for (std::size_t l = 0; l < n; ++l) sums[l] = {static_cast<double*>(raw.data)[3 * l], static_cast<double*>(raw.data)[3 * l + 1], static_cast<double*>(raw.data)[3 * l + 2]};
  const double loss = info[3].As<Napi::Number>().DoubleValue(), loss_sq = info[4].As<Napi::Number>().DoubleValue();
  const double lr = info[5].As<Napi::Number>().DoubleValue();
  const std::size_t lanes = static_cast<std::size_t>(info[6].As<Napi::Number>().Int64Value());
  std::vector<koala::LayerGain> gains(n);
  Napi::Uint8Array mask = Napi::Uint8Array::New(env, n);
  koala::StepReport report;
  if (lanes == 0) {
    report = koala::decide_step(config, snap, sums.data(), n, loss, loss_sq, lr, dtype, gains.data(), mask.Data());
  } else {
    const koala::FilterState next = koala::with_new_r(config, snap.filter, loss_sq);
    std::vector<koala::StepTally> tallies(lanes, koala::empty_tally());
    for (std::size_t l = 0; l < n; ++l) {
      tallies[l % lanes] = koala::combine(tallies[l % lanes], koala::tally_layer(config, next, sums[l], loss, lr, koala::dtype_max(dtype), gains[l]));
    }
    for (std::size_t stride = lanes / 2; stride > 0; stride /= 2) {
      for (std::size_t t = 0; t < stride; ++t) tallies[t] = koala::combine(tallies[t], tallies[t + stride]);
    }
    report = koala::finish_step(config, snap, next, tallies[0], loss, loss_sq);
    if (report.status == koala::StepStatus::kApplied) {
      for (std::size_t l = 0; l < n; ++l) mask[l] = gains[l].skip ? 1 : 0;
    }
  }
  Napi::Object out = koala::binding::step_object(env, report);
  out.Set("snapshot", koala::binding::snapshot_object(env, snap));
  out.Set("skipMask", mask);
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("externalMemory", Napi::Function::New<koala::binding::guard_fn<kDevFailure, ExternalMemory>>(env, "externalMemory"));
  exports.Set("decideStep", Napi::Function::New<koala::binding::guard_fn<kDevFailure, DecideStepHook>>(env, "decideStep"));
  exports.Set("launchSequence", Napi::Function::New<koala::binding::guard_fn<kDevFailure, LaunchSequenceHook>>(env, "launchSequence"));
  exports.Set("scalarCheck", Napi::Function::New<koala::binding::guard_fn<kDevFailure, ScalarCheckHook>>(env, "scalarCheck"));
  exports.Set("planChunks", Napi::Function::New<koala::binding::guard_fn<kDevFailure, PlanChunks>>(env, "planChunks"));
  exports.Set("streamCopy", Napi::Function::New<koala::binding::guard_fn<kDevFailure, StreamCopy>>(env, "streamCopy"));
  exports.Set("streamTriad", Napi::Function::New<koala::binding::guard_fn<kDevFailure, StreamTriad>>(env, "streamTriad"));
  exports.Set("adamStep", Napi::Function::New<koala::binding::guard_fn<kDevFailure, AdamStep>>(env, "adamStep"));
  exports.Set("mxcsr", Napi::Function::New<koala::binding::guard_fn<kDevFailure, Mxcsr>>(env, "mxcsr"));
  exports.Set("chunkElems", static_cast<double>(koala::kChunkElems));
  exports.Set("isa", Napi::String::New(env, koala::cpu::selected_isa().description));
  return exports;
}

}  // namespace

NODE_API_MODULE(koala_optim_dev, Init)
