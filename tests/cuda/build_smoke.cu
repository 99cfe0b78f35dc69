// A trivial kernel for tests/test_cuda_build.py: checks the launch table, the typed-argument
// conversions and dynamic shared memory through hfsti_kernels.cuda.runtime.launch, on each
// executor. Not part of the package (csrc/*.cu are the product's kernels).
#include "hfsti/runtime.h"

// y[i] = a * x[(i + shift) % n] + b for the n elements of one block, staged through dynamic
// shared memory (n floats); x, y: (n,) with n <= blockDim.x.
// clang-format off
template <class T>
__global__ void hfsti_test_rotate(const T* __restrict__ x, T* __restrict__ y, float a, double b, int n, long long shift) {
  // clang-format on
  HFSTI_DYNAMIC_SHARED(float, buf);
  const int i = threadIdx.x;
  if (i < n) buf[i] = hfsti::to_float(x[i]);
  __syncthreads();
  if (i < n) {
    const float v = a * buf[static_cast<int>((i + shift) % n)] + static_cast<float>(b);
    y[i] = hfsti::from_float<T>(v);
  }
}

#include "hfsti/kernel_table.h"
HFSTI_REGISTER_KERNEL(hfsti_test_rotate<float>);
HFSTI_REGISTER_KERNEL(hfsti_test_rotate<double>);
