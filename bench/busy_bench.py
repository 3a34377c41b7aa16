"""Parallel loops on a busy machine (issue 14): `PYTHONPATH=. python bench/busy_bench.py`.

A waterwave-like graph (Taichi's waterwave example, written again for each peer): a 2-D wave
equation with four full-grid kernels per frame (updates written `a[i, j] = a[i, j] + d` as in Taichi's
example: `+=` would make kiln and Taichi use atomics) (a ripple, the acceleration from the Laplacian,
the integration step, a refraction-like shading of a background), 60 frames. Each peer runs in its
own subprocess (so that no thread pool, OpenMP setting or JIT cache is shared), first on the machine
as it is ("idle"), then while a competing process started by this script spins in a Python loop
pinned to one CPU ("busy"). Peers: kiln with its default threads, kiln with KILN_NUM_THREADS=1,
Taichi (ti.cpu) and Numba (parallel=True, prange). Every cell is the median over `--repeat` timed
passes inside the worker and over `--rounds` interleaved rounds of workers; the checksum column
shows that every peer computed the same waves.

`--sweep` instead runs kiln with libgomp's GOMP_SPINCOUNT set to each of 0 / 1k / 10k / 30k / 100k
/ 300k (libgomp's default) and measures also a 10-tiny-kernel graph (dispatch cost) and a large
saxpy, idle and busy: the data behind kiln's default wait policy (bench/NOTES.md).

The machine this was written on has 2 cores shared with other work: rerun on a quiet machine.
"""


import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
KAPPA, GAMMA, DX, DT = 2.0, 0.2, 0.02, 0.01
ETA, DEPTH, LIGHT = 1.333, 4.0, 1.0
INV_ETA2 = 1.0 / (ETA * ETA)
AMP = 0.5
# the ripple stops where exp(-0.02 r2) would reach float32's subnormal range: subnormal arithmetic costs
# ~100x on x86 and would make the benchmark measure the FPU instead of the thread pool
RIPPLE_R2 = 2500.0
STENCIL_DISPATCHES = 100
SPINCOUNTS = ("0", "1000", "10000", "30000", "100000", "300000")

# --------------------------------------------------------------------------------------------
# the program: initial state, per-frame ripple centres, numpy reference
# --------------------------------------------------------------------------------------------


