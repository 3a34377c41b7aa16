"""MPM88 step time and compile/first-run time: kiln beside Taichi, same program, same particles.

kiln runs examples/mpm88.py (the Taichi program of bench/taichi_programs/mpm88.py with `ti.`
renamed to `kl.`): a graph of `--substeps` substeps (clear grid, P2G, grid update, G2P) built
and saved to a .kiln file in one process, then loaded from the file in a fresh process and run
there. Taichi runs bench/taichi_programs/mpm88.py with the same substeps in a ti.graph (as its
examples/graph/mpm88_graph.py does). Both start from the same 8192 particles (numpy, seed 0) on
the 128^2 grid, and the table says how far apart their positions are after the first run.

Rows, per device (CPU always; CUDA when kiln finds a GPU, Taichi's CUDA when it is installed):
- step time: one substep, median over `--repeats` runs of the graph (after a warm-up run);
- compile: kiln's build + compile + save (kiln's compile cache off) / Taichi's graph build +
  compile (offline cache off); Taichi compiles the kernels during the first run, so the first
  run is a row too (kiln: load the file + first run, in the fresh process).

Every measurement runs in its own process, one after the other.

    python bench/mpm88_bench.py [--substeps N] [--repeats R] [--particles N]
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
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STATE = ("x", "v", "C", "J", "grid_v", "grid_m")


def initial_state(n: int, n_grid: int) -> dict[str, np.ndarray]:
    """The particles both sides start from: a blob at rest falling at unit speed (as
    init_random draws it), C = 0, J = 1, an empty grid."""
    rng = np.random.default_rng(0)
    return {"x": (rng.random((n, 2)) * 0.4 + 0.2).astype(np.float32),
            "v": np.tile(np.float32([0.0, -1.0]), (n, 1)), "C": np.zeros((n, 2, 2), np.float32),
            "J": np.ones(n, np.float32), "grid_v": np.zeros((n_grid, n_grid, 2), np.float32),
            "grid_m": np.zeros((n_grid, n_grid), np.float32)}


def step_times(run: Any, sync: Any, substeps: int, repeats: int) -> dict[str, float]:
    """Per substep, the median over `repeats` runs of the graph: wall-clock time, and the CPU
    time of the whole process (all its threads: on a machine shared with other work this is the
    figure that does not depend on how much of the CPUs the process got)."""
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        run()
        sync()
        wall.append((time.perf_counter() - w) / substeps)
        cpu.append((time.process_time() - c) / substeps)
    return {"step_s": statistics.median(wall), "step_cpu_s": statistics.median(cpu)}


# -- kiln ---------------------------------------------------------------------------------------
def kiln_build(path: str, substeps: int, device: str) -> dict[str, Any]:
    """Child: build the graph of `substeps` substeps and save it (cold: the compile cache is off)."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT / "examples"))
    import mpm88

    t1 = time.perf_counter()
    mpm88.build(substeps, ("cpu", "cuda") if device == "cuda" else ("cpu",)).save(path)
    return {"import_s": t1 - t0, "compile_s": time.perf_counter() - t1}


class DeviceBuffer:
    """A GPU copy of a numpy array through kiln's own driver binding (no PyTorch/CuPy needed)."""

    def __init__(self, a: np.ndarray) -> None:
        from kiln.runtime.cuda_driver import Device, check, driver

        Device.get(0).make_current()
        self.host = np.ascontiguousarray(a)
        self.drv, self.check = driver(), check
        self.ptr = int(check(self.drv.cuMemAlloc(max(1, self.host.nbytes)), "cuMemAlloc"))
        check(self.drv.cuMemcpyHtoD(self.ptr, self.host.ctypes.data, self.host.nbytes), "cuMemcpyHtoD")

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.host.shape, "typestr": self.host.dtype.str, "data": (self.ptr, False),
                "strides": None, "version": 3}

    def to_numpy(self) -> np.ndarray:
        out = np.empty_like(self.host)
        self.check(self.drv.cuMemcpyDtoH(out.ctypes.data, self.ptr, out.nbytes), "cuMemcpyDtoH")
        return out


