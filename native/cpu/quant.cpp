#include "cpu/quant.h"
#include "core/nf4_codes.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/threads.h"

namespace sft::cpu {

const float kNF4[16] = SFT_NF4_CODES;

// create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): for exponent i = 0..6, fraction
// values (means of a linspace(0.1, 1) grid; 2^i of them signed, 2^(i+1) unsigned) scaled by 10^(i-6),
// with both signs when signed; then 0 and 1. Computed in float32 like torch.linspace.
static std::vector<float> dynamic_map(bool is_signed) {
  {
    std::vector<float> d;
    for (int i = 0; i < 7; i++) {
      const int items = (1 << (is_signed ? i : i + 1)) + 1;
      // torch.linspace fills the first half from the start and the second half from the end.
      std::vector<float> b(items);
      const float step = (1.0f - 0.1f) / float(items - 1);
      for (int j = 0; j < items; j++) b[j] = j < items / 2 ? 0.1f + step * float(j) : 1.0f - step * float(items - 1 - j);
      const float scale = float(std::pow(10.0, double(i - 6)));
      for (int j = 0; j + 1 < items; j++) {
        const float mean = (b[j] + b[j + 1]) / 2.0f;
        d.push_back(scale * mean);
        if (is_signed) d.push_back(-scale * mean);
      }
    }
    d.push_back(0.0f);
    d.push_back(1.0f);
    std::sort(d.begin(), d.end());
    return d;
  }
}

const std::vector<float>& dynamic_map_signed() {
  static const std::vector<float> map = dynamic_map(true);
  return map;
}

const std::vector<float>& dynamic_map_unsigned() {
  static const std::vector<float> map = dynamic_map(false);
  return map;
}

uint8_t nf4_index(float v) {
  uint8_t i = 0;
  while (i < 15 && v > 0.5f * (kNF4[i] + kNF4[i + 1])) i++;
  return i;
}

uint8_t map_index(const std::vector<float>& map, float v) {
  auto it = std::lower_bound(map.begin(), map.end(), v);
  if (it == map.begin()) return 0;
  if (it == map.end()) return uint8_t(map.size() - 1);
  const size_t hi = size_t(it - map.begin()), lo = hi - 1;
  return uint8_t(v - map[lo] <= map[hi] - v ? lo : hi);
}

void nf4_quantize(uint8_t* packed, float* absmax, const float* x, int64_t n) {
  const int64_t blocks = (n + kNf4Block - 1) / kNf4Block;
  parallel_for(blocks, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      const int64_t s = b * kNf4Block, e = std::min(n, s + kNf4Block);
      float m = 0;
      for (int64_t i = s; i < e; i++) m = std::max(m, std::fabs(x[i]));
      absmax[b] = m;
      const float inv = m > 0 ? 1.0f / m : 0.0f;
      for (int64_t i = s; i < e; i += 2) {
        const uint8_t hi = nf4_index(x[i] * inv);
        const uint8_t lo = i + 1 < e ? nf4_index(x[i + 1] * inv) : 0;
        packed[i / 2] = uint8_t(hi << 4 | lo);
      }
    }
  });
}

void nf4_dequantize(float* x, const uint8_t* packed, const float* absmax, int64_t n) {
  parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const uint8_t byte = packed[i / 2];
      x[i] = kNF4[(i & 1) ? (byte & 15) : (byte >> 4)] * absmax[i / kNf4Block];
    }
  });
}

void q8_quantize_blockwise(uint8_t* q, float* absmax, const float* x, int64_t n) {
  const auto& map = dynamic_map_signed();
  const int64_t blocks = (n + kQ8Block - 1) / kQ8Block;
  for (int64_t b = 0; b < blocks; b++) {
    const int64_t s = b * kQ8Block, e = std::min(n, s + kQ8Block);
    float m = 0;
    for (int64_t i = s; i < e; i++) m = std::max(m, std::fabs(x[i]));
    absmax[b] = m;
    const float inv = m > 0 ? 1.0f / m : 0.0f;
    for (int64_t i = s; i < e; i++) q[i] = map_index(map, x[i] * inv);
  }
}

void q8_dequantize_blockwise(float* x, const uint8_t* q, const float* absmax, int64_t n) {
  const auto& map = dynamic_map_signed();
  for (int64_t i = 0; i < n; i++) x[i] = map[q[i]] * absmax[i / kQ8Block];
}

size_t Nf4Tensor::bytes() const { return packed.size() + absmax_q.size() + absmax2.size() * 4 + 4 + (double_quant ? 0 : absmax.size() * 4); }

Nf4Tensor nf4_quantize_tensor(const float* x, int64_t n, bool double_quant) {
  Nf4Tensor t;
  t.numel = n;
  t.double_quant = double_quant;
  const int64_t blocks = (n + kNf4Block - 1) / kNf4Block;
  t.packed.assign(size_t((n + 1) / 2), 0);
  t.absmax.assign(size_t(blocks), 0.0f);
  nf4_quantize(t.packed.data(), t.absmax.data(), x, n);
  if (double_quant) {
    double sum = 0;
    for (float a : t.absmax) sum += a;
    t.offset = float(sum / double(blocks));
    std::vector<float> centred(t.absmax.size());
    for (size_t i = 0; i < centred.size(); i++) centred[i] = t.absmax[i] - t.offset;
    t.absmax_q.assign(size_t(blocks), 0);
    t.absmax2.assign(size_t((blocks + kQ8Block - 1) / kQ8Block), 0.0f);
    q8_quantize_blockwise(t.absmax_q.data(), t.absmax2.data(), centred.data(), blocks);
    // Compute uses what a reader of the stored codes would get back.
    q8_dequantize_blockwise(t.absmax.data(), t.absmax_q.data(), t.absmax2.data(), blocks);
    for (float& a : t.absmax) a += t.offset;
  }
  return t;
}

float Nf4Weight::at(int64_t r, int64_t c) const {
  for (const auto& s : segments) {
    if (r < s.row0 || r >= s.row0 + s.rows) continue;
    const int64_t i = (r - s.row0) * cols + c;
    const uint8_t byte = s.t.packed[size_t(i / 2)];
    return kNF4[(i & 1) ? (byte & 15) : (byte >> 4)] * s.t.absmax[size_t(i / kNf4Block)];
  }
  throw std::runtime_error("Nf4Weight: row out of range");
}

void Nf4Weight::decode_row(float* out, int64_t r, int64_t c0, int64_t n) const {
  for (const auto& s : segments) {
    if (r < s.row0 || r >= s.row0 + s.rows) continue;
    const int64_t base = (r - s.row0) * cols + c0;
    const uint8_t* p = s.t.packed.data();
    const float* am = s.t.absmax.data();
    for (int64_t j = 0; j < n; j++) {
      const int64_t i = base + j;
      const uint8_t byte = p[i >> 1];
      out[j] = kNF4[(i & 1) ? (byte & 15) : (byte >> 4)] * am[i / kNf4Block];
    }
    return;
  }
  throw std::runtime_error("Nf4Weight: row out of range");
}

size_t Nf4Weight::bytes() const {
  size_t b = 0;
  for (const auto& s : segments) b += s.t.bytes();
  return b;
}

}  // namespace sft::cpu
