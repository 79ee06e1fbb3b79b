// Registers the addon's exports; each exposed class lives in its own file.
#include <napi.h>

#include "addon/Comm.h"
#include "addon/Gguf.h"
#include "addon/Model.h"
#include "backend/registry.h"
#include "model/modules.h"
#include "cpu/isa.h"
#ifdef SFT_HAVE_CUDA
#include <cuda_runtime.h>

#include "cuda/device.h"
#endif

namespace {

// Which backends this build has and how many devices each sees now.
Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cpu", true);
  o.Set("cudaBuilt", sft::backend_built(sft::Device::Cuda));
  std::string err;
  const int n = sft::backend_devices(sft::Device::Cuda, &err);
  o.Set("cudaDevices", n);
  if (!err.empty() && sft::backend_built(sft::Device::Cuda)) o.Set("cudaError", err);
#ifdef SFT_HAVE_CUDA
  if (n > 0) {  // the card the cuda backend uses (device 0) and its memory now
    cudaDeviceProp p;
    size_t free_b = 0, total = 0;
    if (cudaGetDeviceProperties(&p, 0) == cudaSuccess && cudaSetDevice(0) == cudaSuccess && cudaMemGetInfo(&free_b, &total) == cudaSuccess) {
      o.Set("cudaName", std::string(p.name));
      o.Set("cudaCapability", std::to_string(p.major) + "." + std::to_string(p.minor));
      o.Set("cudaFreeBytes", double(free_b));
      o.Set("cudaTotalBytes", double(total));
    }
    cudaGetLastError();
  }
#endif
  return o;
}

// The architecture's parts by name: LoRA modules ("all" targets), and the tensor-name rules.
Napi::Value ArchInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sft::Arch a;
  try {
    a = sft::parse_arch(info[0].ToString().Utf8Value());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  Napi::Object o = Napi::Object::New(env);
  const auto mods = sft::model::lora_modules(a);
  Napi::Array m = Napi::Array::New(env, mods.size());
  for (size_t i = 0; i < mods.size(); i++) m.Set(uint32_t(i), mods[i]);
  o.Set("loraModules", m);
  return o;
}

// The engine's name for a checkpoint tensor, or null when the engine has no use for it.
Napi::Value TensorName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    const sft::Arch a = sft::parse_arch(info[0].ToString().Utf8Value());
    const bool tied = info[1].ToBoolean().Value();
    const std::string name = sft::model::canonical_tensor_name(a, info[2].ToString().Utf8Value());
    if (sft::model::ignorable_tensor(a, tied, name)) return env.Null();
    return Napi::String::New(env, name);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// The CPU kernels this process runs (cpu/isa.h): the chosen instruction set and the ones available.
Napi::Value CpuKernels(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", sft::cpu::isa_name(sft::cpu::current_isa()));
  Napi::Array avail = Napi::Array::New(env);
  uint32_t n = 0;
  for (auto i : sft::cpu::kAllIsas)
    if (sft::cpu::isa_available(i)) avail.Set(n++, sft::cpu::isa_name(i));
  o.Set("available", avail);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  try {  // a CPU older than the build's baseline, or a bad SFT_CPU_ISA: say so here, not with SIGILL later
    sft::cpu::check_baseline();
    sft::cpu::kernels();
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
#ifdef SFT_HAVE_CUDA
  sft::register_cuda_backend();
#endif
  exports.Set("Model", sft::addon::Model::Init(env));
  exports.Set("comm", sft::addon::CommExports(env));
  exports.Set("gguf", sft::addon::GgufExports(env));
  exports.Set("backends", Napi::Function::New(env, Backends));
  exports.Set("archInfo", Napi::Function::New(env, ArchInfo));
  exports.Set("tensorName", Napi::Function::New(env, TensorName));
  exports.Set("cpuKernels", Napi::Function::New(env, CpuKernels));
  exports.Set("version", "0.1.0");
  return exports;
}

}  // namespace

NODE_API_MODULE(sft_native, Init)