def kiln_run(path: str, substeps: int, repeats: int, n: int, device: str) -> dict[str, Any]:
    """Child (a fresh process: the runtime only): load the file, first run, then step times."""
    t0 = time.perf_counter()
    import kiln as kl

    graph = kl.load_module(path, device=device).graphs["substeps"]
    host = initial_state(n, 128)
    if device == "cuda":
        from kiln.runtime.cuda_driver import check, driver

        state: dict[str, Any] = {k: DeviceBuffer(a) for k, a in host.items()}

        def sync() -> None:
            check(driver().cuCtxSynchronize(), "cuCtxSynchronize")
    else:
        state = host

        def sync() -> None:
            pass
    t1 = time.perf_counter()
    graph.run(state)
    sync()
    t2 = time.perf_counter()
    x_first = state["x"].to_numpy() if device == "cuda" else state["x"].copy()
    times = step_times(lambda: graph.run(state), sync, substeps, repeats)
    from kiln.runtime.threads import threads_in_use

    return {"load_s": t1 - t0, "first_run_s": t2 - t1, "x_first": x_first.tolist(), "threads": threads_in_use(),
            **times}


# -- Taichi -------------------------------------------------------------------------------------
def taichi_import(device: str, threads: str) -> Any:
    """bench/taichi_programs/mpm88.py, initialised for `device` (its ti.init says ti.cpu) and,
    unless `threads` is "default", that many CPU threads."""
    import taichi as ti

    real_init = ti.init
    options: dict[str, Any] = {} if threads == "default" else {"cpu_max_num_threads": int(threads)}
    ti.init = lambda *a, **k: real_init(arch=ti.cuda if device == "cuda" else ti.cpu, **options)
    sys.path.insert(0, str(HERE / "taichi_programs"))
    import mpm88

    if device == "cuda" and mpm88.ti.lang.impl.current_cfg().arch != ti.cuda:
        raise RuntimeError("Taichi fell back from CUDA to another arch")
    return mpm88


def taichi_run(substeps: int, repeats: int, n: int, device: str, threads: str) -> dict[str, Any]:
    """Child: Taichi's graph of `substeps` substeps; build + compile, first run, step times."""
    t0 = time.perf_counter()
    mpm88 = taichi_import(device, threads)
    from mpm88_bench import build_graph

    arrays = mpm88.make_state(n)
    for a, (k, h) in zip(arrays, initial_state(n, mpm88.n_grid).items()):
        a.from_numpy(h)
    state = dict(zip(STATE, arrays))
    mpm88.ti.sync()
    t1 = time.perf_counter()
    graph = build_graph(mpm88, substeps)
    t2 = time.perf_counter()
    graph.run(state)
    mpm88.ti.sync()
    t3 = time.perf_counter()
    x_first = state["x"].to_numpy()
    return {"load_s": t1 - t0, "compile_s": t2 - t1, "first_run_s": t3 - t2, "x_first": x_first.tolist(),
            **step_times(lambda: graph.run(state), mpm88.ti.sync, substeps, repeats)}


# -- parent -------------------------------------------------------------------------------------
def child(args: list[str], env_extra: dict[str, str]) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               ENABLE_TAICHI_HEADER_PRINT="0", **env_extra)
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env,
                          check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def measure(device: str, substeps: int, repeats: int, n: int, tmp: str) -> dict[str, dict[str, Any]]:
    """kiln: one build, then a run with the default threads and (CPU) one with 1 thread; Taichi
    the same two runs (each compiles afresh, offline cache off)."""
    path = os.path.join(tmp, f"mpm88_{device}.kiln")
    common = [str(substeps), str(repeats), str(n), device]
    threads = ["default", "1"] if device == "cpu" else ["default"]
    out: dict[str, dict[str, Any]] = {}
    built = child(["kiln-build", path, *common], {"KILN_CACHE": "0"})
    try:
        import taichi  # noqa: F401
        have_taichi = True
    except ImportError:
        have_taichi = False
    for t in threads:
        kiln_env = {} if t == "default" else {"KILN_NUM_THREADS": t}
        out[f"kiln {t}"] = built if "error" in built else built | child(["kiln-run", path, *common, t], kiln_env)
        out[f"taichi {t}"] = (child(["taichi", path, *common, t], {"TI_OFFLINE_CACHE": "0"}) if have_taichi
                              else {"error": "n/a (not installed)"})
    return out


