"""GPU benchmark for kiln's cuda target (one run prints one table; needs a GPU, cuda-bindings, torch).

    PYTHONPATH=. python3 bench/gpu_bench.py [--quick] [--json out.json]

Rows:
- a math-heavy row: `sin(x) * exp(-y * y)` over 2^26 f32 (libdevice) beside PyTorch;
- reductions: sum (one element), sum + sum of squares (two), max, beside torch;
- saxpy / 5-point stencil effective bandwidth (bytes a perfect kernel moves / time) beside a
  device-to-device copy (torch `copy_`, the anchor) and the same expression in PyTorch;
- a graph of 100 tiny kernels: kiln replaying its CUDA graph (wall clock per run() / 100, and GPU
  time per kernel from events), kiln plain launches, PyTorch eager, PyTorch CUDA graph replay;
- loading a saved file in a fresh process to the first result (cubin vs PTX only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import kiln as kl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@kl.kernel
def saxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def stencil(u: kl.ndarray(kl.f32, ndim=2), v: kl.ndarray(kl.f32, ndim=2)):
    for i, j in kl.ndrange((1, u.shape[0] - 1), (1, u.shape[1] - 1)):
        v[i, j] = 0.25 * (u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1]) - u[i, j]


@kl.kernel
def ksum(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]


@kl.kernel
def ksum_sq(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]
        out[1] += x[i] * x[i]


@kl.kernel
def kmax(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        kl.atomic_max(out[0], x[i])


@kl.kernel
def kmin(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        kl.atomic_min(out[0], x[i])


@kl.kernel
def kmoments(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f32, ndim=1)):
    # a few elements: count, sum, sum of squares, sum of cubes in one pass
    for i in range(x.shape[0]):
        v = x[i]
        out[0] += 1.0
        out[1] += v
        out[2] += v * v
        out[3] += v * v * v


@kl.kernel
def gauss_wave(x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1), o: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        o[i] = kl.sin(x[i]) * kl.exp(-y[i] * y[i])


@kl.kernel
def tiny(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = y[i] + a * x[i]


_SLEEP_CYCLES_PER_S: list[float] = []


def _hold_stream(torch, seconds: float) -> None:
    """Keep the current stream busy for about `seconds` (torch.cuda._sleep spins on the GPU clock)."""
    if not _SLEEP_CYCLES_PER_S:
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        torch.cuda._sleep(10_000_000)
        e1.record()
        torch.cuda.synchronize()
        _SLEEP_CYCLES_PER_S.append(10_000_000 / (e0.elapsed_time(e1) / 1e3))
    torch.cuda._sleep(int(_SLEEP_CYCLES_PER_S[0] * seconds))


def gpu_time(torch, fn, reps: int, warm: int = 3) -> float:
    """Mean GPU seconds per call on the current stream, by CUDA events, with the calls queued
    back to back: a sleep kernel holds the stream while the host enqueues all `reps` calls, so
    the time between the events is the kernels' own (what "% of copy" compares) and not the
    host's call overhead (small arrays: a 17 us kernel behind a 40 us Python call would read as
    host speed). Host cost per call has its own rows (the graph and dispatch rows)."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    one = time.perf_counter() - t0      # GPU + host: an upper bound on the host's enqueue time
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    _hold_stream(torch, 1.5 * one * reps + 2e-3)
    e0.record()
    for _ in range(reps):
        fn()
    e1.record()
    torch.cuda.synchronize()
    return e0.elapsed_time(e1) / 1e3 / reps


