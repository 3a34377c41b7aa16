"""MLS-MPM 2-D fluid (Taichi's mpm88) in today's kiln language: scalarised, no vector types.

The same physics as bench/taichi_programs/mpm88.py (quadratic B-spline, 3x3 stencil, APIC C
matrix, J through det(I + dt*C), slip walls): per-particle state as (n, 2) / (n, 2, 2) / (n,)
float32 arrays indexed `x[p, 0]`, the grid as grid_v (G, G, 2) and grid_m (G, G); the stencil
is unrolled with `kl.static(range(3))`. The substep graph mirrors mpm88_bench.py's ti.graph.

    python bench/kiln_programs/mpm88_scalar.py --check   # a few steps vs tests/reference/mpm88_numpy.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import kiln as kl

n_particles = 8192
n_grid = 128
dx = 1.0 / n_grid
inv_dx = float(n_grid)
dt = 2e-4
p_vol = (dx * 0.5) ** 2
p_rho = 1.0
p_mass = p_vol * p_rho
gravity = 9.8
bulk_modulus = 400.0
wall = 3  # cells next to each wall that push particles back

F1 = kl.ndarray(kl.f32, ndim=1)
F2 = kl.ndarray(kl.f32, ndim=2)
F3 = kl.ndarray(kl.f32, ndim=3)


@kl.func
def bspline(k: kl.i64, f: kl.f32) -> kl.f32:
    """Weight of stencil node k (0, 1, 2) for a fractional offset f in [0.5, 1.5)."""
    if k == 0:
        return 0.5 * (1.5 - f) ** 2
    elif k == 1:
        return 0.75 - (f - 1.0) ** 2
    else:
        return 0.5 * (f - 0.5) ** 2


@kl.kernel
def clear_grid(grid_v: F3, grid_m: F2):
    for i, j in kl.ndrange(grid_m.shape[0], grid_m.shape[1]):
        grid_v[i, j, 0] = 0.0
        grid_v[i, j, 1] = 0.0
        grid_m[i, j] = 0.0


@kl.kernel
def particle_to_grid(x: F2, v: F2, C: F3, J: F1, grid_v: F3, grid_m: F2):
    for p in range(x.shape[0]):
        cx = x[p, 0] * inv_dx
        cy = x[p, 1] * inv_dx
        bx = kl.i32(cx - 0.5)
        by = kl.i32(cy - 0.5)
        fx = cx - bx
        fy = cy - by
        pressure_term = -dt * 4.0 * bulk_modulus * p_vol * (J[p] - 1.0) * inv_dx * inv_dx
        a00 = pressure_term + p_mass * C[p, 0, 0]
        a01 = p_mass * C[p, 0, 1]
        a10 = p_mass * C[p, 1, 0]
        a11 = pressure_term + p_mass * C[p, 1, 1]
        mvx = p_mass * v[p, 0]
        mvy = p_mass * v[p, 1]
        for i in kl.static(range(3)):
            for j in kl.static(range(3)):
                dpx = (i - fx) * dx
                dpy = (j - fy) * dx
                weight = bspline(i, fx) * bspline(j, fy)
                grid_v[bx + i, by + j, 0] += weight * (mvx + a00 * dpx + a01 * dpy)
                grid_v[bx + i, by + j, 1] += weight * (mvy + a10 * dpx + a11 * dpy)
                grid_m[bx + i, by + j] += weight * p_mass


@kl.kernel
def update_grid(grid_v: F3, grid_m: F2):
    for i, j in kl.ndrange(grid_m.shape[0], grid_m.shape[1]):
        m = grid_m[i, j]
        gx = grid_v[i, j, 0]
        gy = grid_v[i, j, 1]
        if m > 0:
            gx = gx / m
            gy = gy / m
        gy = gy - dt * gravity
        # no particle may leave through a wall: cancel the outward velocity component
        if i < wall and gx < 0:
            gx = 0.0
        if i > n_grid - wall and gx > 0:
            gx = 0.0
        if j < wall and gy < 0:
            gy = 0.0
        if j > n_grid - wall and gy > 0:
            gy = 0.0
        grid_v[i, j, 0] = gx
        grid_v[i, j, 1] = gy


@kl.kernel
def grid_to_particle(x: F2, v: F2, C: F3, J: F1, grid_v: F3):
    for p in range(x.shape[0]):
        cx = x[p, 0] * inv_dx
        cy = x[p, 1] * inv_dx
        bx = kl.i32(cx - 0.5)
        by = kl.i32(cy - 0.5)
        fx = cx - bx
        fy = cy - by
        nvx = 0.0
        nvy = 0.0
        c00 = 0.0
        c01 = 0.0
        c10 = 0.0
        c11 = 0.0
        for i in kl.static(range(3)):
            for j in kl.static(range(3)):
                dpx = (i - fx) * dx
                dpy = (j - fy) * dx
                weight = bspline(i, fx) * bspline(j, fy)
                gx = grid_v[bx + i, by + j, 0]
                gy = grid_v[bx + i, by + j, 1]
                nvx += weight * gx
                nvy += weight * gy
                s = 4.0 * inv_dx * inv_dx * weight
                c00 += s * gx * dpx
                c01 += s * gx * dpy
                c10 += s * gy * dpx
                c11 += s * gy * dpy
        v[p, 0] = nvx
        v[p, 1] = nvy
        x[p, 0] = x[p, 0] + dt * nvx
        x[p, 1] = x[p, 1] + dt * nvy
        J[p] = J[p] * ((1.0 + dt * c00) * (1.0 + dt * c11) - (dt * c01) * (dt * c10))
        C[p, 0, 0] = c00
        C[p, 0, 1] = c01
        C[p, 1, 0] = c10
        C[p, 1, 1] = c11


SUBSTEP = (clear_grid, particle_to_grid, update_grid, grid_to_particle)
ARG_NAMES = ("x", "v", "C", "J", "grid_v", "grid_m")


def graph_args() -> dict[str, kl.Arg]:
    return {"x": kl.Arg("x", F2, shape=("n", 2)), "v": kl.Arg("v", F2, shape=("n", 2)),
            "C": kl.Arg("C", F3, shape=("n", 2, 2)), "J": kl.Arg("J", F1, shape=("n",)),
            "grid_v": kl.Arg("grid_v", F3, shape=(n_grid, n_grid, 2)),
            "grid_m": kl.Arg("grid_m", F2, shape=(n_grid, n_grid))}


def build_graph(substeps: int) -> kl.GraphBuilder:
    """The four substep kernels as one sequence, appended `substeps` times (not compiled)."""
    a = graph_args()
    g = kl.GraphBuilder()
    seq = g.create_sequential()
    seq.dispatch(clear_grid, a["grid_v"], a["grid_m"])
    seq.dispatch(particle_to_grid, a["x"], a["v"], a["C"], a["J"], a["grid_v"], a["grid_m"])
    seq.dispatch(update_grid, a["grid_v"], a["grid_m"])
    seq.dispatch(grid_to_particle, a["x"], a["v"], a["C"], a["J"], a["grid_v"])
    for _ in range(substeps):
        g.append(seq)
    return g


def make_state(x0: np.ndarray, v0: np.ndarray) -> dict[str, np.ndarray]:
    n = len(x0)
    return {"x": np.array(x0, np.float32), "v": np.array(v0, np.float32),  # copies: runs mutate them
            "C": np.zeros((n, 2, 2), np.float32), "J": np.ones(n, np.float32),
            "grid_v": np.zeros((n_grid, n_grid, 2), np.float32),
            "grid_m": np.zeros((n_grid, n_grid), np.float32)}


def random_state(n: int = n_particles, seed: int = 0) -> dict[str, np.ndarray]:
    """Taichi's init_random: a blob in [0.2, 0.6)^2 falling at v = (0, -1)."""
    rng = np.random.default_rng(seed)
    x0 = rng.random((n, 2), dtype=np.float32) * 0.4 + 0.2
    v0 = np.tile(np.array([0.0, -1.0], np.float32), (n, 1))
    return make_state(x0, v0)


