#pragma once
#include <napi.h>

#include <memory>
#include <mutex>

#include "model/model.h"

namespace sft::addon {

class Model : public Napi::ObjectWrap<Model> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Model(const Napi::CallbackInfo& info);

  ModelBase& engine() { return *engine_; }
  std::mutex& mutex() { return mu_; }

 private:
  Napi::Value BaseParams(const Napi::CallbackInfo& info);
  Napi::Value LoadWeights(const Napi::CallbackInfo& info);
  Napi::Value AddLora(const Napi::CallbackInfo& info);
  Napi::Value Quantize(const Napi::CallbackInfo& info);
  Napi::Value MergeLora(const Napi::CallbackInfo& info);
  Napi::Value AddPromptTuning(const Napi::CallbackInfo& info);
  Napi::Value SetBaseTrainable(const Napi::CallbackInfo& info);
  Napi::Value SetGradientCheckpointing(const Napi::CallbackInfo& info);
  Napi::Value TrainableParams(const Napi::CallbackInfo& info);
  Napi::Value GetTensor(const Napi::CallbackInfo& info);
  Napi::Value SetTensor(const Napi::CallbackInfo& info);
  Napi::Value GetGrad(const Napi::CallbackInfo& info);
  Napi::Value ForwardBackward(const Napi::CallbackInfo& info);
  Napi::Value ForwardLoss(const Napi::CallbackInfo& info);
  Napi::Value ZeroGrad(const Napi::CallbackInfo& info);
  Napi::Value AllReduceGrads(const Napi::CallbackInfo& info);
  Napi::Value SetDropoutRowOffset(const Napi::CallbackInfo& info);
  Napi::Value AdamWStep(const Napi::CallbackInfo& info);
  Napi::Value ShardOptimizer(const Napi::CallbackInfo& info);
  Napi::Value GetOptimizerState(const Napi::CallbackInfo& info);
  Napi::Value SetOptimizerState(const Napi::CallbackInfo& info);
  Napi::Value Logits(const Napi::CallbackInfo& info);
  Napi::Value Feed(const Napi::CallbackInfo& info);
  Napi::Value Decode(const Napi::CallbackInfo& info);
  Napi::Value ResetCache(const Napi::CallbackInfo& info);
  Napi::Value TruncateCache(const Napi::CallbackInfo& info);
  Napi::Value CacheLength(const Napi::CallbackInfo& info);
  Napi::Value Plan(const Napi::CallbackInfo& info);
  Napi::Value MemoryPlanJs(const Napi::CallbackInfo& info);
  Napi::Value MemoryStatsJs(const Napi::CallbackInfo& info);
  Napi::Value PrepareInference(const Napi::CallbackInfo& info);
  Napi::Value PackedWeights(const Napi::CallbackInfo& info);

  std::unique_ptr<ModelBase> engine_;
  std::mutex mu_;
};

}  // namespace sft::addon
