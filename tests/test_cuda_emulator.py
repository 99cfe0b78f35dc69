"""The host SIMT emulator (csrc/include/hfsti/emulate.h) against CUDA's documented semantics.

The test kernels (csrc/tests/emu_kernels.cu) are built with g++ -DHFSTI_CUDA_EMULATE into a
shared object driven through ctypes. Expectations are computed independently in Python from the
CUDA programming guide's wording (shuffles lane by lane, votes), from torch (half/bf16
conversions), or are launches a GPU would refuse (limits, opt-in). Also checked: shared-memory
poison and guard zones, barrier failure modes (timeout, divergent call sites), block order,
forked children. ThreadSanitizer builds of csrc/tests/emu_race.cu show that correct kernels run
race-free and that a missing barrier is reported; an AddressSanitizer build catches a read past
the block's shared memory. The same sources compile with nvcc (sm_90) and NVRTC. One file
(~530 lines) because every test shares the one ctypes library of test kernels.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from hfsti_kernels.cuda import _hostbuild

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "csrc" / "include"
KERNELS = ROOT / "csrc" / "tests" / "emu_kernels.cu"
RACE = ROOT / "csrc" / "tests" / "emu_race.cu"
EMU = ("-DHFSTI_CUDA_EMULATE",)

IDX, UP, DOWN, XOR, BALLOT, ANY, ALL, XOR_DOUBLE = range(8)
FULL = 0xFFFFFFFF
POISON_INT = -1  # all-ones bits: what a lane reads from a lane that does not take part
NOT_CALLED = -7  # written by lanes outside the mask
POISON_DOUBLE = -9  # the double kernel's marker for a NaN (poison) result

_C = ctypes
_P = _C.c_void_p
_ERR = (_C.c_char_p, _C.c_int)
_SIGNATURES = {
    "hfsti_test_run_warp": (_C.c_int, _P, _P, _P, _P, _C.c_int),
    "hfsti_test_run_block_sum": (_C.c_int, _P, _P, *(_C.c_int,) * 5),
    "hfsti_test_run_indices": (_P, *(_C.c_int,) * 6),
    "hfsti_test_run_smem_poison": (_P, _P, _P, _C.c_int, _C.c_int),
    "hfsti_test_run_config": (*(_C.c_int,) * 7, _C.c_longlong, _C.c_longlong, _P),
    "hfsti_test_run_divergent": (_C.c_int, _C.c_int, _P),
    "hfsti_test_run_block_votes": (_P, _P, _C.c_int, _C.c_int),
    "hfsti_test_run_library": (_P,),
    "hfsti_test_run_misuse": (_C.c_int, _P),
    "hfsti_test_run_smem_overrun": (_C.c_int, _C.c_int, _P),
    "hfsti_test_run_chain": (_P, _C.c_int),
    "hfsti_test_run_narrow": (_C.c_int, _P, _P, _C.c_int),
    "hfsti_test_run_widen": (_C.c_int, _P, _P, _C.c_int),
}


class Emu:
    """The ctypes test library; ``call`` raises RuntimeError with the emulator's message."""

    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        for fn, args in _SIGNATURES.items():
            f = getattr(self.lib, fn)
            f.argtypes = [*args, *_ERR]
            f.restype = _C.c_int

    def call(self, fn: str, *args):
        err = ctypes.create_string_buffer(2048)
        conv = [a.ctypes.data if isinstance(a, np.ndarray) else a for a in args]
        if getattr(self.lib, fn)(*conv, err, len(err)) != 0:
            raise RuntimeError(err.value.decode())


@pytest.fixture(scope="module")
def emu() -> Emu:
    so = _hostbuild.build("emu_kernels", [KERNELS], include_dirs=[INCLUDE], flags=("-O1", *EMU))
    return Emu(so)


# ---- warp intrinsics, lane by lane
def expected_shuffle(mode: int, values: list[int], arg: int, width: int, part: int) -> list[int]:
    """CUDA programming guide semantics for one warp; `part`: lanes taking part (bit mask)."""
    out = []
    for lane in range(len(values)):
        if not part >> lane & 1:
            out.append(NOT_CALLED)
            continue
        seg = lane // width * width
        if mode == IDX:  # srcLane outside [0, width) is taken modulo width, within the segment
            src = seg + arg % width
        elif mode == UP:  # a source below the segment start leaves var unchanged
            src = lane - arg if lane % width - arg >= 0 else lane
        elif mode == DOWN:  # a source past the segment end leaves var unchanged
            src = lane + arg if lane % width + arg < width else lane
        else:  # XOR: earlier segments may be read; a later one returns the lane's own value
            src = lane ^ arg
            if src // width > lane // width:
                src = lane
        out.append(values[src] if part >> src & 1 else POISON_INT)
    return out


