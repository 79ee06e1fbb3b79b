// Reading the transformers/peft reference fixtures (test/fixtures/reference/<arch>/, made by
// scripts/reference/make_fixtures.py) from C++: a small JSON reader, safetensors files, and the
// HF config.json -> ModelConfig mapping of src/model/hfconfig.ts for the fixtures' keys. The GPU
// machine has no Node, so the device checks read the same files the TypeScript tests read.
#pragma once
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/model.h"

namespace fixture {

struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;

  bool has(const std::string& k) const {
    for (const auto& [key, v] : obj)
      if (key == k) return true;
    return false;
  }
  const Json& operator[](const std::string& k) const {
    for (const auto& [key, v] : obj)
      if (key == k) return v;
    throw std::runtime_error("JSON: no key \"" + k + "\"");
  }
  const Json& operator[](size_t i) const { return arr.at(i); }
  bool is_null() const { return kind == Null; }
};

class JsonReader {
 public:
  explicit JsonReader(const std::string& s) : s_(s) {}
  Json value() {
    ws();
    Json j;
    const char c = peek();
    if (c == '{') {
      j.kind = Json::Object;
      i_++;
      ws();
      if (peek() == '}') return i_++, j;
      for (;;) {
        ws();
        std::string k = string();
        ws();
        expect(':');
        j.obj.emplace_back(k, value());
        ws();
        if (peek() == ',') { i_++; continue; }
        expect('}');
        return j;
      }
    }
    if (c == '[') {
      j.kind = Json::Array;
      i_++;
      ws();
      if (peek() == ']') return i_++, j;
      for (;;) {
        j.arr.push_back(value());
        ws();
        if (peek() == ',') { i_++; continue; }
        expect(']');
        return j;
      }
    }
    if (c == '"') return j.kind = Json::String, j.str = string(), j;
    if (s_.compare(i_, 4, "true") == 0) return i_ += 4, j.kind = Json::Bool, j.b = true, j;
    if (s_.compare(i_, 5, "false") == 0) return i_ += 5, j.kind = Json::Bool, j;
    if (s_.compare(i_, 4, "null") == 0) return i_ += 4, j;
    if (s_.compare(i_, 8, "Infinity") == 0) return i_ += 8, j.kind = Json::Number, j.num = INFINITY, j;
    if (s_.compare(i_, 3, "NaN") == 0) return i_ += 3, j.kind = Json::Number, j.num = NAN, j;
    size_t used = 0;
    j.num = std::stod(s_.substr(i_, 64), &used);
    i_ += used;
    j.kind = Json::Number;
    return j;
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) i_++;
  }
  void expect(char c) {
    if (peek() != c) throw std::runtime_error(std::string("JSON: expected '") + c + "' at offset " + std::to_string(i_));
    i_++;
  }
  std::string string() {
    expect('"');
    std::string out;
    while (peek() != '"') {
      char c = s_.at(i_++);
      if (c == '\\') {
        const char e = s_.at(i_++);
        if (e == 'n') out += '\n';
        else if (e == 't') out += '\t';
        else if (e == 'u') out += '?', i_ += 4;  // the fixtures' names are ASCII
        else out += e;
      } else {
        out += c;
      }
    }
    i_++;
    return out;
  }
  const std::string& s_;
  size_t i_ = 0;
};

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline Json read_json(const std::string& path) {
  const std::string s = read_file(path);
  return JsonReader(s).value();
}

struct Tensor {
  std::string name;
  sft::DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  std::vector<double> values() const {
    std::vector<double> v(static_cast<size_t>(numel()));
    for (size_t i = 0; i < v.size(); i++) v[i] = sft::element(data, dtype, int64_t(i));
    return v;
  }
};

// A safetensors file: an 8-byte little-endian header length, a JSON header, the raw bytes.
class Safetensors {
 public:
  explicit Safetensors(const std::string& path) : bytes_(read_file(path)) {
    uint64_t n = 0;
    std::memcpy(&n, bytes_.data(), 8);
    const std::string header = bytes_.substr(8, size_t(n));
    const Json h = JsonReader(header).value();
    const uint8_t* base = reinterpret_cast<const uint8_t*>(bytes_.data()) + 8 + n;
    for (const auto& [name, t] : h.obj) {
      if (name == "__metadata__") continue;
      Tensor x;
      x.name = name;
      x.dtype = sft::parse_dtype(t["dtype"].str);
      for (const auto& d : t["shape"].arr) x.shape.push_back(int64_t(d.num));
      x.data = base + size_t(t["data_offsets"][0].num);
      tensors_.push_back(x);
    }
  }
  const std::vector<Tensor>& tensors() const { return tensors_; }
  const Tensor& at(const std::string& name) const {
    for (const auto& t : tensors_)
      if (t.name == name) return t;
    throw std::runtime_error("safetensors: no tensor " + name);
  }

 private:
  std::string bytes_;
  std::vector<Tensor> tensors_;
};

// config.json -> ModelConfig, with the defaults of src/model/hfconfig.ts for the fixtures' keys.
inline sft::ModelConfig model_config(const Json& hf) {
  const std::string a = hf["architectures"][0].str;
  auto num = [&](const char* k, double fallback) { return hf.has(k) && !hf[k].is_null() ? hf[k].num : fallback; };
  auto flag = [&](const char* k, bool fallback) { return hf.has(k) && !hf[k].is_null() ? hf[k].b : fallback; };
  sft::ModelConfig c;
  if (a == "BloomForCausalLM") {
    c.arch = sft::Arch::Bloom;
    c.hidden = int64_t(num("n_embed", num("hidden_size", 0)));
    c.heads = int64_t(num("n_head", num("num_attention_heads", 0)));
    c.layers = int64_t(num("n_layer", num("num_hidden_layers", 0)));
    c.kv_heads = c.heads;
    c.intermediate = 4 * c.hidden;
    c.vocab = int64_t(num("vocab_size", 0));
    c.norm_eps = num("layer_norm_epsilon", 1e-5);
    c.tie_embeddings = flag("tie_word_embeddings", true);
    c.rope_theta = 0;
    return c;
  }
  if (a == "LlamaForCausalLM") c.arch = sft::Arch::Llama;
  else if (a == "Qwen2ForCausalLM") c.arch = sft::Arch::Qwen2;
  else if (a == "BaiChuanForCausalLM") c.arch = sft::Arch::Baichuan;
  else if (a == "BaichuanForCausalLM") c.arch = sft::Arch::Baichuan2;
  else throw std::runtime_error("fixture: unsupported architecture " + a);
  c.vocab = int64_t(num("vocab_size", 0));
  c.hidden = int64_t(num("hidden_size", 0));
  c.intermediate = int64_t(num("intermediate_size", 0));
  c.layers = int64_t(num("num_hidden_layers", 0));
  c.heads = int64_t(num("num_attention_heads", 0));
  const bool baichuan = c.arch == sft::Arch::Baichuan || c.arch == sft::Arch::Baichuan2;
  c.kv_heads = baichuan ? c.heads : int64_t(num("num_key_value_heads", double(c.heads)));
  c.rope_theta = num("rope_theta", 10000.0);
  c.norm_eps = num("rms_norm_eps", 1e-6);
  c.tie_embeddings = flag("tie_word_embeddings", false);
  c.qkv_bias = c.arch == sft::Arch::Qwen2;
  c.norm_head = c.arch == sft::Arch::Baichuan2;
  return c;
}

}  // namespace fixture
