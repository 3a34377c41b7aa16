"""Compile time, kiln beside Taichi and Numba in one run (issue 14's compile-time goals).

Every number comes from fresh subprocesses, `--repeats` of them per cell. The first-call rows
report the FASTEST process's wall time (the one least disturbed by other load on a shared
machine), the median wall time, and the fastest CPU time (`time.process_time`, all threads of the
process: what a loaded machine distorts least); the mpm88 rows report medians. Cold rows
run with every disk cache off (kiln KILN_CACHE=0; Taichi's offline cache off, TI_OFFLINE_CACHE=0
/ ti.init(offline_cache=False); Numba njit without cache=True): that is each tool's first-run JIT.
The "second process" row turns each tool's disk cache on (kiln's compile cache, Taichi's offline
cache, Numba cache=True) in a private folder, warms it with one untimed process, then times a
fresh process's first call. Rows, in ONE table:

1. one small kernel (saxpy): first call (compile + run), cold; and in a second process with the
   disk cache;
2. the 10-kernel chain of bench/coldstart: kiln GraphBuilder.compile() + first run, Taichi
   ti.graph compile + first run, Numba 10 first calls;
3. Taichi's mpm88 graph with N substeps appended (4 dispatches each, N = 1/50/200/500): kiln
   (bench/kiln_programs/mpm88_scalar.py) vs Taichi (bench/taichi_programs/mpm88.py, the graph of
   mpm88_bench.py): graph build + compile + first run (Numba has no graphs);
4. the per-dispatch cost: least-squares slope over the mpm88 dispatch counts.

    PYTHONPATH=$PWD /work/venv/bin/python bench/compile_bench.py [--substeps 1 50 200 500] [--repeats 3]
    PYTHONPATH=$PWD /work/venv/bin/python bench/compile_bench.py --stages   # where kiln's time goes

`--stages` times kiln's compile stages by wrapping the driver's functions from outside (see
bench/NOTES_COMPILE.md); `STAGE_HOOKS` names kiln.driver's functions and must follow them when
they move (a hook whose target is gone is reported).
"""


import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DISPATCHES_PER_SUBSTEP = 4
#: particles in the mpm88 compile rows: compile time does not depend on it, and a small run keeps
#: the first run (which holds Taichi's JIT) from being drowned by execution time
MPM_PARTICLES = 1024


# ---------------------------------------------------------------------------------------------
# Children: each measures one thing in a fresh process and prints one JSON line
# ---------------------------------------------------------------------------------------------

def _clocks() -> tuple[float, float]:
    """(wall, CPU) seconds: the CPU time of this process (all its threads) is what a loaded
    machine distorts least, so the table reports it beside the wall time."""
    return time.perf_counter(), time.process_time()

def _kiln_saxpy():
    import kiln as kl

    @kl.kernel
    def saxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
        for i in range(x.shape[0]):
            y[i] = a * x[i] + y[i]

    return kl, saxpy


def child_kiln_saxpy_direct() -> dict:
    import numpy as np
    t0 = time.perf_counter()
    _kl, saxpy = _kiln_saxpy()
    x, y = np.ones(1024, np.float32), np.zeros(1024, np.float32)
    t1, c1 = _clocks()
    saxpy(2.0, x, y)
    t2, c2 = _clocks()
    saxpy(2.0, x, y)
    t3 = time.perf_counter()
    assert y[0] == 4.0
    return {"import_s": t1 - t0, "compile_s": t2 - t1 - (t3 - t2), "first_s": t2 - t1, "first_cpu_s": c2 - c1}


def child_kiln_saxpy_module() -> dict:
    t0 = time.perf_counter()
    kl, saxpy = _kiln_saxpy()
    t1 = time.perf_counter()
    m = kl.Module()
    m.add_kernel(saxpy, kl.f32, kl.ndarray(kl.f32, ndim=1), kl.ndarray(kl.f32, ndim=1))
    m.compile()
    t2 = time.perf_counter()
    return {"import_s": t1 - t0, "compile_s": t2 - t1, "first_s": t2 - t1}


