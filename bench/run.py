"""kiln benchmark suite: kiln and its peers (Taichi, Warp, Numba, numpy) side by side, in one run.

    python bench/run.py [--quick] [--only NAME] [--write]

NAME is one of: coldstart, dispatch, bandwidth, reduction. Tables are printed as markdown;
--write also writes them to bench/results.md. A peer that is not installed prints "not installed";
a peer (or kiln) that fails prints "n/a (error: ...)" and the run goes on.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
COLD = BENCH / "coldstart"
NPROC = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

# Cache locations for every peer, for this process and the cold-start children (set before numba
# or warp are imported: both read them at import / init).
os.environ.setdefault("BENCH_CACHE", str(CACHE))
os.environ.setdefault("NUMBA_CACHE_DIR", str(CACHE / "numba"))
os.environ.setdefault("WARP_CACHE_PATH", str(CACHE / "warp"))
os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "0")  # no Taichi banner in the tables
CACHE.mkdir(exist_ok=True)
# kiln from this checkout (also for the cold-start children, through PYTHONPATH)
REPO = BENCH.parent
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
for p in (REPO, BENCH, COLD):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

class NotInstalled(Exception):
    pass


def short_err(e: BaseException, limit: int = 90) -> str:
    msg = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def failure(e: BaseException) -> str:
    if isinstance(e, NotInstalled):
        return "not installed"
    return f"n/a (error: {short_err(e)})"


def need(name: str):
    """Import a peer; raise NotInstalled if the package itself is missing."""
    top = name.split(".")[0]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == top:
            raise NotInstalled(top) from e
        raise


_TI_READY = False
_WP_READY = False


def taichi():
    global _TI_READY
    ti = need("taichi")
    if not _TI_READY:
        ti.init(arch=ti.cpu, offline_cache=True, offline_cache_file_path=str(CACHE / "taichi"),
                log_level=ti.ERROR, cpu_max_num_threads=NPROC)
        _TI_READY = True
    return ti


def warp():
    global _WP_READY
    wp = need("warp")
    if not _WP_READY:
        wp.config.log_level = wp.LOG_WARNING
        wp.init()
        _WP_READY = True
    return wp


def numba_mod(name: str):
    """A Numba kernel module of the suite (NotInstalled when numba itself is missing)."""
    need("numba")
    return importlib.import_module(name)


def kiln():
    """kiln from this checkout; any failure (even a missing package) is reported as n/a (error: ...)."""
    return importlib.import_module("kiln")


def version_of(name: str) -> str:
    try:
        if name == "taichi":
            import taichi as ti
            return ".".join(map(str, ti.__version__))
        mod = importlib.import_module(name)
        return str(getattr(mod, "__version__", "?"))
    except ModuleNotFoundError:
        return "not installed"
    except Exception as e:  # noqa: BLE001
        return f"error ({short_err(e, 50)})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def best_mean_us(fn, reps: int, rounds: int = 5) -> float:
    """timeit-style: best over `rounds` of the mean time of `reps` calls, in microseconds."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / reps / 1e3)
    return best


def median_ms(fn, reps: int, sync=None) -> float:
    """Median wall time of one call in ms, after one warm-up call (not counted)."""
    fn()
    if sync:
        sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        if sync:
            sync()
        ts.append(time.perf_counter_ns() - t0)
    return statistics.median(ts) / 1e6


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def close(a, b, rtol=1e-4) -> bool:
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=rtol,
                            atol=1e-6))


# --------------------------------------------------------------------------------------------
# a. cold start
# --------------------------------------------------------------------------------------------

def chain_reference() -> float:
    y = np.zeros(16, dtype=np.float64)
    for j in range(10):
        y = y * 1.0001 + 0.1 * (j + 1)
    return float(y.sum())


def prepare_kiln_file() -> Path:
    """Compile the 10-kernel chain with kiln and save it (the compiler runs here, not in the child)."""
    kiln()
    chain_kiln = importlib.import_module("chain_kiln")
    step = chain_kiln.build()
    path = CACHE / "chain10.kiln"
    step.save(str(path))
    return path


