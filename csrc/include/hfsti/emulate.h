// hfsti/emulate.h -- host SIMT emulator: runs CUDA kernels (the same .cu source) on CPU threads.
//
// Included by hfsti/runtime.h when HFSTI_CUDA_EMULATE is defined (g++ -std=c++20 -pthread, Linux:
// waits are futexes); never include it directly and never under nvcc. See docs/kernels.md for
// how the CUDA ops use it. It is one header of ~1000 lines on purpose: the thread pool, barriers,
// warp collectives, shared memory and launch checks share one per-launch state, and kernels see
// the whole CUDA surface through this single include (emulate_math.h holds the maths library).
//
// Design
// - Every CUDA thread of a block is a real OS thread from one process-wide pool (grown on demand,
//   reused across blocks and launches). Blocks of a launch run one after another; launches are
//   serialised by a global mutex and are synchronous (the stream argument is ignored).
// - threadIdx/blockIdx/blockDim/gridDim are thread_local globals; warps are formed from the linear
//   thread id (x fastest) exactly as on the GPU, warpSize is 32.
// - __syncthreads() is a block barrier (arrivals counted under a mutex, a timed futex wait). A
//   barrier that can never complete fails after HFSTI_EMU_BARRIER_TIMEOUT_S seconds (default 60,
//   read at each launch) with an error naming the kernel, the block and the barrier's source
//   line, instead of hanging. Threads that return drop out of later barriers (as exited threads
//   do on sm_70+). All threads at one barrier phase must be at the same __syncthreads() call
//   site, else the launch fails at once ("divergent __syncthreads"): the CUDA guide makes a
//   barrier in non-uniform control flow undefined.
// - Warp intrinsics (__shfl*_sync, __ballot_sync, __any/__all_sync, __syncwarp) are rendezvous of
//   the lanes of `mask` that exist and have not exited: each publishes its value, waits for the
//   others, and leaves with a copy of all values. Disjoint lane groups of one warp may run their
//   own collectives independently (as on sm_70+); lanes meeting under one mask must call the same
//   intrinsic (else the launch fails). Shuffle lane selection follows the PTX `shfl.sync`
//   definition (width segments, up/down keep their own value at the segment edge, xor may read an
//   earlier but not a later segment, idx wraps modulo width; lane arguments use their low 5 bits).
//   Reading a lane that does not take part yields poison bits (all ones), as the value is
//   undefined on the GPU. Waits are timed like __syncthreads.
// - Shared memory is per block: HFSTI_SHARED (static) and HFSTI_DYNAMIC_SHARED are allocated for
//   each block and filled with 0xFF bytes (a NaN for float/double, -1 for ints) so a read before
//   the block wrote the value shows up in results. Guard zones (256 B of poison) around each
//   array catch writes outside it when the block ends; reads there give poison. Under
//   AddressSanitizer (-fsanitize=address) the arrays are exactly sized and ASan reports both.
// - Launch limits of the GPU are enforced at launch or at first use: <= 1024 threads a block,
//   block dims <= (1024, 1024, 64), grid y, z <= 65535 (x <= 2^31-1), static shared <= 48 KB,
//   static + dynamic <= 48 KB unless the kernel opted in (hfsti::set_max_dynamic_smem), and the
//   opt-in never over 227 KB (sm_90).
// - Blocks run in linear order (x fastest); HFSTI_EMU_BLOCK_ORDER=reverse runs them last to
//   first, so a test can show that a kernel does not depend on the order of its blocks.
// - Failures inside a kernel (timeouts, divergent barriers, shared memory limits, a C++ exception)
//   abort the whole block and the launch throws hfsti::LaunchError whose message starts with the
//   kernel's name.
// - Size: one file of ~950 lines because barrier, warp exchange, shared memory, pool and launcher
//   share the per-block state; device-library functions live in hfsti/emulate_math.h.
// - Cost: each barrier or warp collective costs about one context switch per thread, so a block
//   of 256 threads with a few barriers takes milliseconds; keep emulated launches small.
//
// Limits (not emulated): cooperative groups, warp matrix (MMA) instructions, races between
// blocks (blocks run one at a time; HFSTI_EMU_BLOCK_ORDER=reverse shows order dependence),
// atomics beyond atomicAdd (4/8-byte arithmetic) and atomicMax/atomicMin (integers), a thread
// spinning forever outside a barrier (hangs). Static shared memory counts towards the limits
// once its declaration runs (the GPU counts it at launch). __activemask() returns the lanes that
// exist and have not exited (the emulator has no notion of convergence). Under ThreadSanitizer
// every warp collective orders memory among its lanes (on the GPU only __syncwarp does, shuffles
// and votes do not), and in a launch's first block the thread that allocates a static shared
// array synchronises with the threads that find it, so a race between lanes separated only by a
// shuffle, or one placed before a later HFSTI_SHARED, can go unreported: declare shared arrays
// at the top of the kernel.
// Fast-math intrinsics (__expf, __sinf, rsqrtf, __fdividef...) are computed with full-precision
// libm calls, more accurate than on the GPU.
#pragma once

