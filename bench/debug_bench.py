"""What debug mode costs: release vs debug vs numpy, side by side in one run (docs/debug.md).

    python bench/debug_bench.py [--quick] [--threads N]

Rows: saxpy (y = a*x + y, bandwidth bound) and a 5-point stencil (2-D, neighbour loads) at a
few sizes. "release (before)" is the same kernel compiled from the plain decorator in a fresh
`kl.Module`: release code is unchanged by debug mode (no check is emitted unless debug mode is
on), so the release column is the speed of kiln without this feature. Times are the median of
repeated runs of the compiled kernel (not the first call, which compiles).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kiln as kl

F32_1 = kl.ndarray(kl.f32, ndim=1)
F32_2 = kl.ndarray(kl.f32, ndim=2)


@kl.kernel
def saxpy(a: kl.f32, x: F32_1, y: F32_1):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def stencil(u: F32_2, out: F32_2):
    for i, j in kl.ndrange((1, u.shape[0] - 1), (1, u.shape[1] - 1)):
        out[i, j] = 0.25 * (u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1]) - u[i, j]


def _time(fn: Callable[[], object], repeat: int) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _compiled(kernel, types, debug: bool):
    m = kl.Module()
    m.add_kernel(kernel, *types, name="k")
    return m.compile(debug=debug).kernels["k"]


def _np_stencil(u: np.ndarray, out: np.ndarray) -> None:
    out[1:-1, 1:-1] = np.float32(0.25) * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:]) - u[1:-1, 1:-1]


def _saxpy_row(n: int, release, debug, repeat: int) -> tuple[str, float, float, float]:
    x = np.random.rand(n).astype(np.float32)
    y = np.random.rand(n).astype(np.float32)
    a = np.float32(2.0)

    def np_saxpy() -> None:
        y[:] = a * x + y

    return (f"saxpy n={n}", _time(lambda: release(2.0, x, y), repeat), _time(lambda: debug(2.0, x, y), repeat),
            _time(np_saxpy, repeat))


def _stencil_row(n: int, release, debug, repeat: int) -> tuple[str, float, float, float]:
    u = np.random.rand(n, n).astype(np.float32)
    o = np.zeros_like(u)
    return (f"stencil {n}x{n}", _time(lambda: release(u, o), repeat), _time(lambda: debug(u, o), repeat),
            _time(lambda: _np_stencil(u, o), repeat))


def rows(quick: bool) -> list[tuple[str, float, float, float]]:
    repeat = 5 if quick else 30
    types = (kl.f32, F32_1, F32_1)
    rel, dbg = _compiled(saxpy, types, False), _compiled(saxpy, types, True)
    out = [_saxpy_row(n, rel, dbg, repeat) for n in ((1 << 20,) if quick else (1 << 16, 1 << 20, 1 << 24))]
    rel, dbg = _compiled(stencil, (F32_2, F32_2), False), _compiled(stencil, (F32_2, F32_2), True)
    out += [_stencil_row(n, rel, dbg, repeat) for n in ((1024,) if quick else (256, 1024, 4096))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one size per kernel, fewer repeats")
    ap.add_argument("--threads", type=int, default=0, help="kiln CPU threads (default: all)")
    args = ap.parse_args()
    if args.threads:
        kl.set_num_threads(args.threads)
    print(f"kiln threads: {kl.get_num_threads()}")
    print("| kernel | kiln release (ms) | kiln debug (ms) | debug / release | numpy (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name, rel, dbg, ref in rows(args.quick):
        print(f"| {name} | {1e3 * rel:.3f} | {1e3 * dbg:.3f} | {dbg / rel:.2f}x | {1e3 * ref:.3f} |")


if __name__ == "__main__":
    main()
