// A thin Node-API binding to MPI for examples/data-parallel/mpi.ts: init, rank, size, an in-place
// MPI_Allreduce (sum) of a Float64Array over MPI_COMM_WORLD, finalize. Blocking calls from the main
// thread only (MPI_THREAD_FUNNELED is all it needs).
#include <dlfcn.h>
#include <mpi.h>
#include <napi.h>

#include <string>

namespace {

void check(Napi::Env env, int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  throw Napi::Error::New(env, std::string(what) + ": " + std::string(text, length));
}

// Node loads addons with RTLD_LOCAL; Open MPI's plugins look up libmpi's symbols globally, so the
// library is promoted to RTLD_GLOBAL before MPI_Init (mpi4py does the same).
void promote_libmpi() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&MPI_Init), &info) != 0 && info.dli_fname != nullptr) {
    dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
  }
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    promote_libmpi();
    int provided = 0;
    check(info.Env(), MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  }
  return info.Env().Undefined();
}

Napi::Value Rank(const Napi::CallbackInfo& info) {
  int rank = 0;
  check(info.Env(), MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
  return Napi::Number::New(info.Env(), rank);
}

Napi::Value Size(const Napi::CallbackInfo& info) {
  int size = 0;
  check(info.Env(), MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
  return Napi::Number::New(info.Env(), size);
}

// allReduceSum(buf: Float64Array): every rank's buf becomes the element-wise sum over the ranks.
Napi::Value AllReduceSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw Napi::TypeError::New(env, "allReduceSum(buf) takes a Float64Array");
  }
  Napi::Float64Array buf = info[0].As<Napi::Float64Array>();
  if (buf.ElementLength() > static_cast<std::size_t>(INT32_MAX)) throw Napi::RangeError::New(env, "allReduceSum: buffer too long");
  check(env, MPI_Allreduce(MPI_IN_PLACE, buf.Data(), static_cast<int>(buf.ElementLength()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
        "MPI_Allreduce");
  return env.Undefined();
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) check(info.Env(), MPI_Finalize(), "MPI_Finalize");
  return info.Env().Undefined();
}

Napi::Object Module(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("rank", Napi::Function::New(env, Rank));
  exports.Set("size", Napi::Function::New(env, Size));
  exports.Set("allReduceSum", Napi::Function::New(env, AllReduceSum));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  return exports;
}

}  // namespace

NODE_API_MODULE(koala_mpi, Module)
