// Registers the addon's exports; each exposed class lives in its own file.
#include <napi.h>

#include "addon/Model.h"
#ifdef SFT_HAVE_CUDA
#include "cuda/device.h"
#endif

namespace {

Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cpu", true);
#ifdef SFT_HAVE_CUDA
  std::string err;
  const int n = sft::cuda::device_count(&err);
  o.Set("cudaBuilt", true);
  o.Set("cudaDevices", n);
  if (!err.empty()) o.Set("cudaError", err);
#else
  o.Set("cudaBuilt", false);
  o.Set("cudaDevices", 0);
#endif
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Model", sft::addon::Model::Init(env));
  exports.Set("backends", Napi::Function::New(env, Backends));
  exports.Set("version", "0.1.0");
  return exports;
}

}  // namespace

NODE_API_MODULE(sft_native, Init)