def wall_time(torch, fn, reps: int, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


LOAD_CHILD = r"""
import sys, time
t_start = time.perf_counter()
import numpy as np
from kiln.runtime import cuda
from cuda.bindings import driver
t_imports = time.perf_counter()
cuda.driver(); cuda._Device.get(0)
t_ctx = time.perf_counter()
m = cuda.load_module(sys.argv[1])
k = m.kernels["saxpy"]
x = np.ones(1024, np.float32); y = np.zeros(1024, np.float32)
k(2.0, x, y)                      # numpy in/out: copies and synchronizes
t_first = time.perf_counter()
assert y[0] == 2.0, y[:4]
print(repr({"kind": m.image_kind(), "imports_ms": (t_imports - t_start) * 1e3,
            "ctx_ms": (t_ctx - t_imports) * 1e3, "load_run_ms": (t_first - t_ctx) * 1e3,
            "after_imports_ms": (t_first - t_imports) * 1e3}))
"""


def reduction_rows(torch, cm, x, n: int, reps: int, bw_copy: float, res: dict) -> list[tuple[str, str, str]]:
    """Sum with other grid sizes (tuning probe), sum + sum of squares into two elements, max."""
    from kiln.runtime import cuda as kcuda
    stream = torch.cuda.current_stream()
    acc = torch.zeros(2, device="cuda")
    rows = []

    def row(label: str, t: float, key: str, note: str = "") -> tuple[str, str, str]:
        bw = n * 4 / t / 1e9
        res[key] = bw
        return (label, f"{bw:,.0f} GB/s", f"{100 * bw / bw_copy:.0f}% of copy{note}")

    ks = cm.kernels["sum"]
    for w in (2, 4):
        kcuda.GRID_WAVES = w
        ks._plain.clear()
        rows.append(row(f"  sum kiln, grid of {w} waves", gpu_time(torch, lambda: ks(x, acc, stream=stream), reps),
                        f"sum_kiln_{w}waves_GBs"))
    kcuda.GRID_WAVES = None
    ks._plain.clear()
    ks_nv = compiled_with(ksum, VECTOR_WIDTH_REDUCTIONS=1)
    rows.append(row("  sum kiln, no vector access", gpu_time(torch, lambda: ks_nv(x, acc, stream=stream), reps),
                    "sum_kiln_novec_GBs"))
    k2 = cm.kernels["sum_sq"]
    acc.zero_()
    k2(x, acc, stream=stream)
    torch.cuda.synchronize()
    assert abs(acc[1].item() - (x.double() ** 2).sum().item()) < 1e-3 * n, "sum of squares mismatch"
    rows.append(row("sum + sum of squares kiln (2 elements)", gpu_time(torch, lambda: k2(x, acc, stream=stream), reps),
                    "sum_sq_kiln_GBs"))
    rows.append(row("  torch (x.sum(), linalg.vector_norm(x))",
                    gpu_time(torch, lambda: (torch.sum(x), torch.linalg.vector_norm(x)), reps), "sum_sq_torch_GBs",
                    "; sum + norm, two passes"))
    # x is in [0, 1): the accumulator starts below (max) or above (min) every element
    for op, kext, start, tfn in (("max", cm.kernels["max"], -1.0, torch.max), ("min", cm.kernels["min"], 2.0, torch.min)):
        acc.fill_(start)
        kext(x, acc, stream=stream)
        torch.cuda.synchronize()
        assert acc[0].item() == tfn(x).item(), f"{op} mismatch"
        rows.append(row(f"{op} reduction kiln (kl.atomic_{op})",
                        gpu_time(torch, lambda k=kext: k(x, acc, stream=stream), reps), f"{op}_kiln_GBs"))
        rows.append(row(f"  torch.{op}", gpu_time(torch, lambda tfn=tfn: tfn(x), reps), f"{op}_torch_GBs"))
    k4 = cm.kernels["moments"]
    acc4 = torch.zeros(4, device="cuda")
    k4(x, acc4, stream=stream)
    torch.cuda.synchronize()
    assert abs(acc4[0].item() - n) <= 1e-6 * n, "moments count mismatch"   # f32 partial counts
    rows.append(row("4 moments kiln (4 elements, one pass)", gpu_time(torch, lambda: k4(x, acc4, stream=stream), reps),
                    "moments_kiln_GBs"))
    kcuda.GRID_WAVES = 4
    k4._plain.clear()
    rows.append(row("  4 moments kiln, grid of 4 waves", gpu_time(torch, lambda: k4(x, acc4, stream=stream), reps),
                    "moments_kiln_4waves_GBs"))
    kcuda.GRID_WAVES = None
    k4._plain.clear()
    rows.append(row("  torch (numel, sum, x*x sum, x**3 sum)",
                    gpu_time(torch, lambda: (torch.sum(x), torch.sum(x * x), torch.sum(x * x * x)), reps),
                    "moments_torch_GBs", "; three sums, five passes"))
    return rows


def compiled_with(kernel, **knobs):
    """`kernel` compiled for CUDA with kiln.passes.plan_parallel's knobs set (COARSEN_FACTOR=1:
    not coarsened; VECTOR_WIDTH=1 or VECTOR_WIDTH_REDUCTIONS=1: no vector access), for the
    tuning-probe rows."""
    import importlib
    plan_parallel = importlib.import_module("kiln.passes.plan_parallel")   # the module, not the pass
    saved = {k: getattr(plan_parallel, k) for k in knobs}
    try:
        for k, v in knobs.items():
            setattr(plan_parallel, k, v)
        m = kl.Module(targets=["cuda"])
        m.add_kernel(kernel, name="k")
        return m.compile().kernels["k"]
    finally:
        for k, v in saved.items():
            setattr(plan_parallel, k, v)


def stencil_coarsen_rows(torch, u, v, side: int, reps: int, bw_copy: float, res: dict) -> list[tuple[str, str, str]]:
    """The stencil compiled with other coarsening factors (1 = not coarsened, one thread per
    element) and without vector access."""
    stream = torch.cuda.current_stream()
    rows = []
    variants = [(f"cf{f}", "not coarsened" if f == 1 else f"{f} rows per thread", {"COARSEN_FACTOR": f})
                for f in (1, 8, 16)]
    from kiln.passes.plan_parallel import COARSEN_FACTOR
    variants.append(("novec", f"{COARSEN_FACTOR} rows, no vector access", {"VECTOR_WIDTH": 1}))
    for key, label, knobs in variants:
        k = compiled_with(stencil, **knobs)
        bw = 2 * side * side * 4 / gpu_time(torch, lambda k=k: k(u, v, stream=stream), reps) / 1e9
        res[f"stencil_kiln_{key}_GBs"] = bw
        rows.append((f"  stencil kiln, {label}", f"{bw:,.0f} GB/s", f"{100 * bw / bw_copy:.0f}% of copy"))
    return rows


def math_rows(torch, kmath, n: int, reps: int, bw_copy: float, res: dict,
              with_compile: bool = False) -> list[tuple[str, str, str]]:
    """`o = sin(x) * exp(-y * y)` over n f32: kiln (libdevice, and fast_math) beside PyTorch,
    as bandwidth (12 bytes per element) so the copy anchor applies."""
    from kiln.codegen import nvptx
    from kiln.codegen.libdevice import find_libdevice
    x = torch.rand(n, device="cuda") * 20 - 10
    y = torch.rand(n, device="cuda") * 4 - 2
    o = torch.empty(n, device="cuda")
    stream = torch.cuda.current_stream()
    ref = torch.sin(x) * torch.exp(-y * y)
    kmath(x, y, o, stream=stream)
    torch.cuda.synchronize()
    assert torch.allclose(o, ref, atol=1e-5, rtol=1e-5), "math row mismatch"
    times = {"kiln": gpu_time(torch, lambda: kmath(x, y, o, stream=stream), reps),
             "torch": gpu_time(torch, lambda: torch.mul(torch.sin(x), torch.exp(-y * y), out=o), reps)}
    saved = nvptx.build_ptx
    try:   # the compile option is not wired to kl.Module yet: the codegen API takes it
        import functools
        nvptx.build_ptx = functools.partial(saved, fast_math=True)
        mf = kl.Module(targets=["cuda"])
        mf.add_kernel(gauss_wave, name="math")
        kfast = mf.compile().kernels["math"]
    finally:
        nvptx.build_ptx = saved
    times["kiln fast_math"] = gpu_time(torch, lambda: kfast(x, y, o, stream=stream), reps)
    if with_compile:
        try:
            tc = torch.compile(lambda a, b: torch.sin(a) * torch.exp(-b * b))
            tc(x, y)
            times["torch.compile"] = gpu_time(torch, lambda: tc(x, y), reps)
        except Exception as e:  # noqa: BLE001 - no triton on the machine
            print("torch.compile unavailable:", e)
    rows = []
    for name, t in times.items():
        bw = 3 * n * 4 / t / 1e9
        res[f"math_{name.replace(' ', '_').replace('.', '_')}_GBs"] = bw
        note = f"{100 * bw / bw_copy:.0f}% of copy, {t * 1e6:.0f} us"
        if name == "kiln":
            note += f" (math: {'libdevice' if find_libdevice() else 'builtin f64'})"
        rows.append((f"sin(x)*exp(-y*y) {name}", f"{bw:,.0f} GB/s", note))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="")
    ap.add_argument("--torch-compile", action="store_true", help="add torch.compile to the math row (slow start)")
    opts = ap.parse_args()
    import torch

    rows: list[tuple[str, str, str]] = []
    res: dict[str, float | str] = {}
    try:
        measure_all(torch, opts, rows, res)
    finally:   # what was measured before a failure still prints
        print_table(torch, rows)
        if opts.json:
            with open(opts.json, "w") as f:
                json.dump(res, f, indent=1)


