# mypy: disable-error-code="valid-type"
# (kernel array annotations are calls, which mypy rejects: kiln/mypy_plugin.py explains)
"""`kiln demo`: build a 2-D heat-diffusion graph, save it, run it in a fresh process, check it.

The fresh process (`python -m kiln.cli.demo_child FILE`) blocks imports of the front end, the
code generator and llvmlite before loading, so the demo also shows that a saved file runs with
the runtime alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import kiln as kl
from kiln.cli.demo_reference import GRID, PAIRS_PER_RUN, RUNS, SOURCE


@kl.kernel
def diffuse(u: kl.ndarray(kl.f32, ndim=2), v: kl.ndarray(kl.f32, ndim=2), alpha: kl.f32) -> None:
    for i, j in kl.ndrange((1, u.shape[0] - 1), (1, u.shape[1] - 1)):
        v[i, j] = u[i, j] + alpha * (u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1] - 4.0 * u[i, j])


@kl.kernel
def heat_source(v: kl.ndarray(kl.f32, ndim=2), strength: kl.f32) -> None:
    ci = v.shape[0] // 2
    cj = v.shape[1] // 2
    for i, j in kl.ndrange((ci - 4, ci + 4), (cj - 4, cj + 4)):
        v[i, j] = v[i, j] + strength


@kl.kernel
def total_heat(u: kl.ndarray(kl.f32, ndim=2), energy: kl.ndarray(kl.f64, ndim=1)) -> None:
    for i, j in kl.ndrange(u.shape[0], u.shape[1]):
        energy[0] += u[i, j]


def build_graph() -> kl.GraphBuilder:
    u = kl.Arg("u", kl.ndarray(kl.f32, ndim=2), shape=("h", "w"))
    v = kl.Arg("v", kl.ndarray(kl.f32, ndim=2), shape=("h", "w"))
    alpha = kl.Arg("alpha", kl.f32)
    energy = kl.Arg("energy", kl.ndarray(kl.f64, ndim=1), shape=(1,))
    g = kl.GraphBuilder()
    half = g.create_sequential("half_step")
    half.dispatch(diffuse, u, v, alpha)
    half.dispatch(heat_source, v, SOURCE)
    back = g.create_sequential("back_step")
    back.dispatch(diffuse, v, u, alpha)
    back.dispatch(heat_source, u, SOURCE)
    for _ in range(PAIRS_PER_RUN):
        g.append(half)
        g.append(back)
    g.dispatch(total_heat, u, energy)
    return g


def main(path: str | None = None) -> int:
    print("kiln demo: 2-D heat diffusion, "
          f"{GRID[0]}x{GRID[1]} grid, {4 * PAIRS_PER_RUN + 1} kernel dispatches per graph run")
    with tempfile.TemporaryDirectory() as tmp:
        path = path or os.path.join(tmp, "heat.kiln")
        t0 = time.perf_counter()
        graph = build_graph()
        compiled = graph.compile()
        t1 = time.perf_counter()
        compiled.save(path)
        t2 = time.perf_counter()
        print(f"  compile  {1e3 * (t1 - t0):8.1f} ms   (3 kernels, 1 graph entry point, host CPU)")
        print(f"  save     {1e3 * (t2 - t1):8.1f} ms   -> {path} ({os.path.getsize(path)} bytes)")
        print("  running the saved file in a fresh process (front end, code generator and llvmlite blocked)...")
        proc = subprocess.run([sys.executable, "-m", "kiln.cli.demo_child", path, str(RUNS)],
                              capture_output=True, text=True, check=False)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            print("kiln demo: FAILED in the fresh process")
            return 1
    return 0