def child_taichi_saxpy() -> dict:
    """Taichi's first call; with TI_OFFLINE_CACHE=1 (the cached row), its offline cache on."""
    import numpy as np
    t0 = time.perf_counter()
    import taichi as ti
    ti.init(arch=ti.cpu, offline_cache=os.environ.get("TI_OFFLINE_CACHE") == "1", log_level=ti.ERROR)

    @ti.kernel
    def saxpy(a: ti.f32, x: ti.types.ndarray(dtype=ti.f32, ndim=1), y: ti.types.ndarray(dtype=ti.f32, ndim=1)):
        for i in range(x.shape[0]):
            y[i] = a * x[i] + y[i]

    x, y = np.ones(1024, np.float32), np.zeros(1024, np.float32)
    t1, c1 = _clocks()
    saxpy(2.0, x, y)
    ti.sync()
    t2, c2 = _clocks()
    saxpy(2.0, x, y)
    ti.sync()
    t3 = time.perf_counter()
    assert y[0] == 4.0
    return {"import_s": t1 - t0, "compile_s": t2 - t1 - (t3 - t2), "first_s": t2 - t1, "first_cpu_s": c2 - c1}


def _numba_saxpy_py(a, x, y):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


def child_numba_saxpy() -> dict:
    """Numba's first call; with NUMBA_CACHE_DIR set (the cached row), njit(cache=True)."""
    import numpy as np
    t0 = time.perf_counter()
    from numba import njit

    saxpy = njit(cache="NUMBA_CACHE_DIR" in os.environ)(_numba_saxpy_py)
    x, y = np.ones(1024, np.float32), np.zeros(1024, np.float32)
    t1, c1 = _clocks()
    saxpy(np.float32(2.0), x, y)
    t2, c2 = _clocks()
    saxpy(np.float32(2.0), x, y)
    t3 = time.perf_counter()
    assert y[0] == 4.0
    return {"import_s": t1 - t0, "compile_s": t2 - t1 - (t3 - t2), "first_s": t2 - t1, "first_cpu_s": c2 - c1}


def child_kiln_chain() -> dict:
    import numpy as np
    sys.path.insert(0, str(HERE / "coldstart"))
    t0 = time.perf_counter()
    import chain_kiln
    t1, c1 = _clocks()
    graph = chain_kiln.build()
    t2 = time.perf_counter()
    y = np.zeros(16, np.float32)
    graph.run({"y": y})
    t3, c3 = _clocks()
    graph.run({"y": y})
    t4 = time.perf_counter()
    return {"import_s": t1 - t0, "compile_s": t2 - t1, "first_s": t3 - t1, "first_cpu_s": c3 - c1, "run_s": t4 - t3}


def child_taichi_chain() -> dict:
    import numpy as np
    sys.path.insert(0, str(HERE / "coldstart"))
    t0 = time.perf_counter()
    import taichi as ti
    ti.init(arch=ti.cpu, offline_cache=False, log_level=ti.ERROR)
    import chain_taichi
    t1, c1 = _clocks()
    y_arg = ti.graph.Arg(ti.graph.ArgKind.NDARRAY, "y", dtype=ti.f32, ndim=1)
    builder = ti.graph.GraphBuilder()
    for k in chain_taichi.KERNELS:
        builder.dispatch(k, y_arg)
    graph = builder.compile()
    t2, c2 = _clocks()
    y = ti.ndarray(ti.f32, shape=16)
    y.from_numpy(np.zeros(16, np.float32))
    t2b, c2b = _clocks()
    graph.run({"y": y})
    ti.sync()
    t3, c3 = _clocks()
    graph.run({"y": y})
    ti.sync()
    t4 = time.perf_counter()
    return {"import_s": t1 - t0, "compile_s": t2 - t1, "first_s": (t3 - t2b) + (t2 - t1),
            "first_cpu_s": (c3 - c2b) + (c2 - c1), "run_s": t4 - t3}


def child_numba_chain() -> dict:
    import numpy as np
    sys.path.insert(0, str(HERE / "coldstart"))
    t0 = time.perf_counter()
    import chain_numba
    from numba import njit
    kernels = [njit(k.py_func) for k in chain_numba.KERNELS]   # the same source, cache off
    y = np.zeros(16, np.float32)
    t1, c1 = _clocks()
    for k in kernels:
        k(y)
    t3, c3 = _clocks()
    for k in kernels:
        k(y)
    t4 = time.perf_counter()
    return {"import_s": t1 - t0, "compile_s": t3 - t1 - (t4 - t3), "first_s": t3 - t1, "first_cpu_s": c3 - c1,
            "run_s": t4 - t3}


