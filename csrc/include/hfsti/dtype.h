// hfsti/dtype.h -- 16-bit storage types and float conversions shared by GPU and host code.
//
// Design: `half_t` and `bf16_t` are plain aggregates holding the IEEE bits (`bits`); kernels never
// do arithmetic on them, they load with `to_float` and store with `from_float<T>`, and compute in
// `acc_t<T>` (double for double, float otherwise; see docs/kernels.md). The conversions are
// integer code, identical on nvcc device/host, NVRTC and g++ (the host emulator), so results are
// bit-identical everywhere and equal to torch's CPU conversions:
//   float -> half: round to nearest even, subnormals and overflow to inf included; a NaN keeps its
//                  sign and top payload bits with the quiet bit set (as x86 F16C / torch do).
//   float -> bf16: round to nearest even; every NaN becomes 0xFFFF (torch CPU's result).
//   half/bf16 -> float: exact; a half NaN keeps sign and payload and gets the quiet bit (F16C and
//                  torch's vectorised CPU path; torch's scalar path returns 0x7FFFFFFF instead,
//                  any NaN is as good for the kernels).
// Limits: no half arithmetic operators on purpose (convert first); double -> half is not provided
// (kernels round to float first, as their accumulator is float).
// Works without any standard header under NVRTC (no <cstdint> there).
#pragma once

#if defined(__CUDACC__)
#define HFSTI_HD __host__ __device__ __forceinline__
#else
#define HFSTI_HD inline
#endif

#if !defined(__CUDACC_RTC__)
#include <cstdint>
#endif

namespace hfsti {

#if defined(__CUDACC_RTC__)
typedef unsigned short u16_t;
typedef unsigned int u32_t;
#else
typedef std::uint16_t u16_t;
typedef std::uint32_t u32_t;
#endif

struct half_t {
  u16_t bits;
};
struct bf16_t {
  u16_t bits;
};
static_assert(sizeof(half_t) == 2 && alignof(half_t) == 2, "half_t must be 2 bytes");
static_assert(sizeof(bf16_t) == 2 && alignof(bf16_t) == 2, "bf16_t must be 2 bytes");

namespace detail {

// The bits of `x` as a `To` of the same size (float <-> u32_t). __builtin_bit_cast needs no
// header (NVRTC has no <cstring>), nvcc, NVRTC and g++ all provide it, and on the device it is the
// same register move as __float_as_uint / __uint_as_float.
template <class To, class From>
HFSTI_HD To bit_cast(From x) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast: the sizes differ");
  return __builtin_bit_cast(To, x);
}

HFSTI_HD u16_t float_to_half_bits(float f) {
  const u32_t x = bit_cast<u32_t>(f);
  const u32_t sign = (x >> 16) & 0x8000u;
  const u32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return (u16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN, quieted
  if (a >= 0x477ff000u) return (u16_t)(sign | 0x7c00u);  // >= 65520 rounds to inf (inf too)
  if (a < 0x38800000u) {                                 // below 2^-14: half subnormal or zero
    const u32_t e = a >> 23;
    if (e < 102u) return (u16_t)sign;  // below 2^-25 (float subnormals included): zero
    const u32_t m = (a & 0x7fffffu) | 0x800000u;
    const u32_t shift = 126u - e;  // 14..24: m * 2^(e-150) in units of 2^-24
    u32_t r = m >> shift;
    const u32_t rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return (u16_t)(sign | r);
  }
  const u32_t rebiased = a - 0x38000000u;  // exponent bias 127 -> 15
  u32_t r = rebiased >> 13;
  const u32_t rem = rebiased & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // a carry into the exponent is right
  return (u16_t)(sign | r);
}

HFSTI_HD float half_bits_to_float(u16_t h) {
  const u32_t sign = (u32_t)(h & 0x8000u) << 16;
  u32_t e = (h >> 10) & 0x1fu;
  u32_t m = h & 0x3ffu;
  if (e == 0x1fu) return bit_cast<float>(sign | 0x7f800000u | (m ? 0x400000u | (m << 13) : 0u));
  if (e == 0u) {
    if (m == 0u) return bit_cast<float>(sign);
    e = 113u;  // normalise the subnormal: value m * 2^-24
    while (!(m & 0x400u)) {
      m <<= 1;
      --e;
    }
    return bit_cast<float>(sign | (e << 23) | ((m & 0x3ffu) << 13));
  }
  return bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
}

HFSTI_HD u16_t float_to_bf16_bits(float f) {
  const u32_t x = bit_cast<u32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (u16_t)0xffffu;
  return (u16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

template <class T>
struct acc {
  typedef float type;
};
template <>
struct acc<double> {
  typedef double type;
};

template <class T>
struct convert;
template <>
struct convert<double> {
  static HFSTI_HD double from(double x) { return x; }
};
template <>
struct convert<float> {
  static HFSTI_HD float from(float x) { return x; }
};
template <>
struct convert<half_t> {
  static HFSTI_HD half_t from(float x) { return half_t{float_to_half_bits(x)}; }
};
template <>
struct convert<bf16_t> {
  static HFSTI_HD bf16_t from(float x) { return bf16_t{float_to_bf16_bits(x)}; }
};

}  // namespace detail

// Accumulation / compute type of a storage type: double for double, float otherwise.
template <class T>
using acc_t = typename detail::acc<T>::type;

HFSTI_HD float to_float(half_t x) { return detail::half_bits_to_float(x.bits); }
HFSTI_HD float to_float(bf16_t x) { return detail::bit_cast<float>((u32_t)x.bits << 16); }
HFSTI_HD float to_float(float x) { return x; }
HFSTI_HD double to_float(double x) { return x; }

// Store a computed value as T (T given explicitly): from_float<half_t>(v), from_float<double>(d).
template <class T>
HFSTI_HD T from_float(acc_t<T> x) {
  return detail::convert<T>::from(x);
}

}  // namespace hfsti
