// CUDA kernels of fourier_unit (docs/ops.md): the per-plane transforms around the channel GEMM.
//
//   Z  = [Re rfft2(x); Im rfft2(x)]          (B, 2C, H, Wh)      hfsti_fu_spec
//   P  = weight @ Z                          (B, 2C', H, Wh)     torch GEMM (cuBLAS)
//   y  = irfft2_strict(relu(P + bias))       (B, C', H, W)       hfsti_fu_out
//
// Design: the channel mixing couples every plane of a batch item, so it is a GEMM between two
// plane-local kernels (torch's matmul in hfsti_kernels/cuda/fourier_unit.py) rather than being
// fused: a fused kernel would have to redo each transform once per output channel. Each plane
// kernel is one thread block per (b, c) plane with the spectrum in the block workspace
// (hfsti/fft.h; two buffers: 63 KB at fp32 88x88, 127 KB at fp64), reading its plane once and
// writing its result once.
//
// Backward, with c'[k] = 2 on interior columns (the mirror bin is not stored) and 1 on the
// others, the real-linear adjoints (docs/ops.md) are
//   irfft2_strict^T(g) = c' * rfft2(g),      rfft2^T(G) = irfft2_strict(G / c'),
// so  gP = mask(P + bias > 0) * c' * rfft2(dy)    hfsti_fu_spec_bwd (per output plane)
//     dbias, dweight = sums of gP, gP @ Z^T        torch (fixed-order sums, deterministic)
//     gZ = weight^T @ gP                           torch GEMM
//     dx = irfft2_strict((gZ_re + i gZ_im) / c')    hfsti_fu_out_bwd (per input plane)
//
// x, dy, y, dx are contiguous storage-type (T) tensors; Z, P, gP, gZ are compute-type (A) arrays
// (float32, or float64 for float64 inputs). Limits: those of hfsti/fft.h; at most 512 threads a
// block (__launch_bounds__).
#include "hfsti/runtime.h"
#include "hfsti/fft.h"
#include "hfsti/spectrum.h"

// Z[b, c] = Re rfft2(x[b, c]), Z[b, C + c] = Im rfft2(x[b, c]).
//   x: (B, C, H, W) T; z: (B, 2C, H, W/2+1) A; planes = B * C.
//   ws: null (dynamic shared memory: (W + H + 2 * plane_elems) complex A) or a global array of
//       gridDim.x such slices.
// clang-format off
template <class T>
__global__ void __launch_bounds__(512, 1) hfsti_fu_spec(const T* __restrict__ x, hfsti::acc_t<T>* __restrict__ z, int C, int planes, int H, int W, hfsti::acc_t<T>* ws) {
  // clang-format on
  using A = hfsti::acc_t<T>;
  const hfsti::fft::Work<A> w = hfsti::fft::setup<A>(ws, H, W, 2);
  for (int pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    hfsti::fft::rfft2_of(x + (long long)pl * H * W, H, W, w.buf[0], w.buf[1], w);
    const int b = pl / C, c = pl - b * C;
    hfsti::spectrum::store(z, w.buf[0], C, b, c, H, W);
    __syncthreads();
  }
}

// y[b, o] = irfft2_strict(relu(P[b, o] + bias[o]) + i relu(P[b, Co + o] + bias[Co + o])).
//   p: (B, 2Co, H, W/2+1) A (the GEMM result, bias not added); bias: (2Co,) T;
//   y: (B, Co, H, W) T; planes = B * Co. ws as in hfsti_fu_spec.
// clang-format off
template <class T>
__global__ void __launch_bounds__(512, 1) hfsti_fu_out(const hfsti::acc_t<T>* __restrict__ p, const T* __restrict__ bias, T* __restrict__ y, int Co, int planes, int H, int W, hfsti::acc_t<T>* ws) {
  // clang-format on
  using A = hfsti::acc_t<T>;
  const hfsti::fft::Work<A> w = hfsti::fft::setup<A>(ws, H, W, 2);
  for (int pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    const int b = pl / Co, o = pl - b * Co;
    hfsti::spectrum::load_relu(w.buf[0], p, bias, Co, b, o, H, W);
    hfsti::fft::irfft2_to(y + (long long)pl * H * W, H, W, w.buf[0], w.buf[1], w);
  }
}

// gP[b, o] = mask * c' * Re rfft2(dy[b, o]), gP[b, Co + o] likewise with Im, where mask is
// P + bias > 0 of the same channel (the ReLU's derivative).
//   dy: (B, Co, H, W) T; p: (B, 2Co, H, W/2+1) A; bias: (2Co,) T; gp: like p; planes = B * Co.
//   ws as in hfsti_fu_spec.
// clang-format off
template <class T>
__global__ void __launch_bounds__(512, 1) hfsti_fu_spec_bwd(const T* __restrict__ dy, const hfsti::acc_t<T>* __restrict__ p, const T* __restrict__ bias, hfsti::acc_t<T>* __restrict__ gp, int Co, int planes, int H, int W, hfsti::acc_t<T>* ws) {
  // clang-format on
  using A = hfsti::acc_t<T>;
  const hfsti::fft::Work<A> w = hfsti::fft::setup<A>(ws, H, W, 2);
  for (int pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    hfsti::fft::rfft2_of(dy + (long long)pl * H * W, H, W, w.buf[0], w.buf[1], w);
    const int b = pl / Co, o = pl - b * Co;
    hfsti::spectrum::store_relu_grad(gp, p, bias, w.buf[0], Co, b, o, H, W);
    __syncthreads();
  }
}

// dx[b, c] = irfft2_strict((gZ[b, c] + i gZ[b, C + c]) / c').
//   gz: (B, 2C, H, W/2+1) A; dx: (B, C, H, W) T; planes = B * C. ws as in hfsti_fu_spec.
// clang-format off
template <class T>
__global__ void __launch_bounds__(512, 1) hfsti_fu_out_bwd(const hfsti::acc_t<T>* __restrict__ gz, T* __restrict__ dx, int C, int planes, int H, int W, hfsti::acc_t<T>* ws) {
  // clang-format on
  using A = hfsti::acc_t<T>;
  const hfsti::fft::Work<A> w = hfsti::fft::setup<A>(ws, H, W, 2);
  for (int pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    const int b = pl / C, c = pl - b * C;
    hfsti::spectrum::load_adjoint(w.buf[0], gz, C, b, c, H, W);
    hfsti::fft::irfft2_to(dx + (long long)pl * H * W, H, W, w.buf[0], w.buf[1], w);
  }
}

#include "hfsti/kernel_table.h"
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_fu_spec);
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_fu_out);
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_fu_spec_bwd);
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_fu_out_bwd);