def expected_vote(mode: int, values: list[int], part: int) -> list[int]:
    ballot = sum(1 << l for l in range(len(values)) if part >> l & 1 and values[l] & 1)
    res = {BALLOT: ballot - (1 << 32) if ballot >= 1 << 31 else ballot,
           ANY: int(ballot != 0), ALL: int(ballot == part)}[mode]  # fmt: skip
    return [res if part >> l & 1 else NOT_CALLED for l in range(len(values))]


def run_warp_cases(emu: Emu, nthreads: int, cases: list[tuple[int, int, int, int]], rng):
    """cases: (mode, arg, width, mask); returns (inputs, outputs), each (n_cases, nthreads)."""
    values = rng.integers(0, 1 << 20, size=(len(cases), nthreads), dtype=np.int32)
    out = np.zeros_like(values)
    args = np.array([(m, a, w) for m, a, w, _ in cases], dtype=np.int32)
    masks = np.array([mask for *_, mask in cases], dtype=np.uint32)
    emu.call("hfsti_test_run_warp", nthreads, values, out, args, masks, len(cases))
    return values, out


def check_warps(values, out, cases, nthreads):
    for c, (mode, arg, width, mask) in enumerate(cases):
        for w0 in range(0, nthreads, 32):
            lanes = min(32, nthreads - w0)
            part = mask & ((1 << lanes) - 1)
            vals = values[c, w0 : w0 + lanes].tolist()
            if mode in (BALLOT, ANY, ALL):
                want = expected_vote(mode, vals, part)
            elif mode == XOR_DOUBLE:
                want = [4 * v + 1 if v != POISON_INT else POISON_DOUBLE
                        for v in expected_shuffle(XOR, vals, arg, width, part)]  # fmt: skip
                want = [NOT_CALLED if not part >> l & 1 else v for l, v in enumerate(want)]
            else:
                want = expected_shuffle(mode, vals, arg, width, part)
            got = out[c, w0 : w0 + lanes].tolist()
            assert got == want, (
                f"mode {mode} arg {arg} width {width} mask {mask:#x} warp {w0 // 32}: "
                f"first wrong lane {next(i for i in range(lanes) if got[i] != want[i])}"
            )


WIDTHS = (32, 16, 8, 4, 2, 1)