#if defined(__CUDACC__)
#error "hfsti/emulate.h is the host emulator; do not compile it with nvcc/NVRTC"
#endif

#include <linux/futex.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <source_location>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---- CUDA keywords
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __constant__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Shared memory must go through HFSTI_SHARED / HFSTI_DYNAMIC_SHARED (one copy per block).
#define __shared__ HFSTI_ERROR_use_HFSTI_SHARED_or_HFSTI_DYNAMIC_SHARED_not___shared__

// CUDA's built-in vector types (same sizes and alignments) and their make_* constructors.
struct uint3 {
  unsigned int x, y, z;
};
struct __attribute__((aligned(8))) float2 {
  float x, y;
};
struct float3 {
  float x, y, z;
};
struct __attribute__((aligned(16))) float4 {
  float x, y, z, w;
};
struct __attribute__((aligned(16))) double2 {
  double x, y;
};
struct __attribute__((aligned(8))) int2 {
  int x, y;
};
struct __attribute__((aligned(16))) int4 {
  int x, y, z, w;
};
struct __attribute__((aligned(8))) uint2 {
  unsigned int x, y;
};
struct __attribute__((aligned(16))) uint4 {
  unsigned int x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

namespace hfsti {

// A launch (or opt-in) that failed; the message starts with the kernel's name.
struct LaunchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using stream_t = void*;

namespace emu {

constexpr std::size_t kDefaultSmem = 48 * 1024;  // without opt-in: static + dynamic
constexpr std::size_t kMaxSmemOptin = 227 * 1024;  // sm_90 per-block maximum
constexpr std::size_t kMaxStaticSmem = 48 * 1024;

// Thrown inside kernel threads to unwind a block another thread has failed.
struct Aborted {};

// Read at each launch, so a test may lower it with setenv before launching.
inline double read_barrier_timeout_s() {
  const char* s = std::getenv("HFSTI_EMU_BARRIER_TIMEOUT_S");
  const double v = s ? std::atof(s) : 0.0;
  return v > 0 ? v : 60.0;
}

inline std::chrono::steady_clock::time_point deadline_after(double s) {
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             std::chrono::duration<double>(s));
}

inline std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", s);
  return buf;
}

inline std::string where(const std::source_location& loc) {
  return std::string(loc.file_name()) + ":" + std::to_string(loc.line());
}

inline std::string hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

inline bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         std::strcmp(a.file_name(), b.file_name()) == 0;
}

// A generation counter that threads wait on with a timeout (Linux futex): arrivals are counted
// under a mutex, but waiting and waking go through this word, so a completed barrier wakes its
// waiters without them queueing again on the mutex. Happens-before comes from the atomic
// release/acquire on the counter (which ThreadSanitizer understands), the futex only sleeps.
struct Generation {
  std::atomic<std::uint32_t> value{0};

  std::uint32_t load() const { return value.load(std::memory_order_acquire); }
  void advance() {
    value.fetch_add(1, std::memory_order_release);
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&value), FUTEX_WAKE_PRIVATE, INT32_MAX,
            nullptr, nullptr, 0);
  }
  // Wait, without a time limit, until the counter moves past `seen`.
  void wait(std::uint32_t seen) const {
    while (load() == seen)
      syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&value), FUTEX_WAIT_PRIVATE, seen,
              nullptr, nullptr, 0);
  }
  // Wait until the counter moves past `seen`; false on timeout.
  bool wait(std::uint32_t seen, std::chrono::steady_clock::time_point deadline) const {
    for (;;) {
      if (load() != seen) return true;
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) return false;
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      struct timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
      syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&value), FUTEX_WAIT_PRIVATE, seen,
              &ts, nullptr, 0);
    }
  }
};

// The lock around barrier and warp bookkeeping: held for a few instructions, so a contended
// acquire spins (then yields) instead of sleeping in the kernel as std::mutex would; on this
// emulator's many-threads-few-cores load that halves the futex traffic of a barrier.
struct SpinLock {
  std::atomic<bool> held{false};
  void lock() {
    for (int spins = 0;; ++spins) {
      if (!held.exchange(true, std::memory_order_acquire)) return;
      while (held.load(std::memory_order_relaxed))
        if (++spins > 64) sched_yield();
    }
  }
  void unlock() { held.store(false, std::memory_order_release); }
};

struct Block;

enum class WarpOp { shfl, shfl_up, shfl_down, shfl_xor, ballot, any, all, syncwarp };

inline const char* warp_op_name(WarpOp op) {
  switch (op) {
    case WarpOp::shfl: return "__shfl_sync";
    case WarpOp::shfl_up: return "__shfl_up_sync";
    case WarpOp::shfl_down: return "__shfl_down_sync";
    case WarpOp::shfl_xor: return "__shfl_xor_sync";
    case WarpOp::ballot: return "__ballot_sync";
    case WarpOp::any: return "__any_sync";
    case WarpOp::all: return "__all_sync";
    default: return "__syncwarp";
  }
}