def check(steps: int = 5, n: int = 512) -> None:
    """Direct kernel calls and a compiled graph, each against the numpy reference."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.reference.mpm88_numpy import run as reference

    state = random_state(n, seed=1)
    x0, v0 = state["x"].copy(), state["v"].copy()
    want = dict(zip(ARG_NAMES, reference(x0, v0, steps)))
    direct = make_state(x0, v0)
    for _ in range(steps):
        clear_grid(direct["grid_v"], direct["grid_m"])
        particle_to_grid(*(direct[k] for k in ARG_NAMES))
        update_grid(direct["grid_v"], direct["grid_m"])
        grid_to_particle(*(direct[k] for k in ARG_NAMES[:5]))
    graphed = make_state(x0, v0)
    build_graph(steps).compile().run(graphed)
    worst = 0.0
    for label, got in (("direct calls", direct), ("graph", graphed)):
        for k in ARG_NAMES:
            scale = max(1.0, float(np.abs(want[k]).max()))
            err = float(np.abs(got[k] - want[k]).max()) / scale
            worst = max(worst, err)
            print(f"{label:12s} {k:7s} max |kiln - numpy| / max(1, |numpy|) = {err:.2e}")
            if not err < 5e-4:  # float atomics add in any order; C is the most sensitive
                raise SystemExit(f"mpm88_scalar: {label} {k} differs from the numpy reference ({err:.2e})")
    print(f"OK: {steps} substeps of {n} particles match tests/reference/mpm88_numpy.py (worst {worst:.1e})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare a few steps with the numpy reference")
    parser.add_argument("--steps", type=int, default=5)
    opts = parser.parse_args()
    if opts.check:
        check(opts.steps)
    else:
        st = random_state()
        build_graph(50).compile().run(st)
        print("mean position", st["x"].mean(axis=0), "mean J", st["J"].mean())
