#include "backend/registry.h"

#include <stdexcept>

namespace sft {
namespace {

struct Entry {
  ModelFactory make = nullptr;
  DeviceProbe probe = nullptr;
};

Entry& entry(Device d) {
  static Entry cpu{make_cpu_model, [](std::string*) { return 1; }};
  static Entry cuda{};
  return d == Device::Cpu ? cpu : cuda;
}

}  // namespace

void register_backend(Device d, ModelFactory make, DeviceProbe probe) { entry(d) = {make, probe}; }

bool backend_built(Device d) { return entry(d).make != nullptr; }

int backend_devices(Device d, std::string* error) {
  const Entry& e = entry(d);
  if (!e.make) {
    if (error) *error = std::string("this build has no ") + device_name(d) + " backend";
    return 0;
  }
  return e.probe ? e.probe(error) : 1;
}

std::unique_ptr<ModelBase> make_model(const ModelConfig& cfg, const ModelOptions& opts) {
  cfg.validate();
  const Entry& e = entry(opts.device);
  if (!e.make) throw std::runtime_error(std::string("this build has no ") + device_name(opts.device) + " backend");
  return e.make(cfg, opts.compute, opts.meta);
}

std::unique_ptr<ModelBase> make_model(const ModelConfig& cfg, bool f64) {
  return make_model(cfg, ModelOptions{Device::Cpu, f64 ? Compute::F64 : Compute::F32, false});
}

}  // namespace sft