// One warp collective in progress: the lanes of `mask` meet, publish a value each, and every
// participant leaves with a copy of all values. Several may be pending in one warp when disjoint
// lane groups (different masks) synchronise independently, as sm_70+ allows.
struct WarpCollective {
  bool used = false, done = false;
  WarpOp op = WarpOp::syncwarp;
  std::uint32_t mask = 0, arrived = 0, readers = 0;
  std::source_location site;
  std::uint64_t vals[32];
};

// What a lane gets back from a collective: every lane's value and the lanes that took part.
struct Exchange {
  std::uint64_t vals[32];
  std::uint32_t part;
};

// Rendezvous of the lanes of one warp for collective intrinsics.
struct Warp {
  SpinLock m;
  Generation gen;             // advanced at each completion (waiters then check their slot)
  std::uint32_t present = 0;  // lanes that exist in this block
  std::uint32_t exited = 0;   // lanes that returned
  WarpCollective slots[32];   // lanes of pending collectives are disjoint: 32 suffice

  void reset(std::uint32_t lanes) {
    present = lanes;
    exited = 0;
    for (auto& c : slots) c.used = false;
  }
  std::uint32_t expected(const WarpCollective& c) const { return c.mask & present & ~exited; }
  void complete(WarpCollective& c) {  // with m held
    c.done = true;
    c.readers = static_cast<std::uint32_t>(std::popcount(c.arrived));
    gen.advance();
  }
  // Copy the result out for one participant; the last reader frees the slot (with m held).
  Exchange take(WarpCollective& c) {
    Exchange e;
    std::memcpy(e.vals, c.vals, sizeof e.vals);
    e.part = c.arrived;
    if (--c.readers == 0) c.used = false;
    return e;
  }
};

struct PhaseVote {
  unsigned yes, threads;  // threads with a non-zero predicate, threads at the barrier
};

// One shared-memory allocation of a block: `bytes` of 0xFF poison between two guard zones that
// must still hold the poison when the block ends, so a write outside the array fails the launch
// (on the GPU it would corrupt another array or fault). Under AddressSanitizer the guards are
// left out, so ASan sees the exact bounds.
struct SmemBuf {
#if defined(__SANITIZE_ADDRESS__)
  static constexpr std::size_t kGuard = 0;
#else
  static constexpr std::size_t kGuard = 256;
#endif
  const void* key = nullptr;
  const char* name = "";
  std::size_t bytes = 0;
  std::unique_ptr<unsigned char[]> data;

  SmemBuf() = default;
  SmemBuf(const void* k, const char* n, std::size_t size)
      : key(k), name(n), bytes(size), data(new unsigned char[size + 2 * kGuard + 1]) {
    poison();
  }
  unsigned char* get() const { return data.get() + kGuard; }
  void poison() { std::memset(data.get(), 0xFF, bytes + 2 * kGuard); }
  // Which guard zone was written: "" when none.
  const char* damaged() const {
    for (std::size_t i = 0; i < kGuard; ++i) {
      if (data[i] != 0xFF) return "before the start";
      if (data[kGuard + bytes + i] != 0xFF) return "past the end";
    }
    return "";
  }
};

struct Block {
  const char* kernel = "";
  double timeout_s = 60.0;  // barrier / warp-collective wait limit
  uint3 idx{0, 0, 0};
  unsigned nthreads = 0;
  // block barrier
  SpinLock m;
  Generation gen;
  unsigned expected = 0, arrived = 0;
  unsigned count = 0;  // threads of this phase with a non-zero predicate (__syncthreads_count)
  PhaseVote last{};     // the completed phase's
  std::source_location site;
  // shared memory
  // Static arrays of the launch's kernel, kept (and re-poisoned) from block to block. Entries
  // [0, nstatics) never change while a block runs, so threads find them without a lock (and,
  // under TSan, without synchronising with each other); a new one is added under smem_m.
  static constexpr unsigned kMaxStatics = 64;
  std::mutex smem_m;
  SmemBuf statics[kMaxStatics];
  std::atomic<unsigned> nstatics{0};
  std::size_t static_bytes = 0;
  std::size_t dyn_bytes = 0;
  std::size_t smem_limit = kDefaultSmem;  // static + dynamic
  SmemBuf dyn;
  // warps and failure
  std::vector<std::unique_ptr<Warp>> warps;
  std::atomic<bool> aborted{false};
  std::mutex err_m;
  std::string error;

  void complete_phase() {  // with m held
    last = PhaseVote{count, arrived};
    arrived = count = 0;
    gen.advance();
  }

  std::string block_name() const {
    return "block (" + std::to_string(idx.x) + "," + std::to_string(idx.y) + "," +
           std::to_string(idx.z) + ")";
  }

