// CUDA kernels of fft_channel_attention (docs/ops.md): y = irfft2(rfft2(q) rfft2(k) rfft2(v)).
//
// Design: one thread block per (b, c) plane (a grid-stride loop over planes when the grid is
// capped). The plane's half spectra live in the block's workspace (hfsti/fft.h): dynamic shared
// memory when it fits (fp32 88x88: 3 x 31.7 KB forward, 4 x 31.7 KB backward), otherwise a
// per-block slice of a global scratch array (e.g. fp64 88x88 backward, 253 KB > 227 KB), same
// code. Each input is read once and each output written once; the products are formed in place.
//
// Backward (circular cross-correlation): with Q, K, V, DY the spectra,
//   dq = irfft2(DY conj(K V)), dk = irfft2(DY conj(Q V)), dv = irfft2(DY conj(Q K)),
// scheduled so that four spectrum buffers suffice: A = DY conj K, C = DY conj V, then
// dQ = A conj V, dK = C conj Q, dV = A conj Q.
//
// Inputs and outputs are contiguous (B, C, H, W); the Python side makes them so. Storage T is
// double, float, hfsti::half_t or hfsti::bf16_t; arithmetic in acc_t<T> (double or float).
// Limits: see hfsti/fft.h (any H, W >= 1; int indexing within a plane); at most 512 threads a
// block (__launch_bounds__, so at most 128 registers a thread).
#include "hfsti/runtime.h"
#include "hfsti/fft.h"

// y = irfft2(rfft2(q) * rfft2(k) * rfft2(v)) per plane.
//   q, k, v, y: (planes, H, W) contiguous (planes = B * C).
//   ws: null (workspace in dynamic shared memory, (W + H + 3 * plane_elems) complex acc values),
//       or a global array of gridDim.x such slices.
// clang-format off
template <class T>
__global__ void __launch_bounds__(512, 1) hfsti_fca_fwd(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ y, int planes, int H, int W, hfsti::acc_t<T>* ws) {
  // clang-format on
  using A = hfsti::acc_t<T>;
  const hfsti::fft::Work<A> w = hfsti::fft::setup<A>(ws, H, W, 3);
  const int n = H * (W / 2 + 1);
  for (int pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    const long long off = (long long)pl * H * W;
    hfsti::fft::rfft2_of(q + off, H, W, w.buf[0], w.buf[2], w);
    hfsti::fft::rfft2_of(k + off, H, W, w.buf[1], w.buf[2], w);
    for (int i = threadIdx.x; i < n; i += blockDim.x) w.buf[0][i] = cmul(w.buf[0][i], w.buf[1][i]);
    __syncthreads();
    hfsti::fft::rfft2_of(v + off, H, W, w.buf[1], w.buf[2], w);
    for (int i = threadIdx.x; i < n; i += blockDim.x) w.buf[0][i] = cmul(w.buf[0][i], w.buf[1][i]);
    __syncthreads();
    hfsti::fft::irfft2_to(y + off, H, W, w.buf[0], w.buf[1], w);
  }
}

// dq, dk, dv of y = fft_channel_attention(q, k, v) for the output gradient dy.
//   dy, q, k, v, dq, dk, dv: (planes, H, W) contiguous.
//   ws: null (dynamic shared memory, (W + H + 4 * plane_elems) complex acc values per block) or a
//       global array of gridDim.x such slices.
// clang-format off
template <class T>
__global__ void __launch_bounds__(512, 1) hfsti_fca_bwd(const T* __restrict__ dy, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ dq, T* __restrict__ dk, T* __restrict__ dv, int planes, int H, int W, hfsti::acc_t<T>* ws) {
  // clang-format on
  using A = hfsti::acc_t<T>;
  using hfsti::fft::cmulc;
  const hfsti::fft::Work<A> w = hfsti::fft::setup<A>(ws, H, W, 4);
  hfsti::fft::cplx<A> *b0 = w.buf[0], *b1 = w.buf[1], *b2 = w.buf[2], *b3 = w.buf[3];
  const int n = H * (W / 2 + 1);
  for (int pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    const long long off = (long long)pl * H * W;
    hfsti::fft::rfft2_of(dy + off, H, W, b0, b3, w);
    hfsti::fft::rfft2_of(k + off, H, W, b1, b3, w);
    for (int i = threadIdx.x; i < n; i += blockDim.x) b1[i] = cmulc(b0[i], b1[i]);  // DY conj K
    __syncthreads();
    hfsti::fft::rfft2_of(v + off, H, W, b2, b3, w);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const hfsti::fft::cplx<A> vv = b2[i];
      b0[i] = cmulc(b0[i], vv);  // DY conj V
      b2[i] = cmulc(b1[i], vv);  // dQ = DY conj K conj V
    }
    __syncthreads();
    hfsti::fft::irfft2_to(dq + off, H, W, b2, b3, w);
    hfsti::fft::rfft2_of(q + off, H, W, b2, b3, w);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const hfsti::fft::cplx<A> qq = b2[i];
      b0[i] = cmulc(b0[i], qq);  // dK = DY conj V conj Q
      b1[i] = cmulc(b1[i], qq);  // dV = DY conj K conj Q
    }
    __syncthreads();
    hfsti::fft::irfft2_to(dk + off, H, W, b0, b2, w);
    hfsti::fft::irfft2_to(dv + off, H, W, b1, b2, w);
  }
}

#include "hfsti/kernel_table.h"
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_fca_fwd);
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_fca_bwd);
