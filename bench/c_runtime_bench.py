"""The C runtime's per-run overhead beside the Python runtime's and Taichi's, in one run.

    python bench/c_runtime_bench.py [--quick]

Workload: bench/coldstart/chain_kiln.py's 10 tiny chained kernels on a 16-element float32
array, the graph of bench/run.py's dispatch row. Rows: libkiln (c/) from a C program
(bench/c_runtime_bench.c, built here with CMake and gcc), kiln's Python `CompiledGraph.run`, and
Taichi's `ti.graph` `CompiledGraph.run` from Python (the closest to Taichi's C API
`ti_launch_compute_graph` that can be measured without building Taichi's C runtime). Each: best of
5 rounds of the mean of REPS runs. Needs cmake and gcc; a peer that is missing prints
"not installed".
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import numpy as np
import run as suite  # bench/run.py: paths, caches, timing and table helpers


def build_c_driver(work: Path) -> Path:
    """libkiln (static) with CMake, then the C driver linked against it."""
    for tool in ("cmake", "gcc"):
        if shutil.which(tool) is None:
            raise suite.NotInstalled(tool)
    build = work / "build"
    subprocess.run(["cmake", "-S", str(suite.REPO / "c"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    "-DKILN_BUILD_SHARED=OFF"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    exe = work / "c_runtime_bench"
    subprocess.run(["gcc", "-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", f"-I{suite.REPO / 'c' / 'include'}",
                    str(BENCH / "c_runtime_bench.c"), str(build / "libkiln.a"), "-lm", "-ldl", "-lpthread",
                    "-o", str(exe)], check=True, capture_output=True)
    return exe


def c_row(path: Path, reps: int, work: Path) -> list[str]:
    try:
        exe = build_c_driver(work)
        out = subprocess.run([str(exe), str(path), str(reps)], check=True, capture_output=True, text=True).stdout
        fields = out.split()
        us, load_us, y0 = float(fields[3]), float(fields[1]), float(fields[5])
        ok = "ok" if np.isfinite(y0) and y0 > 0 else "WRONG"
        return ["libkiln: kiln_graph_run() from C", f"{us:.2f}", f"{us / 10:.3f}", ok,
                f"load {load_us / 1e3:.2f} ms; named array arg, all checks"]
    except Exception as e:  # noqa: BLE001
        return ["libkiln: kiln_graph_run() from C", suite.failure(e), "", "", ""]


def python_row(reps: int) -> tuple[list[str], Path | None]:
    try:
        suite.kiln()
        step = importlib.import_module("chain_kiln").build()
        path = suite.CACHE / "chain10_c.kiln"
        step.save(str(path))
        y = np.zeros(16, np.float32)
        feed = {"y": y}
        us = suite.best_mean_us(lambda: step.run(feed), reps)
        ok = "ok" if np.all(np.isfinite(y)) and y[0] > 0 else "WRONG"
        return ["kiln: CompiledGraph.run() from Python", f"{us:.2f}", f"{us / 10:.3f}", ok, "numpy array"], path
    except Exception as e:  # noqa: BLE001
        return ["kiln: CompiledGraph.run() from Python", suite.failure(e), "", "", ""], None


def taichi_row(reps: int) -> list[str]:
    label = "Taichi: ti.graph CompiledGraph.run() from Python"
    try:
        ti = suite.taichi()
        ks = importlib.import_module("chain_taichi").KERNELS
        sym = ti.graph.Arg(ti.graph.ArgKind.NDARRAY, "y", dtype=ti.f32, ndim=1)
        gb = ti.graph.GraphBuilder()
        for k in ks:
            gb.dispatch(k, sym)
        g = gb.compile()
        y = ti.ndarray(ti.f32, shape=16)
        feed = {"y": y}
        us = suite.best_mean_us(lambda: g.run(feed), reps)
        ti.sync()
        vals = y.to_numpy()
        ok = "ok" if np.all(np.isfinite(vals)) and vals[0] > 0 else "WRONG"
        return [label, f"{us:.2f}", f"{us / 10:.3f}", ok, "ti.ndarray arg, CPU backend"]
    except Exception as e:  # noqa: BLE001
        return [label, suite.failure(e), "", "", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    reps = 300 if args.quick else 2000
    print(suite.header())
    py, path = python_row(reps)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(c_row(path, reps * 10, Path(tmp)) if path else
                    ["libkiln: kiln_graph_run() from C", "n/a (no file: the Python compile failed)", "", "", ""])
    rows += [py, taichi_row(reps)]
    print(f"### C runtime: per-run overhead, 10 chained kernels on 16 float32\n\n"
          f"best of 5 rounds of the mean of {reps} runs ({reps * 10} for C).\n")
    print(suite.table(["runtime", "us per run", "us per kernel", "result", "notes"], rows))


if __name__ == "__main__":
    main()