def _child_env() -> dict[str, str]:
    """Warm caches include Python's own bytecode cache: let the children use .pyc files."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_bytecode() -> None:
    import compileall

    import kiln
    for folder in (Path(kiln.__file__).parent, COLD):
        compileall.compile_dir(str(folder), quiet=1)


def run_child(cmd: list[str]) -> tuple[float, float, str, int]:
    """Run a fresh process through coldstart/spawn.py; return (wall ms, peak RSS MiB, output, rc)."""
    p = subprocess.run([sys.executable, "-I", "-S", str(COLD / "spawn.py"), *cmd], capture_output=True,
                       text=True, cwd=str(COLD), check=False, env=_child_env())
    tail = [ln for ln in p.stderr.splitlines() if ln.startswith("SPAWN ")]
    if not tail:
        return float("nan"), float("nan"), p.stdout + p.stderr, p.returncode or 1
    _, wall_ns, rss_kib, rc = tail[-1].split()
    out = p.stdout if rc == "0" else p.stdout + p.stderr
    return int(wall_ns) / 1e6, int(rss_kib) / 1024.0, out, int(rc)


def bench_coldstart(quick: bool) -> str:
    n_runs, n_warm = (5, 1) if quick else (15, 2)
    cold = str(COLD / "cold.py")
    cmds = {"floor: python -c 'import numpy'": [sys.executable, "-c", "import numpy"]}
    notes = {"floor: python -c 'import numpy'": "interpreter + numpy import"}
    broken: dict[str, str] = {}

    label_k = "kiln: kl.load(file).run()"
    label_m = "kiln, MCJIT loader (KILN_LOADER=mcjit)"
    try:
        prepare_kiln_file()
        warm_bytecode()
        cmds[label_k] = [sys.executable, cold, "kiln"]
        notes[label_k] = "saved .kiln graph, kiln's own ELF loader, no compiler"
        cmds[label_m] = [sys.executable, cold, "kiln-mcjit"]
        notes[label_m] = "the same file linked by llvmlite's MCJIT instead"
    except Exception as e:  # noqa: BLE001
        broken[label_k] = failure(e)
    peers = [
        ("taichi", "Taichi: ti.init + 10 kernels, warm offline cache",
         "Taichi's AOT loader is not usable from Python: JIT kernels from warm offline_cache"),
        ("warp", "Warp: wp.init + module load + 10 launches", "warm kernel cache (CPU, one thread)"),
        ("numba", "Numba: 10 @njit(cache=True) calls", "warm on-disk cache"),
    ]
    for mod, label, note in peers:
        try:
            need(mod)
            cmds[label] = [sys.executable, cold, mod]
            notes[label] = note
        except Exception as e:  # noqa: BLE001
            broken[label] = failure(e)

    # Warm every cache (n_warm runs each, not counted); a peer that fails here is reported and dropped.
    for label in list(cmds):
        for _ in range(n_warm):
            _, _, out, rc = run_child(cmds[label])
            if rc != 0:
                lines = [x for x in out.strip().splitlines() if x.strip()]
                broken[label] = f"n/a (error: {(lines[-1] if lines else f'exit {rc}')[:90]})"
                del cmds[label]
                break

    walls: dict[str, list[float]] = {k: [] for k in cmds}
    loads: dict[str, list[float]] = {}   # kiln only: time of kl.load() itself, in the child
    rss: dict[str, list[float]] = {k: [] for k in cmds}
    results: dict[str, str] = {}
    for _ in range(n_runs):  # round-robin, interleaved
        for label, cmd in cmds.items():
            w, r, out, rc = run_child(cmd)
            walls[label].append(w)
            rss[label].append(r)
            for line in out.splitlines():
                if line.startswith("RESULT"):
                    results[label] = line
                elif line.startswith("LOAD"):
                    loads.setdefault(label, []).append(float(line.split()[1]))
    ref = chain_reference()
    floor_label = next(iter(cmds))
    floor = statistics.median(walls[floor_label])
    rows = []
    for label in cmds:
        med = statistics.median(walls[label])
        check, extra = "-", ""
        if label in results:
            _, val, llvm, _nb = results[label].split()
            check = "ok" if close(float(val), ref) else f"WRONG ({val})"
            if label in (label_k, label_m):
                extra = f"; llvmlite imported: {'yes' if llvm == '1' else 'no'}"
                if label in loads:
                    extra += (f"; kl.load() itself (runtime modules already imported, first load in the "
                              f"process) {statistics.median(loads[label]):.2f} ms")
        rows.append([label, f"{med:.0f}", "-" if label == floor_label else f"{med - floor:+.0f}",
                     f"{statistics.median(rss[label]):.0f}", check, notes[label] + extra])
    for label, why in broken.items():
        rows.append([label, why, "", "", "", ""])
    head = (f"### a. Cold start: fresh process, load a saved 10-kernel graph, first result\n\n"
            f"{n_runs} runs each, interleaved round-robin after {n_warm} warm-up run(s) per row; median wall "
            f"time (fork + exec + run, timed by a small launcher) and median peak RSS of the child.\n\n")
    return head + table(["runtime", "wall ms (median)", "above floor ms", "peak RSS MiB", "result",
                         "notes"], rows)


# --------------------------------------------------------------------------------------------
# b. dispatch overhead
# --------------------------------------------------------------------------------------------

def bench_dispatch(quick: bool) -> str:
    reps = 300 if quick else 2000
    rows = []

    def add(label, make, note=""):
        try:
            fn, check = make()
            us = best_mean_us(fn, reps)
            ok = "ok" if check() else "WRONG"
            rows.append([label, f"{us:.1f}", f"{us / 10:.2f}", ok, note])
        except Exception as e:  # noqa: BLE001
            rows.append([label, failure(e), "", "", note])

    y0 = np.zeros(16, dtype=np.float32)

    def finite(a):
        return lambda: bool(np.all(np.isfinite(np.asarray(a))) and np.asarray(a)[0] > 0)

    def kiln_graph():
        kiln()
        step = importlib.import_module("chain_kiln").build()
        y = y0.copy()
        feed = {"y": y}
        return (lambda: step.run(feed)), finite(y)

    def kiln_direct():
        kiln()
        ks = importlib.import_module("chain_kiln").KERNELS
        y = y0.copy()

        def f():
            for k in ks:
                k(y)
        return f, finite(y)

    def ti_graph():
        ti = taichi()
        ks = importlib.import_module("chain_taichi").KERNELS
        sym = ti.graph.Arg(ti.graph.ArgKind.NDARRAY, "y", dtype=ti.f32, ndim=1)
        gb = ti.graph.GraphBuilder()
        for k in ks:
            gb.dispatch(k, sym)
        g = gb.compile()
        y = ti.ndarray(ti.f32, shape=16)
        feed = {"y": y}

        def f():
            g.run(feed)
        return f, lambda: (ti.sync(), finite(y.to_numpy())())[1]

    def ti_direct():
        ti = taichi()
        ks = importlib.import_module("chain_taichi").KERNELS
        y = ti.ndarray(ti.f32, shape=16)

        def f():
            for k in ks:
                k(y)
        return f, lambda: (ti.sync(), finite(y.to_numpy())())[1]

    def wp_launch():
        wp = warp()
        ks = importlib.import_module("chain_warp").KERNELS
        y = wp.zeros(16, dtype=wp.float32, device="cpu")

        def f():
            for k in ks:
                wp.launch(k, dim=16, inputs=[y], device="cpu")
        return f, lambda: finite(y.numpy())()

    def wp_recorded():
        wp = warp()
        ks = importlib.import_module("chain_warp").KERNELS
        y = wp.zeros(16, dtype=wp.float32, device="cpu")
        cmds = [wp.launch(k, dim=16, inputs=[y], device="cpu", record_cmd=True) for k in ks]

        def f():
            for c in cmds:
                c.launch()
        return f, lambda: finite(y.numpy())()

    def nb_calls():
        ks = numba_mod("chain_numba").KERNELS
        y = y0.copy()

        def f():
            for k in ks:
                k(y)
        return f, finite(y)

    add("kiln: CompiledGraph.run()", kiln_graph, "numpy array in the feed dict")
    add("kiln: 10 direct kernel calls", kiln_direct)
    add("Taichi: ti.graph CompiledGraph.run()", ti_graph, "ti.ndarray arg, CPU")
    add("Taichi: 10 direct kernel calls", ti_direct, "ti.ndarray arg")
    add("Warp: 10 wp.launch", wp_launch, "CPU; CUDA graphs are GPU-only")
    add("Warp: 10 recorded launches (record_cmd=True)", wp_recorded, "Launch.launch()")
    add("Numba: 10 @njit calls", nb_calls, "numpy array")
    head = (f"### b. Dispatch overhead: 10 chained kernels on 16 float32\n\n"
            f"best of 5 rounds of the mean of {reps} runs.\n\n")
    return head + table(["runtime", "us per run", "us per kernel", "result", "notes"], rows)


# --------------------------------------------------------------------------------------------
# c. bandwidth
# --------------------------------------------------------------------------------------------

def bench_bandwidth(quick: bool) -> str:
    reps = 5 if quick else 10
    n = 1 << 24
    side = 4096
    rng = np.random.default_rng(0)
    x = rng.random(n, dtype=np.float32)
    y0 = rng.random(n, dtype=np.float32)
    y = y0.copy()
    a = np.float32(2.0)
    grid = rng.random((side, side), dtype=np.float32)
    out = np.zeros_like(grid)
    ref_saxpy = a * x + y0
    ref_st = np.zeros_like(grid)
    ref_st[1:-1, 1:-1] = np.float32(0.2) * (grid[1:-1, 1:-1] + grid[:-2, 1:-1] + grid[2:, 1:-1]
                                            + grid[1:-1, :-2] + grid[1:-1, 2:])
    saxpy_bytes = 3 * 4 * n        # x read, y read, y written
    stencil_bytes = 2 * 4 * side * side   # input read once, output written once
    copy_bytes = 2 * 4 * n
    rows = []

    def gbs(nbytes, ms):
        return f"{nbytes / ms / 1e6:.1f} ({ms:.1f} ms)"

    def copy_row(label, threads, make):
        try:
            fn, dst = make()
            ms = median_ms(fn, reps)
            ok = "ok" if np.array_equal(dst, x) else "WRONG"
            rows.append([label, threads, gbs(copy_bytes, ms), "", "", ok])
        except Exception as e:  # noqa: BLE001
            rows.append([label, threads, failure(e), "", "", ""])

    def row(label, threads, saxpy_fn, stencil_fn, sync=None):
        cells = [label, threads, ""]
        oks = []
        for fn_make, nbytes, ref, res in ((saxpy_fn, saxpy_bytes, ref_saxpy, y),
                                          (stencil_fn, stencil_bytes, ref_st, out)):
            try:
                fn = fn_make()
                y[:] = y0
                out[:] = 0
                fn()
                if sync:
                    sync()
                oks.append(close(res, ref))
                ms = median_ms(fn, reps, sync)
                cells.append(gbs(nbytes, ms))
            except Exception as e:  # noqa: BLE001
                cells.append(failure(e))
        cells.append(("ok" if all(oks) else "WRONG") if oks else "")
        rows.append(cells)

    # anchors: parallel copy of the same kind of bytes
    def nb_copy():
        kn = numba_mod("kernels_numba")
        dst = np.empty_like(x)
        return (lambda: kn.copy_par(x, dst)), dst

    pool = ThreadPoolExecutor(max_workers=NPROC)

    def np_copy_threads():
        dst = np.empty_like(x)
        bounds = np.linspace(0, n, NPROC + 1).astype(int)
        parts = [(dst[lo:hi], x[lo:hi]) for lo, hi in itertools.pairwise(bounds)]

        def f():
            for fut in [pool.submit(np.copyto, d, s) for d, s in parts]:
                fut.result()
        return f, dst

    def np_copy_1():
        dst = np.empty_like(x)
        return (lambda: np.copyto(dst, x)), dst

    copy_row("anchor: copy, Numba prange", NPROC, nb_copy)
    copy_row(f"anchor: copy, np.copyto in {NPROC} Python threads", NPROC, np_copy_threads)
    copy_row("anchor: copy, np.copyto", 1, np_copy_1)

    def np_saxpy():
        def f():
            y[:] += a * x
        return f

    def np_stencil():
        def f():
            out[1:-1, 1:-1] = np.float32(0.2) * (grid[1:-1, 1:-1] + grid[:-2, 1:-1] + grid[2:, 1:-1]
                                                 + grid[1:-1, :-2] + grid[1:-1, 2:])
        return f

    row("numpy expression", 1, np_saxpy, np_stencil)

    def nb(name):
        def make():
            kn = numba_mod("kernels_numba")
            fn = getattr(kn, name)
            return (lambda: fn(a, x, y)) if name.startswith("saxpy") else (lambda: fn(grid, out))
        return make

    row("Numba parallel (prange)", NPROC, nb("saxpy_par"), nb("stencil_par"))
    row("Numba serial", 1, nb("saxpy_ser"), nb("stencil_ser"))

    def ti_k(name):
        def make():
            taichi()
            kt = importlib.import_module("kernels_taichi")
            return (lambda: kt.saxpy(a, x, y)) if name == "saxpy" else (lambda: kt.stencil(grid, out))
        return make

    def ti_sync():
        taichi().sync()

    row("Taichi (CPU, parallel for)", NPROC, ti_k("saxpy"), ti_k("stencil"), ti_sync)

    def wp_k(name):
        def make():
            wp = warp()
            kw = importlib.import_module("kernels_warp")
            if name == "saxpy":
                xa = wp.array(x, dtype=wp.float32, device="cpu", copy=False)
                ya = wp.array(y, dtype=wp.float32, device="cpu", copy=False)
                return lambda: wp.launch(kw.saxpy, dim=n, inputs=[a, xa, ya], device="cpu")
            ga = wp.array(grid, dtype=wp.float32, device="cpu", copy=False)
            oa = wp.array(out, dtype=wp.float32, device="cpu", copy=False)
            return lambda: wp.launch(kw.stencil, dim=(side - 2, side - 2), inputs=[ga, oa], device="cpu")
        return make

    def wp_sync():
        warp().synchronize_device("cpu")

    row("Warp (CPU)", 1, wp_k("saxpy"), wp_k("stencil"), wp_sync)

    def kl_k(name):
        def make():
            kiln()
            kk = importlib.import_module("kernels_kiln")
            return (lambda: kk.saxpy(a, x, y)) if name == "saxpy" else (lambda: kk.stencil(grid, out))
        return make

    row("kiln (direct call)", NPROC, kl_k("saxpy"), kl_k("stencil"))
    pool.shutdown()
    head = (f"### c. Bandwidth: GB/s (time per call), median of {reps} runs after warm-up\n\n"
            f"saxpy y = a*x + y on 2**24 float32 (12 B/element: x, y read, y written); 5-point stencil "
            f"on {side}x{side} float32 (8 B/element: input read once, output written once); copy "
            f"anchors: 2**24 float32 (8 B/element). Counted bytes ignore write-allocate: a copy with ordinary "
            f"stores moves 12 B/element through DRAM (read, read-for-ownership, write), like saxpy, so a "
            f"kernel can show more counted GB/s than the copy anchor at the same DRAM traffic.\n\n")
    return head + table(["implementation", "threads", "copy GB/s", "saxpy GB/s", "stencil GB/s", "result"],
                        rows)


# --------------------------------------------------------------------------------------------
# d. reduction
# --------------------------------------------------------------------------------------------

def bench_reduction(quick: bool) -> str:
    reps = 5 if quick else 10
    n = 1 << 24
    nbins = 256
    rng = np.random.default_rng(1)
    x = rng.random(n, dtype=np.float32)
    keys = rng.integers(0, nbins, n, dtype=np.int32)
    ref_sum = float(np.sum(x, dtype=np.float64))
    ref_hist = np.bincount(keys, minlength=nbins)
    rows = []

    def ms_gbs(ms):
        return f"{ms:.1f} ms ({4 * n / ms / 1e6:.1f} GB/s)"

    def row(label, threads, sum_make, hist_make, sync=None):
        cells = [label, threads]
        oks = []
        for make, check in ((sum_make, lambda r: abs(float(r) - ref_sum) <= 1e-9 * abs(ref_sum)),
                            (hist_make, lambda r: np.array_equal(np.asarray(r), ref_hist))):
            try:
                fn, result = make()
                fn()
                if sync:
                    sync()
                oks.append(check(result()))
                cells.append(ms_gbs(median_ms(fn, reps, sync)))
            except Exception as e:  # noqa: BLE001
                cells.append(failure(e))
        cells.append(("ok" if all(oks) else "WRONG") if oks else "")
        rows.append(cells)

    def np_sum():
        box = [0.0]

        def f():
            box[0] = np.sum(x, dtype=np.float64)
        return f, lambda: box[0]

    def np_hist():
        box = [None]

        def f():
            box[0] = np.bincount(keys, minlength=nbins)
        return f, lambda: box[0]

    row("numpy (np.sum dtype=f64, np.bincount)", 1, np_sum, np_hist)

    def nb_sum():
        kn = numba_mod("kernels_numba")
        box = [0.0]

        def f():
            box[0] = kn.sum_par(x)
        return f, lambda: box[0]

    def nb_hist():
        kn = numba_mod("kernels_numba")
        nt = importlib.import_module("numba").get_num_threads()
        box = [None]

        def f():
            box[0] = kn.hist_par(keys, nbins, nt)
        return f, lambda: box[0]

    row("Numba parallel (prange; per-thread histograms)", NPROC, nb_sum, nb_hist)

    def accum(kernel_call, out):
        def f():
            out[:] = 0
            kernel_call()
        return f

    def ti_sum():
        taichi()
        kt = importlib.import_module("kernels_taichi")
        box = [0.0]

        def f():
            box[0] = kt.sum_f64(x)
        return f, lambda: box[0]

    def ti_hist():
        taichi()
        kt = importlib.import_module("kernels_taichi")
        bins = np.zeros(nbins, dtype=np.int32)
        return accum(lambda: kt.hist(keys, bins), bins), lambda: bins

    row("Taichi (local-var reduction; atomic add histogram)", NPROC, ti_sum, ti_hist, lambda: taichi().sync())

    def wp_sum():
        wp = warp()
        kw = importlib.import_module("kernels_warp")
        xa = wp.array(x, dtype=wp.float32, device="cpu", copy=False)
        out = wp.zeros(1, dtype=wp.float64, device="cpu")
        on = out.numpy()
        return accum(lambda: wp.launch(kw.sum_f64, dim=n, inputs=[xa, out], device="cpu"), on), \
            lambda: out.numpy()[0]

    def wp_hist():
        wp = warp()
        kw = importlib.import_module("kernels_warp")
        ka = wp.array(keys, dtype=wp.int32, device="cpu", copy=False)
        bins = wp.zeros(nbins, dtype=wp.int32, device="cpu")
        bn = bins.numpy()
        return accum(lambda: wp.launch(kw.hist, dim=n, inputs=[ka, bins], device="cpu"), bn), \
            lambda: bins.numpy()

    row("Warp (CPU, atomic add)", 1, wp_sum, wp_hist, lambda: warp().synchronize_device("cpu"))

    def kl_sum():
        kiln()
        kk = importlib.import_module("kernels_kiln")
        out = np.zeros(1, dtype=np.float64)
        return accum(lambda: kk.sum_f64(x, out), out), lambda: out[0]

    def kl_hist():
        kiln()
        kk = importlib.import_module("kernels_kiln")
        bins = np.zeros(nbins, dtype=np.int32)
        return accum(lambda: kk.hist(keys, bins), bins), lambda: bins

    row("kiln (`x[i] += v`, atomic in parallel loop)", NPROC, kl_sum, kl_hist)
    head = (f"### d. Reductions: time per call (GB/s of input), median of {reps} runs after warm-up\n\n"
            f"sum of 2**24 float32 accumulated in float64; histogram of 2**24 int32 keys into "
            f"{nbins} int32 bins.\n\n")
    return head + table(["implementation", "threads", "sum f32->f64", "histogram 256 bins", "result"], rows)


# --------------------------------------------------------------------------------------------

BENCHES = {"coldstart": bench_coldstart, "dispatch": bench_dispatch, "bandwidth": bench_bandwidth,
           "reduction": bench_reduction}


def header() -> str:
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    try:
        import numba
        extra = f"; numba threads {numba.get_num_threads()}"
    except Exception:  # noqa: BLE001
        extra = ""  # the version list already says what is wrong with numba
    vers = ", ".join(f"{m} {version_of(m)}" for m in ("numpy", "numba", "llvmlite", "taichi", "warp",
                                                        "kiln"))
    return (f"## kiln benchmarks\n\n- machine: {NPROC} cores (nproc), {cpu_model()}, {platform.machine()}, "
            f"{platform.system()} {platform.release()}\n- Python {platform.python_version()}; {vers}{extra}\n"
            f"- date: {time.strftime('%Y-%m-%d %H:%M')}; load average at start (1/5/15 min): {load}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (under ~1.5 min)")
    ap.add_argument("--only", choices=sorted(BENCHES), help="run one benchmark")
    ap.add_argument("--write", action="store_true", help="also write the tables to bench/results.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    parts = [header()]
    print(parts[0], flush=True)
    for name, fn in BENCHES.items():
        if args.only and name != args.only:
            continue
        t = time.perf_counter()
        try:
            text = fn(args.quick)
        except Exception as e:  # noqa: BLE001
            text = f"### {name}\n\nbenchmark failed: {short_err(e, 300)}"
        text += f"\n\n_{name}: {time.perf_counter() - t:.0f} s_\n"
        parts.append(text)
        print(text, flush=True)
    total = f"_total: {time.perf_counter() - t0:.0f} s{' (--quick)' if args.quick else ''}_\n"
    print(total)
    if args.write:
        (BENCH / "results.md").write_text("\n".join(parts) + "\n" + total)
        print(f"wrote {BENCH / 'results.md'}")


if __name__ == "__main__":
    main()
