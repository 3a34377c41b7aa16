"""Taichi peer numbers for MPM88 (issues 13 and 14), on Taichi's CPU backend (ti.cpu, default
thread count), with the kernels of mpm88.py and its 8192 particles on a 128^2 grid:

1. step time: one substep (clear grid, P2G, grid update, G2P) launched kernel by kernel from
   Python, and the same substep inside a compiled ti.graph of 500 substeps (per substep);
2. first-run JIT of an MPM88 graph of 500 substeps (ti.graph, as in Taichi's
   examples/graph/mpm88_graph.py): graph build + compile + first run, in a fresh process with
   Taichi's offline cache off (a true cold compile) and again with the cache warm.

    python bench/taichi_programs/mpm88_bench.py [--repeats N]

Every measurement that depends on a cold start runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRAPH_SUBSTEPS = 500


def build_graph(mpm88, substeps: int):
    """An MPM88 graph: the four substep kernels, appended `substeps` times."""
    ti = mpm88.ti
    args = {
        "x": ti.graph.Arg(ti.graph.ArgKind.NDARRAY, "x", dtype=ti.math.vec2, ndim=1),
        "v": ti.graph.Arg(ti.graph.ArgKind.NDARRAY, "v", dtype=ti.math.vec2, ndim=1),
        "C": ti.graph.Arg(ti.graph.ArgKind.NDARRAY, "C", dtype=ti.math.mat2, ndim=1),
        "J": ti.graph.Arg(ti.graph.ArgKind.NDARRAY, "J", dtype=ti.f32, ndim=1),
        "grid_v": ti.graph.Arg(ti.graph.ArgKind.NDARRAY, "grid_v", dtype=ti.math.vec2, ndim=2),
        "grid_m": ti.graph.Arg(ti.graph.ArgKind.NDARRAY, "grid_m", dtype=ti.f32, ndim=2),
    }
    x, v, C, J, grid_v, grid_m = args.values()
    builder = ti.graph.GraphBuilder()
    substep = builder.create_sequential()
    substep.dispatch(mpm88.clear_grid, grid_v, grid_m)
    substep.dispatch(mpm88.particle_to_grid, x, v, C, J, grid_v, grid_m)
    substep.dispatch(mpm88.update_grid, grid_v, grid_m)
    substep.dispatch(mpm88.grid_to_particle, x, v, C, J, grid_v)
    for _ in range(substeps):
        builder.append(substep)
    return builder.compile()


def fresh_state(mpm88):
    state = mpm88.make_state()
    mpm88.init_random(*state[:4])
    return dict(zip(["x", "v", "C", "J", "grid_v", "grid_m"], state))


def measure_jit() -> dict:
    """Child process: import (ti.init + kernel definitions), then graph build + compile + first
    run of GRAPH_SUBSTEPS substeps."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(HERE))
    import mpm88

    t1 = time.perf_counter()
    state = fresh_state(mpm88)
    mpm88.ti.sync()
    t2 = time.perf_counter()
    graph = build_graph(mpm88, GRAPH_SUBSTEPS)
    t3 = time.perf_counter()
    graph.run(state)
    mpm88.ti.sync()
    t4 = time.perf_counter()
    graph.run(state)  # for comparison: the same run once everything is compiled
    mpm88.ti.sync()
    t5 = time.perf_counter()
    return {"import_s": t1 - t0, "init_s": t2 - t1, "build_compile_s": t3 - t2, "first_run_s": t4 - t3,
            "second_run_s": t5 - t4}


def measure_steps(repeats: int) -> dict:
    """Child process: per-substep time from Python launches and from inside the graph."""
    sys.path.insert(0, str(HERE))
    import mpm88

    state = fresh_state(mpm88)
    arrays = list(state.values())
    for _ in range(20):  # compile and warm up
        mpm88.substep(*arrays)
    mpm88.ti.sync()
    launches = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(200):
            mpm88.substep(*arrays)
        mpm88.ti.sync()
        launches.append((time.perf_counter() - t0) / 200)
    graph = build_graph(mpm88, GRAPH_SUBSTEPS)
    graph.run(state)
    mpm88.ti.sync()
    in_graph = []
    for _ in range(max(1, repeats // 2)):
        t0 = time.perf_counter()
        graph.run(state)
        mpm88.ti.sync()
        in_graph.append((time.perf_counter() - t0) / GRAPH_SUBSTEPS)
    x = state["x"].to_numpy()
    return {"launch_s": statistics.median(launches), "graph_s": statistics.median(in_graph),
            "n_particles": mpm88.n_particles, "n_grid": mpm88.n_grid,
            "x_inside": bool(((x > 0) & (x < 1)).all())}


def child(what: str, env_extra: dict, repeats: int = 5) -> dict:
    env = dict(os.environ, ENABLE_TAICHI_HEADER_PRINT="0", **env_extra)
    proc = subprocess.run([sys.executable, __file__, "--child", what, "--repeats", str(repeats)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", choices=["jit", "steps"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "jit":
        print(json.dumps(measure_jit()))
        return
    if args.child == "steps":
        print(json.dumps(measure_steps(args.repeats)))
        return

    os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "0")  # no banner above the table
    import taichi

    load = os.getloadavg()
    steps = child("steps", {}, args.repeats)
    with tempfile.TemporaryDirectory() as cache:  # a private offline cache, empty at first
        cold = child("jit", {"TI_OFFLINE_CACHE": "0"})
        child("jit", {"TI_OFFLINE_CACHE": "1", "TI_OFFLINE_CACHE_FILE_PATH": cache})  # fill it
        warm = child("jit", {"TI_OFFLINE_CACHE": "1", "TI_OFFLINE_CACHE_FILE_PATH": cache})
    print(f"Taichi {'.'.join(map(str, taichi.__version__))}, ti.cpu, default threads ({os.cpu_count()} CPUs here); "
          f"MPM88 with {steps['n_particles']} particles, {steps['n_grid']}^2 grid; "
          f"load average before the run {load[0]:.1f}")
    print("| measurement | Taichi |")
    print("|---|---|")
    print(f"| step time, kernels launched from Python (ms/substep) | {steps['launch_s'] * 1e3:.3f} |")
    print(f"| step time, inside a {GRAPH_SUBSTEPS}-substep ti.graph (ms/substep) "
          f"| {steps['graph_s'] * 1e3:.3f} |")
    for label, r in (("offline cache off", cold), ("offline cache warm", warm)):
        print(f"| first run of a {GRAPH_SUBSTEPS}-substep graph, {label}: build + compile + "
              f"first run (s) | {r['build_compile_s'] + r['first_run_s']:.2f} "
              f"(build+compile {r['build_compile_s']:.2f}, first run {r['first_run_s']:.2f}, "
              f"second run {r['second_run_s']:.2f}; "
              f"before it: import+ti.init {r['import_s']:.2f}, init {r['init_s']:.2f}) |")
    if not steps["x_inside"]:
        print("WARNING: particles left the unit box (NaN or escaped): the timings are not valid")


if __name__ == "__main__":
    main()
