// hfsti/fft.h -- block-wide 2-D real FFTs of one plane, the core of the FFT ops' CUDA kernels.
//
// Design (docs/kernels.md, "CUDA backend"): one thread block transforms one (b, c) plane at a
// time, all intermediates in a per-block workspace (shared memory, or a global-memory slice for
// planes too large for it; the same code, generic pointers). Every function here is called by all
// threads of the block in uniform control flow and ends with __syncthreads().
//
// - 1-D transforms: mixed-radix Stockham (self-sorting, out of place, ping-pong between two
//   buffers). A stage of radix r writes every output element independently as an r-term sum
//   (one thread per output, no per-thread arrays), so any radix works: n is split into 4s and
//   its prime factors (88 = 4 x 2 x 11), and a prime factor p is a direct p-point DFT stage, so
//   any n >= 1 is exact. Cost per point: the sum of the radices (17 for 88) complex FMAs.
// - Twiddles: a table exp(-2 pi i t / n), t < n, per axis, computed in double precision at
//   block start and rounded once to the compute type; a stage indexes it with integer phases
//   (reduced mod the stage length), so no trigonometry runs in the inner loops.
// - Real transforms: rows 2p and 2p+1 of the plane travel as the real and imaginary parts of
//   one complex row (P = ceil(H/2) complex W-point transforms), separated afterwards by the
//   Hermitian symmetry; the inverse packs two Hermitian rows the same way. Then Wh = W/2+1
//   complex H-point transforms along the columns.
// - Norm "ortho" both ways. `irfft2` is the strict C2R of docs/ops.md (inverse along H first,
//   the imaginary parts of column 0 and, for even W, column W/2 dropped, then C2R along W);
//   for a Hermitian-consistent spectrum this is the ordinary irfft2.
//
// Layout of a workspace: twiddles for W (W entries), for H (H entries), then `nbuf` buffers of
// `plane_elems(H, W)` complex values each (hfsti_kernels/cuda/_fft_plan.py computes the same).
//
// Limits: indices are int (a plane must have < 2^31 / 4 elements); accuracy is that of the
// compute type A (float for fp32/fp16/bf16 storage, double for double): about log(n) * eps.
#pragma once

#include "hfsti/runtime.h"