@pytest.mark.parametrize("width", WIDTHS)
def test_shuffles_every_lane_and_argument(emu, width):
    cases = [(IDX, a, width, FULL) for a in range(-3, 35)]
    cases += [(m, d, width, FULL) for m in (UP, DOWN) for d in range(32)]
    cases += [(XOR, x, width, FULL) for x in range(32)]
    cases += [(XOR_DOUBLE, x, width, FULL) for x in (1, 3, width // 2, 31)]
    rng = np.random.default_rng(width)
    values, out = run_warp_cases(emu, 64, cases, rng)  # two warps
    check_warps(values, out, cases, 64)


def test_partial_warp_and_masks(emu):
    """48 threads (a 16-lane last warp) and sub-warp masks: non-members read as poison."""
    masks = (FULL, 0x0000FFFF, 0xF0F0F0F0, 0x80000001)
    ops = ((IDX, 5), (IDX, 17), (UP, 3), (DOWN, 3), (XOR, 4), (XOR, 16))
    cases = [(m, a, w, mask) for mask in masks for w in (32, 8) for m, a in ops]
    cases += [(m, 0, 32, mask) for mask in masks for m in (BALLOT, ANY, ALL)]
    rng = np.random.default_rng(7)
    values, out = run_warp_cases(emu, 48, cases, rng)
    check_warps(values, out, cases, 48)


def test_votes(emu):
    rng = np.random.default_rng(3)
    cases = [(m, 0, 32, mask) for m in (BALLOT, ANY, ALL) for mask in (FULL, 0x00FF00FF)]
    values, out = run_warp_cases(emu, 96, cases, rng)
    check_warps(values, out, cases, 96)
    # all ones / all zeros predicates
    for fill, want_any, want_all in ((1, 1, 1), (0, 0, 0)):
        v = np.full((3, 32), fill, dtype=np.int32)
        o = np.zeros_like(v)
        args = np.array([(BALLOT, 0, 32), (ANY, 0, 32), (ALL, 0, 32)], dtype=np.int32)
        emu.call("hfsti_test_run_warp", 32, v, o, args, np.full(3, FULL, np.uint32), 3)
        assert (o[0] == (-1 if fill else 0)).all()
        assert (o[1] == want_any).all() and (o[2] == want_all).all()


# ---- blocks, grids, reductions
@pytest.mark.parametrize(
    ("grid", "block"), [((5, 1), (256, 1)), ((3, 2), (32, 4)), ((2, 1), (96, 1))]
)
def test_block_reduction(emu, grid, block):
    n_per_block = 1000
    nblocks = grid[0] * grid[1]
    x = np.random.default_rng(0).standard_normal(nblocks * n_per_block).astype(np.float32)
    out = np.full(nblocks, np.nan, dtype=np.float32)
    emu.call("hfsti_test_run_block_sum", 0, x, out, *grid, *block, n_per_block)
    want = x.reshape(nblocks, -1).astype(np.float64).sum(1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("dtype", "code", "tol"), [(np.float64, 1, 1e-12), (np.float16, 2, 2e-3)])
def test_block_reduction_templates(emu, dtype, code, tol):
    """acc_t<T> shared memory and double shuffles (double), half loads and stores (half)."""
    x = np.random.default_rng(1).standard_normal(3 * 300).astype(dtype)
    out = np.full(3, np.nan, dtype=dtype)
    emu.call("hfsti_test_run_block_sum", code, x, out, 3, 1, 128, 1, 300)
    want = x.reshape(3, -1).astype(np.float64).sum(1)
    np.testing.assert_allclose(out.astype(np.float64), want, rtol=tol, atol=tol * 10)


def test_reverse_block_order_exposes_block_dependence(emu, monkeypatch):
    """HFSTI_EMU_BLOCK_ORDER=reverse: order-independent kernels agree, dependent ones do not."""
    x = np.random.default_rng(5).standard_normal(4 * 64).astype(np.float32)
    results = {}
    for order in ("forward", "reverse"):
        monkeypatch.setenv("HFSTI_EMU_BLOCK_ORDER", order)
        sums = np.zeros(4, dtype=np.float32)
        emu.call("hfsti_test_run_block_sum", 0, x, sums, 2, 2, 32, 1, 64)
        chain = np.zeros(5, dtype=np.int32)
        emu.call("hfsti_test_run_chain", chain, 5)
        results[order] = (sums, chain)
    assert np.array_equal(results["forward"][0], results["reverse"][0])
    assert results["forward"][1].tolist() == [1, 2, 3, 4, 5]
    assert results["reverse"][1].tolist() == [1, 1, 1, 1, 1]


def test_thread_and_block_indices(emu):
    grid, block = (2, 3, 2), (4, 2, 3)
    nt, nb = int(np.prod(block)), int(np.prod(grid))
    out = np.full(nb * nt, -1, dtype=np.int32)
    emu.call("hfsti_test_run_indices", out, *grid, *block)
    blocks = [
        (bx, by, bz) for bz in range(grid[2]) for by in range(grid[1]) for bx in range(grid[0])
    ]
    threads = [(x, y, z) for z in range(block[2]) for y in range(block[1]) for x in range(block[0])]
    want = [x + 10 * y + 100 * z + 1000 * bx + 10000 * by + 100000 * bz
            for bx, by, bz in blocks for x, y, z in threads]  # fmt: skip
    assert out.tolist() == want


@pytest.mark.parametrize(("threads", "live", "fill"), [(96, 96, None), (96, 50, None), (64, 64, 1)])
def test_block_votes(emu, threads, live, fill):
    rng = np.random.default_rng(live)
    x = np.full(threads, fill, np.int32) if fill is not None else rng.integers(0, 4, threads)
    x = x.astype(np.int32)
    out = np.full(3 * threads, -5, dtype=np.int32)
    emu.call("hfsti_test_run_block_votes", x, out, threads, live)
    pred = x[:live] & 1
    want = [int(pred.sum()), int(pred.all()), int(pred.any())] * live + [-5] * 3 * (threads - live)
    assert out.tolist() == want


LIBRARY = [0.5, 0.0, -1.0, 1.0, 0.0, 1.0, 1.0, 4, 4, 31, 1, 3, 1, 2, 1.0, 2.5, 1.0, 0.0, 0.25,
           0.5, 0.0, 1.0, 0.0, 7.0, 2.0, 0.75, 0.0, 1, 1, 1, -0.5, 4.0, 3.0]  # fmt: skip


def test_device_library(emu):
    """Math, bit and conversion intrinsics, CUDA's mixed min/max, promoted shuffles, vectors."""
    out = np.full(64, np.nan, dtype=np.float32)
    emu.call("hfsti_test_run_library", out)
    assert out[: len(LIBRARY)].tolist() == LIBRARY
    assert np.isnan(out[len(LIBRARY)])  # nothing written past the list


# ---- shared memory poison
def test_shared_memory_poisoned_every_block(emu):
    blocks, threads = 3, 64
    s = np.zeros(blocks * threads, dtype=np.uint32)
    d = np.zeros_like(s)
    nan = np.zeros(blocks, dtype=np.int32)
    emu.call("hfsti_test_run_smem_poison", s, d, nan, blocks, threads)
    assert (s == 0xFFFFFFFF).all(), "static shared memory read before write is not poison"
    assert (d == 0xFFFFFFFF).all(), "dynamic shared memory read before write is not poison"
    assert nan.tolist() == [1] * blocks, "a double in static shared memory is not NaN poison"


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        (0, r"block \(0,0,0\) wrote past the end of its dynamic shared memory \(160 B\)"),
        (1, "wrote before the start of its dynamic shared memory"),
        (2, r"wrote past the end of static shared array 'tile' \(128 B\)"),
    ],
)
def test_shared_memory_overrun_fails(emu, mode, match):
    with pytest.raises(RuntimeError, match="hfsti_test_smem_overrun: .*" + match):
        emu.call("hfsti_test_run_smem_overrun", mode, 40, np.zeros(1, dtype=np.int32))