def _cell(r: dict[str, Any], key: str, scale: float, fmt: str) -> str:
    if "error" in r:
        return r["error"] if r["error"].startswith("n/a") else f"failed: {r['error'][:80]}"
    return format(r[key] * scale, fmt) if key in r else "-"


def report(device: str, res: dict[str, dict[str, Any]], substeps: int) -> None:
    for t in ("default", "1"):
        k, ti = res.get(f"kiln {t}"), res.get(f"taichi {t}")
        if k is None or ti is None:
            continue
        label = "default threads" if t == "default" else f"{t} thread"
        used = f" ({k['threads']} in use at the end)" if device == "cpu" and "threads" in k else ""
        print(f"| {device}, {label}: step time, one substep in a {substeps}-substep graph, wall (ms) "
              f"| {_cell(k, 'step_s', 1e3, '.3f')}{used} | {_cell(ti, 'step_s', 1e3, '.3f')} |")
        if device == "cpu":
            print(f"| {device}, {label}: CPU time of the process per substep (ms) "
                  f"| {_cell(k, 'step_cpu_s', 1e3, '.3f')} | {_cell(ti, 'step_cpu_s', 1e3, '.3f')} |")
    k, ti = res["kiln default"], res["taichi default"]
    print(f"| {device}: compile the {substeps}-substep graph (kiln: build + compile + save; Taichi: build + "
          f"compile) (s) | {_cell(k, 'compile_s', 1, '.2f')} | {_cell(ti, 'compile_s', 1, '.2f')} |")
    print(f"| {device}: first run (kiln: load the file in a fresh process + first run) (s) "
          f"| {_cell(k, 'load_s', 1, '.2f')} + {_cell(k, 'first_run_s', 1, '.2f')} "
          f"| {_cell(ti, 'first_run_s', 1, '.2f')} |")
    if "x_first" in k and "x_first" in ti:
        diff = float(np.abs(np.asarray(k["x_first"]) - np.asarray(ti["x_first"])).max())
        print(f"| {device}: max abs difference of kiln's and Taichi's particle positions after the first run "
              f"| {diff:.1e} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--substeps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--particles", type=int, default=8192)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, path, substeps, repeats, n, device, *threads = args.child
        fn = {"kiln-build": lambda: kiln_build(path, int(substeps), device),
              "kiln-run": lambda: kiln_run(path, int(substeps), int(repeats), int(n), device),
              "taichi": lambda: taichi_run(int(substeps), int(repeats), int(n), device, threads[0])}[what]
        print(json.dumps(fn()))
        return
    os.environ["ENABLE_TAICHI_HEADER_PRINT"] = "0"
    sys.path.insert(0, str(ROOT))
    from kiln.runtime.cuda import cuda_available

    load = os.getloadavg()
    devices = ["cpu"] + (["cuda"] if cuda_available() is None else [])
    with tempfile.TemporaryDirectory() as tmp:
        results = {d: measure(d, args.substeps, args.repeats, args.particles, tmp) for d in devices}
    print(f"MPM88, {args.particles} particles, 128^2 grid, graphs of {args.substeps} substeps, step time the median "
          f"of {args.repeats} runs; {os.cpu_count()} CPUs, load average {load[0]:.1f} before the run, "
          f"{os.getloadavg()[0]:.1f} after")
    print("| measurement | kiln | Taichi |")
    print("|---|---|---|")
    for d in devices:
        report(d, results[d], args.substeps)
    if "cuda" not in devices:
        print(f"| cuda | n/a (no GPU: {cuda_available()}) | |")


if __name__ == "__main__":
    main()
