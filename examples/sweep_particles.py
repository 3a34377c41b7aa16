"""A parameter sweep of the particle simulation (examples/particles.py) on a Dask cluster.

The simulation step is compiled once here and saved; `kiln.dask.sweep` sends the file and the
initial state to each worker process once, and every worker runs the step for its time steps
`dt` with the runtime alone (no kernel source, no compiler). Each result is checked against the
numpy simulation.

    python examples/sweep_particles.py            # a LocalCluster of 2 worker processes
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np

import kiln.dask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import particles  # the simulation step, beside this file

DTS = (1 / 1200, 1 / 600, 1 / 300, 1 / 150)


def sweep_dt(client: Any, step_file: str, n: int, frames: int) -> list[dict[str, np.ndarray]]:
    """Run `frames` frames of the simulation for each dt in DTS on the cluster's workers."""
    rng = np.random.default_rng(0)
    state = {"x": rng.random(n, dtype=np.float32), "y": rng.random(n, dtype=np.float32),
             "vx": (rng.random(n, dtype=np.float32) - 0.5) * 2, "vy": (rng.random(n, dtype=np.float32) - 0.5) * 2,
             "energy": np.zeros(1)}
    futures = kiln.dask.sweep(step_file, [{"dt": dt} for dt in DTS], state, repeat=frames,
                              outputs=["x", "y", "vx", "vy"], client=client)
    results: list[dict[str, np.ndarray]] = client.gather(futures)
    # The reference, in this process: the same physics in numpy.
    start = {k: v for k, v in state.items() if k != "energy"}
    for dt, got in zip(DTS, results):
        ref = particles.reference(start, dt, frames)
        got["error"] = np.array(max(float(np.abs(got[k] - ref[k]).max()) for k in ref))
    return results


def main(n: int = 50_000, frames: int = 30, client: Any = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "particles.kiln")
        particles.build().compile(target="x86-64-v2").save(path)
        own = None
        if client is None:
            from distributed import Client, LocalCluster
            # Two worker processes on this machine: one task at a time each, and cores / 2 kiln
            # threads per task, so the workers do not oversubscribe the cores. Set in the
            # environment the workers inherit: they import kiln as they start (docs/scale-out.md).
            os.environ.setdefault("KILN_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
            own = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
            client = Client(own)
        try:
            t0 = time.perf_counter()
            results = sweep_dt(client, path, n, frames)
            elapsed = time.perf_counter() - t0
        finally:
            if own is not None:
                client.close()
                own.close()
    print(f"sweep_particles: {n} particles, {frames} frames of {particles.SUBSTEPS} sub-steps, "
          f"{len(DTS)} time steps on {len(client.scheduler_info()['workers']) if own is None else 2} workers "
          f"in {elapsed:.2f} s")
    ok = True
    for dt, r in zip(DTS, results):
        energy = float((0.5 * (r["vx"].astype(np.float64) ** 2 + r["vy"].astype(np.float64) ** 2)).sum())
        print(f"  dt = 1/{round(1 / dt):<5d} kinetic energy {energy:12.3f}   mean height {r['y'].mean():.4f}   "
              f"max |state - numpy| = {float(r['error']):.2e}")
        ok = ok and float(r["error"]) < 1e-4
    print("sweep_particles: OK" if ok else "sweep_particles: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--frames", type=int, default=30)
    opts = ap.parse_args()
    sys.exit(main(opts.n, opts.frames))