  // Record the first failure and wake every waiter so the block unwinds.
  void fail(const std::string& msg) {
    {
      std::lock_guard<std::mutex> g(err_m);
      if (error.empty()) error = msg;
    }
    aborted.store(true);
    gen.advance();  // waiters return and, seeing `aborted`, unwind
    for (auto& w : warps) w->gen.advance();
  }
  [[noreturn]] void fail_here(const std::string& msg) {
    fail(msg);
    throw Aborted{};
  }
};

struct ThreadCtx {
  Block* block = nullptr;
  Warp* warp = nullptr;
  unsigned lane = 0;
};
inline thread_local ThreadCtx ctx;

// The calling thread's block; device intrinsics called from plain host code get a clear error.
inline Block& current_block(const char* what) {
  if (ctx.block == nullptr)
    throw LaunchError(std::string(what) + " called outside a kernel launch (host code)");
  return *ctx.block;
}

inline std::string thread_name() {
  return "thread (" + std::to_string(threadIdx.x) + "," + std::to_string(threadIdx.y) + "," +
         std::to_string(threadIdx.z) + ")";
}

// Returns the phase's vote on `pred` (for __syncthreads_count/_and/_or).
inline PhaseVote syncthreads(const std::source_location& loc, int pred = 0) {
  Block& b = current_block("__syncthreads()");
  std::unique_lock<SpinLock> lk(b.m);
  if (b.aborted.load()) throw Aborted{};
  if (b.arrived == 0) {
    b.site = loc;
  } else if (!same_site(b.site, loc)) {
    const std::string msg = std::string(b.kernel) + ": divergent __syncthreads() in " +
                            b.block_name() + ": " + thread_name() + " at " + where(loc) +
                            " while others wait at " + where(b.site);
    lk.unlock();
    b.fail_here(msg);
  }
  const std::uint32_t my_gen = b.gen.load();
  b.count += pred != 0;
  if (++b.arrived == b.expected) {
    b.complete_phase();
    return b.last;
  }
  lk.unlock();
  const auto deadline = deadline_after(b.timeout_s);
  if (!b.gen.wait(my_gen, deadline)) {
    lk.lock();
    const std::string msg = std::string(b.kernel) + ": __syncthreads() at " + where(loc) +
                            " timed out after " + seconds(b.timeout_s) + " in " +
                            b.block_name() + " (" + std::to_string(b.arrived) + " of " +
                            std::to_string(b.expected) +
                            " live threads arrived): a barrier in divergent code, or threads "
                            "blocked in a warp intrinsic";
    lk.unlock();
    b.fail_here(msg);
  }
  if (b.aborted.load()) throw Aborted{};
  return b.last;  // written before the generation advanced (release/acquire)
}

// A thread returned from the kernel: drop it from later barriers and warp collectives.
inline void thread_exit() {
  Block& b = *ctx.block;
  {
    std::lock_guard<SpinLock> g(b.m);
    --b.expected;
    if (b.arrived != 0 && b.arrived == b.expected) b.complete_phase();
  }
  Warp& w = *ctx.warp;
  std::lock_guard<SpinLock> g(w.m);
  w.exited |= 1u << ctx.lane;
  for (auto& c : w.slots)
    if (c.used && !c.done && c.arrived == w.expected(c)) w.complete(c);
}

// One lane's part in a warp collective: publishes `value`, waits for the other lanes of `mask`
// that exist and have not exited, and returns every participant's value.
inline Exchange warp_exchange(WarpOp op, std::uint32_t mask, std::uint64_t value,
                              const std::source_location& loc) {
  Block& b = current_block(warp_op_name(op));
  Warp& w = *ctx.warp;
  const std::uint32_t me = 1u << ctx.lane;
  std::unique_lock<SpinLock> lk(w.m);
  if (b.aborted.load()) throw Aborted{};
  auto fail = [&](const std::string& why) {
    const std::string msg = std::string(b.kernel) + ": " + warp_op_name(op) + " at " + where(loc) +
                            " in " + b.block_name() + ", " + thread_name() + " (lane " +
                            std::to_string(ctx.lane) + "): " + why;
    lk.unlock();
    b.fail_here(msg);
  };
  if (!(mask & me)) fail("the calling lane is not in mask " + hex(mask));
  WarpCollective* c = nullptr;
  for (auto& s : w.slots)
    if (s.used && !s.done && s.mask == mask) c = &s;
  if (c && c->op != op)
    fail(std::string("other lanes of the mask are in ") + warp_op_name(c->op) + " at " +
         where(c->site) + " (all lanes of a mask must call the same intrinsic)");
  if (!c) {
    for (auto& s : w.slots)
      if (!s.used) {
        c = &s;
        break;
      }
    c->used = true;
    c->done = false;
    c->op = op;
    c->mask = mask;
    c->arrived = 0;
    c->site = loc;
  }
  c->vals[ctx.lane] = value;
  c->arrived |= me;
  if (c->arrived == w.expected(*c)) {
    w.complete(*c);
    return w.take(*c);
  }
  const auto deadline = deadline_after(b.timeout_s);
  while (!c->done) {
    const std::uint32_t seen = w.gen.load();
    lk.unlock();
    const bool in_time = w.gen.wait(seen, deadline);
    lk.lock();
    if (b.aborted.load()) throw Aborted{};
    if (!in_time && !c->done)
      fail("timed out after " + seconds(b.timeout_s) + " waiting for lanes " +
           hex(w.expected(*c) & ~c->arrived) + " of mask " + hex(mask) +
           " (divergent code, or lanes blocked at __syncthreads)");
  }
  return w.take(*c);
}

