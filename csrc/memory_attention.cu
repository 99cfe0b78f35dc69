// CUDA kernels of memory_attention (docs/ops.md, memory_attention):
//
//   o = softmax(scale * q k^T + key_bias[..., None, :]) v      per (batch, head)
//
// Design (flash attention with an online softmax; the block structure of the Triton kernels in
// hfsti_kernels/ops/memory_attention.py, docs/kernels.md):
//   hfsti_ma_fwd       one block per (b, head, tile of kBM queries): the q tile is staged in shared
//                      memory once, then key/value tiles of kBN rows stream through shared memory;
//                      scores S = log2(e) (scale q k^T + bias) go to a shared tile, one thread per
//                      query row updates the running max / sum (base 2: every exponential is one
//                      exp2) and the o accumulator is rescaled and updated in registers. Writes o
//                      and the base-2 row log-sum-exp (saved for the backward).
//   hfsti_ma_bwd_dq    one block per query tile: delta_i = sum_d do o (written for the next
//                      kernel), then over all key tiles P = exp2(S - lse), dS = P (do v^T - delta),
//                      dq += dS k; dq = scale dq.
//   hfsti_ma_bwd_dkdv  one block per key tile, looping over every query tile in order:
//                      dv += P^T do, dk += dS^T q, and dbias_j += sum_i dS_ij summed by one thread
//                      per key in a fixed order: deterministic, no atomics. A key_bias broadcast
//                      over B or h is summed over those dims by the caller (torch, deterministic).
// Every input is read through its own strides (the model passes transposed views); a size-1 B or
// h of key_bias is a zero stride; a null key_bias means none. Outputs are contiguous. Padded key
// columns get the finite score -1e30 and an exact zero probability, padded query rows zero
// probabilities, so ragged Nq and Nk need no special path and never make a NaN. A row whose every
// key has bias -inf (row sum 0) attends to nothing, as the reference defines it: o = 0 and
// lse = +1e30, so the backward's probabilities of that row, and its gradients, are exactly 0.
//
// Precision: storage T is double, float, hfsti::half_t or hfsti::bf16_t; every tile is converted
// to acc_t<T> (fp64 for fp64, else fp32) when staged, and all products, statistics and
// accumulators are fp32 FMAs (fp64 for fp64), including P in the P v product (Triton rounds it
// to the input dtype for fp16/bf16), so fp32 inputs get IEEE fp32 accuracy in every
// fp32_precision mode.
//
// Cost of the FMA path: no tensor cores, since the host emulator that verifies these kernels has
// no warp matrix instructions. Each score or gradient tile product is a register-tiled FMA loop
// over shared memory (2 x 4 outputs a thread: 6 shared loads per 8 FMAs; the P v style products
// 8 x D/32 outputs a thread), so the kernels run at the CUDA-core rate: H100/H200 about 60 TFLOP/s
// fp32 and 30 fp64, against about 990 dense for bf16/fp16 tensor cores. At the model's sizes
// (d = 24, a few thousand tokens) attention is a small part of a frame, but for fp16/bf16 this
// path is several times slower than the Triton one; backend="auto" therefore stays on Triton.
//
// Limits: d <= 128 (template D = 32, 64 or 128 is the padded head-dim tile, chosen in Python;
// columns past d are zero-filled and never stored); 128 threads a block, kBM = kBN = 32; dynamic
// shared memory (acc_t units) (kBM + 2 kBN)(D + 1) + kBM(kBN + 1) + kBN + 3 kBM for the forward,
// 2(kBM + kBN)(D + 1) + kBM(kBN + 1) + kBN + 2 kBM for dq and that plus kBM(kBN + 1) for dk/dv:
// at most 149760 B (fp64 dk/dv, D = 128; fp32 with d <= 32: 17-26 KB), opted in above 48 KB by
// the runtime. Indexing within one (b, head) plane and the grid (tiles * B * h blocks) are int;
// element offsets are 64-bit.
#include "hfsti/runtime.h"

