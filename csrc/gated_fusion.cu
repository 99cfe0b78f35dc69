// CUDA kernels of gated_fusion (docs/ops.md), the core of the Intertwined Fusion Block:
//
//   x_c  = x_f + x_s + x_0
//   x_fs = gelu(fourier_unit(x_c, fu_weight, fu_bias)) * (dwconv3x3(x_c, dw_weight) + dw_bias)
//
// Design: as csrc/fourier_unit.cu, the Fourier unit's channel mixing is a torch GEMM between two
// plane kernels (fourier_unit's mixing is C -> C here); everything else is fused per plane:
//   hfsti_gf_spec      x_c = sum of the three inputs (written once, rounded once to T), and its
//                      half spectrum Z -> (B, 2C, H, Wh)
//   [torch]            P = fu_weight @ Z
//   hfsti_gf_out       f = irfft2_strict(relu(P + fu_bias)); the depthwise conv of x_c (zero
//                      padding, read straight from global memory) and the GELU in the store of
//                      the inverse transform; writes x_fs only
// Backward (x_c's gradient gxc may be absent):
//   hfsti_gf_spec_bwd  recomputes f (one inverse transform; cheaper than storing it) and s, then
//                      ds = g gelu(f), df = g s gelu'(f); writes gP = mask c' rfft2(df) (as
//                      fourier_unit), the conv's input gradient (ds correlated with the 3x3
//                      taps) and per-plane partial sums for dw_weight (9) and dw_bias (1),
//                      reduced in a fixed order inside the block (deterministic, no atomics)
//   [torch]            dfu_bias, dfu_weight, gZ = fu_weight^T gP; batch sums of the partials
//   hfsti_gf_out_bwd   dx_c = irfft2_strict(gZ / c') + conv input gradient + gxc; the three
//                      inputs' gradients are all dx_c
// Workspace (hfsti/fft.h): 2 buffers, 4 for hfsti_gf_spec_bwd (two hold the real planes f/df
// and ds): 127 KB at fp32 88x88, so fp64 88x88 takes the global-scratch path there.
// Storage T is double, float, hfsti::half_t or hfsti::bf16_t, arithmetic in acc_t<T>; all T
// tensors contiguous (B, C, H, W) (parameters: dw_weight (C, 1, 3, 3), biases (2C,) and (C,)).
// Limits: those of hfsti/fft.h; at most 512 threads a block (__launch_bounds__, and the
// reduction buffer of hfsti_gf_spec_bwd, whose 2 or 4 KB of static shared memory the launch
// plan counts).
#include "hfsti/runtime.h"
#include "hfsti/fft.h"
#include "hfsti/spectrum.h"

namespace hfsti {
namespace gf {

__device__ __forceinline__ float erf_(float x) { return erff(x); }
__device__ __forceinline__ double erf_(double x) { return erf(x); }
__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }

// dwconv3x3 (zero padding) of the plane xc at (h, w), plus the bias.
template <class A, class T>
__device__ __forceinline__ A dwconv(const T* xc, const A* tap, A bias, int H, int W, int h, int w) {
  A s = bias;
  for (int i = 0; i < 3; ++i) {
    const int hh = h + i - 1;
    if (hh < 0 || hh >= H) continue;
    for (int j = 0; j < 3; ++j) {
      const int ww = w + j - 1;
      if (ww >= 0 && ww < W) s += tap[3 * i + j] * (A)to_float(xc[hh * W + ww]);
    }
  }
  return s;
}

// Sum of v over the block, in a fixed order (deterministic); red: blockDim.x scratch values.
template <class A>
__device__ A block_sum(A v, A* red) {
  red[threadIdx.x] = v;
  __syncthreads();
  int s = 1;
  while (2 * s < (int)blockDim.x) s *= 2;
  for (; s > 0; s /= 2) {
    if ((int)threadIdx.x < s && threadIdx.x + s < blockDim.x) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  const A r = red[0];
  __syncthreads();
  return r;
}

}  // namespace gf
}  // namespace hfsti

