// csrc/tests/emu_race.cu -- ThreadSanitizer check of the host SIMT emulator (hfsti/emulate.h).
//
// A standalone program (main() under HFSTI_HOST_CODE), built by tests/test_cuda_emulator.py with
// g++ -fsanitize=thread -DHFSTI_CUDA_EMULATE. It runs a shared-memory stencil whose phases are
// separated by __syncthreads(), plus a shuffle/ballot reduction, and checks the results. Built as
// is, TSan must report nothing (the emulator's barriers, warp exchange and thread pool create the
// happens-before edges a GPU guarantees). With -DHFSTI_TEST_DROP_BARRIER one barrier is left out,
// a real write-after-read race on shared memory, which TSan must report. Built with
// -fsanitize=address -DHFSTI_TEST_SMEM_OVERFLOW, the last thread reads one element past the
// dynamic shared memory, which AddressSanitizer must report (each block's shared memory is its
// own exactly sized allocation). Also compiled by nvcc.
#include "hfsti/runtime.h"

#if HFSTI_HOST_CODE
#include <cstdio>
#include <exception>
#endif

// y[b * n + t] = 2 * x[b * n + (t + 1) % n] read back through shared memory after a rotation.
__global__ void hfsti_test_stencil(const float* __restrict__ x, float* __restrict__ y) {
  HFSTI_DYNAMIC_SHARED(float, s);
  const int t = threadIdx.x, n = blockDim.x, base = blockIdx.x * n;
  s[t] = x[base + t];
  __syncthreads();
#ifdef HFSTI_TEST_SMEM_OVERFLOW
  const float v = s[t + 1];
#else
  const float v = s[(t + 1) % n];
#endif
#ifndef HFSTI_TEST_DROP_BARRIER
  __syncthreads();  // without it thread t overwrites s[t] while thread t - 1 may still read it
#endif
  s[t] = 2.0f * v;
  __syncthreads();
  y[base + t] = s[t];
}

// out[b] = sum of x over the block's n values, and the count of positive values via ballots.
__global__ void hfsti_test_warp_reduce(const float* __restrict__ x, float* __restrict__ sum,
                                       int* __restrict__ positives) {
  HFSTI_SHARED(float, part, 32);
  HFSTI_SHARED(int, count, 32);
  const int t = threadIdx.x, n = blockDim.x;
  const float v = x[blockIdx.x * n + t];
  float s = v;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xFFFFFFFFu, s, o);
  const unsigned pos = __ballot_sync(0xFFFFFFFFu, v > 0.0f);
  if (t % 32 == 0) {
    part[t / 32] = s;
    count[t / 32] = __popc(pos);
  }
  __syncthreads();
  if (t == 0) {
    float total = 0.0f;
    int c = 0;
    for (int w = 0; w < n / 32; ++w) {
      total += part[w];
      c += count[w];
    }
    sum[blockIdx.x] = total;
    positives[blockIdx.x] = c;
  }
}

#if HFSTI_HOST_CODE
int main() {
  constexpr int kBlocks = 2, kThreads = 64, kN = kBlocks * kThreads;
  static float x[kN], y[kN], sum[kBlocks];
  static int positives[kBlocks];
  for (int i = 0; i < kN; ++i) x[i] = static_cast<float>((i * 7) % 13) - 6.0f;
  try {
    HFSTI_LAUNCH(hfsti_test_stencil, dim3(kBlocks), dim3(kThreads), kThreads * sizeof(float),
                 nullptr, x, y);
    HFSTI_LAUNCH(hfsti_test_warp_reduce, dim3(kBlocks), dim3(kThreads), 0, nullptr, x, sum,
                 positives);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "launch failed: %s\n", e.what());
    return 2;
  }
  int bad = 0;
  for (int b = 0; b < kBlocks; ++b) {
    float want_sum = 0.0f;
    int want_pos = 0;
    for (int t = 0; t < kThreads; ++t) {
      const int i = b * kThreads + t;
      if (y[i] != 2.0f * x[b * kThreads + (t + 1) % kThreads]) ++bad;
      want_sum += x[i];
      want_pos += x[i] > 0.0f;
    }
    if (sum[b] != want_sum || positives[b] != want_pos) ++bad;
  }
  std::printf("%s\n", bad ? "WRONG" : "OK");
  return bad ? 3 : 0;
}
#endif
