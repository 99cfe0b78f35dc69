// The Python module over the launch table (csrc/include/hfsti/kernel_table.h).
//
// Built twice from this one file: by setup.py with nvcc, linked with every csrc/*.cu, as
// `hfsti_kernels._cuda`; and by hfsti_kernels/cuda/build.py with g++ and -DHFSTI_CUDA_EMULATE
// as `_cuda_emu` (the host SIMT emulator). It never links torch: Python passes device pointers,
// sizes and the caller's stream as integers, so one binary serves every torch version (and
// CuPy alike). Typed arguments arrive as (kind, value) pairs (hfsti_kernels/cuda/runtime.py).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#define HFSTI_KERNEL_TABLE_REGISTRY_ONLY
#include "hfsti/kernel_table.h"

#ifndef HFSTI_MODULE_NAME
#error "HFSTI_MODULE_NAME must name the module (_cuda or _cuda_emu)"
#endif
#ifndef HFSTI_BUILD_INFO
#define HFSTI_BUILD_INFO "unknown build"
#endif

namespace py = pybind11;
using hfsti::table::Arg;
using hfsti::table::ArgError;
using hfsti::table::Kind;

namespace {

const hfsti::table::Entry& lookup(const std::string& name) {
  const auto& table = hfsti::table::registry();
  const auto it = table.find(name);
  if (it == table.end())
    throw py::key_error("no CUDA kernel named '" + name + "' is registered in this build");
  return it->second;
}

void dims(const std::string& name, const char* what, const std::vector<long long>& in,
          unsigned out[3]) {
  if (in.empty() || in.size() > 3)
    throw ArgError(name + ": " + what + ": expected 1 to 3 dimensions, got " +
                   std::to_string(in.size()));
  for (int i = 0; i < 3; ++i) {
    const long long v = i < static_cast<int>(in.size()) ? in[i] : 1;
    if (v < 1 || v > std::numeric_limits<unsigned>::max())
      throw ArgError(name + ": " + what + "[" + std::to_string(i) + "]: expected >= 1, got " +
                     std::to_string(v));
    out[i] = static_cast<unsigned>(v);
  }
}

Arg to_arg(const std::string& name, std::size_t index, const py::handle& item) {
  const auto pair = py::reinterpret_borrow<py::tuple>(item);
  if (pair.size() != 2)
    throw ArgError(name + ": argument " + std::to_string(index) + ": expected (kind, value)");
  const int code = pair[0].cast<int>();
  const py::handle value = pair[1];
  const auto where = name + ": argument " + std::to_string(index) + ": ";
  Arg a{};
  a.kind = static_cast<Kind>(code);
  switch (a.kind) {
    case Kind::ptr:
      a.ptr = static_cast<std::uintptr_t>(value.cast<std::uint64_t>());
      break;
    case Kind::i32: {
      const long long v = value.cast<long long>();
      if (v < std::numeric_limits<std::int32_t>::min() ||
          v > std::numeric_limits<std::int32_t>::max())
        throw ArgError(where + "i32 out of range: " + std::to_string(v));
      a.i32 = static_cast<std::int32_t>(v);
      break;
    }
    case Kind::i64:
      a.i64 = value.cast<std::int64_t>();
      break;
    case Kind::f32:
      a.f32 = static_cast<float>(value.cast<double>());
      break;
    case Kind::f64:
      a.f64 = value.cast<double>();
      break;
    default:
      throw ArgError(where + "unknown kind code " + std::to_string(code));
  }
  return a;
}

std::vector<std::string> signature(const std::string& name) {
  std::vector<std::string> out;
  for (Kind k : lookup(name).params) out.emplace_back(hfsti::table::kind_name(k));
  return out;
}

}  // namespace

PYBIND11_MODULE(HFSTI_MODULE_NAME, m) {
  m.doc() = "HFSTI-Net CUDA kernels by name (the launch table of csrc/)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ArgError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });

  m.def(
      "launch",
      [](const std::string& name, const std::vector<long long>& grid,
         const std::vector<long long>& block, long long smem, std::uint64_t stream,
         const py::sequence& args, int device) {
        const auto& entry = lookup(name);
        hfsti::table::Config cfg{};
        dims(name, "grid", grid, cfg.grid);
        dims(name, "block", block, cfg.block);
        if (smem < 0) throw ArgError(name + ": smem: expected >= 0, got " + std::to_string(smem));
        cfg.smem = static_cast<std::size_t>(smem);
        cfg.stream = static_cast<std::uintptr_t>(stream);
        cfg.device = device;
        std::vector<Arg> typed;
        typed.reserve(args.size());
        for (std::size_t i = 0; i < args.size(); ++i) typed.push_back(to_arg(name, i, args[i]));
        py::gil_scoped_release nogil;  // the emulator runs the whole grid here
        entry.launch(name, cfg, typed);
      },
      py::arg("name"), py::arg("grid"), py::arg("block"), py::arg("smem"), py::arg("stream"),
      py::arg("args"), py::arg("device") = -1,
      "Launch kernel `name` on grid x block with `smem` bytes of dynamic shared memory on "
      "`stream` (an integer cudaStream_t); args: a sequence of (kind code, value) pairs.");
  m.def(
      "set_max_dynamic_smem",
      [](const std::string& name, int bytes, int device) {
        lookup(name).set_max_dynamic_smem(name, bytes, device);
      },
      py::arg("name"), py::arg("bytes"), py::arg("device") = -1,
      "Opt kernel `name` in to `bytes` of dynamic shared memory (needed above 48 KB).");
  m.def(
      "kernels",
      [] {
        std::vector<std::string> names;
        for (const auto& kv : hfsti::table::registry()) names.push_back(kv.first);
        return names;
      },
      "The registered kernel names (NVRTC name expressions), sorted.");
  m.def("signature", &signature, py::arg("name"),
        "The kinds ('ptr', 'i32', 'i64', 'f32', 'f64') of kernel `name`'s parameters.");
  m.attr("build_info") = HFSTI_BUILD_INFO;
}
