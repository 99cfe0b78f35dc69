// The launch table: every kernel instantiation a .cu registers, callable by name from Python.
//
// Design (docs/kernels.md, "CUDA backend"): Python computes a launch plan (grid, block, dynamic
// shared memory, the kernel's name expression, typed arguments) and hands it to the binding
// (csrc/binding.cpp), which looks the name up here. Each entry is a type-erased trampoline
// instantiated from the kernel's own function type, so it knows the real parameter types: it
// checks every typed argument's kind against them (a plan mistake is an error naming the kernel
// and the argument, never a kernel reading garbage), converts the values and launches through
// the runtime's launcher `hfsti::launch` (nvcc: on the caller's stream; the host emulator: its
// SIMT launcher), whose `hfsti::LaunchError` names the kernel. The same translation unit thus
// serves the nvcc extension and the emulator.
//
// `HFSTI_REGISTER_KERNEL(expr)` registers the function named by the name expression `expr`
// under the string `#expr` (e.g. "hfsti_fca_fwd<float>"), which is also the NVRTC name
// expression of the CuPy path. `HFSTI_REGISTER_KERNEL_FOR_DTYPES(kernel)` registers `kernel<T>`
// for the four storage types T (double, float, hfsti::half_t, hfsti::bf16_t, in that order), and
// `HFSTI_REGISTER_KERNEL_FOR_DTYPES(kernel, a, b, c)` (one to three values) `kernel<T, a>`,
// `kernel<T, b>`, `kernel<T, c>` for each T in turn, each under the name HFSTI_REGISTER_KERNEL
// gives it. Tools parse these lines (hfsti_kernels/cuda/sources.py expands the second macro
// alike), so write one literal registration per line at file scope. Under NVRTC
// (`__CUDACC_RTC__`) this header is empty and the macros vanish.
//
// Limits: parameters must be pointers, 32- or 64-bit integers, float or double (a static_assert
// names any other type); no structs by value.
#pragma once

#ifdef __CUDACC_RTC__
#define HFSTI_REGISTER_KERNEL(...)
#else

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace hfsti::table {

// The Python-side kinds of a typed argument (hfsti_kernels/cuda/runtime.py uses the same codes).
enum class Kind : int { ptr = 0, i32 = 1, i64 = 2, f32 = 3, f64 = 4 };

inline const char* kind_name(Kind k) {
  switch (k) {
    case Kind::ptr: return "ptr";
    case Kind::i32: return "i32";
    case Kind::i64: return "i64";
    case Kind::f32: return "f32";
    case Kind::f64: return "f64";
  }
  return "?";
}

struct Arg {
  Kind kind;
  union {
    std::uintptr_t ptr;
    std::int32_t i32;
    std::int64_t i64;
    float f32;
    double f64;
  };
};

struct Config {
  unsigned grid[3];
  unsigned block[3];
  std::size_t smem;
  std::uintptr_t stream;  // cudaStream_t as an integer (0: the legacy default stream)
  int device;             // CUDA device to launch on (-1: the current one)
};

// A typed argument that does not fit the kernel (wrong kind or count): Python's TypeError.
struct ArgError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct Entry {
  void (*launch)(const std::string& name, const Config& cfg, const std::vector<Arg>& args);
  void (*set_max_dynamic_smem)(const std::string& name, int bytes, int device);
  std::vector<Kind> params;
};

// One table per shared object: an inline function's static is merged across translation units.
inline std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> table;
  return table;
}

// "hfsti_x<float,  4>" -> "hfsti_x<float, 4>": registrations are looked up as they are written.
inline std::string normalise(const char* expr) {
  std::string out;
  for (const char* c = expr; *c; ++c) {
    const bool space = *c == ' ' || *c == '\t' || *c == '\n';
    if (space && (out.empty() || out.back() == ' ')) continue;
    out += space ? ' ' : *c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace hfsti::table

#ifndef HFSTI_KERNEL_TABLE_REGISTRY_ONLY  // the binding needs only the table above
#include "hfsti/runtime.h"

namespace hfsti::table::detail {

template <typename P>
constexpr Kind kind_of() {
  using T = std::remove_cv_t<P>;
  if constexpr (std::is_pointer_v<T>) {
    return Kind::ptr;
  } else if constexpr (std::is_same_v<T, float>) {
    return Kind::f32;
  } else if constexpr (std::is_same_v<T, double>) {
    return Kind::f64;
  } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool> && sizeof(T) == 4) {
    return Kind::i32;
  } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool> && sizeof(T) == 8) {
    return Kind::i64;
  } else {
    static_assert(sizeof(T) == 0, "kernel parameters: pointers, 32/64-bit integers, float, double");
    return Kind::ptr;
  }
}

template <typename P>
P convert(const Arg& a) {
  using T = std::remove_cv_t<P>;
  if constexpr (std::is_pointer_v<T>) {
    return reinterpret_cast<T>(a.ptr);
  } else if constexpr (std::is_floating_point_v<T>) {
    return kind_of<T>() == Kind::f32 ? static_cast<T>(a.f32) : static_cast<T>(a.f64);
  } else {
    return kind_of<T>() == Kind::i32 ? static_cast<T>(a.i32) : static_cast<T>(a.i64);
  }
}

inline void check_args(const std::string& name, const std::vector<Kind>& params,
                       const std::vector<Arg>& args) {
  if (args.size() != params.size())
    throw ArgError(name + ": expected " + std::to_string(params.size()) + " arguments, got " +
                   std::to_string(args.size()));
  for (std::size_t i = 0; i < params.size(); ++i)
    if (args[i].kind != params[i])
      throw ArgError(name + ": argument " + std::to_string(i) + ": expected " +
                     kind_name(params[i]) + ", got " + kind_name(args[i].kind));
}

// Kernels launch on the device of their tensors, whatever device the thread has current.
inline void use_device(const std::string& name, int device) {
#ifndef HFSTI_CUDA_EMULATE
  int current = -1;
  if (device < 0 || (cudaGetDevice(&current) == cudaSuccess && current == device)) return;
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess)
    throw ::hfsti::LaunchError(name + ": cudaSetDevice(" + std::to_string(device) +
                      ") failed: " + cudaGetErrorString(err));
#else
  (void)name, (void)device;
#endif
}