def child_kiln_mpm(substeps: int) -> dict:
    sys.path.insert(0, str(HERE / "kiln_programs"))
    t0 = time.perf_counter()
    import mpm88_scalar as mpm
    t1 = time.perf_counter()
    state = mpm.random_state(MPM_PARTICLES)
    t1b = time.perf_counter()
    graph = mpm.build_graph(substeps).compile()
    t2 = time.perf_counter()
    graph.run(state)
    t3 = time.perf_counter()
    graph.run(state)
    t4 = time.perf_counter()
    x = state["x"]
    return {"import_s": t1 - t0, "compile_s": t2 - t1b, "first_s": t3 - t1b, "run_s": t4 - t3,
            "x_inside": bool(((x > 0) & (x < 1)).all())}


def child_taichi_mpm(substeps: int) -> dict:
    sys.path.insert(0, str(HERE / "taichi_programs"))
    t0 = time.perf_counter()
    import mpm88  # ti.init(arch=ti.cpu); TI_OFFLINE_CACHE=0 in our environment turns the cache off
    import mpm88_bench
    t1 = time.perf_counter()
    arrays = mpm88.make_state(MPM_PARTICLES)
    mpm88.init_random(*arrays[:4])           # compiles and runs init_random: not counted
    state = dict(zip(["x", "v", "C", "J", "grid_v", "grid_m"], arrays))
    mpm88.ti.sync()
    t1b = time.perf_counter()
    graph = mpm88_bench.build_graph(mpm88, substeps)
    t2 = time.perf_counter()
    graph.run(state)
    mpm88.ti.sync()
    t3 = time.perf_counter()
    graph.run(state)
    mpm88.ti.sync()
    t4 = time.perf_counter()
    x = state["x"].to_numpy()
    return {"import_s": t1 - t0, "compile_s": t2 - t1b, "first_s": t3 - t1b, "run_s": t4 - t3,
            "x_inside": bool(((x > 0) & (x < 1)).all())}


CHILDREN = {
    "kiln_saxpy_direct": child_kiln_saxpy_direct, "kiln_saxpy_module": child_kiln_saxpy_module,
    "taichi_saxpy": child_taichi_saxpy, "numba_saxpy": child_numba_saxpy,
    "kiln_chain": child_kiln_chain, "taichi_chain": child_taichi_chain, "numba_chain": child_numba_chain,
    "kiln_mpm": child_kiln_mpm, "taichi_mpm": child_taichi_mpm,
}


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a measured child: every disk cache off unless `extra` turns one on."""
    env = dict(os.environ, ENABLE_TAICHI_HEADER_PRINT="0", TI_OFFLINE_CACHE="0", KILN_CACHE="0")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("KILN_TIMING", None)
    # An installed kiln has .pyc files, as Taichi and Numba have in site-packages; with
    # PYTHONDONTWRITEBYTECODE kiln's lazily imported compiler would be byte-compiled from source
    # inside every first compile (~0.2 s). main() warms __pycache__ with one untimed child.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def warm_bytecode() -> None:
    """One untimed child that imports kiln's whole compiler, so later children load .pyc files."""
    code = ("import kiln, kiln.lang, kiln.driver, kiln.driver.cache, kiln.codegen, kiln.codegen.nvptx, "
            "kiln.runtime.compiled, kiln.dispatch")
    subprocess.run([sys.executable, "-c", code], env=child_env(), check=True)
    run_child("kiln_chain")


