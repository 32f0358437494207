// Shared by the Node-API addons (CPU, CUDA, development): no C++ exception leaves a call into an
// addon other than as a JS error with a stable `code`, and an error that can no longer be thrown
// (the environment is terminating) is dropped instead of aborting the process.
#pragma once

#include <napi.h>

#include <new>
#include <stdexcept>
#include <string>
#include <system_error>

#include "binding/config.h"

// Note [unthrowable exceptions]
// With NAPI_CPP_EXCEPTIONS, node-addon-api turns a failed Node-API call into a C++ Napi::Error and
// its callback wrapper throws that into JS (napi_throw) when the call unwinds. While an environment
// is terminating (worker.terminate() during a call into the addon, or the process exiting), every
// Node-API call that would run JS fails with napi_pending_exception, napi_throw included. Without
// NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS the wrapper then throws again from inside its catch
// handler, out of a C callback, and the process aborts ("terminate called after throwing an
// instance of 'Napi::Error'"). With it the wrapper drops an error it cannot throw: nobody is left
// to catch it. The build defines it for every addon (CMakeLists.txt, binding.gyp), since it must be
// the same in every translation unit; this header refuses to compile without it.
// test/native/terminate.test.ts terminates workers mid-step and expects a clean exit.
#ifndef NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#error "the addons are built with NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS (Note [unthrowable exceptions])"
#endif

namespace koala {
namespace binding {

// Note [coded native errors]
// Called from a catch handler: rethrows the exception in flight as a coded JS error. A Napi::Error
// (a coded error thrown on purpose, or a failed Node-API call) goes on as it is; running out of
// memory (std::bad_alloc, or std::length_error: a size no allocation can have) is
// ERR_KOALA_OUT_OF_MEMORY; anything else is `other_code` with its message: ERR_KOALA_NATIVE for the
// CPU addon (a resource the system refuses, std::system_error, or a bug; the shared pool itself
// runs on fewer threads when one is refused), ERR_KOALA_CUDA for the CUDA addon (CUDA's errors,
// thrown as std::runtime_error; its cuda_call maps a missing device and a bad argument first). Nothing a binding
// calls has modified anything visible when it throws (an optimizer's constructor frees what it
// took), so the caller's promise holds: a coded error, nothing changed.
[[noreturn]] inline void rethrow_coded(Napi::Env env, const char* other_code) {
  try {
    throw;
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw_coded(env, "ERR_KOALA_OUT_OF_MEMORY", "out of memory: the optimizer's native state could not be allocated");
  } catch (const std::length_error& e) {
    throw_coded(env, "ERR_KOALA_OUT_OF_MEMORY", std::string("out of memory: ") + e.what());
  } catch (const std::system_error& e) {
    throw_coded(env, other_code, std::string("the system refused a resource (a thread, for instance): ") + e.what());
  } catch (const std::exception& e) {
    throw_coded(env, other_code, e.what());
  } catch (...) {
    throw_coded(env, other_code, "an unknown native exception");
  }
}

// Runs fn() under rethrow_coded (Note [coded native errors]).
template <class Fn>
auto guarded(Napi::Env env, const char* other_code, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (...) {
    rethrow_coded(env, other_code);
  }
}

// A Node-API function callback F under rethrow_coded, for Napi::Function::New<guard_fn<Code, F>>:
// Code is the addon's catch-all code, a `constexpr char[]` of its own.
template <const char* Code, Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Value guard_fn(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), Code, [&] { return F(info); });
}

}  // namespace binding
}  // namespace koala