def test_shared_memory_in_bounds_passes(emu):
    out = np.zeros(1, dtype=np.int32)
    emu.call("hfsti_test_run_smem_overrun", 3, 40, out)
    assert out[0] == 31 + 39


# ---- launch limits
NOOP, OPTIN, STATIC40K = 0, 1, 2
KB = 1024


def launch(emu, kernel, grid=(1, 1, 1), block=(32, 1, 1), smem=0, optin=-1):
    out = np.zeros(16 * KB, dtype=np.int32)
    emu.call("hfsti_test_run_config", kernel, *grid, *block, smem, optin, out)
    return out


@pytest.mark.parametrize(
    ("grid", "block", "smem", "match"),
    [
        ((1, 1, 1), (1025, 1, 1), 0, r"hfsti_test_noop: invalid launch: block \(1025,1,1\)"),
        ((1, 1, 1), (32, 32, 2), 0, "more than 1024 threads"),
        ((1, 1, 1), (1, 1, 65), 0, r"exceeds the maximum \(1024,1024,64\)"),
        ((1, 65536, 1), (32, 1, 1), 0, r"grid \(1,65536,1\) exceeds"),
        ((1, 1, 0), (32, 1, 1), 0, "zero grid"),
        ((1, 1, 1), (32, 1, 1), 49 * KB, "exceed 48 KB and the kernel has not opted in"),
    ],
)
def test_launch_limits(emu, grid, block, smem, match):
    with pytest.raises(RuntimeError, match=match):
        launch(emu, NOOP, grid, block, smem)


def test_limits_at_the_edge_launch(emu):
    assert launch(emu, NOOP, (1, 65535, 1), (1, 1, 1))[0] == 1
    assert launch(emu, NOOP, (1, 1, 1), (1024, 1, 1), 48 * KB)[0] == 1
    assert launch(emu, NOOP, (1, 1, 1), (8, 2, 64))[0] == 1


def test_dynamic_smem_opt_in(emu):
    with pytest.raises(RuntimeError, match="hfsti_test_optin: cannot opt in to 233472 B"):
        launch(emu, OPTIN, smem=228 * KB, optin=228 * KB)
    # the 227 KB maximum works once opted in, and the kernel really has it
    assert launch(emu, OPTIN, block=(1024, 1, 1), smem=227 * KB, optin=227 * KB)[0] == 1023
    with pytest.raises(RuntimeError, match="exceed the kernel's opt-in of 102400 B"):
        launch(emu, OPTIN, smem=100 * KB + 4, optin=100 * KB)


def test_static_plus_dynamic_counted(emu):
    out = launch(emu, STATIC40K, smem=8 * KB)  # 40 + 8 = 48 KB: allowed
    assert out.view(np.float32)[:32].tolist() == [1.0] * 32
    with pytest.raises(RuntimeError, match=r"static \(40960 B\) \+ dynamic \(9216 B\)"):
        launch(emu, STATIC40K, smem=9 * KB)