// CUDA's overloads take these types; narrower integers (bool, char, short) promote to int.
template <class T>
using shfl_t = std::conditional_t<std::is_integral_v<T> && (sizeof(T) < sizeof(int)), int, T>;
template <class T>
constexpr bool shfl_type =
    std::is_same_v<T, int> || std::is_same_v<T, unsigned int> || std::is_same_v<T, long> ||
    std::is_same_v<T, unsigned long> || std::is_same_v<T, long long> ||
    std::is_same_v<T, unsigned long long> || std::is_same_v<T, float> || std::is_same_v<T, double>;

template <class T>
std::uint64_t to_bits(T v) {
  std::uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T>
T from_bits(std::uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

inline void check_width(int width, WarpOp op, const std::source_location& loc) {
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    ctx.block->fail_here(std::string(ctx.block->kernel) + ": " + warp_op_name(op) + " at " +
                         where(loc) + ": width " + std::to_string(width) +
                         " is not a power of two in [1, 32]");
  }
}

// Source lane per PTX shfl.sync (b = lane argument, c = ((32 - width) << 8) | clamp).
inline unsigned shfl_source(WarpOp op, unsigned lane, int arg, int width) {
  const unsigned b = static_cast<unsigned>(arg) & 31u;
  const unsigned segmask = 32u - static_cast<unsigned>(width);
  const unsigned min_lane = lane & segmask;
  const unsigned max_lane = op == WarpOp::shfl_up ? min_lane : (min_lane | (31u & ~segmask));
  int j;
  bool ok;
  switch (op) {
    case WarpOp::shfl_up:
      j = static_cast<int>(lane) - static_cast<int>(b);
      ok = j >= static_cast<int>(max_lane);
      break;
    case WarpOp::shfl_down:
      j = static_cast<int>(lane + b);
      ok = j <= static_cast<int>(max_lane);
      break;
    case WarpOp::shfl_xor:
      j = static_cast<int>(lane ^ b);
      ok = j <= static_cast<int>(max_lane);
      break;
    default:
      j = static_cast<int>(min_lane | (b & ~segmask));
      ok = true;
      break;
  }
  return ok ? static_cast<unsigned>(j) : lane;
}

template <class T>
T shuffle(WarpOp op, unsigned mask, T var, int arg, int width, const std::source_location& loc) {
  static_assert(shfl_type<T>, "warp shuffles take int, unsigned, long, long long (and unsigned), "
                              "float or double, like CUDA's overloads");
  check_width(width, op, loc);
  const Exchange e = warp_exchange(op, mask, to_bits(var), loc);
  const unsigned src = shfl_source(op, ctx.lane, arg, width);
  if (!(e.part & (1u << src))) return from_bits<T>(~std::uint64_t{0});  // undefined on the GPU
  return from_bits<T>(e.vals[src]);
}

// (lanes of the collective whose predicate is non-zero, lanes of the collective)
inline std::pair<unsigned, unsigned> vote(WarpOp op, unsigned mask, int pred,
                                          const std::source_location& loc) {
  const Exchange e = warp_exchange(op, mask, pred != 0, loc);
  unsigned ballot = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((e.part & (1u << l)) && e.vals[l]) ballot |= 1u << l;
  return {ballot, e.part};
}

// ---- shared memory
inline void check_smem(Block& b) {  // with b.smem_m held
  if (b.static_bytes > kMaxStaticSmem)
    b.fail_here(std::string(b.kernel) + ": static shared memory " +
                std::to_string(b.static_bytes) + " B exceeds the 48 KB limit");
  if (b.static_bytes + b.dyn_bytes > b.smem_limit)
    b.fail_here(std::string(b.kernel) + ": static (" + std::to_string(b.static_bytes) +
                " B) + dynamic (" + std::to_string(b.dyn_bytes) + " B) shared memory exceed " +
                std::to_string(b.smem_limit) + " B" +
                (b.smem_limit == kDefaultSmem ? " (no opt-in: hfsti::set_max_dynamic_smem)" : ""));
}

inline void* static_shared(const void* key, std::size_t bytes, const char* name) {
  Block& b = current_block("HFSTI_SHARED");
  const unsigned known = b.nstatics.load(std::memory_order_acquire);
  for (unsigned i = 0; i < known; ++i)
    if (b.statics[i].key == key) return b.statics[i].get();
  std::lock_guard<std::mutex> g(b.smem_m);
  const unsigned n = b.nstatics.load(std::memory_order_relaxed);
  for (unsigned i = known; i < n; ++i)  // added by another thread meanwhile
    if (b.statics[i].key == key) return b.statics[i].get();
  if (n == Block::kMaxStatics)
    b.fail_here(std::string(b.kernel) + ": more than 64 HFSTI_SHARED arrays in one kernel");
  b.static_bytes += bytes;
  check_smem(b);
  b.statics[n] = SmemBuf(key, name, bytes);
  b.nstatics.store(n + 1, std::memory_order_release);
  return b.statics[n].get();
}

inline void* dynamic_shared() { return current_block("HFSTI_DYNAMIC_SHARED").dyn.get(); }

// After a block: the first shared-memory guard zone it wrote, as an error message ("" if none).
inline std::string smem_overrun(const Block& b) {
  auto msg = [&](const SmemBuf& s, const char* what, const char* where) {
    return std::string(b.kernel) + ": " + b.block_name() + " wrote " + where + " of " + what +
           " (" + std::to_string(s.bytes) + " B)";
  };
  if (*b.dyn.damaged()) return msg(b.dyn, "its dynamic shared memory", b.dyn.damaged());
  for (unsigned i = 0; i < b.nstatics.load(); ++i)
    if (const SmemBuf& s = b.statics[i]; *s.damaged())
      return msg(s, ("static shared array '" + std::string(s.name) + "'").c_str(), s.damaged());
  return "";
}

// ---- kernel opt-in attributes
struct OptIn {
  const void* kernel;
  std::size_t bytes;
};
inline std::mutex optin_m;
inline std::vector<OptIn> optins;

inline std::size_t optin_bytes(const void* kernel) {
  std::lock_guard<std::mutex> g(optin_m);
  for (auto& o : optins)
    if (o.kernel == kernel) return o.bytes;
  return 0;
}

// ---- thread pool and launcher
struct Job {
  virtual void run() = 0;
  virtual ~Job() = default;
};

struct Pool {
  struct Worker {
    Generation start;  // advanced by the launcher to run one block's thread
    unsigned index = 0;
  };
  std::vector<std::unique_ptr<Worker>> workers;
  Generation done;  // advanced by the block's last thread to finish
  std::atomic<unsigned> remaining{0};
  Job* job = nullptr;
  Block* block = nullptr;
  dim3 grid, blk;

  static void* main(void* arg) {
    auto* self = static_cast<std::pair<Pool*, Worker*>*>(arg);
    Pool& p = *self->first;
    Worker& w = *self->second;
    delete self;
    for (std::uint32_t seen = 0;; ++seen) {
      w.start.wait(seen);
      p.run_thread(w.index);
      if (p.remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) p.done.advance();
    }
    return nullptr;
  }

  void run_thread(unsigned i) {
    Block& b = *block;
    blockDim = blk;
    gridDim = grid;
    blockIdx = b.idx;
    threadIdx = uint3{i % blk.x, (i / blk.x) % blk.y, i / (blk.x * blk.y)};
    ctx.block = &b;
    ctx.lane = i % 32;
    ctx.warp = b.warps[i / 32].get();
    try {
      job->run();
    } catch (const Aborted&) {
    } catch (const std::exception& e) {
      b.fail(std::string(b.kernel) + ": " + thread_name() + " in " + b.block_name() +
             " threw: " + e.what());
    } catch (...) {
      b.fail(std::string(b.kernel) + ": " + thread_name() + " threw a non-std exception");
    }
    thread_exit();
    ctx = ThreadCtx{};
  }

  void grow(unsigned n) {
    static const std::size_t stack = [] {
      const char* s = std::getenv("HFSTI_EMU_STACK_KB");
      long kb = s ? std::atol(s) : 0;
      return static_cast<std::size_t>(kb > 0 ? kb : 2048) * 1024;
    }();
    while (workers.size() < n) {
      auto w = std::make_unique<Worker>();
      w->index = static_cast<unsigned>(workers.size());
      pthread_attr_t attr;
      pthread_attr_init(&attr);
      pthread_attr_setstacksize(&attr, stack);
      pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
      pthread_t tid;
      auto* arg = new std::pair<Pool*, Worker*>(this, w.get());
      const int rc = pthread_create(&tid, &attr, &Pool::main, arg);
      pthread_attr_destroy(&attr);
      if (rc != 0) {
        delete arg;
        throw LaunchError("hfsti emulator: cannot start thread " +
                          std::to_string(workers.size()) + " (pthread_create error " +
                          std::to_string(rc) + ")");
      }
      workers.push_back(std::move(w));
    }
  }
};

inline std::mutex launch_m;
// The pool of this process (called with launch_m held). Never destroyed: its threads outlive
// static destruction. A forked child (e.g. a DataLoader worker) inherits the pool's bookkeeping
// but none of its threads, so it starts a fresh pool instead of waiting on threads that are gone.
inline Pool& pool() {
  static Pool* p = nullptr;
  static pid_t owner = 0;
  if (p == nullptr || owner != getpid()) {
    p = new Pool;
    owner = getpid();
  }
  return *p;
}

// HFSTI_EMU_BLOCK_ORDER=reverse runs the blocks last to first: a kernel whose result depends on
// the order of its blocks (a race between blocks on the GPU) then gives a different answer.
inline bool block_order_reversed() {
  const char* s = std::getenv("HFSTI_EMU_BLOCK_ORDER");
  return s != nullptr && std::strcmp(s, "reverse") == 0;
}

inline void check_config(const char* name, dim3 grid, dim3 block, std::size_t smem,
                         std::size_t optin) {
  auto bad = [&](const std::string& why) {
    throw LaunchError(std::string(name) + ": invalid launch: " + why);
  };
  const auto d = [](dim3 v) {
    return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
  };
  if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0)
    bad("zero grid " + d(grid) + " or block " + d(block) + " dimension");
  if (block.x > 1024 || block.y > 1024 || block.z > 64)
    bad("block " + d(block) + " exceeds the maximum (1024,1024,64)");
  if (static_cast<unsigned long long>(block.x) * block.y * block.z > 1024)
    bad("block " + d(block) + " has more than 1024 threads");
  if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    bad("grid " + d(grid) + " exceeds the maximum (2147483647,65535,65535)");
  if (optin == 0 && smem > kDefaultSmem)
    bad(std::to_string(smem) + " B of dynamic shared memory exceed 48 KB and the kernel has not "
        "opted in (hfsti::set_max_dynamic_smem)");
  if (optin != 0 && smem > optin)
    bad(std::to_string(smem) + " B of dynamic shared memory exceed the kernel's opt-in of " +
        std::to_string(optin) + " B");
}

