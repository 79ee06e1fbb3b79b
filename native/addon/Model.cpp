// The `Model` class exposed to JavaScript (typed in src/native/types.ts). Every slow method
// runs in its own AsyncWorker and returns a Promise, so the event loop stays free for the
// progress bar, Ctrl-C and HTTP. One mutex per model serialises native work on it.
#include "addon/Model.h"

#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <new>
#include <string>
#include <mutex>

#include "addon/Comm.h"
#include "addon/memory.h"
#ifdef SFT_HAVE_CUDA
#include "cuda/device.h"
#endif
#include "core/threads.h"
#include "model/optimizer.h"

namespace sft::addon {
namespace {

std::vector<int64_t> to_shape(const Napi::Array& a) {
  std::vector<int64_t> s;
  for (uint32_t i = 0; i < a.Length(); i++) s.push_back(a.Get(i).As<Napi::Number>().Int64Value());
  return s;
}

Napi::Array from_params(Napi::Env env, const std::vector<ParamInfo>& ps) {
  Napi::Array out = Napi::Array::New(env, ps.size());
  for (size_t i = 0; i < ps.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", ps[i].name);
    Napi::Array shape = Napi::Array::New(env, ps[i].shape.size());
    for (size_t j = 0; j < ps[i].shape.size(); j++) shape.Set(uint32_t(j), Napi::Number::New(env, double(ps[i].shape[j])));
    o.Set("shape", shape);
    out.Set(uint32_t(i), o);
  }
  return out;
}

std::vector<int32_t> to_ids(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be an Int32Array");
  auto a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

Napi::Float32Array to_f32(Napi::Env env, const std::vector<float>& v) {
  auto a = Napi::Float32Array::New(env, v.size());
  std::copy(v.begin(), v.end(), a.Data());
  return a;
}

// Base for the Promise-returning workers: holds the model alive and settles the promise.
class Worker : public Napi::AsyncWorker {
 public:
  Worker(Model* m, Napi::Env env) : Napi::AsyncWorker(env), model_(m), deferred_(Napi::Promise::Deferred::New(env)) {
    self_ = Napi::Persistent(m->Value());
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() final {
    std::lock_guard<std::mutex> lock(model_->mutex());
#ifdef SFT_HAVE_CUDA
    sft::cuda::select_process_device();  // this rank's GPU on this pool thread (the runtime's is per thread)
#endif
    try {
      Run();
    } catch (const OutOfMemory& e) {
      SetError(std::string(e.what()) + " in " + What() + " — " + oom_advice(model_->engine().memory_plan()));
    } catch (const std::bad_alloc&) {
      SetError("out of memory in " + What() + " — " + oom_advice(model_->engine().memory_plan()));
    } catch (const std::exception& e) {
      std::string m = e.what();
      // A kernel's own temporary that did not fit (stream-ordered pool): the same advice.
      if (m.find("cudaErrorMemoryAllocation") != std::string::npos) m += " in " + What() + " — " + oom_advice(model_->engine().memory_plan());
      SetError(m);
    }
    rest_threads();  // back to JavaScript: the pool's workers need not spin for the next call
  }
  virtual void Run() = 0;
  // What the worker was doing, for error messages (shapes included where they matter).
  virtual std::string What() const { return "the engine"; }
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }
  void OnOK() final { deferred_.Resolve(Result(Env())); }
  void OnError(const Napi::Error& e) final { deferred_.Reject(e.Value()); }

  Model* model_;
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference self_;
};

struct Source {
  std::string name, file, dtype;
  int64_t offset;
  std::vector<int64_t> shape;
};

// `partial`: more calls follow (the caller loads in parts, to answer Ctrl-C between them), so the
// check that every tensor is there waits for the last one.
class LoadWeightsWorker : public Worker {
 public:
  LoadWeightsWorker(Model* m, Napi::Env env, std::vector<Source> s, bool partial)
      : Worker(m, env), sources_(std::move(s)), partial_(partial) {}
  void Run() override {
    std::map<std::string, int> fds;
    std::vector<uint8_t> buf;
    try {
      for (const auto& s : sources_) {
        int& fd = fds[s.file];
        if (!fd) fd = ::open(s.file.c_str(), O_RDONLY);
        if (fd < 0) throw std::runtime_error("cannot open " + s.file);
        const DType dt = parse_dtype(s.dtype);
        int64_t n = 1;
        for (auto d : s.shape) n *= d;
        const size_t bytes = size_t(n) * dtype_size(dt);
        buf.resize(bytes);
        size_t done = 0;
        while (done < bytes) {
          ssize_t r = ::pread(fd, buf.data() + done, bytes - done, off_t(s.offset + int64_t(done)));
          if (r <= 0) throw std::runtime_error(s.file + ": truncated while reading tensor \"" + s.name + "\"");
          done += size_t(r);
        }
        model_->engine().load_tensor(s.name, buf.data(), dt, s.shape);
      }
    } catch (...) {
      for (auto& [f, fd] : fds) if (fd > 0) ::close(fd);
      throw;
    }
    for (auto& [f, fd] : fds) if (fd > 0) ::close(fd);
    if (partial_) return;
    auto missing = model_->engine().missing_tensors();
    if (!missing.empty()) {
      std::string msg = "checkpoint is missing " + std::to_string(missing.size()) + " tensor(s): ";
      for (size_t i = 0; i < missing.size() && i < 8; i++) msg += (i ? ", " : "") + missing[i];
      if (missing.size() > 8) msg += ", ...";
      throw std::runtime_error(msg);
    }
  }

 private:
  std::vector<Source> sources_;
  bool partial_;
};

// The loss of one batch: with gradients (forwardBackward: adds d(scale * loss)/dparam, dropout of
// `step`), or without, in eval mode (forwardLoss: no dropout, no logits copied to JavaScript).
class LossWorker : public Worker {
 public:
  LossWorker(Model* m, Napi::Env env, std::vector<int32_t> ids, std::vector<int32_t> labels, int64_t B, int64_t T,
             bool grad, double scale = 0, int64_t step = 0)
      : Worker(m, env), ids_(std::move(ids)), labels_(std::move(labels)), B_(B), T_(T), grad_(grad), scale_(scale), step_(step) {}
  void Run() override {
    auto& e = model_->engine();
    loss_ = grad_ ? e.forward_backward(ids_.data(), labels_.data(), B_, T_, scale_, step_, &count_)
                  : e.forward_loss(ids_.data(), labels_.data(), B_, T_, 0, false, &count_);
  }
  std::string What() const override {
    return std::string(grad_ ? "forward/backward" : "forward") + " of a batch of " + std::to_string(B_) + " x " + std::to_string(T_) + " tokens";
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("lossSum", loss_);
    o.Set("tokens", double(count_));
    return o;
  }

 private:
  std::vector<int32_t> ids_, labels_;
  int64_t B_, T_;
  bool grad_;
  double scale_;
  int64_t step_, count_ = 0;
  double loss_ = 0;
};

// The step and the check of what it wrote, in one worker: { gradNorm, weightsFinite }. A
// non-finite norm means no update was made (adamw_step skips it), so the weights are as before.
class AdamWWorker : public Worker {
 public:
  AdamWWorker(Model* m, Napi::Env env, AdamWOptions o) : Worker(m, env), opts_(o) {}
  void Run() override {
    norm_ = model_->engine().adamw_step(opts_);
    finite_ = !std::isfinite(norm_) || model_->engine().trainable_finite();
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("gradNorm", norm_);
    o.Set("weightsFinite", finite_);
    return o;
  }

 private:
  AdamWOptions opts_;
  double norm_ = 0;
  bool finite_ = true;
};

// The flat gradient block summed over the data-parallel ranks, in place (comm/comm.h).
class AllReduceGradsWorker : public Worker {
 public:
  using Worker::Worker;
  void Run() override {
    const ModelBase::GradBlock g = model_->engine().grad_block();
    comm::Communicator& w = world();
    if (w.size() == 1 || !g.data) return;
    if (g.device && std::string(w.backend()) != "nccl")
      throw std::runtime_error(std::string("the gradients are in GPU memory but the communicator is ") + w.backend() + " (CPU buffers)");
    if (g.f64) w.all_reduce_sum(static_cast<double*>(g.data), g.count);
    else w.all_reduce_sum(static_cast<float*>(g.data), g.count);
  }
  std::string What() const override { return "the gradient all-reduce"; }
};

// logits (no cache), feed (cached, one slot) and decode (cached, one token for each of several slots).
class LogitsWorker : public Worker {
 public:
  enum Kind { Full, Feed, Decode };
  LogitsWorker(Model* m, Napi::Env env, Kind kind, std::vector<int32_t> ids, int64_t B, int64_t T, std::vector<int32_t> slots = {})
      : Worker(m, env), kind_(kind), ids_(std::move(ids)), slots_(std::move(slots)), B_(B), T_(T) {}
  void Run() override {
    ModelBase& e = model_->engine();
    if (kind_ == Full) out_ = e.logits(ids_.data(), B_, T_);
    else if (kind_ == Feed) out_ = e.feed(ids_.data(), int64_t(ids_.size()), B_);
    else out_ = e.decode(slots_.data(), ids_.data(), int64_t(ids_.size()));
  }
  std::string What() const override {
    if (kind_ == Full) return "a forward pass over " + std::to_string(B_) + " x " + std::to_string(T_) + " tokens";
    return kind_ == Feed ? "generation" : "a decode step of " + std::to_string(ids_.size()) + " sequences";
  }
  Napi::Value Result(Napi::Env env) override { return to_f32(env, out_); }

 private:
  Kind kind_;
  std::vector<int32_t> ids_, slots_;
  int64_t B_, T_;  // Feed: B_ is the slot
  std::vector<float> out_;
};

// Frozen weights into the backend's inference layout (ModelBase::prepare_inference): a pass over
// every weight, so off the event loop. Resolves with how many matrices were packed.
class PrepareInferenceWorker : public Worker {
 public:
  using Worker::Worker;
  void Run() override { packed_ = model_->engine().prepare_inference(); }
  std::string What() const override { return "packing the weights for inference"; }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, double(packed_)); }