# ---- barrier failure modes
def test_barrier_in_divergent_code_times_out(emu, monkeypatch):
    monkeypatch.setenv("HFSTI_EMU_BARRIER_TIMEOUT_S", "0.5")
    out = np.zeros(32, dtype=np.int32)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"hfsti_test_divergent: .*timed out after 0\.5 s"):
        emu.call("hfsti_test_run_divergent", 0, 32, out)
    assert time.monotonic() - t0 < 30


def test_barrier_at_two_call_sites_fails(emu):
    out = np.zeros(32, dtype=np.int32)
    with pytest.raises(RuntimeError, match=r"divergent __syncthreads\(\).*emu_kernels\.cu:\d+"):
        emu.call("hfsti_test_run_divergent", 1, 32, out)


def test_exited_threads_leave_the_barrier(emu):
    out = np.full(32, -1, dtype=np.int32)
    emu.call("hfsti_test_run_divergent", 2, 32, out)
    assert out.tolist() == list(range(8)) + [-1] * 24


def test_emulator_usable_after_failure(emu):
    with pytest.raises(RuntimeError):
        emu.call("hfsti_test_run_divergent", 1, 64, np.zeros(64, dtype=np.int32))
    test_block_reduction(emu, (2, 1), (64, 1))


def test_misuse_is_refused(emu):
    out = np.zeros(4, dtype=np.int32)
    with pytest.raises(RuntimeError, match=r"__syncthreads\(\) called outside a kernel launch"):
        emu.call("hfsti_test_run_misuse", 0, out)
    with pytest.raises(RuntimeError, match="hfsti_test_noop: launched from inside a kernel"):
        emu.call("hfsti_test_run_misuse", 1, out)


def test_forked_child_can_launch(emu):
    """A fork (DataLoader worker) inherits no pool threads; the child must start its own."""
    test_block_reduction(emu, (2, 1), (64, 1))  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # child: report through the exit status only
        code = 1
        try:
            test_block_reduction(emu, (2, 1), (64, 1))
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's launch hung")


# ---- dtype conversions (hfsti/dtype.h) against torch
HALF, BF16 = 0, 1


def _float_cases() -> np.ndarray:
    rng = np.random.default_rng(11)
    bits = [rng.integers(0, 1 << 32, size=40000, dtype=np.uint64).astype(np.uint32)]
    # every half / bf16 value widened, and the midpoints between neighbours (ties)
    h = np.arange(1 << 16, dtype=np.uint32)
    f16 = torch.from_numpy(h.astype(np.uint16).view(np.int16)).view(torch.float16).float()
    f = f16.numpy().view(np.uint32)
    bits += [f, f + 0x1000, f + 0xFFF, f + 0x1001, f - 0x1000]
    bits += [h << 16, (h << 16) + 0x8000, (h << 16) + 0x7FFF, (h << 16) + 0x8001]
    small = np.arange(0x33000000 - 64, 0x33000000 + 64, dtype=np.uint32)  # around 2^-25
    bits += [small, small | 0x80000000, np.array([0x477FEFFF, 0x477FF000, 0x7F800000, 0xFF800000,
                                                  0x7FC00000, 0xFFC00001, 0x7F800001, 0x00000001],
                                                 dtype=np.uint32)]  # fmt: skip
    return np.concatenate(bits).view(np.float32)


@pytest.mark.parametrize(("kind", "dtype"), [(HALF, torch.float16), (BF16, torch.bfloat16)])
def test_float_to_16bit_matches_torch(emu, kind, dtype):
    x = _float_cases()
    got = np.zeros(x.size, dtype=np.uint16)
    emu.call("hfsti_test_run_narrow", kind, x, got, x.size)
    want = torch.from_numpy(x).to(dtype).view(torch.int16).numpy().view(np.uint16)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, (
        f"{bad.size} mismatches, e.g. {x.view(np.uint32)[bad[0]]:#010x} -> {got[bad[0]]:#06x}, "
        f"torch {want[bad[0]]:#06x}"
    )


@pytest.mark.parametrize(("kind", "dtype"), [(HALF, torch.float16), (BF16, torch.bfloat16)])
def test_16bit_to_float_matches_torch(emu, kind, dtype):
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    got = np.zeros(h.size, dtype=np.float32)
    emu.call("hfsti_test_run_widen", kind, h, got, h.size)
    want = torch.from_numpy(h.view(np.int16)).view(dtype).float().numpy()
    bad = np.nonzero(got.view(np.uint32) != want.view(np.uint32))[0]
    assert bad.size == 0, f"{bad.size} mismatches, e.g. {h[bad[0]]:#06x}"