template <class F, class Tuple>
struct KernelJob final : Job {
  F f;
  Tuple args;
  KernelJob(F fn, Tuple a) : f(fn), args(std::move(a)) {}
  void run() override { std::apply(f, args); }  // kernel parameters are copies, as on the GPU
};

inline void run_launch(const char* name, const void* key, Job& job, dim3 grid, dim3 block,
                       std::size_t smem) {
  if (ctx.block != nullptr)
    throw LaunchError(std::string(name) + ": launched from inside a kernel (dynamic parallelism "
                      "is not emulated)");
  const std::size_t optin = optin_bytes(key);
  check_config(name, grid, block, smem, optin);
  std::lock_guard<std::mutex> g(launch_m);
  Pool& p = pool();
  const unsigned n = block.x * block.y * block.z;
  p.grow(n);
  Block b;
  b.kernel = name;
  b.timeout_s = read_barrier_timeout_s();
  b.nthreads = n;
  b.dyn_bytes = smem;
  b.smem_limit = optin ? kMaxSmemOptin : kDefaultSmem;
  b.dyn = SmemBuf(nullptr, "", smem);
  for (unsigned w = 0; w < (n + 31) / 32; ++w) b.warps.push_back(std::make_unique<Warp>());
  p.job = &job;
  p.block = &b;
  p.grid = grid;
  p.blk = block;
  const std::uint64_t nblocks = std::uint64_t{grid.x} * grid.y * grid.z;
  const bool reverse = block_order_reversed();
  for (std::uint64_t k = 0; k < nblocks; ++k) {
    const std::uint64_t l = reverse ? nblocks - 1 - k : k;
    b.idx = uint3{static_cast<unsigned>(l % grid.x), static_cast<unsigned>(l / grid.x % grid.y),
                  static_cast<unsigned>(l / grid.x / grid.y)};
    b.expected = n;
    b.arrived = b.count = 0;
    for (unsigned i = 0; i < b.nstatics.load(); ++i) b.statics[i].poison();
    b.dyn.poison();
    for (unsigned w = 0; w < b.warps.size(); ++w) {
      const unsigned lanes = std::min(32u, n - 32 * w);
      b.warps[w]->reset(lanes == 32 ? 0xFFFFFFFFu : ((1u << lanes) - 1));
    }
    p.remaining.store(n);
    const std::uint32_t finished = p.done.load();
    for (unsigned i = 0; i < n; ++i) p.workers[i]->start.advance();
    p.done.wait(finished);
    if (b.aborted.load()) throw LaunchError(b.error);
    if (const std::string overrun = smem_overrun(b); !overrun.empty()) throw LaunchError(overrun);
  }
}

}  // namespace emu