template <typename F>
struct Trampoline;

template <typename... P>
struct Trampoline<void (*)(P...)> {
  static std::vector<Kind> kinds() { return {kind_of<P>()...}; }

  template <auto Kernel, std::size_t... I>
  static void call(const std::string& name, const Config& c, const std::vector<Arg>& args,
                   std::index_sequence<I...>) {
    const dim3 grid(c.grid[0], c.grid[1], c.grid[2]);
    const dim3 block(c.block[0], c.block[1], c.block[2]);
    ::hfsti::launch(name.c_str(), Kernel, grid, block, c.smem,
                    reinterpret_cast<::hfsti::stream_t>(c.stream), convert<P>(args[I])...);
  }

  template <auto Kernel>
  static void launch(const std::string& name, const Config& c, const std::vector<Arg>& args) {
    check_args(name, kinds(), args);
    use_device(name, c.device);
    call<Kernel>(name, c, args, std::index_sequence_for<P...>{});
  }

  template <auto Kernel>
  static void set_max_dynamic_smem(const std::string& name, int bytes, int device) {
    use_device(name, device);
    ::hfsti::set_max_dynamic_smem(name.c_str(), Kernel, static_cast<std::size_t>(bytes));
  }
};

template <auto Kernel>
bool add(const char* expr) {
  using T = Trampoline<decltype(Kernel)>;
  const std::string name = normalise(expr);
  registry()[name] = Entry{&T::template launch<Kernel>, &T::template set_max_dynamic_smem<Kernel>,
                           T::kinds()};
  return true;
}

}  // namespace hfsti::table::detail

#define HFSTI_TABLE_CAT2(a, b) a##b
#define HFSTI_TABLE_CAT(a, b) HFSTI_TABLE_CAT2(a, b)
// Registers the kernel named by the name expression (see the header comment).
#define HFSTI_REGISTER_KERNEL(...)                                                    \
  [[maybe_unused]] static const bool HFSTI_TABLE_CAT(hfsti_registered_, __COUNTER__) = \
      ::hfsti::table::detail::add<&__VA_ARGS__>(#__VA_ARGS__)

#endif  // HFSTI_KERNEL_TABLE_REGISTRY_ONLY
#endif  // __CUDACC_RTC__

// One kernel template for every storage type (see the header comment): HFSTI_TABLE_PICK selects
// HFSTI_TABLE_T<n> for the n (0 to 3) trailing values, which registers them for one type T.
#define HFSTI_REGISTER_KERNEL_FOR_DTYPES(...)                                                  \
  HFSTI_TABLE_EACH_DTYPE(HFSTI_TABLE_PICK(__VA_ARGS__, HFSTI_TABLE_T3, HFSTI_TABLE_T2,         \
                                          HFSTI_TABLE_T1, HFSTI_TABLE_T0, ),                   \
                         __VA_ARGS__)
#define HFSTI_TABLE_PICK(kernel, a, b, c, m, ...) m
#define HFSTI_TABLE_EACH_DTYPE(M, ...) \
  M(double, __VA_ARGS__);              \
  M(float, __VA_ARGS__);               \
  M(hfsti::half_t, __VA_ARGS__);       \
  M(hfsti::bf16_t, __VA_ARGS__)
#define HFSTI_TABLE_T0(T, kernel) HFSTI_REGISTER_KERNEL(kernel<T>)
#define HFSTI_TABLE_T1(T, kernel, a) HFSTI_REGISTER_KERNEL(kernel<T, a>)
#define HFSTI_TABLE_T2(T, kernel, a, b) HFSTI_TABLE_T1(T, kernel, a); HFSTI_TABLE_T1(T, kernel, b)
#define HFSTI_TABLE_T3(T, kernel, a, b, c) \
  HFSTI_TABLE_T2(T, kernel, a, b);         \
  HFSTI_TABLE_T1(T, kernel, c)