# ---- ThreadSanitizer
TSAN_VARIANTS = {"clean": (), "no_barrier": ("-DHFSTI_TEST_DROP_BARRIER",)}


@pytest.fixture(scope="module")
def tsan_programs() -> dict[str, Path]:
    """Both TSan builds of emu_race.cu, compiled concurrently."""

    def build(extra):
        flags = ("-O1", "-g", "-fsanitize=thread", *EMU, *extra)
        return _hostbuild.build(
            "emu_race_tsan", [RACE], kind="executable", include_dirs=[INCLUDE], flags=flags
        )

    try:
        with ThreadPoolExecutor(2) as pool:
            futures = {k: pool.submit(build, v) for k, v in TSAN_VARIANTS.items()}
            return {k: f.result() for k, f in futures.items()}
    except _hostbuild.HostBuildError as e:
        if "tsan" in e.log.lower() and "cannot find" in e.log.lower():
            pytest.skip("the compiler has no ThreadSanitizer runtime")
        raise


def _run_tsan(exe: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=0 exitcode=66 report_signal_unsafe=0"}
    return subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=300)


def test_tsan_correct_kernels_report_no_race(tsan_programs):
    r = _run_tsan(tsan_programs["clean"])
    assert "ThreadSanitizer" not in r.stderr, r.stderr[:3000]
    assert r.returncode == 0 and r.stdout.strip() == "OK", (r.returncode, r.stdout, r.stderr[:2000])


def test_tsan_reports_a_missing_barrier(tsan_programs):
    r = _run_tsan(tsan_programs["no_barrier"])
    assert "WARNING: ThreadSanitizer: data race" in r.stderr
    assert "hfsti_test_stencil" in r.stderr
    assert r.returncode == 66


def test_asan_reports_shared_memory_overflow():
    flags = ("-O1", "-g", "-fsanitize=address", *EMU, "-DHFSTI_TEST_SMEM_OVERFLOW")
    try:
        exe = _hostbuild.build(
            "emu_race_asan", [RACE], kind="executable", include_dirs=[INCLUDE], flags=flags
        )
    except _hostbuild.HostBuildError as e:
        if "asan" in e.log.lower() and "cannot find" in e.log.lower():
            pytest.skip("the compiler has no AddressSanitizer runtime")
        raise
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0"}
    r = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=300)
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in r.stderr, r.stderr[-2000:]
    assert "hfsti_test_stencil" in r.stderr
    assert r.returncode != 0


# ---- the same sources are valid CUDA
NVCC = shutil.which("nvcc") or (
    "/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None
)


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize(
    ("source", "archs"), [(KERNELS, (80, 90)), (RACE, (90,))], ids=["emu_kernels", "emu_race"]
)
def test_nvcc_compiles_sources(source, archs, tmp_path):
    """Valid CUDA, warning-free (host compiler -Wall too)."""
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    cmd = [NVCC, "-std=c++17", *gencode, f"-I{INCLUDE}", "-Xcompiler", "-Wall", "-c",
           str(source), "-o", str(tmp_path / "k.o")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warning" not in r.stderr.lower(), r.stderr[-3000:]


def test_emulator_build_is_warning_free():
    cmd = [_hostbuild.compiler(), "-std=c++20", "-O1", "-Wall", "-Wextra", "-fsyntax-only",
           *EMU, f"-I{INCLUDE}", "-x", "c++", str(KERNELS), str(RACE)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize("source", [KERNELS, RACE], ids=lambda p: p.name)
def test_nvrtc_compiles_sources(source):
    """The CuPy path's compiler: device code only, no standard headers (hfsti/dtype.h too)."""
    nvrtc = pytest.importorskip("hfsti_kernels.cuda.nvrtc")
    names = ["hfsti_test_block_sum<hfsti::half_t>", "hfsti_test_narrow<hfsti::bf16_t>"]
    names = names if source == KERNELS else ["hfsti_test_stencil"]
    try:
        ptx, lowered = nvrtc.compile_file(source, names=names)
    except nvrtc.NvrtcError as e:
        if "needs cuda-bindings" in str(e):
            pytest.skip(str(e))
        raise
    assert set(lowered) == set(names)
    assert (b"shfl.sync.bfly" if source == KERNELS else b"bar.sync") in ptx