// Launch `kernel` on grid x block with `smem` bytes of dynamic shared memory (synchronous; the
// stream is ignored). Throws LaunchError naming `name` on a bad configuration or kernel failure.
template <class... P, class... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem,
            stream_t /*stream*/, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "hfsti::launch: wrong number of kernel arguments");
  using Tuple = std::tuple<std::decay_t<P>...>;
  emu::KernelJob<void (*)(P...), Tuple> job(kernel,
                                            Tuple(static_cast<P>(std::forward<A>(args))...));
  emu::run_launch(name, reinterpret_cast<const void*>(kernel), job, grid, block, smem);
}

// Let `kernel` use up to `bytes` of dynamic shared memory (the GPU's
// cudaFuncAttributeMaxDynamicSharedMemorySize); needed above 48 KB, at most 227 KB.
template <class... P>
void set_max_dynamic_smem(const char* name, void (*kernel)(P...), std::size_t bytes) {
  if (bytes > emu::kMaxSmemOptin)
    throw LaunchError(std::string(name) + ": cannot opt in to " + std::to_string(bytes) +
                      " B of dynamic shared memory: the maximum is 227 KB (232448 B)");
  const void* key = reinterpret_cast<const void*>(kernel);
  std::lock_guard<std::mutex> g(emu::optin_m);
  for (auto& o : emu::optins)
    if (o.kernel == key) {
      o.bytes = bytes;
      return;
    }
  emu::optins.push_back({key, bytes});
}

}  // namespace hfsti

