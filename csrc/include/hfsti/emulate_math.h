// hfsti/emulate_math.h -- the host SIMT emulator's device-library functions: fences, __ldg,
// atomics, integer/bit intrinsics, CUDA's global min/max overloads, and the CUDA-only math names
// (rsqrtf, __expf, sincospif, ...) mapped onto libm.
//
// Included by hfsti/emulate.h only (HFSTI_CUDA_EMULATE builds). Design: plain inline host
// functions with CUDA's names and signatures; everything in <math.h> (expf, erff, fmaf, sincosf,
// ...) is used as is. Limits: fast-math intrinsics are computed at full precision (more accurate
// than the GPU's approximations); atomics are std::atomic_ref operations (atomicAdd on 4/8-byte
// arithmetic types, atomicMax/atomicMin on integers). sincospi* reduce the argument exactly, so
// integers and halves give exact 0 and +-1 as on the GPU.
#pragma once

#if !defined(HFSTI_CUDA_EMULATE) || defined(__CUDACC__)
#error "hfsti/emulate_math.h belongs to the host emulator (include hfsti/runtime.h)"
#endif

#include <math.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <type_traits>

// ---- memory fences, loads, atomics
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
template <class T>
inline T atomicAdd(T* p, T v) {
  static_assert(std::is_arithmetic_v<T> && (sizeof(T) == 4 || sizeof(T) == 8),
                "atomicAdd: 4- or 8-byte arithmetic types");
  return std::atomic_ref<T>(*p).fetch_add(v);
}
template <class T>
inline T atomicMax(T* p, T v) {
  static_assert(std::is_integral_v<T>, "atomicMax: integer types");
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
  static_assert(std::is_integral_v<T>, "atomicMin: integer types");
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (old > v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}

// ---- integer and bit intrinsics
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return std::countl_zero(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return std::countl_zero(static_cast<unsigned long long>(x)); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }

// CUDA's global min/max overloads.
#define HFSTI_EMU_MINMAX(T)                      \
  inline T min(T a, T b) { return b < a ? b : a; } \
  inline T max(T a, T b) { return a < b ? b : a; }
HFSTI_EMU_MINMAX(int)
HFSTI_EMU_MINMAX(unsigned int)
HFSTI_EMU_MINMAX(long)
HFSTI_EMU_MINMAX(unsigned long)
HFSTI_EMU_MINMAX(long long)
HFSTI_EMU_MINMAX(unsigned long long)
#undef HFSTI_EMU_MINMAX
// mixed signedness: the unsigned type wins, as in CUDA's overloads
#define HFSTI_EMU_MINMAX_MIXED(S, U)                                                 \
  inline U min(S a, U b) { return min(static_cast<U>(a), b); }                      \
  inline U min(U a, S b) { return min(a, static_cast<U>(b)); }                      \
  inline U max(S a, U b) { return max(static_cast<U>(a), b); }                      \
  inline U max(U a, S b) { return max(a, static_cast<U>(b)); }
HFSTI_EMU_MINMAX_MIXED(int, unsigned int)
HFSTI_EMU_MINMAX_MIXED(long, unsigned long)
HFSTI_EMU_MINMAX_MIXED(long long, unsigned long long)
#undef HFSTI_EMU_MINMAX_MIXED
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
inline double max(double a, float b) { return fmax(a, b); }

// ---- math: CUDA-only names mapped onto libm
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { sincosf(x, s, c); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x != x ? 0.0f : fminf(fmaxf(x, 0.0f), 1.0f); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __frsqrt_rn(float a) { return 1.0f / sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752440); }

namespace hfsti::emu {
// sin(pi x), cos(pi x) in double with exact reduction, so integers and halves give exact 0 / +-1.
inline void sincospi_d(double x, double* s, double* c) {
  const double n = std::nearbyint(2.0 * x);
  const double r = (x - 0.5 * n) * 3.14159265358979323846;  // |r| <= pi/4
  const double sr = std::sin(r), cr = std::cos(r);
  switch (static_cast<long long>(std::fmod(n, 4.0) + 4.0) % 4) {
    case 0: *s = sr; *c = cr; break;
    case 1: *s = cr; *c = -sr; break;
    case 2: *s = -sr; *c = -cr; break;
    default: *s = -cr; *c = sr; break;
  }
}
}  // namespace hfsti::emu
inline void sincospi(double x, double* s, double* c) { hfsti::emu::sincospi_d(x, s, c); }
inline void sincospif(float x, float* s, float* c) {
  double sd, cd;
  hfsti::emu::sincospi_d(x, &sd, &cd);
  *s = static_cast<float>(sd);
  *c = static_cast<float>(cd);
}
inline double sinpi(double x) {
  double s, c;
  hfsti::emu::sincospi_d(x, &s, &c);
  return s;
}
inline double cospi(double x) {
  double s, c;
  hfsti::emu::sincospi_d(x, &s, &c);
  return c;
}
inline float sinpif(float x) { return static_cast<float>(sinpi(x)); }
inline float cospif(float x) { return static_cast<float>(cospi(x)); }
