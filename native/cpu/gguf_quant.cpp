// GGUF row encodings (see gguf_quant.h). The quantizers follow ggml's reference quantizers step by
// step (same searches, same float arithmetic, same rounding), so the bytes match what llama.cpp's own
// `quantize` writes without an importance matrix; this file is compiled with -ffp-contract=off so
// that no fused multiply-add changes a rounding.
#include "cpu/gguf_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "core/threads.h"

namespace sft::gguf {
namespace {

constexpr int QK = 32;    // Q8_0 / Q5_0 block
constexpr int QKK = 256;  // K-quant super-block

// Round to nearest (ties to even) for |f| < 2^22: adding 1.5 * 2^23 leaves the integer in the
// mantissa's low bits, as ggml's nearest_int does.
inline int nearest_int(float f) {
  float v = f + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

inline void put_half(uint8_t* p, float f) {
  const uint16_t h = fp32_to_fp16(f);
  p[0] = uint8_t(h & 0xff);
  p[1] = uint8_t(h >> 8);
}
inline float get_half(const uint8_t* p) { return fp16_to_fp32(uint16_t(p[0] | (p[1] << 8))); }

// --- Q8_0: d = max|x| / 127, q = round(x / d) (round half away from zero, as roundf) ----------
void q8_0_block(const float* x, uint8_t* y) {
  float amax = 0;
  for (int j = 0; j < QK; j++) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.f;
  const float id = d ? 1.f / d : 0.f;
  put_half(y, d);
  for (int j = 0; j < QK; j++) y[2 + j] = uint8_t(int8_t(std::roundf(x[j] * id)));
}
void q8_0_deblock(const uint8_t* y, float* x) {
  const float d = get_half(y);
  for (int j = 0; j < QK; j++) x[j] = float(int8_t(y[2 + j])) * d;
}

// --- Q5_0: d = (the value of largest magnitude) / -16, q = x / d + 16 in [0, 31] ----------------
void q5_0_block(const float* x, uint8_t* y) {
  float amax = 0, max = 0;
  for (int j = 0; j < QK; j++)
    if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), max = x[j];
  const float d = max / -16.f;
  const float id = d ? 1.f / d : 0.f;
  put_half(y, d);
  uint32_t qh = 0;
  for (int j = 0; j < QK / 2; j++) {
    const uint8_t a = uint8_t(std::min(31, int(int8_t(x[j] * id + 16.5f))));
    const uint8_t b = uint8_t(std::min(31, int(int8_t(x[j + QK / 2] * id + 16.5f))));
    y[6 + j] = uint8_t((a & 0x0f) | ((b & 0x0f) << 4));
    qh |= uint32_t((a & 0x10) >> 4) << j;
    qh |= uint32_t((b & 0x10) >> 4) << (j + QK / 2);
  }
  std::memcpy(y + 2, &qh, 4);  // little-endian hosts only (as ggml)
}
void q5_0_deblock(const uint8_t* y, float* x) {
  const float d = get_half(y);
  uint32_t qh;
  std::memcpy(&qh, y + 2, 4);
  for (int j = 0; j < QK / 2; j++) {
    const int a = ((y[6 + j] & 0x0f) | (((qh >> j) << 4) & 0x10)) - 16;
    const int b = ((y[6 + j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16;
    x[j] = float(a) * d;
    x[j + QK / 2] = float(b) * d;
  }
}

// --- Q4_K ---------------------------------------------------------------------------------------
// One sub-block's scale and min for levels 0..nmax: x ~ scale * L - the_min. A weighted fit: start
// from the range, then try nstep+1 rescaled grids, each refit by weighted least squares (min <= 0),
// keeping the one of least weighted error (ggml's make_qkx2_quants).
float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, uint8_t* Laux,
                    float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = w[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; i++) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; i++) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best = 0;
  for (int i = 0; i < n; i++) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = uint8_t(std::max(0, std::min(nmax, l)));
    const float diff = scale * L[i] + min - x[i];
    best += w[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; is++) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; i++) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = uint8_t(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float err = 0;
      for (int i = 0; i < n; i++) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        err += w[i] * (diff * diff);
      }
      if (err < best) {
        for (int i = 0; i < n; i++) L[i] = Laux[i];
        best = err;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Sub-block j's 6-bit scale and min from the 12 packed bytes: j < 4 in the low 6 bits of bytes j
// and j+4; j >= 4 in the nibbles of byte j+4, with the top 2 bits in the high bits of j-4 and j.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = uint8_t((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
    *m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Layout: d(2) dmin(2) scales(12) qs(128).
void q4_k_block(const float* x, uint8_t* y) {
  uint8_t L[QKK], Laux[32];
  float w[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; j++) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; l++) sum_x2 += xs[l] * xs[l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; l++) w[l] = av_x + std::fabs(xs[l]);
    scales[j] = fit_scale_min(32, 15, xs, w, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  uint8_t* sc = y + 4;
  std::memset(sc, 0, 12);
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < 8; j++) {
    const uint8_t ls = uint8_t(std::min(63, nearest_int(inv_scale * scales[j])));
    const uint8_t lm = uint8_t(std::min(63, nearest_int(inv_min * mins[j])));
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else {
      sc[j + 4] = uint8_t((ls & 0xf) | ((lm & 0xf) << 4));
      sc[j - 4] |= uint8_t((ls >> 4) << 6);
      sc[j] |= uint8_t((lm >> 4) << 6);
    }
  }
  put_half(y, max_scale / 63.f);
  put_half(y + 2, max_min / 63.f);
  // Requantize against the rounded (6-bit, half-float) scales actually stored.
  const float d_all = get_half(y), dmin_all = get_half(y + 2);
  for (int j = 0; j < 8; j++) {
    uint8_t s, m;
    scale_min_k4(j, sc, &s, &m);
    const float d = d_all * s;
    if (!d) continue;
    const float dm = dmin_all * m;
    for (int i = 0; i < 32; i++) L[32 * j + i] = uint8_t(std::max(0, std::min(15, nearest_int((x[32 * j + i] + dm) / d))));
  }
  uint8_t* q = y + 16;
  for (int j = 0; j < QKK; j += 64, q += 32)
    for (int l = 0; l < 32; l++) q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
}
void q4_k_deblock(const uint8_t* y, float* x) {
  const float d = get_half(y), dmin = get_half(y + 2);
  const uint8_t* sc = y + 4;
  const uint8_t* q = y + 16;
  for (int j = 0, is = 0; j < QKK; j += 64, q += 32, is += 2) {
    uint8_t s, m;
    scale_min_k4(is, sc, &s, &m);
    const float d1 = d * s, m1 = dmin * m;
    scale_min_k4(is + 1, sc, &s, &m);
    const float d2 = d * s, m2 = dmin * m;
    for (int l = 0; l < 32; l++) *x++ = d1 * (q[l] & 0xf) - m1;
    for (int l = 0; l < 32; l++) *x++ = d2 * (q[l] >> 4) - m2;
  }
}

// --- Q6_K ---------------------------------------------------------------------------------------
// A signed scale for levels -nmax..nmax-1, weighted by x^2: start from the value of largest
// magnitude, then try 18 nearby grids, keeping the best least-squares fit (ggml's make_qx_quants
// with rmse_type 1). L gets level + nmax.
float fit_signed_scale(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; i++) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) amax = ax, max = x[i];
  }
  if (amax < 1e-15f) {  // ggml's GROUP_MAX_EPS: all zero
    for (int i = 0; i < n; i++) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; i++) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = int8_t(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; is++) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; i++) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; i++) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = int8_t(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Layout: ql(128) qh(64) scales(16, int8) d(2).
void q6_k_block(const float* x, uint8_t* y) {
  int8_t L[QKK];
  float scales[16];
  float max_scale = 0, max_abs = 0;
  for (int ib = 0; ib < 16; ib++) {
    scales[ib] = fit_signed_scale(16, 32, x + 16 * ib, L + 16 * ib);
    if (std::fabs(scales[ib]) > max_abs) max_abs = std::fabs(scales[ib]), max_scale = scales[ib];
  }
  std::memset(y, 0, 210);
  if (max_abs < 1e-15f) return;  // all zero: d = 0
  const float iscale = -128.f / max_scale;
  put_half(y + 208, 1 / iscale);
  int8_t* sc = reinterpret_cast<int8_t*>(y + 192);
  for (int ib = 0; ib < 16; ib++) sc[ib] = int8_t(std::min(127, nearest_int(iscale * scales[ib])));
  const float d_all = get_half(y + 208);
  for (int j = 0; j < 16; j++) {
    const float d = d_all * sc[j];
    if (!d) continue;
    for (int i = 0; i < 16; i++) L[16 * j + i] = int8_t(std::max(-32, std::min(31, nearest_int(x[16 * j + i] / d))) + 32);
  }
  uint8_t* ql = y;
  uint8_t* qh = y + 128;
  for (int j = 0; j < QKK; j += 128, ql += 64, qh += 32) {
    for (int l = 0; l < 32; l++) {
      const uint8_t q1 = L[j + l] & 0xf, q2 = L[j + l + 32] & 0xf, q3 = L[j + l + 64] & 0xf, q4 = L[j + l + 96] & 0xf;
      ql[l] = uint8_t(q1 | (q3 << 4));
      ql[l + 32] = uint8_t(q2 | (q4 << 4));
      qh[l] = uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
  }
}
void q6_k_deblock(const uint8_t* y, float* x) {
  const float d = get_half(y + 208);
  const uint8_t* ql = y;
  const uint8_t* qh = y + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(y + 192);
  for (int n = 0; n < QKK; n += 128, x += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; l++) {
      const int is = l / 16;
      const int q1 = int((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = int((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      x[l] = d * sc[is] * q1;
      x[l + 32] = d * sc[is + 2] * q2;
      x[l + 64] = d * sc[is + 4] * q3;
      x[l + 96] = d * sc[is + 6] * q4;
    }
  }
}

using BlockFn = void (*)(const float*, uint8_t*);
using DeblockFn = void (*)(const uint8_t*, float*);

}  // namespace

QType parse_qtype(const std::string& s) {
  if (s == "f32") return QType::F32;
  if (s == "f16") return QType::F16;
  if (s == "q8_0") return QType::Q8_0;
  if (s == "q5_0") return QType::Q5_0;
  if (s == "q4_K") return QType::Q4_K;
  if (s == "q6_K") return QType::Q6_K;
  throw std::invalid_argument("unknown GGUF tensor type \"" + s + "\" (f32, f16, q8_0, q5_0, q4_K, q6_K)");
}

int64_t block_values(QType t) {
  switch (t) {
    case QType::F32: case QType::F16: return 1;
    case QType::Q8_0: case QType::Q5_0: return QK;
    case QType::Q4_K: case QType::Q6_K: return QKK;
  }
  return 1;
}

int64_t block_bytes(QType t) {
  switch (t) {
    case QType::F32: return 4;
    case QType::F16: return 2;
    case QType::Q8_0: return 34;
    case QType::Q5_0: return 22;
    case QType::Q4_K: return 144;
    case QType::Q6_K: return 210;
  }
  return 0;
}

int64_t row_bytes(QType t, int64_t cols) {
  const int64_t bv = block_values(t);
  if (cols % bv != 0) throw std::invalid_argument("a row of " + std::to_string(cols) + " values is not a whole number of " + std::to_string(bv) + "-value blocks");
  return cols / bv * block_bytes(t);
}

uint16_t fp32_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t ax = x & 0x7fffffff;
  if (ax >= 0x7f800000) return uint16_t(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0));  // inf, nan
  if (ax >= 0x477ff000) return uint16_t(sign | 0x7c00);  // >= 65520 rounds to infinity
  if (ax < 0x38800000) {  // below 2^-14: a half subnormal, round(|f| * 2^24) (exact scaling, RNE)
    float v;
    std::memcpy(&v, &ax, 4);
    return uint16_t(sign | uint32_t(std::nearbyint(v * 16777216.f)));
  }
  const uint32_t mant = ax & 0x7fffff;
  uint32_t h = ((((ax >> 23) - 127 + 15)) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;  // a carry into the exponent is still right
  return uint16_t(sign | h);
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
  uint32_t x;
  if (e == 0) {
    const float v = float(m) / 16777216.f;  // subnormal (or zero): m * 2^-24
    std::memcpy(&x, &v, 4);
    x |= sign;
  } else if (e == 31) {
    x = sign | 0x7f800000 | (m << 13);
  } else {
    x = sign | ((e - 15 + 127) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

void quantize(QType t, const float* x, int64_t rows, int64_t cols, uint8_t* out) {
  const int64_t rb = row_bytes(t, cols);
  if (t == QType::F32) {
    std::memcpy(out, x, size_t(rows * cols) * 4);
    return;
  }
  BlockFn fn = t == QType::Q8_0 ? q8_0_block : t == QType::Q5_0 ? q5_0_block : t == QType::Q4_K ? q4_k_block : t == QType::Q6_K ? q6_k_block : nullptr;
  const int64_t bv = block_values(t), bb = block_bytes(t);
  // K-quants cost ~20 fits per 32 values: a few rows per chunk already keep every core busy.
  parallel_for(rows, t == QType::F16 ? 64 : 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * cols;
      uint8_t* yr = out + r * rb;
      if (t == QType::F16) {
        for (int64_t c = 0; c < cols; c++) put_half(yr + 2 * c, xr[c]);
      } else {
        for (int64_t b = 0; b < cols / bv; b++) fn(xr + b * bv, yr + b * bb);
      }
    }
  });
}

void dequantize(QType t, const uint8_t* in, int64_t rows, int64_t cols, float* out) {
  const int64_t rb = row_bytes(t, cols);
  if (t == QType::F32) {
    std::memcpy(out, in, size_t(rows * cols) * 4);
    return;
  }
  DeblockFn fn = t == QType::Q8_0 ? q8_0_deblock : t == QType::Q5_0 ? q5_0_deblock : t == QType::Q4_K ? q4_k_deblock : t == QType::Q6_K ? q6_k_deblock : nullptr;
  const int64_t bv = block_values(t), bb = block_bytes(t);
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t* yr = in + r * rb;
    float* xr = out + r * cols;
    if (t == QType::F16) {
      for (int64_t c = 0; c < cols; c++) xr[c] = get_half(yr + 2 * c);
    } else {
      for (int64_t b = 0; b < cols / bv; b++) fn(yr + b * bb, xr + b * bv);
    }
  }
}

}  // namespace sft::gguf
