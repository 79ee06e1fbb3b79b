// The GGUF encoders (cpu/gguf_quant.h) for `sft export --format gguf`.
#pragma once
#include <napi.h>

namespace sft::addon {

// { quantize(type, data: Float32Array, rows, cols): Promise<Uint8Array>, dequantize(type, bytes, rows, cols): Float32Array, rowBytes(type, cols) }
Napi::Object GgufExports(Napi::Env env);

}  // namespace sft::addon
