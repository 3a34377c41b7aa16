# mypy: disable-error-code="valid-type"
# (kernel array annotations are calls, which mypy rejects: kiln/mypy_plugin.py explains)
"""`kiln bench`: a quick look at this machine: dispatch overhead and saxpy bandwidth beside numpy
and a parallel memory-copy anchor. bench/run.py compares against Taichi, Warp and Numba."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import kiln as kl


@kl.kernel
def _saxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)) -> None:
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def _tiny(x: kl.ndarray(kl.f32, ndim=1), k: kl.f32) -> None:
    for i in range(x.shape[0]):
        x[i] = x[i] * 0.5 + k


def _best(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def parallel_copy(src: np.ndarray, dst: np.ndarray, nthreads: int) -> None:
    """numpy releases the GIL while copying, so threads copying disjoint halves use all cores."""
    chunks = np.array_split(np.arange(src.size), nthreads)
    bounds = [(int(c[0]), int(c[-1]) + 1) for c in chunks if c.size]
    threads = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b])) for a, b in bounds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(quick: bool = False) -> int:
    n = 1 << (22 if quick else 24)
    rep = 5 if quick else 15
    nthreads = kl.get_num_threads()
    x = np.random.rand(n).astype(np.float32)
    y = np.random.rand(n).astype(np.float32)
    out = np.empty_like(x)
    saxpy_bytes = 3 * 4 * n   # read x, read y, write y
    rows = []
    t = _best(lambda: parallel_copy(x, out, nthreads), rep)
    rows.append(("parallel copy (anchor)", 2 * 4 * n / t))
    t = _best(lambda: np.add(np.float32(2.0) * x, y, out=y), rep)
    rows.append(("numpy 2*x+y", saxpy_bytes / t))
    _saxpy(2.0, x, y)
    t = _best(lambda: _saxpy(2.0, x, y), rep)
    rows.append((f"kiln saxpy direct call ({nthreads} threads)", saxpy_bytes / t))
    xa = kl.Arg("x", kl.ndarray(kl.f32, ndim=1))
    ya = kl.Arg("y", kl.ndarray(kl.f32, ndim=1))
    g = kl.GraphBuilder()
    g.dispatch(_saxpy, 2.0, xa, ya)
    step = g.compile()
    t = _best(lambda: step.run({"x": x, "y": y}), rep)
    rows.append(("kiln saxpy graph run", saxpy_bytes / t))
    print(f"saxpy on {n} float32, {os.cpu_count()} cores, {nthreads} kiln threads (GB/s, median of {rep})")
    for name, bw in rows:
        print(f"  {name:40s} {bw / 1e9:8.1f} GB/s")
    small = np.random.rand(16).astype(np.float32)
    sa = kl.Arg("x", kl.ndarray(kl.f32, ndim=1))
    g = kl.GraphBuilder()
    for k in range(10):
        g.dispatch(_tiny, sa, float(k))
    ten = g.compile()
    args = {"x": small}
    for _ in range(1000):
        ten.run(args)
    best = min(_time_loop(ten.run, args, 20000 if not quick else 2000) for _ in range(5))
    print(f"10 tiny kernels in one graph: {1e6 * best:.2f} us per run ({1e5 * best:.2f} us per kernel)")
    return 0


def _time_loop(fn: Callable[[dict[str, Any]], None], args: dict[str, Any], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn(args)
    return (time.perf_counter() - t) / n
