// hfsti/runtime.h -- first include of every .cu file: one kernel source, three builds.
//
//   nvcc        plain CUDA; host launcher = cudaLaunchKernel on the caller's stream.
//   NVRTC       (__CUDACC_RTC__) device code only: keep host code inside `#if HFSTI_HOST_CODE`.
//   g++         with -DHFSTI_CUDA_EMULATE: the host SIMT emulator (hfsti/emulate.h) runs the same
//               kernels on CPU threads, synchronously, enforcing the GPU's launch limits.
//
// API (the same in the nvcc and emulator builds; see docs/kernels.md):
//   HFSTI_SHARED(T, name, N)        static shared array `T name[N]` (one poisoned copy a block
//                                   in the emulator). Never write `__shared__` directly.
//   HFSTI_DYNAMIC_SHARED(T, name)   `T* name` = the block's dynamic shared memory (16-byte
//                                   aligned).
//   hfsti::stream_t                 cudaStream_t (emulator: void*, ignored).
//   hfsti::launch(name, kernel, grid, block, smem_bytes, stream, args...)
//   HFSTI_LAUNCH(kernel, grid, block, smem_bytes, stream, args...)   same, name = #kernel
//                                   (parenthesise template kernels: HFSTI_LAUNCH((k<float>), ...)).
//                                   Arguments are converted to the kernel's parameter types.
//   hfsti::set_max_dynamic_smem(name, kernel, bytes)  / HFSTI_SET_MAX_DYNAMIC_SMEM(kernel, bytes)
//                                   opt-in above 48 KB of dynamic smem (at most 227 KB, sm_90);
//                                   on nvcc it applies to the current device.
//   hfsti::LaunchError              std::runtime_error thrown by both on failure; its message
//                                   starts with the kernel's name.
//   HFSTI_HOST_CODE                 1 where host code may be compiled (nvcc, emulator), 0 in NVRTC.
// Limits: launches are asynchronous on the GPU (errors inside the kernel surface at the next
// synchronising call) but synchronous in the emulator; kernel-side failures in the emulator
// (barrier timeouts, divergent barriers) have no GPU counterpart but a hang or garbage.
#pragma once

#if defined(__CUDACC_RTC__)
#define HFSTI_HOST_CODE 0
#elif defined(HFSTI_CUDA_EMULATE)
#define HFSTI_HOST_CODE 1
#include "hfsti/emulate.h"
#elif defined(__CUDACC__)
#define HFSTI_HOST_CODE 1
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#else
#error "hfsti/runtime.h: compile with nvcc, NVRTC, or g++ -DHFSTI_CUDA_EMULATE"
#endif

#include "hfsti/dtype.h"

#if defined(__CUDACC__)  // nvcc and NVRTC
namespace hfsti {
namespace detail {
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char hfsti_dynamic_smem[];
  return hfsti_dynamic_smem;
}
}  // namespace detail
}  // namespace hfsti
#define HFSTI_SHARED(T, name, N) __shared__ T name[N]
#define HFSTI_DYNAMIC_SHARED(T, name) \
  T* name = reinterpret_cast<T*>(::hfsti::detail::dynamic_smem())
#endif

#if defined(__CUDACC__) && !defined(__CUDACC_RTC__)
namespace hfsti {

struct LaunchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using stream_t = cudaStream_t;

namespace detail {
inline void check(cudaError_t e, const char* name, const char* what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();  // clear a non-sticky error so later launches are not blamed
  throw LaunchError(std::string(name) + ": " + what + " failed: " + cudaGetErrorName(e) + ": " +
                    cudaGetErrorString(e));
}

template <class... P, class Tuple, std::size_t... I>
void launch_tuple(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem,
                  cudaStream_t stream, Tuple& args, std::index_sequence<I...>) {
  void* ptrs[sizeof...(P) + 1] = {static_cast<void*>(&std::get<I>(args))..., nullptr};
  check(cudaLaunchKernel(reinterpret_cast<const void*>(kernel), grid, block, ptrs, smem, stream),
        name, "launch");
  check(cudaGetLastError(), name, "launch");
}
}  // namespace detail

template <class... P, class... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem,
            stream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "hfsti::launch: wrong number of kernel arguments");
  std::tuple<std::decay_t<P>...> converted(static_cast<P>(std::forward<A>(args))...);
  detail::launch_tuple(name, kernel, grid, block, smem, stream, converted,
                       std::index_sequence_for<P...>{});
}

template <class... P>
void set_max_dynamic_smem(const char* name, void (*kernel)(P...), std::size_t bytes) {
  detail::check(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(bytes)),
                name, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
}

}  // namespace hfsti
#endif

#if HFSTI_HOST_CODE
#define HFSTI_LAUNCH(kernel, ...) ::hfsti::launch(#kernel, kernel, __VA_ARGS__)
#define HFSTI_SET_MAX_DYNAMIC_SMEM(kernel, bytes) \
  ::hfsti::set_max_dynamic_smem(#kernel, kernel, bytes)
#endif