// x_c = x_f + x_s + x_0 and Z[b, c] = Re rfft2(x_c[b, c]), Z[b, C + c] = Im rfft2(x_c[b, c]).
//   xf, xs, x0, xc: (B, C, H, W) T; z: (B, 2C, H, W/2+1) A; planes = B * C.
//   ws: null (dynamic shared memory: (W + H + 2 * plane_elems) complex A) or a global array of
//       gridDim.x such slices.
// clang-format off
template <class T>
__global__ void __launch_bounds__(512, 1) hfsti_gf_spec(const T* __restrict__ xf, const T* __restrict__ xs, const T* __restrict__ x0, T* __restrict__ xc, hfsti::acc_t<T>* __restrict__ z, int C, int planes, int H, int W, hfsti::acc_t<T>* ws) {
  // clang-format on
  using A = hfsti::acc_t<T>;
  const hfsti::fft::Work<A> w = hfsti::fft::setup<A>(ws, H, W, 2);
  for (int pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    const long long off = (long long)pl * H * W;
    // rfft2 calls the loader once per pixel: it also stores x_c, and transforms the rounded
    // value so that x_fs is exactly a function of the returned x_c.
    auto load = [&](int h, int wi) {
      const long long i = off + h * W + wi;
      const A s = (A)hfsti::to_float(xf[i]) + (A)hfsti::to_float(xs[i]) + (A)hfsti::to_float(x0[i]);
      const T t = hfsti::from_float<T>(s);
      xc[i] = t;
      return (A)hfsti::to_float(t);
    };
    hfsti::fft::rfft2<A>(H, W, load, w.buf[0], w.buf[1], w.twW, w.twH);
    const int b = pl / C, c = pl - b * C;
    hfsti::spectrum::store(z, w.buf[0], C, b, c, H, W);
    __syncthreads();
  }
}

// x_fs[b, c] = gelu(irfft2_strict(relu(P + fu_bias))) * (dwconv3x3(x_c[b, c]) + dw_bias[c]).
//   p: (B, 2C, H, W/2+1) A (the GEMM result); fu_bias: (2C,) T; xc: (B, C, H, W) T;
//   dw_w: (C, 1, 3, 3) T; dw_b: (C,) T; xfs: (B, C, H, W) T; planes = B * C. ws as above.
// clang-format off
template <class T>
__global__ void __launch_bounds__(512, 1) hfsti_gf_out(const hfsti::acc_t<T>* __restrict__ p, const T* __restrict__ fu_bias, const T* __restrict__ xc, const T* __restrict__ dw_w, const T* __restrict__ dw_b, T* __restrict__ xfs, int C, int planes, int H, int W, hfsti::acc_t<T>* ws) {
  // clang-format on
  using A = hfsti::acc_t<T>;
  const hfsti::fft::Work<A> w = hfsti::fft::setup<A>(ws, H, W, 2);
  for (int pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    const int b = pl / C, c = pl - b * C;
    A tap[9];
    for (int t = 0; t < 9; ++t) tap[t] = (A)hfsti::to_float(dw_w[9 * c + t]);
    const A bias = (A)hfsti::to_float(dw_b[c]);
    const long long off = (long long)pl * H * W;
    hfsti::spectrum::load_relu(w.buf[0], p, fu_bias, C, b, c, H, W);
    hfsti::fft::irfft2<A>(H, W, w.buf[0], w.buf[1], w.twW, w.twH, [&](int h, int wi, A f) {
      const A s = hfsti::gf::dwconv(xc + off, tap, bias, H, W, h, wi);
      const A gelu = A(0.5) * f * (A(1) + hfsti::gf::erf_(f * A(0.70710678118654752440)));
      xfs[off + h * W + wi] = hfsti::from_float<T>(gelu * s);
    });
  }
}