// ---- shared memory macros
#define HFSTI_SHARED(T, name, N)                                                          \
  T(&name)[N] = *reinterpret_cast<T(*)[N]>(::hfsti::emu::static_shared(                 \
      [] {                                                                                \
        static const char hfsti_site_key = 0;                                             \
        return static_cast<const void*>(&hfsti_site_key);                                 \
      }(),                                                                                \
      sizeof(T) * (N), #name))
#define HFSTI_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::hfsti::emu::dynamic_shared())

// ---- barriers and warp intrinsics
inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  hfsti::emu::syncthreads(loc);
}
inline int __syncthreads_count(int pred,
                               std::source_location loc = std::source_location::current()) {
  return static_cast<int>(hfsti::emu::syncthreads(loc, pred).yes);
}
inline int __syncthreads_and(int pred, std::source_location loc = std::source_location::current()) {
  const hfsti::emu::PhaseVote v = hfsti::emu::syncthreads(loc, pred);
  return v.yes == v.threads;
}
inline int __syncthreads_or(int pred, std::source_location loc = std::source_location::current()) {
  return hfsti::emu::syncthreads(loc, pred).yes != 0;
}
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu,
                       std::source_location loc = std::source_location::current()) {
  hfsti::emu::warp_exchange(hfsti::emu::WarpOp::syncwarp, mask, 0, loc);
}
template <class T>
hfsti::emu::shfl_t<T> __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,
              std::source_location loc = std::source_location::current()) {
  return hfsti::emu::shuffle(hfsti::emu::WarpOp::shfl, mask, hfsti::emu::shfl_t<T>(var), srcLane,
                             width, loc);
}
template <class T>
hfsti::emu::shfl_t<T> __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 std::source_location loc = std::source_location::current()) {
  return hfsti::emu::shuffle(hfsti::emu::WarpOp::shfl_up, mask, hfsti::emu::shfl_t<T>(var),
                             static_cast<int>(delta), width, loc);
}
template <class T>
hfsti::emu::shfl_t<T> __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   std::source_location loc = std::source_location::current()) {
  return hfsti::emu::shuffle(hfsti::emu::WarpOp::shfl_down, mask, hfsti::emu::shfl_t<T>(var),
                             static_cast<int>(delta), width, loc);
}
template <class T>
hfsti::emu::shfl_t<T> __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                  std::source_location loc = std::source_location::current()) {
  return hfsti::emu::shuffle(hfsti::emu::WarpOp::shfl_xor, mask, hfsti::emu::shfl_t<T>(var),
                             laneMask, width, loc);
}
inline unsigned __ballot_sync(unsigned mask, int pred,
                              std::source_location loc = std::source_location::current()) {
  return hfsti::emu::vote(hfsti::emu::WarpOp::ballot, mask, pred, loc).first;
}
inline int __any_sync(unsigned mask, int pred,
                      std::source_location loc = std::source_location::current()) {
  return hfsti::emu::vote(hfsti::emu::WarpOp::any, mask, pred, loc).first != 0;
}
inline int __all_sync(unsigned mask, int pred,
                      std::source_location loc = std::source_location::current()) {
  const auto [yes, part] = hfsti::emu::vote(hfsti::emu::WarpOp::all, mask, pred, loc);
  return yes == part;
}
inline unsigned __activemask() {
  hfsti::emu::current_block("__activemask()");
  hfsti::emu::Warp& w = *hfsti::emu::ctx.warp;
  std::lock_guard<hfsti::emu::SpinLock> g(w.m);
  return w.present & ~w.exited;
}

#include "hfsti/emulate_math.h"