namespace hfsti {
namespace fft {

template <class A>
struct cplx {
  A re, im;
};

template <class A>
__device__ __forceinline__ cplx<A> cmul(cplx<A> a, cplx<A> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}

// a * conj(b)
template <class A>
__device__ __forceinline__ cplx<A> cmulc(cplx<A> a, cplx<A> b) {
  return {a.re * b.re + a.im * b.im, a.im * b.re - a.re * b.im};
}

// Complex values per buffer: the packed row pairs (ceil(H/2) x W) or the half spectrum (H x Wh).
__host__ __device__ __forceinline__ int plane_elems(int H, int W) {
  const int rows = ((H + 1) / 2) * W, spec = H * (W / 2 + 1);
  return rows > spec ? rows : spec;
}

// Column k of a half spectrum of width W is "interior" when its mirror bin W-k is not stored:
// the real-linear adjoints of rfft2 / irfft2 weigh those columns by 1/2 / 2 (docs/ops.md).
__device__ __forceinline__ bool interior(int k, int W) { return k > 0 && 2 * k != W; }

// Radix of the next Stockham stage for a remaining length m > 1: 4 when it divides, else the
// smallest prime factor (m itself when m is prime: one direct-DFT stage).
__device__ __forceinline__ int next_radix(int m) {
  if (m % 4 == 0) return 4;
  for (int p = 2; p * p <= m; ++p)
    if (m % p == 0) return p;
  return m;
}

__device__ __forceinline__ int num_stages(int n) {
  int s = 0;
  for (int m = n; m > 1; m /= next_radix(m)) ++s;
  return s;
}

// tw[t] = exp(-2 pi i t / n) for t < n, in double, rounded once to A.
template <class A>
__device__ void make_twiddles(cplx<A>* tw, int n) {
  for (int t = threadIdx.x; t < n; t += blockDim.x) {
    const double a = -6.283185307179586476925 * (double)t / (double)n;
    tw[t] = {(A)cos(a), (A)sin(a)};
  }
}

// Block-wide workspace: the block's dynamic shared memory when `ws` is null, else its slice of
// the global array `ws` (per_block complex values each). Returns its start (the twiddle tables).
template <class A>
__device__ __forceinline__ cplx<A>* workspace(A* ws, long long per_block) {
  if (ws == nullptr) {
    HFSTI_DYNAMIC_SHARED(cplx<A>, smem);
    return smem;
  }
  return reinterpret_cast<cplx<A>*>(ws) + (long long)blockIdx.x * per_block;
}

// A block's twiddle tables and its `nbuf` (<= 4) buffers of plane_elems(H, W) complex values.
template <class A>
struct Work {
  cplx<A>* twW;
  cplx<A>* twH;
  cplx<A>* buf[4];
};

// Lays out the workspace (see workspace()) and fills the twiddle tables.
template <class A>
__device__ Work<A> setup(A* ws, int H, int W, int nbuf) {
  const long long M = plane_elems(H, W);
  Work<A> w;
  w.twW = workspace<A>(ws, W + H + nbuf * M);
  w.twH = w.twW + W;
  for (int i = 0; i < 4; ++i) w.buf[i] = w.twH + H + (i < nbuf ? i : 0) * M;
  make_twiddles(w.twW, W);
  make_twiddles(w.twH, H);
  __syncthreads();
  return w;
}

// `count` complex sequences of length n, element e of sequence s at s*ss + e*es in both src and
// dst; forward (exp(-i...)) or inverse (exp(+i...)), unnormalised. Ping-pongs between the two
// buffers and returns the one holding the result (src after an even number of stages).
template <class A>
__device__ cplx<A>* fft_many(cplx<A>* src, cplx<A>* dst, int n, int count, int ss, int es,
                             const cplx<A>* tw, bool inverse) {
  const int total = count * n;
  for (int ns = 1; ns < n;) {
    const int r = next_radix(n / ns);
    const int len = ns * r;     // length of the sub-transforms this stage completes
    const int step = n / len;   // twiddle-table stride for a len-point root of unity
    const int stride = (n / r) * es;
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
      const int s = i / n, o = i - s * n;
      // o = (hi * r + rr) * ns + lo: output rr of the r-point butterfly j = hi * ns + lo.
      const int lo = o % ns, rest = o / ns;
      const int rr = rest % r, hi = rest / r;
      const int m = lo + rr * ns;  // the butterfly input q is turned by exp(-2 pi i q m / len)
      const cplx<A>* in = src + s * ss + (hi * ns + lo) * es;
      A re = 0, im = 0;
      for (int q = 0, t = 0; q < r; ++q) {
        const cplx<A> a = in[q * stride], w = tw[t * step];
        const A wi = inverse ? -w.im : w.im;
        re += a.re * w.re - a.im * wi;
        im += a.re * wi + a.im * w.re;
        t += m;
        if (t >= len) t -= len;
      }
      dst[s * ss + o * es] = {re, im};
    }
    __syncthreads();
    cplx<A>* t = src;
    src = dst;
    dst = t;
    ns = len;
  }
  return src;
}

// Half spectrum (H x Wh, row-major) of rfft2(x, norm="ortho") into `out`, for the real plane
// x[h][w] = load(h, w). `tmp` is scratch. twW, twH: make_twiddles tables of lengths W and H.
template <class A, class Load>
__device__ void rfft2(int H, int W, const Load& load, cplx<A>* out, cplx<A>* tmp,
                      const cplx<A>* twW, const cplx<A>* twH) {
  const int Wh = W / 2 + 1, P = (H + 1) / 2;
  // Pick the starting buffers so that the column pass ends in `out`.
  cplx<A>* spec = (num_stages(H) % 2 == 0) ? out : tmp;
  cplx<A>* rows = (spec == out) ? tmp : out;
  cplx<A>* start = (num_stages(W) % 2 == 0) ? rows : spec;
  for (int i = threadIdx.x; i < P * W; i += blockDim.x) {
    const int p = i / W, w = i - p * W;
    const A a = load(2 * p, w);
    const A b = (2 * p + 1 < H) ? load(2 * p + 1, w) : A(0);
    start[i] = {a, b};
  }
  __syncthreads();
  const cplx<A>* z = fft_many(start, start == out ? tmp : out, W, P, W, 1, twW, false);
  // Z = Xa + i Xb with Xa, Xb Hermitian: Xa[k] = (Z[k] + conj Z[-k]) / 2,
  // Xb[k] = (Z[k] - conj Z[-k]) / (2i); the ortho scale folds in here.
  const A hs = (A)(0.5 / sqrt((double)H * (double)W));
  for (int i = threadIdx.x; i < P * Wh; i += blockDim.x) {
    const int p = i / Wh, k = i - p * Wh;
    const cplx<A> u = z[p * W + k], v = z[p * W + (k == 0 ? 0 : W - k)];
    spec[2 * p * Wh + k] = {(u.re + v.re) * hs, (u.im - v.im) * hs};
    if (2 * p + 1 < H) spec[(2 * p + 1) * Wh + k] = {(u.im + v.im) * hs, (v.re - u.re) * hs};
  }
  __syncthreads();
  fft_many(spec, spec == out ? tmp : out, H, Wh, 1, Wh, twH, false);
}

// Bin k of the W-point Hermitian extension of row `row` of the half spectrum t (strict: the
// imaginary parts of bins 0 and W/2 dropped).
template <class A>
__device__ __forceinline__ cplx<A> hermitian_bin(const cplx<A>* t, int row, int k, int W) {
  const int Wh = W / 2 + 1;
  if (k < Wh) {
    cplx<A> v = t[row * Wh + k];
    if (!interior(k, W)) v.im = 0;
    return v;
  }
  const cplx<A> v = t[row * Wh + (W - k)];
  return {v.re, -v.im};
}

// The real plane irfft2_strict(spec, norm="ortho") of the half spectrum in `spec` (H x Wh),
// delivered as store(h, w, value) once per pixel. Destroys spec and tmp.
template <class A, class Store>
__device__ void irfft2(int H, int W, cplx<A>* spec, cplx<A>* tmp, const cplx<A>* twW,
                       const cplx<A>* twH, const Store& store) {
  const int Wh = W / 2 + 1, P = (H + 1) / 2;
  const cplx<A>* t = fft_many(spec, tmp, H, Wh, 1, Wh, twH, true);
  cplx<A>* z = (t == spec) ? tmp : spec;
  for (int i = threadIdx.x; i < P * W; i += blockDim.x) {
    const int p = i / W, k = i - p * W;
    const cplx<A> a = hermitian_bin(t, 2 * p, k, W);
    const cplx<A> b = (2 * p + 1 < H) ? hermitian_bin(t, 2 * p + 1, k, W) : cplx<A>{0, 0};
    z[i] = {a.re - b.im, a.im + b.re};  // a + i b: the inverse is row 2p + i row 2p+1
  }
  __syncthreads();
  const cplx<A>* y = fft_many(z, z == spec ? tmp : spec, W, P, W, 1, twW, true);
  const A scale = (A)(1.0 / sqrt((double)H * (double)W));
  for (int i = threadIdx.x; i < P * W; i += blockDim.x) {
    const int p = i / W, w = i - p * W;
    store(2 * p, w, y[i].re * scale);
    if (2 * p + 1 < H) store(2 * p + 1, w, y[i].im * scale);
  }
  __syncthreads();
}

// rfft2 of the contiguous (H, W) plane x of storage type T, into `out` (`tmp`: scratch).
template <class A, class T>
__device__ void rfft2_of(const T* x, int H, int W, cplx<A>* out, cplx<A>* tmp, const Work<A>& w) {
  rfft2<A>(H, W, [&](int h, int wi) { return (A)to_float(x[h * W + wi]); }, out, tmp, w.twW, w.twH);
}

// irfft2 of `spec` into the contiguous (H, W) plane y of storage type T (destroys spec and tmp).
template <class A, class T>
__device__ void irfft2_to(T* y, int H, int W, cplx<A>* spec, cplx<A>* tmp, const Work<A>& w) {
  irfft2<A>(H, W, spec, tmp, w.twW, w.twH,
            [&](int h, int wi, A val) { y[h * W + wi] = from_float<T>(val); });
}

}  // namespace fft
}  // namespace hfsti