 private:
  int64_t packed_ = 0;
};

// An optional slot argument (default 0).
int64_t slot_arg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return 0;
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "slot must be a number");
  return info[i].As<Napi::Number>().Int64Value();
}

}  // namespace

Napi::Function Model::Init(Napi::Env env) {
  return DefineClass(env, "Model",
                     {InstanceMethod("baseParams", &Model::BaseParams), InstanceMethod("loadWeights", &Model::LoadWeights),
                      InstanceMethod("addLora", &Model::AddLora),
                      InstanceMethod("quantize", &Model::Quantize),
                      InstanceMethod("mergeLora", &Model::MergeLora),
                      InstanceMethod("addPromptTuning", &Model::AddPromptTuning),
                      InstanceMethod("setGradientCheckpointing", &Model::SetGradientCheckpointing),
                      InstanceMethod("setBaseTrainable", &Model::SetBaseTrainable), InstanceMethod("trainableParams", &Model::TrainableParams),
                      InstanceMethod("getTensor", &Model::GetTensor), InstanceMethod("setTensor", &Model::SetTensor),
                      InstanceMethod("getGrad", &Model::GetGrad),
                      InstanceMethod("forwardBackward", &Model::ForwardBackward),
                      InstanceMethod("forwardLoss", &Model::ForwardLoss), InstanceMethod("zeroGrad", &Model::ZeroGrad),
                      InstanceMethod("allReduceGrads", &Model::AllReduceGrads),
                      InstanceMethod("setDropoutRowOffset", &Model::SetDropoutRowOffset),
                      InstanceMethod("adamwStep", &Model::AdamWStep),
                      InstanceMethod("shardOptimizer", &Model::ShardOptimizer),
                      InstanceMethod("getOptimizerState", &Model::GetOptimizerState),
                      InstanceMethod("setOptimizerState", &Model::SetOptimizerState), InstanceMethod("logits", &Model::Logits),
                      InstanceMethod("feed", &Model::Feed), InstanceMethod("decode", &Model::Decode),
                      InstanceMethod("resetCache", &Model::ResetCache),
                      InstanceMethod("truncateCache", &Model::TruncateCache),
                      InstanceMethod("cacheLength", &Model::CacheLength), InstanceMethod("plan", &Model::Plan),
                      InstanceMethod("memoryPlan", &Model::MemoryPlanJs),
                      InstanceMethod("memoryStats", &Model::MemoryStatsJs),
                      InstanceMethod("prepareInference", &Model::PrepareInference),
                      InstanceMethod("packedWeights", &Model::PackedWeights)});
}

