"""kiln.dask with 1 and 2 worker processes beside the same work in this process.

Two workloads, each timed after a warm-up run (so the file is already linked on the workers):
  * sweep: the particle simulation (examples/particles.py), one task per time step `dt`;
  * map_blocks: saxpy over a dask array held by the client (the blocks travel to the workers).
Each worker runs one task at a time with cores/workers kiln threads, so every row uses all cores.

    PYTHONPATH=. python bench/dask_bench.py [--quick]

The numbers are noisy on a shared machine: compare rows of one run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import particles  # the simulation step (examples/particles.py)

import kiln as kl
import kiln.dask as kd

F32 = kl.ndarray(kl.f32, ndim=1)


@kl.kernel
def saxpy(a: kl.f32, x: F32, y: F32):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


def _median(fn: Callable[[], Any], repeat: int) -> float:
    fn()                                    # warm-up: links the file on every worker
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _state(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.random(n, dtype=np.float32), "y": rng.random(n, dtype=np.float32),
            "vx": (rng.random(n, dtype=np.float32) - 0.5) * 2, "vy": (rng.random(n, dtype=np.float32) - 0.5) * 2,
            "energy": np.zeros(1)}


def in_process(step: Any, saxpy_graph: Any, n: int, dts: list[float], frames: int, big: np.ndarray,
               repeat: int) -> tuple[float, float]:
    state = _state(n)

    def sweep() -> None:
        for dt in dts:
            values = {k: v.copy() for k, v in state.items()} | {"dt": dt}
            for _ in range(frames):
                step.run(values)

    def blocks() -> None:
        y = np.zeros_like(big)
        saxpy_graph.run({"a": 2.0, "x": big, "y": y})

    return _median(sweep, repeat), _median(blocks, repeat)


def on_cluster(workers: int, step_path: str, saxpy_path: str, n: int, dts: list[float], frames: int,
               big: np.ndarray, chunks: int, repeat: int) -> tuple[float, float]:
    import dask.array as da
    from distributed import Client, LocalCluster
    cores = os.cpu_count() or 1
    os.environ["KILN_NUM_THREADS"] = str(max(1, cores // workers))   # read by the workers as they start
    with LocalCluster(n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        state = _state(n)
        step = kd.ship(step_path, client)

        def sweep() -> None:
            client.gather(kd.sweep(step, [{"dt": dt} for dt in dts], state, repeat=frames, outputs=["x"]))

        xs = da.from_array(big, chunks=big.size // chunks)
        shipped = kd.ship(saxpy_path, client)

        def blocks() -> None:
            kd.map_blocks(shipped, {"x": xs}, out="y", args={"a": 2.0}).compute()

        return _median(sweep, repeat), _median(blocks, repeat)


def main() -> int:
    ap = argparse.ArgumentParser(description="kiln.dask with 1 and 2 workers")
    ap.add_argument("--quick", action="store_true")
    opts = ap.parse_args()
    n, frames, ndts, size, repeat = (50_000, 5, 4, 1 << 20, 3) if opts.quick else (200_000, 10, 8, 1 << 24, 5)
    dts = [1 / (300 * (k + 1)) for k in range(ndts)]
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        step_path, saxpy_path = os.path.join(tmp, "particles.kiln"), os.path.join(tmp, "saxpy.kiln")
        particles.build().compile().save(step_path)
        g = kl.GraphBuilder()
        g.dispatch(saxpy, kl.Arg("a", kl.f32), kl.Arg("x", F32), kl.Arg("y", F32))
        g.compile().save(saxpy_path)
        big = np.random.default_rng(1).random(size, dtype=np.float32)
        rows = [("this process (no Dask)", *in_process(kl.load(step_path), kl.load(saxpy_path), n, dts, frames,
                                                      big, repeat))]
        for workers in (1, 2):
            rows.append((f"kiln.dask, {workers} worker process{'es' if workers > 1 else ''}",
                         *on_cluster(workers, step_path, saxpy_path, n, dts, frames, big, 16, repeat)))
    print(f"{os.cpu_count()} cores; sweep: {ndts} tasks x {frames} frames of {particles.SUBSTEPS} sub-steps, "
          f"{n} particles; map_blocks: saxpy over {size} f32 in 16 blocks; median of {repeat}")
    print("Noisy: this machine is shared; compare rows of one run only.")
    print(f"| {'':34s} | sweep (s) | map_blocks (s) |")
    print(f"|{'-' * 36}|-----------|----------------|")
    for name, t_sweep, t_blocks in rows:
        print(f"| {name:34s} | {t_sweep:9.3f} | {t_blocks:14.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