def run_child(name: str, *extra: str, repeats: int = 1, env: dict[str, str] | None = None) -> dict:
    """The median of `repeats` fresh processes (per field), with every run kept under "runs"."""
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, __file__, "--child", name, *extra], capture_output=True,
                              text=True, env=env or child_env(), check=False)
        if proc.returncode != 0:
            raise SystemExit(f"child {name} {extra} failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return _median_of(runs)


def _median_of(runs: list[dict]) -> dict:
    """Per field: the median of floats (of each stage's floats), all() of flags, else the first."""
    out: dict = {"runs": runs, "min": {}}
    for k, v in runs[0].items():
        if isinstance(v, bool):
            out[k] = all(r[k] for r in runs)
        elif isinstance(v, float):
            out[k] = statistics.median(r[k] for r in runs)
            out["min"][k] = min(r[k] for r in runs)
        elif isinstance(v, dict) and all(isinstance(x, float) for x in v.values()):   # --stages: per stage
            out[k] = {name: statistics.median(r[k].get(name, 0.0) for r in runs) for name in v}
        else:
            out[k] = v
    return out


def run_cached(name: str, repeats: int) -> dict:
    """`name`'s first call in a second process: each tool's disk cache on in a private folder,
    warmed by one untimed process, then `repeats` timed ones."""
    folder = tempfile.mkdtemp(prefix="compile_bench_cache_")
    try:
        env = child_env(KILN_CACHE="1", KILN_CACHE_DIR=os.path.join(folder, "kiln"), TI_OFFLINE_CACHE="1",
                        TI_OFFLINE_CACHE_FILE_PATH=os.path.join(folder, "taichi"),
                        NUMBA_CACHE_DIR=os.path.join(folder, "numba"))
        run_child(name, env=env)
        return run_child(name, repeats=repeats, env=env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

def _slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (dispatches, seconds), in seconds per dispatch."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms"


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _first(r: dict) -> str:
    """A cold first-call cell: the fastest process's wall time (the least disturbed by other
    load), then the median wall time and the fastest CPU time of the same processes."""
    return (f"{_ms(r['min']['first_s'])} (median {_ms(r['first_s'])}; CPU {_ms(r['min']['first_cpu_s'])})")


def main_table(substeps: list[int], repeats: int) -> None:
    import llvmlite
    import numba
    import taichi

    load = os.getloadavg()
    print(f"kiln (this tree), llvmlite {llvmlite.__version__}; Taichi {'.'.join(map(str, taichi.__version__))} "
          f"ti.cpu; Numba {numba.__version__}; {os.cpu_count()} CPUs, load average {load[0]:.1f} before the run")
    print(f"Every cell: {repeats} fresh process(es); first-call rows give the fastest process's wall time, the "
          "median wall time and the fastest CPU time; mpm88 rows the median. Cold: every disk cache off (Taichi: its "
          "first-run JIT, offline cache off). Second process: each tool's own disk cache on, warmed.\n")
    warm_bytecode()
    cold = {name: run_child(name, repeats=repeats) for name in (
        "kiln_saxpy_direct", "taichi_saxpy", "numba_saxpy", "kiln_chain", "taichi_chain", "numba_chain")}
    cached = {name: run_cached(name, repeats) for name in ("kiln_saxpy_direct", "taichi_saxpy", "numba_saxpy")}
    rows = [
        ("one small kernel (saxpy), first call, cold", *(_first(cold[f"{p}_saxpy{s}"]) for p, s in (
            ("kiln", "_direct"), ("taichi", ""), ("numba", "")))),
        ("one small kernel, first call in a second process (disk cache)", *(
            _first(cached[f"{p}_saxpy{s}"]) for p, s in (("kiln", "_direct"), ("taichi", ""), ("numba", "")))),
        ("10-kernel graph: compile + first run, cold", _first(cold["kiln_chain"]),
         _first(cold["taichi_chain"]), _first(cold["numba_chain"]) + " (10 first calls)"),
    ]
    pts: dict[str, list[tuple[int, float]]] = {"kiln": [], "taichi": []}
    # interleaved rounds (every N of both peers, then again), so that a change of the machine's
    # load during the run falls on all rows alike instead of tilting the slope
    mpm_runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(repeats):
        for n in substeps:
            for peer in ("kiln", "taichi"):
                mpm_runs.setdefault((peer, n), []).extend(run_child(f"{peer}_mpm", str(n))["runs"])
    for n in substeps:
        k, t = (_median_of(mpm_runs[(peer, n)]) for peer in ("kiln", "taichi"))
        # the slope leaves execution out: kiln compiles everything in build + compile(); Taichi
        # compiles its kernels at the first run, so its cost is the first run minus the second
        pts["kiln"].append((n * DISPATCHES_PER_SUBSTEP, k["compile_s"]))
        pts["taichi"].append((n * DISPATCHES_PER_SUBSTEP, t["first_s"] - t["run_s"]))
        for peer, r in (("kiln", k), ("taichi", t)):
            if not r["x_inside"]:
                print(f"WARNING: {peer} particles left the box at N={n}: run timings invalid")
        # kiln's first run on a loaded machine is distorted by libgomp's spinning (issue 14 part 1),
        # which is not compile time: the cell says it separately
        label = (f"mpm88 graph, {n} substeps ({n * DISPATCHES_PER_SUBSTEP} dispatches): compile (kiln: graph "
                 "build + compile(); Taichi: first run minus second run)")
        rows.append((label, f"{_s(k['compile_s'])} (first run adds {_s(k['first_s'] - k['compile_s'])})",
                     f"{_s(t['first_s'] - t['run_s'])} (first run {_s(t['first_s'])})", "n/a (no graphs)"))
    if len(pts["kiln"]) > 1:
        rows.append((("per-dispatch compile cost (slope over the mpm88 rows of kiln's build + compile and of "
                     "Taichi's first run minus its second)"), f"{_slope(pts['kiln']) * 1e3:.3f} ms",
                     f"{_slope(pts['taichi']) * 1e3:.3f} ms", "n/a"))
    print("| workload | kiln | Taichi | Numba |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n(imports before the clock, cold: kiln + kernels {_ms(cold['kiln_saxpy_direct']['import_s'])}, "
          f"taichi + ti.init {_ms(cold['taichi_saxpy']['import_s'])}, numba {_ms(cold['numba_saxpy']['import_s'])}; "
          f"load average after the run {os.getloadavg()[0]:.1f})")


# ---------------------------------------------------------------------------------------------
# --stages: where kiln's compile time goes (wrappers around today's functions, from outside)
# ---------------------------------------------------------------------------------------------

#: (module, attribute path, stage). The module's attribute is replaced by a timing wrapper, so a
#: function imported by name into another module is hooked in THAT module. Follows kiln.driver
#: (compile.py, pipeline.py, cache.py); a hook whose target is gone is reported and skipped.
STAGE_HOOKS = (
    ("kiln.driver.cache", "request_key", "disk cache key"),
    ("kiln.driver.cache", "load", "disk cache read"),
    ("kiln.driver.cache", "store", "disk cache write"),
    ("kiln.lang.kernel", "Kernel.specialize", "front end (ast -> typed IR)"),
    ("kiln.driver.pipeline", "Pipeline.lower", "IR passes + verify (Pipeline.lower)"),
    ("kiln.passes", "make_names_unique", "make_names_unique"),
    ("kiln.driver.compile", "_graph_ir", "graph IR (per dispatch)"),
    ("kiln.codegen.target", "init_llvm", "llvmlite init"),
    ("kiln.codegen.target", "host_target", "host target query"),
    ("kiln.codegen", "create_target_machine", "TargetMachine creation"),
    ("kiln.codegen", "_emit", "LLVM IR building (llvmlite.ir)"),
    ("llvmlite.ir", "Module.__repr__", "LLVM IR text (str(ir.Module))"),
    ("llvmlite.binding", "parse_assembly", "llvm.parse_assembly"),
    ("llvmlite.binding", "ModuleRef.verify", "verify"),
    ("llvmlite.binding", "create_pass_builder", "optimisation pipeline (O3)"),
    ("llvmlite.binding", "ModulePassManager.run", "optimisation pipeline (O3)"),
    ("llvmlite.binding", "TargetMachine.emit_object", "object emission (codegen)"),
    ("llvmlite.binding", "ModuleRef.__str__", "optimised IR text (ObjectCode.llvm_ir)"),
    ("kiln.driver.compile", "_manifest", "manifest (access analysis, per-dispatch entries)"),
    ("kiln.artifact.manifest", "Manifest.to_json", "manifest + container pack"),
    ("kiln.artifact.container", "pack", "manifest + container pack"),
    ("kiln.graph.linking", "load_bytes", "runtime link (unpack, checksums, ELF load)"),
)


class StageTimer:
    """Exclusive time per stage: a hooked call nested in another is charged to itself only."""

    def __init__(self) -> None:
        self.exclusive: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.missing: list[str] = []
        self._stack: list[float] = []

    def hook(self, module_name: str, path: str, stage: str) -> None:
        import importlib
        import inspect
        try:
            owner = importlib.import_module(module_name)
            *outer, attr = path.split(".")
            for name in outer:
                owner = getattr(owner, name)
            original = inspect.getattr_static(owner, attr)
        except (ImportError, AttributeError):
            original = None
        if original is None or isinstance(original, (staticmethod, classmethod)) or not callable(original):
            self.missing.append(f"{module_name}.{path}")
            return

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            self._stack.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.perf_counter() - t0
                nested = self._stack.pop()
                self.exclusive[stage] = self.exclusive.get(stage, 0.0) + spent - nested
                self.calls[stage] = self.calls.get(stage, 0) + 1
                if self._stack:
                    self._stack[-1] += spent

        setattr(owner, attr, timed)


def _stage_case(case: str):
    """A function that compiles `case` once (recording outside the clock where possible)."""
    import kiln as kl
    if case == "saxpy":
        _kl, saxpy = _kiln_saxpy()
        module = kl.Module()
        module.add_kernel(saxpy, kl.f32, kl.ndarray(kl.f32, ndim=1), kl.ndarray(kl.f32, ndim=1))
        return module.compile
    if case == "chain10":
        sys.path.insert(0, str(HERE / "coldstart"))
        import chain_kiln
        return chain_kiln.build
    if case.startswith("mpm"):
        sys.path.insert(0, str(HERE / "kiln_programs"))
        import mpm88_scalar
        builder = mpm88_scalar.build_graph(int(case[3:]))
        return builder.compile
    raise SystemExit(f"unknown stage case {case!r}")


def child_stages(case: str) -> dict:
    t0 = time.perf_counter()
    import llvmlite.binding  # noqa: F401  (the first compile of a process pays these imports)

    import kiln.codegen
    import kiln.driver  # noqa: F401
    imports = time.perf_counter() - t0
    timer = StageTimer()
    for hook in STAGE_HOOKS:
        timer.hook(*hook)
    compile_fn = _stage_case(case)
    t1 = time.perf_counter()
    compile_fn()
    total = time.perf_counter() - t1
    return {"imports": imports, "total": total, "stages": timer.exclusive, "calls": timer.calls,
            "missing": timer.missing}


def child_profile(case: str) -> None:
    import cProfile
    import pstats

    import kiln.driver  # noqa: F401
    compile_fn = _stage_case(case)
    prof = cProfile.Profile()
    prof.runcall(compile_fn)
    stats = pstats.Stats(prof, stream=sys.stderr).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)


def main_stages(cases: list[str], profile: str | None, repeats: int) -> None:
    if profile:
        subprocess.run([sys.executable, __file__, "--child", "profile", profile], env=child_env(), check=True)
        return
    warm_bytecode()
    results = {c: run_child("stages", c, repeats=repeats) for c in cases}
    print(f"kiln compile stages, exclusive time per stage (ms, share of the compile), one fresh process "
          f"per case, load average {os.getloadavg()[0]:.1f}")
    print("| stage | " + " | ".join(cases) + " |")
    print("|---|" + "---|" * len(cases))
    names = list(dict.fromkeys(h[2] for h in STAGE_HOOKS))
    for name in [*names, "other (driver glue, dicts, not hooked)"]:
        cells = []
        for c in cases:
            r = results[c]
            t = r["stages"].get(name, 0.0) if not name.startswith("other") else r["total"] - sum(r["stages"].values())
            calls = r["calls"].get(name)
            cells.append(f"{t * 1e3:.0f} ({100 * t / r['total']:.0f}%)" + (f" x{calls}" if calls and calls > 1 else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| **total compile()** | " + " | ".join(f"**{results[c]['total'] * 1e3:.0f}**" for c in cases) + " |")
    print("| (before it: import llvmlite.binding + kiln.codegen) | "
          + " | ".join(f"{results[c]['imports'] * 1e3:.0f}" for c in cases) + " |")
    missing = sorted({m for r in results.values() for m in r["missing"]})
    if missing:
        print("hooks not found (the driver moved?):", ", ".join(missing))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--substeps", type=int, nargs="+", default=[1, 50, 200, 500])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--stages", nargs="*", metavar="CASE",
                        help="per-stage timing of kiln's compiler for CASEs (saxpy chain10 mpm50 mpm500)")
    parser.add_argument("--profile", metavar="CASE", help="cProfile one CASE's compile (to stderr)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "profile":
        child_profile(args.rest[0])
        return
    if args.child == "stages":
        print(json.dumps(child_stages(args.rest[0])))
        return
    if args.child:
        print(json.dumps(CHILDREN[args.child](*map(int, args.rest))))
        return
    if args.stages is not None or args.profile:
        main_stages(args.stages or ["saxpy", "chain10", "mpm50", "mpm500"], args.profile, args.repeats)
        return
    main_table(args.substeps, args.repeats)


if __name__ == "__main__":
    main()