def print_table(torch, rows: list[tuple[str, str, str]]) -> None:
    if not rows:
        return
    w = max(len(r[0]) for r in rows)
    print(f"\nkiln cuda benchmark on {torch.cuda.get_device_name()} (torch {torch.__version__})")
    print(f"{'case'.ljust(w)}  {'result':>18}  note")
    print("-" * (w + 40))
    for a, b, c in rows:
        print(f"{a.ljust(w)}  {b:>18}  {c}")


def measure_all(torch, opts, rows: list[tuple[str, str, str]], res: dict) -> None:
    n = (1 << 24) if opts.quick else (1 << 26)
    reps = 10 if opts.quick else 30

    # ---------------------------------------------------------------- bandwidth
    mod = kl.Module(targets=["cuda"])
    mod.add_kernel(saxpy, name="saxpy")
    mod.add_kernel(stencil, name="stencil")
    mod.add_kernel(ksum, name="sum")
    mod.add_kernel(gauss_wave, name="math")
    mod.add_kernel(ksum_sq, name="sum_sq")
    mod.add_kernel(kmax, name="max")
    mod.add_kernel(kmin, name="min")
    mod.add_kernel(kmoments, name="moments")
    cm = mod.compile()
    ks, kst = cm.kernels["saxpy"], cm.kernels["stencil"]
    x = torch.rand(n, device="cuda")
    y = torch.rand(n, device="cuda")
    stream = torch.cuda.current_stream()
    t_copy = gpu_time(torch, lambda: y.copy_(x), reps)
    bw_copy = 2 * n * 4 / t_copy / 1e9
    t_k = gpu_time(torch, lambda: ks(1.0001, x, y, stream=stream), reps)
    t_t = gpu_time(torch, lambda: y.add_(x, alpha=1.0001), reps)
    bw_k, bw_t = 3 * n * 4 / t_k / 1e9, 3 * n * 4 / t_t / 1e9
    res.update(copy_GBs=bw_copy, saxpy_kiln_GBs=bw_k, saxpy_torch_GBs=bw_t)
    from kiln.runtime import cuda as kcuda
    waves = {}
    for w in (1, 4):              # tuning probe (default for 1-D loops: 16 waves)
        kcuda.GRID_WAVES = w
        ks._plain.clear()
        waves[w] = 3 * n * 4 / gpu_time(torch, lambda: ks(1.0001, x, y, stream=stream), reps) / 1e9
    kcuda.GRID_WAVES = None
    ks._plain.clear()
    res.update({f"saxpy_kiln_{w}waves_GBs": v for w, v in waves.items()})
    ks_nv = compiled_with(saxpy, VECTOR_WIDTH=1)
    waves["no vector access"] = 3 * n * 4 / gpu_time(torch, lambda: ks_nv(1.0001, x, y, stream=stream), reps) / 1e9
    rows += [("D2D copy (torch copy_, anchor)", f"{bw_copy:,.0f} GB/s", "100%"),
             ("saxpy kiln", f"{bw_k:,.0f} GB/s", f"{100 * bw_k / bw_copy:.0f}% of copy"),
             ("saxpy torch (y.add_(x, alpha))", f"{bw_t:,.0f} GB/s", f"{100 * bw_t / bw_copy:.0f}% of copy")]
    rows += [(f"  saxpy kiln, {w if isinstance(w, str) else f'grid of {w} waves (GRID_WAVES)'}", f"{v:,.0f} GB/s",
              f"{100 * v / bw_copy:.0f}% of copy") for w, v in waves.items()]
    acc = torch.zeros(1, device="cuda")
    t_k = gpu_time(torch, lambda: cm.kernels["sum"](x, acc, stream=stream), reps)
    t_t = gpu_time(torch, lambda: torch.sum(x), reps)
    acc.zero_()
    cm.kernels["sum"](x, acc, stream=stream)
    torch.cuda.synchronize()
    assert abs(acc.item() - x.double().sum().item()) < 1e-3 * n, "sum mismatch"
    res.update(sum_kiln_GBs=n * 4 / t_k / 1e9, sum_torch_GBs=n * 4 / t_t / 1e9)
    rows += [("sum reduction kiln (out[0] += x[i])", f"{n * 4 / t_k / 1e9:,.0f} GB/s",
              f"{100 * n * 4 / t_k / 1e9 / bw_copy:.0f}% of copy; block tree + 1 atomic/block"),
             ("sum reduction torch.sum", f"{n * 4 / t_t / 1e9:,.0f} GB/s", f"{100 * n * 4 / t_t / 1e9 / bw_copy:.0f}% of copy")]
    rows += reduction_rows(torch, cm, x, n, reps, bw_copy, res)
    rows += math_rows(torch, cm.kernels["math"], n, reps, bw_copy, res, opts.torch_compile)
    side = 4096 if opts.quick else 8192
    u = torch.rand(side, side, device="cuda")
    v = torch.zeros(side, side, device="cuda")
    t_k = gpu_time(torch, lambda: kst(u, v, stream=stream), reps)
    swaves = {}
    for w in (4, 32):              # tuning probe (default for coarsened stencils: 16 waves)
        kcuda.GRID_WAVES = w
        kst._plain.clear()
        swaves[w] = gpu_time(torch, lambda: kst(u, v, stream=stream), reps)
    kcuda.GRID_WAVES = None
    kst._plain.clear()

    def torch_stencil():
        v[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:]) - u[1:-1, 1:-1]

    t_t = gpu_time(torch, torch_stencil, reps)
    ref = torch.zeros_like(v)
    ref[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:]) - u[1:-1, 1:-1]
    kst(u, v, stream=stream)
    torch.cuda.synchronize()
    assert torch.allclose(v, ref, atol=1e-5), "stencil mismatch"
    t_c: dict[str, float] = {}
    try:   # references: hand-written CUDA C stencils, through CuPy/NVRTC
        import cupy as cp
        src = r"""
        extern "C" __global__ void naive(const float* u, float* v, long n0, long n1) {
            long j = blockIdx.x * (long)blockDim.x + threadIdx.x + 1, i = blockIdx.y + 1;
            if (j < n1 - 1 && i < n0 - 1) { long c = i * n1 + j;
              v[c] = 0.25f * (u[c - n1] + u[c + n1] + u[c - 1] + u[c + 1]) - u[c]; } }
        extern "C" __global__ void restr(const float* __restrict__ u, float* __restrict__ v, long n0, long n1) {
            long j = blockIdx.x * (long)blockDim.x + threadIdx.x + 1, i = blockIdx.y + 1;
            if (j < n1 - 1 && i < n0 - 1) { long c = i * n1 + j;
              v[c] = 0.25f * (u[c - n1] + u[c + n1] + u[c - 1] + u[c + 1]) - u[c]; } }
        extern "C" __global__ void strip(const float* __restrict__ u, float* __restrict__ v, long n0, long n1) {
            long j = blockIdx.x * (long)blockDim.x + threadIdx.x + 1, i0 = blockIdx.y * 16 + 1;
            if (j >= n1 - 1) return;
            float up = u[(i0 - 1) * n1 + j], mid = u[i0 * n1 + j];
            for (long i = i0; i < i0 + 16 && i < n0 - 1; ++i) {
              long c = i * n1 + j; float dn = u[c + n1];
              v[c] = 0.25f * (up + dn + u[c - 1] + u[c + 1]) - mid; up = mid; mid = dn; } }
        """
        mod_c = cp.RawModule(code=src)
        cu, cv = cp.asarray(u), cp.asarray(v)
        nb = (side - 2 + 255) // 256
        for name, grid in (("naive", (nb, side - 2)), ("restr", (nb, side - 2)), ("strip", (nb, (side - 2 + 15) // 16))):
            kf = mod_c.get_function(name)
            t_c[name] = gpu_time(torch, lambda kf=kf, grid=grid: kf(grid, (256,), (cu, cv, cp.int64(side), cp.int64(side))),
                                 reps)
    except Exception as e:  # noqa: BLE001
        print("cupy reference stencils unavailable:", e)
    sb = 2 * side * side * 4
    bw_k, bw_t = sb / t_k / 1e9, sb / t_t / 1e9
    res.update(stencil_kiln_GBs=bw_k, stencil_torch_GBs=bw_t)
    from kiln.passes.plan_parallel import COARSEN_FACTOR
    rows += [(f"5-pt stencil kiln ({side}^2 f32)", f"{bw_k:,.0f} GB/s",
              f"{100 * bw_k / bw_copy:.0f}% of copy; coarsened, {COARSEN_FACTOR} rows per thread"),
             ("5-pt stencil torch (slices)", f"{bw_t:,.0f} GB/s", f"{100 * bw_t / bw_copy:.0f}% of copy")]
    rows += stencil_coarsen_rows(torch, u, v, side, reps, bw_copy, res)
    for w, tw in swaves.items():
        res[f"stencil_kiln_{w}waves_GBs"] = sb / tw / 1e9
        rows.append((f"  stencil kiln, grid of {w} waves", f"{sb / tw / 1e9:,.0f} GB/s",
                     f"{100 * sb / tw / 1e9 / bw_copy:.0f}% of copy"))
    for name, label in (("naive", "naive CUDA C, 1 thread/element"), ("restr", "CUDA C + __restrict__ (ld.nc)"),
                        ("strip", "CUDA C, 16-row register strips")):
        if name in t_c:
            bw = sb / t_c[name] / 1e9
            res[f"stencil_cuda_c_{name}_GBs"] = bw
            rows.append((f"5-pt stencil {label}", f"{bw:,.0f} GB/s", f"{100 * bw / bw_copy:.0f}% of copy"))
    x = y = u = v = ref = None   # free GPU memory before the next part

    # ---------------------------------------------------------------- 100 tiny kernels
    g = kl.GraphBuilder()
    xa, ya = kl.Arg("x", kl.ndarray(kl.f32, ndim=1)), kl.Arg("y", kl.ndarray(kl.f32, ndim=1))
    for i in range(100):
        g.dispatch(tiny, kl.Arg("a", kl.f32) if i % 2 else 0.5, xa, ya)
    gg = g.compile(targets=["cuda"])          # a kiln.runtime.cuda.CudaGraph
    xs = torch.ones(1024, device="cuda")
    ys = torch.zeros(1024, device="cuda")
    args = {"a": 1.0, "x": xs, "y": ys}
    wall_g = wall_time(torch, lambda: gg.run(args), 200) / 100
    gpu_g = gpu_time(torch, lambda: gg.run(args), 200) / 100
    wall_p = wall_time(torch, lambda: gg.run(args, use_graph=False), 50) / 100
    args2 = [{"a": float(k), "x": xs, "y": ys} for k in range(4)]
    it = iter(range(10**9))
    wall_s = wall_time(torch, lambda: gg.run(args2[next(it) % 4]), 100) / 100
    # every node takes its own scalar, all of them new in every run; then new array pointers too
    g_all = kl.GraphBuilder()
    for i in range(100):
        g_all.dispatch(tiny, kl.Arg(f"a{i}", kl.f32), xa, ya)
    gg_all = g_all.compile(targets=["cuda"])
    args_all = [{**{f"a{i}": float(k + i) for i in range(100)}, "x": xs, "y": ys} for k in range(4)]
    wall_all = wall_time(torch, lambda: gg_all.run(args_all[next(it) % 4]), 100) / 100
    gpu_all = gpu_time(torch, lambda: gg_all.run(args_all[next(it) % 4]), 100) / 100
    pairs = [(torch.ones(1024, device="cuda"), torch.zeros(1024, device="cuda")) for _ in range(4)]
    args_ptr = [{**args_all[k], "x": pairs[k][0], "y": pairs[k][1]} for k in range(4)]
    wall_ptr = wall_time(torch, lambda: gg_all.run(args_ptr[next(it) % 4]), 100) / 100

    def torch_eager():
        for i in range(100):
            ys.add_(xs, alpha=0.5 if i % 2 == 0 else 1.0)

    wall_te = wall_time(torch, torch_eager, 50) / 100
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        torch_eager()
    torch.cuda.current_stream().wait_stream(s)
    cg = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cg):
        torch_eager()
    wall_tg = wall_time(torch, cg.replay, 200) / 100
    gpu_tg = gpu_time(torch, cg.replay, 200) / 100
    res.update(graph_kiln_us=wall_g * 1e6, graph_kiln_gpu_us=gpu_g * 1e6, plain_kiln_us=wall_p * 1e6,
               graph_kiln_scalar_update_us=wall_s * 1e6, graph_kiln_all_scalars_us=wall_all * 1e6,
               graph_kiln_all_scalars_gpu_us=gpu_all * 1e6, graph_kiln_new_pointers_us=wall_ptr * 1e6,
               torch_eager_us=wall_te * 1e6, torch_graph_us=wall_tg * 1e6,
               torch_graph_gpu_us=gpu_tg * 1e6)
    rows += [("100-kernel graph, kiln CUDA graph replay", f"{wall_g * 1e6:.2f} us/kernel",
              f"GPU {gpu_g * 1e6:.2f} us/kernel (wall incl. run() arg checks)"),
             ("  same, a scalar changes every run", f"{wall_s * 1e6:.2f} us/kernel",
              "50 nodes read it; one copy of the argument blocks per run"),
             ("  every node's own scalar changes every run", f"{wall_all * 1e6:.2f} us/kernel",
              f"GPU {gpu_all * 1e6:.2f} us/kernel; 100 scalars, one copy"),
             ("  same, and new x/y arrays every run", f"{wall_ptr * 1e6:.2f} us/kernel", "no graph rebuild"),
             ("  kiln plain launches (use_graph=False)", f"{wall_p * 1e6:.2f} us/kernel", ""),
             ("  torch eager (100 x add_)", f"{wall_te * 1e6:.2f} us/kernel", ""),
             ("  torch.cuda.graphs replay", f"{wall_tg * 1e6:.2f} us/kernel", f"GPU {gpu_tg * 1e6:.2f} us/kernel")]

    # ---------------------------------------------------------------- load time
    with tempfile.TemporaryDirectory() as td:
        for label, archs in (("cubin", None), ("ptx only", [])):
            m = kl.Module(targets=["cuda"], cuda_archs=archs)
            m.add_kernel(saxpy, name="saxpy")
            p = os.path.join(td, f"{label.replace(' ', '_')}.kiln")
            m.compile().save(p)
            # CUDA_CACHE_DISABLE: measure the driver's PTX JIT, not its on-disk cache of an earlier run
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                       CUDA_CACHE_DISABLE="1")
            out = subprocess.run([sys.executable, "-c", LOAD_CHILD, p], capture_output=True, text=True, env=env,
                                 timeout=120, check=False)
            if out.returncode:
                rows.append((f"load {label}", "FAILED", out.stderr.strip().splitlines()[-1][:80]))
                continue
            r = eval(out.stdout.strip().splitlines()[-1])  # our own child's repr
            res[f"load_{label}_ms"] = r["load_run_ms"]
            res[f"load_{label}_ctx_ms"] = r["ctx_ms"]
            rows.append((f"load {label} -> first result ({r['kind']})", f"{r['load_run_ms']:.1f} ms",
                         f"+ cuInit/context {r['ctx_ms']:.0f} ms; imports {r['imports_ms']:.0f} ms"))



if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