namespace hfsti {
namespace ma {

constexpr int kThreads = 128;  // 4 warps
constexpr int kBM = 32;        // query rows per tile
constexpr int kBN = 32;        // keys per tile
constexpr int kLDS = kBN + 1;  // row stride of score tiles (odd: conflict-free column walks)
constexpr int kFR = kBM / 16;  // score fragment: kFR rows x kFC columns a thread
constexpr int kFC = kBN / 8;
constexpr int kAR = kBM / 4;  // accumulator fragment: kAR rows x D / 32 columns a thread
constexpr float kNegBig = -1.0e30f;  // score of a padded key column, finite in fp32 and fp64
constexpr double kLog2e = 1.4426950408889634;

static_assert(kBM == kBN, "the accumulator fragments assume square tiles");

__device__ __forceinline__ float exp2_(float x) { return exp2f(x); }
__device__ __forceinline__ double exp2_(double x) { return exp2(x); }
__device__ __forceinline__ float log2_(float x) { return log2f(x); }
__device__ __forceinline__ double log2_(double x) { return log2(x); }
__device__ __forceinline__ float fma_(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fma_(double a, double b, double c) { return fma(a, b, c); }

// Stage rows [row0, row0 + R) of a strided (n, d) matrix into the shared tile dst (R x D,
// row stride D + 1) as acc values; rows >= n and columns >= d become 0.
template <int R, int D, class A, class T>
__device__ __forceinline__ void load_tile(A* dst, const T* src, long long srow, long long scol,
                                          int row0, int n, int d) {
  for (int e = threadIdx.x; e < R * D; e += kThreads) {
    const int r = e / D, c = e % D;
    A x = A(0);
    if (row0 + r < n && c < d) x = (A)to_float(src[(long long)(row0 + r) * srow + c * scol]);
    dst[r * (D + 1) + c] = x;
  }
}

// This thread's kFR x kFC fragment of X Y^T over the first d columns (X: kBM rows, Y: kBN rows,
// both shared tiles of row stride D + 1). Fragment (r, c) is row frag_row(r), column frag_col(c).
__device__ __forceinline__ int frag_row(int r) { return threadIdx.x / 8 + 16 * r; }
__device__ __forceinline__ int frag_col(int c) { return threadIdx.x % 8 + 8 * c; }

template <int D, class A>
__device__ __forceinline__ void dot_frag(const A* X, const A* Y, int d, A (&out)[kFR][kFC]) {
  for (int r = 0; r < kFR; ++r)
    for (int c = 0; c < kFC; ++c) out[r][c] = A(0);
  for (int kk = 0; kk < d; ++kk) {
    A x[kFR], y[kFC];
    for (int r = 0; r < kFR; ++r) x[r] = X[frag_row(r) * (D + 1) + kk];
    for (int c = 0; c < kFC; ++c) y[c] = Y[frag_col(c) * (D + 1) + kk];
    for (int r = 0; r < kFR; ++r)
      for (int c = 0; c < kFC; ++c) out[r][c] = fma_(x[r], y[c], out[r][c]);
  }
}

// acc[r][c] += sum_{s < ns} W[row * ws_row + s * ws_col] * Y[s][col] for row = acc_row(r),
// col = acc_col(c): a (kAR x D/32) register fragment of W Y with W a shared score tile read
// directly (ws_row = kLDS, ws_col = 1) or transposed (1, kLDS), Y a shared (., D + 1) tile.
__device__ __forceinline__ int acc_row(int r) { return threadIdx.x / 32 + 4 * r; }
__device__ __forceinline__ int acc_col(int c) { return threadIdx.x % 32 + 32 * c; }

template <int D, class A>
__device__ __forceinline__ void acc_frag(const A* W, int ws_row, int ws_col, const A* Y, int ns,
                                         A (&acc)[kAR][D / 32]) {
  for (int s = 0; s < ns; ++s) {
    A y[D / 32];
    for (int c = 0; c < D / 32; ++c) y[c] = Y[s * (D + 1) + acc_col(c)];
    for (int r = 0; r < kAR; ++r) {
      const A w = W[acc_row(r) * ws_row + s * ws_col];
      for (int c = 0; c < D / 32; ++c) acc[r][c] = fma_(w, y[c], acc[r][c]);
    }
  }
}

// Write a (kAR x D/32) fragment times `mul` to rows [row0, row0 + kBM) of the contiguous (n, d)
// matrix out, skipping rows >= n and columns >= d.
template <int D, class A, class T>
__device__ __forceinline__ void store_frag(T* out, const A (&acc)[kAR][D / 32], A mul, int row0,
                                           int n, int d) {
  for (int r = 0; r < kAR; ++r) {
    const int row = row0 + acc_row(r);
    if (row >= n) continue;
    for (int c = 0; c < D / 32; ++c)
      if (acc_col(c) < d) out[(long long)row * d + acc_col(c)] = from_float<T>(acc[r][c] * mul);
  }
}

// log2(e) * key_bias for keys [n0, n0 + kBN) into bs (0 for padded keys or without a bias).
template <class A, class T>
__device__ __forceinline__ void load_bias(A* bs, const T* bias, long long sbn, int n0, int nk) {
  if (threadIdx.x < kBN) {
    const int j = n0 + threadIdx.x;
    bs[threadIdx.x] =
        (bias != nullptr && j < nk) ? (A)to_float(bias[j * sbn]) * (A)kLog2e : A(0);
  }
}

// This block's tile: blocks run tile-fastest over the ceil(n / kBM) row tiles (of queries, or of
// keys for dk/dv; kBM == kBN) of one (b, head), then over the B * H of them (bh = b * H + head).
struct Tile {
  int bh, b, h, row0;
};

__device__ __forceinline__ Tile block_tile(int n, int H) {
  const int tiles = (n + kBM - 1) / kBM;
  const int bh = blockIdx.x / tiles;
  return {bh, bh / H, bh % H, static_cast<int>(blockIdx.x % tiles * kBM)};
}

// Moves each pointer of the (pointer, batch stride, head stride) triples to (b, head h).
__device__ __forceinline__ void to_head(int, int) {}

template <class P, class... Rest>
__device__ __forceinline__ void to_head(int b, int h, P& p, long long sb, long long sh,
                                        Rest&... rest) {
  p += b * sb + h * sh;
  to_head(b, h, rest...);
}

// The backward kernels' shared memory, in acc units: the tiles the block keeps (dq: Qs, dOs;
// dk/dv: Ks, Vs) first, then the two it streams (kBM = kBN rows of D + 1 each), the score tiles
// Ps (dk/dv only, else null) and dSs (kBM x kLDS), bs (kBN), lse_s and dl_s (kBM): the sizes of
// the header.
template <class A>
struct BwdTiles {
  A *Qs, *dOs, *Ks, *Vs, *Ps, *dSs, *bs, *lse_s, *dl_s;
};

template <int D, bool kDkdv, class A>
__device__ __forceinline__ BwdTiles<A> bwd_tiles() {
  HFSTI_DYNAMIC_SHARED(A, smem);
  constexpr int kTile = kBM * (D + 1);
  BwdTiles<A> t;
  t.Qs = smem + (kDkdv ? 2 * kTile : 0);
  t.dOs = t.Qs + kTile;
  t.Ks = smem + (kDkdv ? 0 : 2 * kTile);
  t.Vs = t.Ks + kTile;
  t.Ps = kDkdv ? smem + 4 * kTile : nullptr;
  t.dSs = smem + 4 * kTile + (kDkdv ? kBM * kLDS : 0);
  t.bs = t.dSs + kBM * kLDS;
  t.lse_s = t.bs + kBN;
  t.dl_s = t.lse_s + kBM;
  return t;
}

// P = exp2(S - lse) and dS = P (do v^T - delta) of query tile m0 against key tile n0, with
// S = qk_scale q k^T + bias from the staged Qs, Ks, dOs, Vs, bs, lse_s, dl_s, into the shared
// tiles dSs and (kKeepP) Ps; P is 0 on padded rows and keys.
template <int D, bool kKeepP, class A>
__device__ __forceinline__ void probs_and_grads(const BwdTiles<A>& sm, int m0, int n0, int nq,
                                                int nk, int d, A qk_scale) {
  A s[kFR][kFC], dp[kFR][kFC];
  dot_frag<D>(sm.Qs, sm.Ks, d, s);
  dot_frag<D>(sm.dOs, sm.Vs, d, dp);
  for (int r = 0; r < kFR; ++r)
    for (int c = 0; c < kFC; ++c) {
      const int i = frag_row(r), j = frag_col(c);
      const bool ok = m0 + i < nq && n0 + j < nk;
      const A p = ok ? exp2_(s[r][c] * qk_scale + sm.bs[j] - sm.lse_s[i]) : A(0);
      if constexpr (kKeepP) sm.Ps[i * kLDS + j] = p;
      sm.dSs[i * kLDS + j] = p * (dp[r][c] - sm.dl_s[i]);
    }
}

}  // namespace ma
}  // namespace hfsti

// Forward: o and the base-2 log-sum-exp of one tile of kBM queries of one (b, head).
//   Grid: ceil(nq / kBM) * B * H blocks (tile fastest); block: 128 threads; dynamic shared
//   memory: see the header.
//   q: (B, H, nq, d); k, v: (B, H, nk, d); any strides (elements).
//   bias: null or (B, H, nk) with zero strides on broadcast dims.
//   o: (B, H, nq, d) contiguous output; lse: (B, H, nq) contiguous output,
//      log2(sum_j exp2(s_j)) with s = log2(e) (scale q k^T + bias).
//   qk_scale: scale * log2(e).
// clang-format off
template <class T, int D>
__global__ void __launch_bounds__(128) hfsti_ma_fwd(const T* __restrict__ q, long long sqb, long long sqh, long long sqm, long long sqd, const T* __restrict__ k, long long skb, long long skh, long long skn, long long skd, const T* __restrict__ v, long long svb, long long svh, long long svn, long long svd, const T* __restrict__ bias, long long sbb, long long sbh, long long sbn, T* __restrict__ o, hfsti::acc_t<T>* __restrict__ lse, int H, int nq, int nk, int d, hfsti::acc_t<T> qk_scale) {
  // clang-format on
  using namespace hfsti::ma;
  using A = hfsti::acc_t<T>;
  constexpr int LD = D + 1;
  HFSTI_DYNAMIC_SHARED(A, smem);
  A* Qs = smem;
  A* Ks = Qs + kBM * LD;
  A* Vs = Ks + kBN * LD;
  A* Ss = Vs + kBN * LD;
  A* bs = Ss + kBM * kLDS;
  A* m_s = bs + kBN;  // running row max, row sum and the last rescale factor
  A* l_s = m_s + kBM;
  A* a_s = l_s + kBM;

  const int tid = threadIdx.x;
  const auto [bh, b, h, m0] = block_tile(nq, H);
  to_head(b, h, q, sqb, sqh, k, skb, skh, v, svb, svh);
  if (bias != nullptr) bias += b * sbb + h * sbh;

  hfsti::ma::load_tile<kBM, D>(Qs, q, sqm, sqd, m0, nq, d);
  if (tid < kBM) {
    m_s[tid] = kNegBig;
    l_s[tid] = A(0);
  }
  A acc[kAR][D / 32] = {};
  for (int n0 = 0; n0 < nk; n0 += kBN) {
    hfsti::ma::load_tile<kBN, D>(Ks, k, skn, skd, n0, nk, d);
    hfsti::ma::load_tile<kBN, D>(Vs, v, svn, svd, n0, nk, d);
    hfsti::ma::load_bias(bs, bias, sbn, n0, nk);
    __syncthreads();
    A s[kFR][kFC];
    hfsti::ma::dot_frag<D>(Qs, Ks, d, s);
    for (int r = 0; r < kFR; ++r)
      for (int c = 0; c < kFC; ++c) {
        const int j = frag_col(c);
        Ss[frag_row(r) * kLDS + j] = n0 + j < nk ? s[r][c] * qk_scale + bs[j] : A(kNegBig);
      }
    __syncthreads();
    if (tid < kBM) {  // the online softmax of row tid: new max, probabilities in place, sum
      A* row = Ss + tid * kLDS;
      A mx = m_s[tid];
      for (int j = 0; j < kBN; ++j) mx = row[j] > mx ? row[j] : mx;
      A sum = A(0);
      for (int j = 0; j < kBN; ++j) {
        const A p = n0 + j < nk ? exp2_(row[j] - mx) : A(0);
        row[j] = p;
        sum += p;
      }
      const A alpha = exp2_(m_s[tid] - mx);
      l_s[tid] = l_s[tid] * alpha + sum;
      m_s[tid] = mx;
      a_s[tid] = alpha;
    }
    __syncthreads();
    for (int r = 0; r < kAR; ++r) {
      const A alpha = a_s[acc_row(r)];
      for (int c = 0; c < D / 32; ++c) acc[r][c] *= alpha;
    }
    hfsti::ma::acc_frag<D>(Ss, kLDS, 1, Vs, min(kBN, nk - n0), acc);
    __syncthreads();
  }
  o += (long long)bh * nq * d;
  for (int r = 0; r < kAR; ++r) {
    const int row = m0 + acc_row(r);
    if (row >= nq) continue;
    const A l = l_s[acc_row(r)];
    for (int c = 0; c < D / 32; ++c) {
      const A val = l > A(0) ? acc[r][c] / l : A(0);  // l = 0: every key masked
      if (acc_col(c) < d) o[(long long)row * d + acc_col(c)] = hfsti::from_float<T>(val);
    }
  }
  if (tid < kBM && m0 + tid < nq) {
    const A l = l_s[tid];
    lse[(long long)bh * nq + m0 + tid] = l > A(0) ? m_s[tid] + log2_(l) : -A(kNegBig);
  }
}

// Backward, first kernel: delta = rowsum(do * o) and dq for one tile of kBM queries.
//   Grid: ceil(nq / kBM) * B * H blocks; block: 128 threads; dynamic shared memory: see the
//   header. q, do, o: (B, H, nq, d); k, v: (B, H, nk, d); any strides (do may be expanded).
//   bias: null or (B, H, nk), zero strides on broadcast dims. lse: (B, H, nq) from hfsti_ma_fwd.
//   delta: (B, H, nq) contiguous output (read by hfsti_ma_bwd_dkdv); dq: (B, H, nq, d)
//   contiguous output. qk_scale: scale * log2(e); scale: the logit scale.
// clang-format off
template <class T, int D>
__global__ void __launch_bounds__(128) hfsti_ma_bwd_dq(const T* __restrict__ q, long long sqb, long long sqh, long long sqm, long long sqd, const T* __restrict__ k, long long skb, long long skh, long long skn, long long skd, const T* __restrict__ v, long long svb, long long svh, long long svn, long long svd, const T* __restrict__ bias, long long sbb, long long sbh, long long sbn, const T* __restrict__ o, long long sob, long long soh, long long som, long long sod, const T* __restrict__ dout, long long sdb, long long sdh, long long sdm, long long sdd, const hfsti::acc_t<T>* __restrict__ lse, hfsti::acc_t<T>* __restrict__ delta, T* __restrict__ dq, int H, int nq, int nk, int d, hfsti::acc_t<T> qk_scale, hfsti::acc_t<T> scale) {
  // clang-format on
  using namespace hfsti::ma;
  using A = hfsti::acc_t<T>;
  const BwdTiles<A> sm = bwd_tiles<D, false, A>();
  const int tid = threadIdx.x;
  const auto [bh, b, h, m0] = block_tile(nq, H);
  to_head(b, h, q, sqb, sqh, k, skb, skh, v, svb, svh, o, sob, soh, dout, sdb, sdh);
  if (bias != nullptr) bias += b * sbb + h * sbh;
  const long long row_base = (long long)bh * nq;

  hfsti::ma::load_tile<kBM, D>(sm.Qs, q, sqm, sqd, m0, nq, d);
  hfsti::ma::load_tile<kBM, D>(sm.dOs, dout, sdm, sdd, m0, nq, d);
  __syncthreads();
  if (tid < kBM) {
    const int i = m0 + tid;
    A dl = A(0);
    if (i < nq) {
      for (int dd = 0; dd < d; ++dd)
        dl = fma_(sm.dOs[tid * (D + 1) + dd], (A)hfsti::to_float(o[i * som + dd * sod]), dl);
      delta[row_base + i] = dl;
    }
    sm.dl_s[tid] = dl;
    sm.lse_s[tid] = i < nq ? lse[row_base + i] : A(0);
  }
  A acc[kAR][D / 32] = {};
  for (int n0 = 0; n0 < nk; n0 += kBN) {
    hfsti::ma::load_tile<kBN, D>(sm.Ks, k, skn, skd, n0, nk, d);
    hfsti::ma::load_tile<kBN, D>(sm.Vs, v, svn, svd, n0, nk, d);
    hfsti::ma::load_bias(sm.bs, bias, sbn, n0, nk);
    __syncthreads();
    hfsti::ma::probs_and_grads<D, false>(sm, m0, n0, nq, nk, d, qk_scale);
    __syncthreads();
    hfsti::ma::acc_frag<D>(sm.dSs, kLDS, 1, sm.Ks, min(kBN, nk - n0), acc);
    __syncthreads();
  }
  hfsti::ma::store_frag<D>(dq + row_base * d, acc, scale, m0, nq, d);
}

// Backward, second kernel: dk, dv and dbias for one tile of kBN keys, over every query tile.
//   Grid: ceil(nk / kBN) * B * H blocks; block: 128 threads; dynamic shared memory: see the
//   header. Inputs as hfsti_ma_bwd_dq; delta from it.
//   dk, dv: (B, H, nk, d) contiguous outputs; dbias: null (no bias) or (B, H, nk) contiguous
//   acc_t output, dbias_j = sum_i dS_ij in a fixed order.
// clang-format off
template <class T, int D>
__global__ void __launch_bounds__(128) hfsti_ma_bwd_dkdv(const T* __restrict__ q, long long sqb, long long sqh, long long sqm, long long sqd, const T* __restrict__ k, long long skb, long long skh, long long skn, long long skd, const T* __restrict__ v, long long svb, long long svh, long long svn, long long svd, const T* __restrict__ bias, long long sbb, long long sbh, long long sbn, const T* __restrict__ dout, long long sdb, long long sdh, long long sdm, long long sdd, const hfsti::acc_t<T>* __restrict__ lse, const hfsti::acc_t<T>* __restrict__ delta, T* __restrict__ dk, T* __restrict__ dv, hfsti::acc_t<T>* __restrict__ dbias, int H, int nq, int nk, int d, hfsti::acc_t<T> qk_scale, hfsti::acc_t<T> scale) {
  // clang-format on
  using namespace hfsti::ma;
  using A = hfsti::acc_t<T>;
  const BwdTiles<A> sm = bwd_tiles<D, true, A>();
  const int tid = threadIdx.x;
  const auto [bh, b, h, n0] = block_tile(nk, H);
  to_head(b, h, q, sqb, sqh, k, skb, skh, v, svb, svh, dout, sdb, sdh);
  if (bias != nullptr) bias += b * sbb + h * sbh;
  const long long row_base = (long long)bh * nq;

  hfsti::ma::load_tile<kBN, D>(sm.Ks, k, skn, skd, n0, nk, d);
  hfsti::ma::load_tile<kBN, D>(sm.Vs, v, svn, svd, n0, nk, d);
  hfsti::ma::load_bias(sm.bs, bias, sbn, n0, nk);
  A dk_acc[kAR][D / 32] = {}, dv_acc[kAR][D / 32] = {};
  A db = A(0);  // dbias of key n0 + tid (threads tid < kBN)
  for (int m0 = 0; m0 < nq; m0 += kBM) {
    hfsti::ma::load_tile<kBM, D>(sm.Qs, q, sqm, sqd, m0, nq, d);
    hfsti::ma::load_tile<kBM, D>(sm.dOs, dout, sdm, sdd, m0, nq, d);
    if (tid < kBM) {
      const bool ok = m0 + tid < nq;
      sm.lse_s[tid] = ok ? lse[row_base + m0 + tid] : A(0);
      sm.dl_s[tid] = ok ? delta[row_base + m0 + tid] : A(0);
    }
    __syncthreads();
    hfsti::ma::probs_and_grads<D, true>(sm, m0, n0, nq, nk, d, qk_scale);
    __syncthreads();
    const int ns = min(kBM, nq - m0);
    hfsti::ma::acc_frag<D>(sm.Ps, 1, kLDS, sm.dOs, ns, dv_acc);
    hfsti::ma::acc_frag<D>(sm.dSs, 1, kLDS, sm.Qs, ns, dk_acc);
    if (tid < kBN)
      for (int i = 0; i < ns; ++i) db += sm.dSs[i * kLDS + tid];
    __syncthreads();
  }
  const long long key_base = (long long)bh * nk;
  hfsti::ma::store_frag<D>(dk + key_base * d, dk_acc, scale, n0, nk, d);
  hfsti::ma::store_frag<D>(dv + key_base * d, dv_acc, A(1), n0, nk, d);
  if (dbias != nullptr && tid < kBN && n0 + tid < nk) dbias[key_base + n0 + tid] = db;
}

#include "hfsti/kernel_table.h"
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_ma_fwd, 32, 64, 128);
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_ma_bwd_dq, 32, 64, 128);
HFSTI_REGISTER_KERNEL_FOR_DTYPES(hfsti_ma_bwd_dkdv, 32, 64, 128);