Model::Model(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Model>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "Model(config): config object required");
  Napi::Object o = info[0].As<Napi::Object>();
  auto num = [&](const char* k) -> double {
    Napi::Value v = o.Get(k);
    if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string("model config: \"") + k + "\" must be a number");
    return v.As<Napi::Number>().DoubleValue();
  };
  auto flag = [&](const char* k) { return o.Get(k).ToBoolean().Value(); };
  ModelConfig c;
  try {
    c.arch = parse_arch(o.Get("arch").ToString().Utf8Value());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  c.vocab = int64_t(num("vocabSize"));
  c.hidden = int64_t(num("hiddenSize"));
  c.intermediate = int64_t(num("intermediateSize"));
  c.layers = int64_t(num("numLayers"));
  c.heads = int64_t(num("numHeads"));
  c.kv_heads = int64_t(num("numKvHeads"));
  c.rope_theta = num("ropeTheta");
  c.norm_eps = num("rmsNormEps");
  c.tie_embeddings = flag("tieWordEmbeddings");
  c.qkv_bias = flag("qkvBias");
  c.norm_head = flag("normHead");
  ModelOptions mo;
  const std::string dtype = o.Has("dtype") && !o.Get("dtype").IsUndefined() ? o.Get("dtype").ToString().Utf8Value() : "f32";
  if (dtype == "f32") mo.compute = Compute::F32;
  else if (dtype == "f64") mo.compute = Compute::F64;
  else if (dtype == "bf16") mo.compute = Compute::BF16;
  else throw Napi::TypeError::New(env, "model config: dtype must be f32, f64 or bf16 (got \"" + dtype + "\")");
  const std::string device = o.Has("device") && !o.Get("device").IsUndefined() ? o.Get("device").ToString().Utf8Value() : "cpu";
  if (device == "cpu") mo.device = Device::Cpu;
  else if (device == "cuda") mo.device = Device::Cuda;
  else throw Napi::TypeError::New(env, "model config: device must be cpu or cuda (got \"" + device + "\")");
  mo.meta = flag("meta");
  try {
    if (o.Has("threads") && o.Get("threads").IsNumber()) set_num_threads(o.Get("threads").As<Napi::Number>().Int32Value());
    engine_ = make_model(c, mo);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value Model::BaseParams(const Napi::CallbackInfo& info) { return from_params(info.Env(), engine_->base_params()); }

Napi::Value Model::LoadWeights(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "loadWeights(sources): array required");
  Napi::Array a = info[0].As<Napi::Array>();
  std::vector<Source> sources;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Object s = a.Get(i).As<Napi::Object>();
    sources.push_back({s.Get("name").ToString().Utf8Value(), s.Get("file").ToString().Utf8Value(),
                       s.Get("dtype").ToString().Utf8Value(), s.Get("offset").As<Napi::Number>().Int64Value(),
                       to_shape(s.Get("shape").As<Napi::Array>())});
  }
  const bool partial = info[1].IsObject() && info[1].As<Napi::Object>().Get("partial").ToBoolean().Value();
  auto* w = new LoadWeightsWorker(this, env, std::move(sources), partial);
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value Model::AddLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  LoraOptions lo;
  Napi::Array t = o.Get("targets").As<Napi::Array>();
  for (uint32_t i = 0; i < t.Length(); i++) lo.targets.push_back(t.Get(i).ToString().Utf8Value());
  lo.rank = o.Get("rank").As<Napi::Number>().Int64Value();
  lo.alpha = o.Get("alpha").As<Napi::Number>().DoubleValue();
  lo.dropout = o.Get("dropout").As<Napi::Number>().DoubleValue();
  lo.seed = uint64_t(o.Get("seed").As<Napi::Number>().Int64Value());
  lo.use_rslora = o.Has("useRslora") && o.Get("useRslora").ToBoolean().Value();
  std::lock_guard<std::mutex> lock(mu_);
  try {
    return from_params(env, engine_->add_lora(lo));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value Model::Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].IsObject() ? info[0].As<Napi::Object>() : Napi::Object::New(env);
  const int bits = o.Has("bits") ? o.Get("bits").As<Napi::Number>().Int32Value() : 4;
  if (bits != 4) throw Napi::Error::New(env, "quantize: only bits 4 (NF4) is implemented");
  const bool dq = !o.Has("doubleQuant") || o.Get("doubleQuant").ToBoolean().Value();
  std::lock_guard<std::mutex> lock(mu_);
  try {
    auto [before, after] = engine_->quantize_nf4(dq);
    Napi::Object r = Napi::Object::New(env);
    r.Set("bytesBefore", double(before));
    r.Set("bytesAfter", double(after));
    return r;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value Model::MergeLora(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    engine_->merge_lora();
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

Napi::Value Model::AddPromptTuning(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  const int64_t n = o.Get("numVirtualTokens").As<Napi::Number>().Int64Value();
  const uint64_t seed = uint64_t(o.Get("seed").As<Napi::Number>().Int64Value());
  const float* init = nullptr;
  Napi::Value iv = o.Get("init");
  if (iv.IsTypedArray()) {
    auto a = iv.As<Napi::Float32Array>();
    if (int64_t(a.ElementLength()) != n * engine_->config().hidden)
      throw Napi::RangeError::New(env, "addPromptTuning: init must hold numVirtualTokens * hidden_size values");
    init = a.Data();
  }
  std::lock_guard<std::mutex> lock(mu_);
  try {
    return from_params(env, {engine_->add_prompt_tuning(n, init, seed)}).Get(uint32_t(0));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value Model::SetGradientCheckpointing(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    engine_->set_gradient_checkpointing(info[0].ToBoolean().Value());
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

Napi::Value Model::SetBaseTrainable(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    engine_->set_base_trainable(info[0].ToBoolean().Value());
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

Napi::Value Model::TrainableParams(const Napi::CallbackInfo& info) {
  return from_params(info.Env(), engine_->trainable_params());
}

Napi::Value Model::GetTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(mu_);
  try {
    auto v = engine_->get_tensor(info[0].ToString().Utf8Value());
    return to_f32(env, std::vector<float>(v.begin(), v.end()));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value Model::GetGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(mu_);
  try {
    auto v = engine_->get_grad(info[0].ToString().Utf8Value());
    return to_f32(env, std::vector<float>(v.begin(), v.end()));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value Model::SetTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(env, "setTensor(name, data): data must be a Float32Array");
  auto a = info[1].As<Napi::Float32Array>();
  std::vector<double> v(a.Data(), a.Data() + a.ElementLength());
  std::lock_guard<std::mutex> lock(mu_);
  try {
    engine_->set_tensor(info[0].ToString().Utf8Value(), v.data(), int64_t(v.size()));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  return env.Undefined();
}

// forwardBackward(ids, labels, batch, seqLen, lossScale, step) and forwardLoss(ids, labels, batch, seqLen).
static Napi::Value queue_loss(Model* m, const Napi::CallbackInfo& info, bool grad) {
  Napi::Env env = info.Env();
  auto ids = to_ids(info[0], "ids");
  auto labels = to_ids(info[1], "labels");
  const int64_t B = info[2].As<Napi::Number>().Int64Value(), T = info[3].As<Napi::Number>().Int64Value();
  if (int64_t(ids.size()) != B * T || labels.size() != ids.size())
    throw Napi::RangeError::New(env, std::string(grad ? "forwardBackward" : "forwardLoss") + ": ids and labels must both hold batch * seqLen values");
  auto* w = grad ? new LossWorker(m, env, std::move(ids), std::move(labels), B, T, true, info[4].As<Napi::Number>().DoubleValue(),
                                  info[5].As<Napi::Number>().Int64Value())
                 : new LossWorker(m, env, std::move(ids), std::move(labels), B, T, false);
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value Model::ForwardBackward(const Napi::CallbackInfo& info) { return queue_loss(this, info, true); }

Napi::Value Model::ForwardLoss(const Napi::CallbackInfo& info) { return queue_loss(this, info, false); }

Napi::Value Model::ZeroGrad(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  engine_->zero_grad();
  return info.Env().Undefined();
}

Napi::Value Model::AllReduceGrads(const Napi::CallbackInfo& info) {
  auto* w = new AllReduceGradsWorker(this, info.Env());
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value Model::SetDropoutRowOffset(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  engine_->set_dropout_row_offset(info[0].As<Napi::Number>().Int64Value());
  return info.Env().Undefined();
}

Napi::Value Model::AdamWStep(const Napi::CallbackInfo& info) {
  Napi::Object o = info[0].As<Napi::Object>();
  auto get = [&](const char* k) { return o.Get(k).As<Napi::Number>().DoubleValue(); };
  AdamWOptions a;
  a.lr = get("lr"), a.beta1 = get("beta1"), a.beta2 = get("beta2"), a.eps = get("eps");
  a.weight_decay = get("weightDecay"), a.max_grad_norm = get("maxGradNorm");
  a.eight_bit = o.Has("eightBit") && o.Get("eightBit").ToBoolean().Value();
  a.paged = o.Has("paged") && o.Get("paged").ToBoolean().Value();
  if (o.Has("inverseScale")) a.inv_scale = get("inverseScale");
  auto* w = new AdamWWorker(this, info.Env(), a);
  auto p = w->Promise();
  w->Queue();
  return p;
}

// shardOptimizer({ rank, size }): ZeRO stage 1 (ModelBase::shard_optimizer). The new values are
// all-gathered by this process's world, which must be that rank of that size when a step runs (a
// meta model, the dry run's plan, never steps).
Napi::Value Model::ShardOptimizer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "shardOptimizer({ rank, size }): object required");
  Napi::Object o = info[0].As<Napi::Object>();
  const int rank = o.Get("rank").ToNumber().Int32Value(), size = o.Get("size").ToNumber().Int32Value();
  auto gather = [rank, size](const ModelBase::GradBlock& g, const int64_t* offsets) {
    comm::Communicator& w = world();
    if (w.rank() != rank || w.size() != size)
      throw std::runtime_error("the optimizer is sharded for rank " + std::to_string(rank) + " of " + std::to_string(size) + ", but this process is rank " +
                               std::to_string(w.rank()) + " of " + std::to_string(w.size()));
    if (g.device && std::string(w.backend()) != "nccl")
      throw std::runtime_error(std::string("the parameters are in GPU memory but the communicator is ") + w.backend() + " (CPU buffers)");
    if (g.f64) w.all_gather(static_cast<double*>(g.data), offsets);
    else w.all_gather(static_cast<float*>(g.data), offsets);
  };
  std::lock_guard<std::mutex> lock(mu_);
  try {
    engine_->shard_optimizer(rank, size, gather);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  return env.Undefined();
}

namespace {

// ZeRO-1: a tensor's moments from every rank's part (each filled its own, in host memory), in place.
void gather_moments(Moments& m, const std::vector<int64_t>& off) {
  comm::Communicator& w = host_world();
  if (w.size() != int(off.size()) - 1)
    throw std::runtime_error("the optimizer is sharded over " + std::to_string(off.size() - 1) + " ranks, but this world has " + std::to_string(w.size()));
  if (!m.m.empty()) w.all_gather(m.m.data(), off.data()), w.all_gather(m.v.data(), off.data());
  if (m.m8.empty()) return;
  w.all_gather(m.m8.data(), off.data()), w.all_gather(m.v8.data(), off.data());
  std::vector<int64_t> blocks(off.size());  // each part starts on a 256-block (the last: the end)
  for (size_t r = 0; r < off.size(); r++) blocks[r] = (off[r] + model::kQ8Block - 1) / model::kQ8Block;
  w.all_gather(m.m_absmax.data(), blocks.data()), w.all_gather(m.v_absmax.data(), blocks.data());
}

}  // namespace

// Sharded (ZeRO-1): a collective, every rank calls it; rank 0 gets the whole state (the unsharded
// layout, as a one-rank run saves it), the others the names with empty moments (they write nothing,
// and each tensor is gathered in turn, so no rank holds the whole state twice).
Napi::Value Model::GetOptimizerState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(mu_);
  const bool sharded = engine_->optimizer_shards() > 1;
  Napi::Object out = Napi::Object::New(env);
  out.Set("step", double(engine_->optimizer_step()));
  auto params = engine_->trainable_params();
  Napi::Array tensors = Napi::Array::New(env, params.size());
  auto u8 = [&](const std::vector<uint8_t>& v) {
    auto a = Napi::Uint8Array::New(env, v.size());
    std::copy(v.begin(), v.end(), a.Data());
    return a;
  };
  for (size_t i = 0; i < params.size(); i++) {
    Moments m = engine_->get_moments(params[i].name);
    if (sharded) {
      try {
        gather_moments(m, engine_->optimizer_shard(params[i].name));
      } catch (const std::exception& e) {
        throw Napi::Error::New(env, e.what());
      }
      if (host_world().rank() != 0) m = Moments{};
    }
    Napi::Object t = Napi::Object::New(env);
    t.Set("name", params[i].name);
    t.Set("m", to_f32(env, m.m));
    t.Set("v", to_f32(env, m.v));
    if (!m.m8.empty()) {
      t.Set("m8", u8(m.m8));
      t.Set("v8", u8(m.v8));
      t.Set("mAbsmax", to_f32(env, m.m_absmax));
      t.Set("vAbsmax", to_f32(env, m.v_absmax));
    }
    tensors.Set(uint32_t(i), t);
  }
  out.Set("tensors", tensors);
  return out;
}

Napi::Value Model::SetOptimizerState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  const int64_t step = o.Get("step").As<Napi::Number>().Int64Value();
  Napi::Array tensors = o.Get("tensors").As<Napi::Array>();
  auto f32 = [](Napi::Value v) {
    if (!v.IsTypedArray()) return std::vector<float>();
    auto a = v.As<Napi::Float32Array>();
    return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
  };
  auto u8 = [](Napi::Value v) {
    if (!v.IsTypedArray()) return std::vector<uint8_t>();
    auto a = v.As<Napi::Uint8Array>();
    return std::vector<uint8_t>(a.Data(), a.Data() + a.ElementLength());
  };
  std::lock_guard<std::mutex> lock(mu_);
  try {
    for (uint32_t i = 0; i < tensors.Length(); i++) {
      Napi::Object t = tensors.Get(i).As<Napi::Object>();
      Moments m{f32(t.Get("m")), f32(t.Get("v")), u8(t.Get("m8")), u8(t.Get("v8")), f32(t.Get("mAbsmax")), f32(t.Get("vAbsmax"))};
      engine_->set_moments(step, t.Get("name").ToString().Utf8Value(), m);
    }
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  return env.Undefined();
}

Napi::Value Model::Logits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto ids = to_ids(info[0], "ids");
  const int64_t B = info[1].As<Napi::Number>().Int64Value(), T = info[2].As<Napi::Number>().Int64Value();
  if (int64_t(ids.size()) != B * T) throw Napi::RangeError::New(env, "logits: ids must hold batch * seqLen values");
  auto* w = new LogitsWorker(this, env, LogitsWorker::Full, std::move(ids), B, T);
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value Model::Feed(const Napi::CallbackInfo& info) {
  auto ids = to_ids(info[0], "ids");
  auto* w = new LogitsWorker(this, info.Env(), LogitsWorker::Feed, std::move(ids), slot_arg(info, 1), 0);
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value Model::Decode(const Napi::CallbackInfo& info) {
  auto slots = to_ids(info[0], "slots");
  auto ids = to_ids(info[1], "ids");
  if (slots.size() != ids.size()) throw Napi::RangeError::New(info.Env(), "decode: slots and ids must have the same length");
  auto* w = new LogitsWorker(this, info.Env(), LogitsWorker::Decode, std::move(ids), 0, 0, std::move(slots));
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value Model::ResetCache(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    engine_->reset_cache(slot_arg(info, 0));
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

Napi::Value Model::TruncateCache(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    engine_->truncate_cache(info[0].As<Napi::Number>().Int64Value(), slot_arg(info, 1));
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

Napi::Value Model::CacheLength(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(engine_->cache_length(slot_arg(info, 0))));
}

Napi::Value Model::Plan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "plan(request): object required");
  Napi::Object o = info[0].As<Napi::Object>();
  auto num = [&](const char* k) -> int64_t {
    Napi::Value v = o.Get(k);
    if (v.IsUndefined()) return 0;
    if (!v.IsNumber() || v.As<Napi::Number>().DoubleValue() < 0) throw Napi::TypeError::New(env, std::string("plan: \"") + k + "\" must be a number >= 0");
    return v.As<Napi::Number>().Int64Value();
  };
  PlanRequest r;
  r.batch = num("batch"), r.seq = num("seqLen"), r.kv_slots = num("kvSlots"), r.kv_positions = num("kvPositions");
  r.train = o.Get("train").ToBoolean().Value();
  r.optimizer = o.Get("optimizer").ToBoolean().Value();
  r.eight_bit = o.Get("eightBit").ToBoolean().Value();
  r.paged = o.Get("paged").ToBoolean().Value();
  std::lock_guard<std::mutex> lock(mu_);
  try {
    engine_->plan(r);
  } catch (const OutOfMemory& e) {
    throw Napi::Error::New(env, std::string(e.what()) + " while planning the run — " + oom_advice(engine_->memory_plan()));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  return env.Undefined();
}

Napi::Value Model::MemoryPlanJs(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  Napi::Object o = plan_to_js(info.Env(), engine_->memory_plan());
  o.Set("device", device_name(engine_->device()));
  o.Set("dtype", compute_name(engine_->compute()));
  return o;
}

Napi::Value Model::MemoryStatsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(mu_);
  const MemoryStats st = engine_->memory_stats();
  Napi::Object a = Napi::Object::New(env);
  for (size_t k = 0; k < size_t(MemKind::Count); k++) a.Set(mem_kind_name(MemKind(k)), double(st.allocations[k]));
  Napi::Object o = Napi::Object::New(env);
  o.Set("allocations", a);
  return o;
}

Napi::Value Model::PrepareInference(const Napi::CallbackInfo& info) {
  auto* w = new PrepareInferenceWorker(this, info.Env());
  auto p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value Model::PackedWeights(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  return Napi::Number::New(info.Env(), double(engine_->packed_weights()));
}

}  // namespace sft::addon