def initial_state(n: int) -> dict[str, np.ndarray]:
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    bg = (((i // 16 + j // 16) * 0.5) % 1.0).astype(np.float32)
    z = np.zeros((n, n), np.float32)
    return {"h": z.copy(), "v": z.copy(), "acc": z.copy(), "bg": bg, "px": z.copy()}


def ripple_centres(n: int, frames: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(14)
    return [(float(x), float(y)) for x, y in rng.uniform(0.2 * n, 0.8 * n, size=(frames, 2))]


def checksum(h: np.ndarray, px: np.ndarray) -> str:
    return f"{float(h.astype(np.float64).sum()):.4g}/{float(px.astype(np.float64).sum()):.6g}"


# --------------------------------------------------------------------------------------------
# peers: each returns (frame(k), reset(), sync(), result()) for the waterwave graph
# --------------------------------------------------------------------------------------------

Peer = tuple[Callable[[int], None], Callable[[], None], Callable[[], None], Callable[[], tuple[np.ndarray, np.ndarray]]]


def build_kiln_files(out: Path) -> dict[str, str]:
    """Compile the three kiln graphs once (workers only load them: no compiler in the timing)."""
    import kiln as kl
    sys.path.insert(0, str(HERE))
    from busy_kiln import F1, F2, accelerate, blur, integrate, ripple, saxpy, shade, tiny_kernels
    a = {k: kl.Arg(k, F2, shape=("n", "n")) for k in ("h", "v", "acc", "bg", "px")}
    cx, cy = kl.Arg("cx", kl.f32), kl.Arg("cy", kl.f32)
    g = kl.GraphBuilder()
    g.dispatch(ripple, a["h"], cx, cy)
    g.dispatch(accelerate, a["h"], a["v"], a["acc"])
    g.dispatch(integrate, a["h"], a["v"], a["acc"])
    g.dispatch(shade, a["h"], a["bg"], a["px"])
    paths = {k: str(out / f"{k}.kiln") for k in ("wave", "tiny", "saxpy", "stencil")}
    g.compile().save(paths["wave"])

    y = kl.Arg("y", F1, shape=("m",))
    tiny = kl.GraphBuilder()
    for step in tiny_kernels():
        tiny.dispatch(step, y)
    tiny.compile().save(paths["tiny"])
    sg = kl.GraphBuilder()
    sg.dispatch(saxpy, kl.Arg("a", kl.f32), kl.Arg("x", F1, shape=("m",)), y)
    sg.compile().save(paths["saxpy"])
    sa, sb = kl.Arg("a", F2, shape=("s", "s")), kl.Arg("b", F2, shape=("s", "s"))
    st = kl.GraphBuilder()
    for k in range(STENCIL_DISPATCHES):
        st.dispatch(blur, *((sa, sb) if k % 2 == 0 else (sb, sa)))
    st.compile().save(paths["stencil"])
    return paths


def peer_kiln(n: int, centres: list[tuple[float, float]], files: dict[str, str]) -> Peer:
    import kiln as kl
    step = kl.load(files["wave"])
    s = initial_state(n)
    feed: dict[str, Any] = dict(s)

    def frame(k: int) -> None:
        feed["cx"], feed["cy"] = centres[k]
        step.run(feed)

    def reset() -> None:
        for name, arr in initial_state(n).items():
            s[name][...] = arr

    return frame, reset, lambda: None, lambda: (s["h"], s["px"])


def peer_numba(n: int, centres: list[tuple[float, float]], files: dict[str, str]) -> Peer:
    import numba
    from numba import prange

    f32 = np.float32
    amp, kappa, gamma, dt = f32(AMP), f32(KAPPA), f32(GAMMA), f32(DT)
    lapk, half, inv_eta2, depth, light = f32(1 / (4 * DX * DX)), f32(0.5 / DX), f32(INV_ETA2), f32(DEPTH), f32(LIGHT)

    @numba.njit(parallel=True, fastmath=False)
    def ripple(h, cx, cy):  # type: ignore[no-untyped-def]
        for i in prange(1, h.shape[0] - 1):
            for j in range(1, h.shape[1] - 1):
                dx = f32(i) - cx
                dy = f32(j) - cy
                r2 = dx * dx + dy * dy
                if r2 < RIPPLE_R2:
                    h[i, j] = h[i, j] + amp * np.exp(f32(-0.02) * r2)

    @numba.njit(parallel=True)
    def accelerate(h, v, acc):  # type: ignore[no-untyped-def]
        for i in prange(1, h.shape[0] - 1):
            for j in range(1, h.shape[1] - 1):
                lap = (h[i - 1, j] + h[i + 1, j] + h[i, j - 1] + h[i, j + 1] - f32(4) * h[i, j]) * lapk
                acc[i, j] = kappa * lap - gamma * v[i, j]

    @numba.njit(parallel=True)
    def integrate(h, v, acc):  # type: ignore[no-untyped-def]
        for i in prange(1, h.shape[0] - 1):
            for j in range(1, h.shape[1] - 1):
                v[i, j] = v[i, j] + acc[i, j] * dt
                h[i, j] = h[i, j] + v[i, j] * dt

    @numba.njit(parallel=True)
    def shade(h, bg, px):  # type: ignore[no-untyped-def]
        one = f32(1)
        for i in prange(1, h.shape[0] - 1):
            for j in range(1, h.shape[1] - 1):
                gx = (h[i + 1, j] - h[i - 1, j]) * half
                gy = (h[i, j + 1] - h[i, j - 1]) * half
                cos_i = one / np.sqrt(one + gx * gx + gy * gy)
                cos_o = np.sqrt(one - (one - cos_i * cos_i) * inv_eta2)
                fr = (one - cos_i) * (one - cos_i)
                k = min(max(int(f32(i) + gx * cos_o * depth), 0), h.shape[0] - 1)
                m = min(max(int(f32(j) + gy * cos_o * depth), 0), h.shape[1] - 1)
                px[i, j] = (one - fr) * bg[k, m] + fr * light

    s = initial_state(n)

    def frame(k: int) -> None:
        cx, cy = centres[k]
        ripple(s["h"], f32(cx), f32(cy))
        accelerate(s["h"], s["v"], s["acc"])
        integrate(s["h"], s["v"], s["acc"])
        shade(s["h"], s["bg"], s["px"])

    def reset() -> None:
        for name, arr in initial_state(n).items():
            s[name][...] = arr

    return frame, reset, lambda: None, lambda: (s["h"], s["px"])


def peer_taichi(n: int, centres: list[tuple[float, float]], files: dict[str, str]) -> Peer:
    import taichi as ti
    ti.init(arch=ti.cpu, default_fp=ti.f32, offline_cache=True, log_level=ti.WARN)
    h, v, acc, bg, px = (ti.field(ti.f32, shape=(n, n)) for _ in range(5))

    @ti.kernel
    def ripple(cx: ti.f32, cy: ti.f32):
        for i, j in ti.ndrange((1, n - 1), (1, n - 1)):
            dx = ti.cast(i, ti.f32) - cx
            dy = ti.cast(j, ti.f32) - cy
            r2 = dx * dx + dy * dy
            if r2 < RIPPLE_R2:
                h[i, j] = h[i, j] + AMP * ti.exp(-0.02 * r2)

    @ti.kernel
    def accelerate():
        for i, j in ti.ndrange((1, n - 1), (1, n - 1)):
            lap = (h[i - 1, j] + h[i + 1, j] + h[i, j - 1] + h[i, j + 1] - 4.0 * h[i, j]) / (4.0 * DX * DX)
            acc[i, j] = KAPPA * lap - GAMMA * v[i, j]

    @ti.kernel
    def integrate():
        for i, j in ti.ndrange((1, n - 1), (1, n - 1)):
            v[i, j] = v[i, j] + acc[i, j] * DT
            h[i, j] = h[i, j] + v[i, j] * DT

    @ti.kernel
    def shade():
        for i, j in ti.ndrange((1, n - 1), (1, n - 1)):
            gx = (h[i + 1, j] - h[i - 1, j]) * (0.5 / DX)
            gy = (h[i, j + 1] - h[i, j - 1]) * (0.5 / DX)
            cos_i = ti.rsqrt(1.0 + gx * gx + gy * gy)
            cos_o = ti.sqrt(1.0 - (1.0 - cos_i * cos_i) * INV_ETA2)
            fr = (1.0 - cos_i) * (1.0 - cos_i)
            k = ti.min(ti.max(ti.cast(ti.cast(i, ti.f32) + gx * cos_o * DEPTH, ti.i32), 0), n - 1)
            m = ti.min(ti.max(ti.cast(ti.cast(j, ti.f32) + gy * cos_o * DEPTH, ti.i32), 0), n - 1)
            px[i, j] = (1.0 - fr) * bg[k, m] + fr * LIGHT

    def frame(k: int) -> None:
        cx, cy = centres[k]
        ripple(cx, cy)
        accelerate()
        integrate()
        shade()

    def reset() -> None:
        for name, arr in initial_state(n).items():
            {"h": h, "v": v, "acc": acc, "bg": bg, "px": px}[name].from_numpy(arr)

    return frame, reset, ti.sync, lambda: (h.to_numpy(), px.to_numpy())


PEERS: dict[str, Callable[[int, list[tuple[float, float]], dict[str, str]], Peer]] = {
    "kiln": peer_kiln, "numba": peer_numba, "taichi": peer_taichi}

# --------------------------------------------------------------------------------------------
# worker: one peer, one process; prints one JSON line
# --------------------------------------------------------------------------------------------


def time_wave(peer: Peer, frames: int, repeat: int) -> tuple[list[float], str]:
    frame, reset, sync, result = peer
    reset()
    for k in range(frames):          # warm-up: JIT, thread pool start, caches
        frame(k)
    sync()
    times = []
    for _ in range(repeat):
        reset()
        sync()
        t0 = time.perf_counter()
        for k in range(frames):
            frame(k)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    h, px = result()
    return times, checksum(h, px)


def time_tiny(files: dict[str, str], reps: int = 2000) -> float:
    """us per run of the 10-tiny-kernel graph (16 elements: always serial), best of 5 rounds."""
    import kiln as kl
    step = kl.load(files["tiny"])
    feed = {"y": np.zeros(16, np.float32)}
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            step.run(feed)
        best = min(best, (time.perf_counter() - t0) / reps * 1e6)
    return best


def time_stencil(files: dict[str, str], repeat: int) -> tuple[float, float]:
    """ms per run of the 100-dispatch 128x128 stencil graph (loops of ~16k points: parallel, ~10-30 us
    each, the case where waking sleeping workers costs most): median and minimum of 20 x `repeat` runs
    (the minimum is what a quiet machine gives; other work only ever adds time)."""
    import kiln as kl
    step = kl.load(files["stencil"])
    feed = {"a": np.ones((128, 128), np.float32), "b": np.zeros((128, 128), np.float32)}
    step.run(feed)
    times = []
    for _ in range(20 * repeat):
        t0 = time.perf_counter()
        step.run(feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def time_saxpy(files: dict[str, str], repeat: int) -> float:
    """GB/s of saxpy on 2**24 float32 (12 bytes per element counted), median of `repeat`."""
    import kiln as kl
    step = kl.load(files["saxpy"])
    m = 1 << 24
    feed = {"a": 2.0, "x": np.ones(m, np.float32), "y": np.zeros(m, np.float32)}
    step.run(feed)
    times = []
    for _ in range(max(repeat, 5)):
        t0 = time.perf_counter()
        step.run(feed)
        times.append(time.perf_counter() - t0)
    return 12 * m / statistics.median(times) / 1e9


def worker(args: argparse.Namespace) -> None:
    files = json.loads(args.files)
    centres = ripple_centres(args.n, args.frames)
    out: dict[str, Any] = {}
    peer = PEERS[args.worker](args.n, centres, files)
    times, out["check"] = time_wave(peer, args.frames, args.repeat)
    out["wave_ms"] = statistics.median(times)
    if args.worker == "kiln":
        import kiln as kl
        from kiln.runtime import threads
        out["threads"] = f"{kl.get_num_threads()}, using {threads.threads_in_use()}"
        if args.extra:
            out["tiny_us"] = time_tiny(files)
            out["saxpy_gbs"] = time_saxpy(files, args.repeat)
            out["stencil_ms"], out["stencil_min_ms"] = time_stencil(files, args.repeat)
    elif args.worker == "numba":
        import numba
        out["threads"] = numba.get_num_threads()
        out["layer"] = numba.threading_layer()
    elif args.worker == "taichi":
        import taichi as ti
        out["threads"] = ti.lang.impl.current_cfg().cpu_max_num_threads
    print("RESULT " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------
# driver: the competing process, the rounds, the table
# --------------------------------------------------------------------------------------------


def spin_forever(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    while True:
        pass


@contextlib.contextmanager
def busy_core(cpu: int) -> Iterator[None]:
    """A process that keeps `cpu` busy in a Python loop while the `with` block runs."""
    proc = mp.get_context("spawn").Process(target=spin_forever, args=(cpu,), daemon=True)
    proc.start()
    time.sleep(0.3)              # let it start spinning before anything is timed
    try:
        yield
    finally:
        proc.kill()
        proc.join()


def run_worker(name: str, env_extra: dict[str, str], args: argparse.Namespace, files: dict[str, str],
               extra: bool) -> dict[str, Any]:
    env = dict(os.environ)
    for key, value in env_extra.items():     # "" means: not set at all in the worker
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    env.setdefault("PYTHONPATH", str(HERE.parent))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--n", str(args.n),
           "--frames", str(args.frames), "--repeat", str(args.repeat), "--files", json.dumps(files)]
    if extra:
        cmd.append("--extra")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": tail[:100]}


def configs(args: argparse.Namespace) -> list[tuple[str, str, dict[str, str]]]:
    """(label, worker, environment additions) for each row of the table."""
    clean = {"KILN_NUM_THREADS": "", "OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": ""}
    # an explicit count turns kiln's load monitor off: the spin count alone decides
    fixed = dict(clean, KILN_NUM_THREADS=str(len(os.sched_getaffinity(0))))
    one = dict(clean, KILN_NUM_THREADS="1")
    if args.sweep:
        rows = [(f"kiln, fixed threads, GOMP_SPINCOUNT={s}", "kiln", dict(fixed, GOMP_SPINCOUNT=s))
                for s in args.spincounts.split(",")]
        return [("kiln, default (load monitor + kiln's spin count)", "kiln", clean), *rows,
                ("kiln, 1 thread", "kiln", one)]
    rows = [("kiln, default threads", "kiln", clean), ("kiln, fixed threads (no load monitor)", "kiln", fixed),
            ("kiln, 1 thread", "kiln", one), ("Taichi (ti.cpu)", "taichi", {}), ("Numba parallel (prange)", "numba", {})]
    return [r for r in rows if r[1] in args.peers]


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[0]
    merged = dict(ok[-1])
    for key in ("wave_ms", "tiny_us", "saxpy_gbs", "stencil_ms", "stencil_min_ms"):
        vals = [r[key] for r in ok if key in r]
        if vals:
            merged[key] = statistics.median(vals)
    return merged


def fmt(r: dict[str, Any], key: str, spec: str) -> str:
    if "error" in r:
        return "failed: " + r["error"]
    return format(r[key], spec) if key in r else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="grid side (Taichi's waterwave uses 512)")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=7, help="timed passes per worker (median)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of workers (median)")
    ap.add_argument("--peers", default="kiln,taichi,numba")
    ap.add_argument("--sweep", action="store_true", help="kiln under libgomp spin counts instead of peers")
    ap.add_argument("--spincounts", default=",".join(SPINCOUNTS), help="with --sweep: the values to try")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--files", help=argparse.SUPPRESS)
    ap.add_argument("--extra", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    cpus = sorted(os.sched_getaffinity(0))
    print(f"# busy_bench: {args.n}x{args.n} grid, {args.frames} frames x 4 kernels; CPUs {cpus}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        files = build_kiln_files(Path(tmp))
        cols = configs(args)
        res: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for rnd in range(args.rounds):
            for load in ("idle", "busy"):
                with busy_core(cpus[-1]) if load == "busy" else contextlib.nullcontext():
                    for label, name, env in cols:
                        res.setdefault((label, load), []).append(run_worker(name, env, args, files, args.sweep))
            print(f"# round {rnd + 1}/{args.rounds} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    print_table(args, cols, {k: merge(v) for k, v in res.items()})


def print_table(args: argparse.Namespace, cols: list[tuple[str, str, dict[str, str]]],
                res: dict[tuple[str, str], dict[str, Any]]) -> None:
    head = ["peer", "threads", "idle: 60 frames, ms", "busy: 60 frames, ms", "busy / idle"]
    if args.sweep:
        head += ["idle: 10 tiny kernels, us", "busy: 10 tiny kernels, us", "idle: saxpy GB/s", "busy: saxpy GB/s",
                 "idle: 100 stencils, ms (min)", "busy: 100 stencils, ms (min)"]
    head.append("checksum (idle)")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for label, _name, _env in cols:
        idle, busy = res[(label, "idle")], res[(label, "busy")]
        ratio = f"{busy['wave_ms'] / idle['wave_ms']:.1f}x" if "wave_ms" in idle and "wave_ms" in busy else "-"
        threads = str(idle.get("threads", "?")) + (f" ({idle['layer']})" if "layer" in idle else "")
        cells = [label, threads, fmt(idle, "wave_ms", ".1f"), fmt(busy, "wave_ms", ".1f"), ratio]
        if args.sweep:
            cells += [fmt(idle, "tiny_us", ".2f"), fmt(busy, "tiny_us", ".2f"),
                      fmt(idle, "saxpy_gbs", ".1f"), fmt(busy, "saxpy_gbs", ".1f"),
                      fmt(idle, "stencil_ms", ".2f") + " (" + fmt(idle, "stencil_min_ms", ".2f") + ")",
                      fmt(busy, "stencil_ms", ".2f") + " (" + fmt(busy, "stencil_min_ms", ".2f") + ")"]
        cells.append(idle.get("check", "-"))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
