// ggufQuantize runs on a worker thread (a 7B model's tensors take seconds each to encode as Q4_K),
// writing into a Uint8Array allocated up front; the input and output arrays are held by references
// until the promise settles. dequantize (for tests and checks) is synchronous.
#include "addon/Gguf.h"

#include <string>

#include "core/threads.h"
#include "cpu/gguf_quant.h"

namespace sft::addon {
namespace {

struct Shape {
  gguf::QType type;
  int64_t rows, cols, bytes;
};

Shape read_shape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    Shape s;
    s.type = gguf::parse_qtype(info[0].ToString().Utf8Value());
    s.rows = info[2].ToNumber().Int64Value();
    s.cols = info[3].ToNumber().Int64Value();
    if (s.rows < 0 || s.cols <= 0) throw std::invalid_argument("bad tensor shape");
    s.bytes = s.rows * gguf::row_bytes(s.type, s.cols);
    return s;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

class QuantizeWorker : public Napi::AsyncWorker {
 public:
  QuantizeWorker(Napi::Env env, Shape s, Napi::Float32Array in, Napi::Uint8Array out)
      : Napi::AsyncWorker(env), s_(s), in_(in.Data()), out_(out.Data()), deferred_(Napi::Promise::Deferred::New(env)) {
    in_ref_ = Napi::Persistent(in);
    out_ref_ = Napi::Persistent(out);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      gguf::quantize(s_.type, in_, s_.rows, s_.cols, out_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
    rest_threads();
  }
  void OnOK() override { deferred_.Resolve(out_ref_.Value()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Shape s_;
  const float* in_;
  uint8_t* out_;
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Float32Array> in_ref_;
  Napi::Reference<Napi::Uint8Array> out_ref_;
};

Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Shape s = read_shape(info);
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(env, "quantize: data must be a Float32Array");
  auto in = info[1].As<Napi::Float32Array>();
  if (int64_t(in.ElementLength()) != s.rows * s.cols) throw Napi::Error::New(env, "quantize: data length is not rows x cols");
  auto out = Napi::Uint8Array::New(env, size_t(s.bytes));
  auto* w = new QuantizeWorker(env, s, in, out);
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Shape s = read_shape(info);
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw Napi::TypeError::New(env, "dequantize: bytes must be a Uint8Array");
  auto in = info[1].As<Napi::Uint8Array>();
  if (int64_t(in.ByteLength()) != s.bytes) throw Napi::Error::New(env, "dequantize: byte length does not match the type and shape");
  auto out = Napi::Float32Array::New(env, size_t(s.rows * s.cols));
  gguf::dequantize(s.type, in.Data(), s.rows, s.cols, out.Data());
  return out;
}

Napi::Value RowBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    const auto t = gguf::parse_qtype(info[0].ToString().Utf8Value());
    return Napi::Number::New(env, double(gguf::row_bytes(t, info[1].ToNumber().Int64Value())));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

}  // namespace

Napi::Object GgufExports(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("quantize", Napi::Function::New(env, Quantize));
  o.Set("dequantize", Napi::Function::New(env, Dequantize));
  o.Set("rowBytes", Napi::Function::New(env, RowBytes));
  return o;
}

}  // namespace sft::addon
