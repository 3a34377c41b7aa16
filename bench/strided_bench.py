"""Strided inputs: kiln, numpy and Numba side by side on views, in one run.

    python bench/strided_bench.py [--quick]
    python bench/strided_bench.py --ab OLD_TREE [--rounds N]

The first form prints one table: saxpy with x = X[::2] (every other element of a 2*2**24 float32
array) and with both x and y such views, and the 5-point stencil reading a transposed 4096x4096
float32 grid (Fortran order: the inner loop walks a column), each through kiln (strided, in place),
kiln after np.ascontiguousarray (what kiln required before arrays carried strides), numpy and
Numba (prange, which compiles a layout-'A' specialisation for views).

`--ab OLD_TREE` measures whether the contiguous speed held: it runs `bench/run.py --quick --only
bandwidth` and `--only reduction` of OLD_TREE (a checkout of the tree before the change, e.g.
`git archive main | tar -x -C /tmp/base`) and of this tree alternately, N rounds, and prints
every kiln row of every round, so both trees meet the same machine load. On a busy machine the
medians of those rows swing by 2x; each round therefore also times the same kiln kernels
(bench/kernels_kiln.py: saxpy, stencil, sum, contiguous inputs as in run.py) in a child process
per tree and prints the MINIMUM of 40 calls on 1 and on all threads, the least disturbed number,
and the minimum time per call of saxpy on 2**14 elements (in cache: what the call and the loop's
checks cost).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
if "--child-min" not in sys.argv:     # a child of --ab imports the kiln of its PYTHONPATH
    sys.path.insert(0, str(BENCH.parent))
os.environ.setdefault("NUMBA_CACHE_DIR", str(BENCH / ".cache" / "numba"))


def median_ms(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        ts.append(time.perf_counter_ns() - t0)
    return statistics.median(ts) / 1e6


def bench_strided(quick: bool) -> str:
    import kernels_kiln as kk
    reps = 5 if quick else 10
    n, side = 1 << 24, 4096
    rng = np.random.default_rng(0)
    xs = rng.random(2 * n, dtype=np.float32)
    ys0 = rng.random(2 * n, dtype=np.float32)
    a = np.float32(2.0)
    grid_c = rng.random((side, side), dtype=np.float32)
    grid = grid_c.T                                    # a transposed view: Fortran order
    out = np.zeros((side, side), np.float32)
    ref_st = np.zeros_like(out)
    ref_st[1:-1, 1:-1] = np.float32(0.2) * (grid[1:-1, 1:-1] + grid[:-2, 1:-1] + grid[2:, 1:-1]
                                            + grid[1:-1, :-2] + grid[1:-1, 2:])
    cases = {   # name -> (x, y)
        "saxpy, x[::2]": (xs[::2], ys0[:n].copy()),
        "saxpy, x[::2] and y[::2]": (xs[::2], ys0.copy()[::2]),
    }
    rows: list[list[str]] = []

    def cell(fn, check, nbytes: int) -> str:
        try:
            fn()
            ok = check()
            ms = median_ms(fn, reps)
            return f"{nbytes / ms / 1e6:.1f} GB/s ({ms:.1f} ms){'' if ok else ' WRONG'}"
        except Exception as e:  # noqa: BLE001
            return f"n/a ({type(e).__name__}: {str(e)[:60]})"

    nb = None
    with contextlib.suppress(ImportError):    # numba not installed: its cells say n/a
        import kernels_numba as nb
    impls = {
        "kiln (strided, in place)": lambda x, y: (lambda: kk.saxpy(a, x, y)),
        "kiln after np.ascontiguousarray(x)": lambda x, y: (lambda: kk.saxpy(a, np.ascontiguousarray(x), y)),
        "numpy y += a * x": lambda x, y: (lambda: y.__iadd__(a * x)),
        "Numba prange": lambda x, y: (lambda: nb.saxpy_par(a, x, y)),
    }
    for label, (x, y) in cases.items():
        y0 = y.copy()
        row = [label]
        for name, make in impls.items():
            if name.startswith("kiln after") and not y.flags.c_contiguous:
                row.append("")          # y is a view too: a copy would not write the caller's y
                continue
            y[:] = y0
            fn = make(x, y)
            fn()
            ok = np.allclose(y, a * x + y0, rtol=1e-5)
            row.append(cell(fn, lambda ok=ok: ok, 12 * n))
        rows.append(row)
    st_impls = {
        "kiln (strided, in place)": lambda: kk.stencil(grid, out),
        "kiln after np.ascontiguousarray(x)": lambda: kk.stencil(np.ascontiguousarray(grid), out),
        "numpy y += a * x": lambda: out.__setitem__((slice(1, -1), slice(1, -1)), np.float32(0.2) * (
            grid[1:-1, 1:-1] + grid[:-2, 1:-1] + grid[2:, 1:-1] + grid[1:-1, :-2] + grid[1:-1, 2:])),
        "Numba prange": lambda: nb.stencil_par(grid, out),
    }
    row = ["stencil, input transposed (grid.T)"]
    for fn in st_impls.values():
        out[:] = 0
        row.append(cell(fn, lambda: np.allclose(out, ref_st, rtol=1e-5, atol=1e-6), 8 * side * side))
    rows.append(row)
    heads = ["case", "kiln (strided, in place)", "kiln after a contiguous copy", "numpy", "Numba prange"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return (f"### Strided inputs: GB/s (time per call), median of {reps} runs after warm-up\n\n"
            "Counted bytes as in the bandwidth table (saxpy 12 B/element, stencil 8 B/element); a strided "
            "read still pulls whole cache lines, so a view of every other element moves twice the "
            "counted bytes of x.\n\n" + "\n".join(lines))


def child_min() -> str:
    """Minimum ms of 40 calls of saxpy, stencil and sum (contiguous), 1 thread and all threads,
    with the kiln this process imports."""
    import kernels_kiln as kk

    import kiln as kl
    n, side = 1 << 24, 4096
    rng = np.random.default_rng(0)
    x, y = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    grid, out, acc = rng.random((side, side), dtype=np.float32), np.zeros((side, side), np.float32), np.zeros(1)
    calls = {"saxpy": lambda: kk.saxpy(np.float32(2.0), x, y), "stencil": lambda: kk.stencil(grid, out),
             "sum": lambda: kk.sum_f64(x, acc)}
    xs, ys = x[:1 << 14].copy(), y[:1 << 14].copy()      # in cache: the per-call cost, not DRAM
    kl.set_num_threads(1)
    kk.saxpy(np.float32(2.0), xs, ys)
    best = min(_timed(lambda: [kk.saxpy(np.float32(2.0), xs, ys) for _ in range(100)]) for _ in range(40))
    cells = [f"saxpy 2**14 in cache@1t {best * 10:.2f} us/call"]
    for threads in (1, len(os.sched_getaffinity(0))):
        kl.set_num_threads(threads)
        for name, fn in calls.items():
            fn()
            best = min(_timed(fn) for _ in range(40))
            cells.append(f"{name}@{threads}t {best:.2f} ms")
    return ", ".join(cells)


def _timed(fn) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


def ab(old: Path, rounds: int) -> str:
    """Kiln rows of bench/run.py --quick for OLD_TREE and this tree, alternating, and the
    minimum kernel times of `child_min` per tree."""
    out = []
    for r in range(rounds):
        for tree in (old, BENCH.parent):
            env = {**os.environ, "PYTHONPATH": str(tree)}
            res = subprocess.run([sys.executable, __file__, "--child-min"], cwd=tree, env=env,
                                 capture_output=True, text=True, check=False)
            out.append(f"round {r + 1} {'old' if tree == old else 'new'} min: "
                       f"{res.stdout.strip() or res.stderr[-300:]}")
            for only in ("bandwidth", "reduction"):
                env = {**os.environ, "PYTHONPATH": str(tree)}
                res = subprocess.run([sys.executable, str(tree / "bench" / "run.py"), "--quick", "--only", only],
                                     cwd=tree, env=env, capture_output=True, text=True, check=False)
                for line in res.stdout.splitlines():
                    if re.match(r"\| kiln", line):
                        out.append(f"round {r + 1} {'old' if tree == old else 'new'} {only}: {line}")
                if res.returncode:
                    out.append(f"round {r + 1} {tree} {only}: exit {res.returncode}: {res.stderr[-300:]}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ab", type=Path, help="a checkout of the tree before the change")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child-min", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_min:
        print(child_min())
    else:
        print(ab(args.ab.resolve(), args.rounds) if args.ab else bench_strided(args.quick))


if __name__ == "__main__":
    main()
