// hfsti/spectrum.h -- the split-complex channel layout of the Fourier unit's GEMM operands, shared
// by csrc/fourier_unit.cu and csrc/gated_fusion.cu.
//
// A (B, 2C, H, Wh) compute-type array (Wh = W/2+1) holds the half spectrum of plane (b, c) as its
// real part in channel c and its imaginary part in channel C + c, so that the channel mixing is
// one GEMM (docs/kernels.md, "CUDA backend"). These helpers move one plane between that layout
// and a workspace buffer of hfsti/fft.h. All threads of the block call them in uniform control
// flow; those that write the buffer end with __syncthreads(), those that only read it do not (the
// caller synchronises before the buffer is written again).
#pragma once

#include "hfsti/fft.h"

namespace hfsti {
namespace spectrum {

// Offset of the real channel of plane (b, c); the imaginary channel starts C * H * Wh later.
__device__ __forceinline__ long long re_offset(int C, int b, int c, int H, int W) {
  return ((long long)b * 2 * C + c) * H * (W / 2 + 1);
}

// z[b, c] = Re buf, z[b, C + c] = Im buf.
template <class A>
__device__ void store(A* z, const fft::cplx<A>* buf, int C, int b, int c, int H, int W) {
  const int n = H * (W / 2 + 1);
  A* zr = z + re_offset(C, b, c, H, W);
  A* zi = zr + (long long)C * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    zr[i] = buf[i].re;
    zi[i] = buf[i].im;
  }
}

// buf = relu(p[b, c] + bias[c]) + i relu(p[b, C + c] + bias[C + c]); bias: (2C,) T.
template <class A, class T>
__device__ void load_relu(fft::cplx<A>* buf, const A* p, const T* bias, int C, int b, int c, int H,
                          int W) {
  const int n = H * (W / 2 + 1);
  const A* pr = p + re_offset(C, b, c, H, W);
  const A* pi = pr + (long long)C * n;
  const A br = (A)to_float(bias[c]), bi = (A)to_float(bias[C + c]);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const A re = pr[i] + br, im = pi[i] + bi;
    buf[i] = {re > A(0) ? re : A(0), im > A(0) ? im : A(0)};
  }
  __syncthreads();
}

// The adjoint of load_relu followed by irfft2_strict, given buf = rfft2(g) (docs/ops.md):
// gp[b, c] = mask * c' * Re buf and gp[b, C + c] likewise with Im, where mask is p + bias > 0 of
// the same channel and c' = 2 on interior columns, 1 on the others.
template <class A, class T>
__device__ void store_relu_grad(A* gp, const A* p, const T* bias, const fft::cplx<A>* buf, int C,
                                int b, int c, int H, int W) {
  const int Wh = W / 2 + 1, n = H * Wh;
  const long long re = re_offset(C, b, c, H, W), im = re + (long long)C * n;
  const A br = (A)to_float(bias[c]), bi = (A)to_float(bias[C + c]);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const A cw = fft::interior(i % Wh, W) ? A(2) : A(1);
    gp[re + i] = p[re + i] + br > A(0) ? cw * buf[i].re : A(0);
    gp[im + i] = p[im + i] + bi > A(0) ? cw * buf[i].im : A(0);
  }
}

// buf = (g[b, c] + i g[b, C + c]) / c', ready for irfft2 (rfft2's adjoint, docs/ops.md).
template <class A>
__device__ void load_adjoint(fft::cplx<A>* buf, const A* g, int C, int b, int c, int H, int W) {
  const int Wh = W / 2 + 1, n = H * Wh;
  const A* gr = g + re_offset(C, b, c, H, W);
  const A* gi = gr + (long long)C * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const A cw = fft::interior(i % Wh, W) ? A(0.5) : A(1);
    buf[i] = {cw * gr[i], cw * gi[i]};
  }
  __syncthreads();
}

}  // namespace spectrum
}  // namespace hfsti