// The backward's plane work (see the header): gP (B, 2C, H, W/2+1) A, the conv's input
// gradient dxconv (B, C, H, W) A, and dwpart (B, C, 10) A: per-plane sums of ds * x_c shifted
// by each of the 9 taps (row-major), then of ds (the dw_bias gradient).
//   gxfs: (B, C, H, W) T, x_fs's gradient; p, fu_bias, xc, dw_w, dw_b as in hfsti_gf_out.
//   ws: null (dynamic shared memory: (W + H + 4 * plane_elems) complex A) or a global array of
//       gridDim.x such slices. At most 512 threads.
// clang-format off
template <class T>
__global__ void __launch_bounds__(512, 1) hfsti_gf_spec_bwd(const T* __restrict__ gxfs, const hfsti::acc_t<T>* __restrict__ p, const T* __restrict__ fu_bias, const T* __restrict__ xc, const T* __restrict__ dw_w, const T* __restrict__ dw_b, hfsti::acc_t<T>* __restrict__ gp, hfsti::acc_t<T>* __restrict__ dxconv, hfsti::acc_t<T>* __restrict__ dwpart, int C, int planes, int H, int W, hfsti::acc_t<T>* ws) {
  // clang-format on
  using A = hfsti::acc_t<T>;
  HFSTI_SHARED(A, red, 512);
  const hfsti::fft::Work<A> w = hfsti::fft::setup<A>(ws, H, W, 4);
  A* fd = reinterpret_cast<A*>(w.buf[2]);  // f, then df (a real plane fits in a buffer)
  A* ds = reinterpret_cast<A*>(w.buf[3]);
  const int N = H * W;
  for (int pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    const int b = pl / C, c = pl - b * C;
    A tap[9];
    for (int t = 0; t < 9; ++t) tap[t] = (A)hfsti::to_float(dw_w[9 * c + t]);
    const A bias = (A)hfsti::to_float(dw_b[c]);
    const long long off = (long long)pl * N;
    const T* xp = xc + off;
    hfsti::spectrum::load_relu(w.buf[0], p, fu_bias, C, b, c, H, W);
    hfsti::fft::irfft2<A>(H, W, w.buf[0], w.buf[1], w.twW, w.twH,
                          [&](int h, int wi, A f) { fd[h * W + wi] = f; });
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
      const int h = i / W, wi = i - h * W;
      const A f = fd[i], g = (A)hfsti::to_float(gxfs[off + i]);
      const A s = hfsti::gf::dwconv(xp, tap, bias, H, W, h, wi);
      const A phi = A(0.5) * (A(1) + hfsti::gf::erf_(f * A(0.70710678118654752440)));
      const A dens = hfsti::gf::exp_(A(-0.5) * f * f) * A(0.39894228040143267794);
      ds[i] = g * f * phi;
      fd[i] = g * s * (phi + f * dens);
    }
    __syncthreads();
    hfsti::fft::rfft2<A>(H, W, [&](int h, int wi) { return fd[h * W + wi]; }, w.buf[0], w.buf[1],
                         w.twW, w.twH);
    hfsti::spectrum::store_relu_grad(gp, p, fu_bias, w.buf[0], C, b, c, H, W);
    // The conv's adjoint: dx[h, w] = sum_t tap[t] ds[h - i + 1, w - j + 1]; and the partials.
    A part[10] = {};
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
      const int h = i / W, wi = i - h * W;
      A dx = 0;
      const A d = ds[i];
      for (int ti = 0; ti < 3; ++ti) {
        const int hs = h - ti + 1, hx = h + ti - 1;
        for (int tj = 0; tj < 3; ++tj) {
          const int ws_ = wi - tj + 1, wx = wi + tj - 1;
          if (hs >= 0 && hs < H && ws_ >= 0 && ws_ < W) dx += tap[3 * ti + tj] * ds[hs * W + ws_];
          if (hx >= 0 && hx < H && wx >= 0 && wx < W)
            part[3 * ti + tj] += d * (A)hfsti::to_float(xp[hx * W + wx]);
        }
      }
      part[9] += d;
      dxconv[off + i] = dx;
    }
    for (int t = 0; t < 10; ++t) {
      const A total = hfsti::gf::block_sum(part[t], red);
      if (threadIdx.x == 0) dwpart[(long long)pl * 10 + t] = total;
    }
  }
}

// dx_c[b, c] = irfft2_strict((gZ[b, c] + i gZ[b, C + c]) / c') + dxconv[b, c] + gxc[b, c].
//   gz: (B, 2C, H, W/2+1) A; dxconv: (B, C, H, W) A; gxc: (B, C, H, W) T or null;
//   dxc: (B, C, H, W) T; planes = B * C. ws as in hfsti_gf_spec.
// clang-format off
template <class T>
__global__ void __launch_bounds__(512, 1) hfsti_gf_out_bwd(const hfsti::acc_t<T>* __restrict__ gz, const hfsti::acc_t<T>* __restrict__ dxconv, const T* __restrict__ gxc, T* __restrict__ dxc, int C, int planes, int H, int W, hfsti::acc_t<T>* ws) {
  // clang-format on
  using A = hfsti::acc_t<T>;
  const hfsti::fft::Work<A> w = hfsti::fft::setup<A>(ws, H, W, 2);
  for (int pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    const int b = pl / C, c = pl - b * C;
    hfsti::spectrum::load_adjoint(w.buf[0], gz, C, b, c, H, W);
    const long long off = (long long)pl * H * W;
    hfsti::fft::irfft2<A>(H, W, w.buf[0], w.buf[1], w.twW, w.twH, [&](int h, int wi, A v) {
      const long long i = off + h * W + wi;
      const A extra = gxc != nullptr ? (A)hfsti::to_float(gxc[i]) : A(0);
      dxc[i] = hfsti::from_float<T>(v + dxconv[i] + extra);
    });
  }
}

#include "hfsti/kernel_table.h"
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_gf_spec);
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_gf_out);
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_gf_spec_bwd);
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_gf_out_bwd);
