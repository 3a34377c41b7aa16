"""MLS-MPM in 2-D: a weakly compressible fluid blob falling into a box (Taichi 1.7).

State lives in ndarrays of kl.math vectors and matrices so the same kernels can be recorded
into a graph (bench/mpm88_bench.py). One substep = clear grid, P2G (quadratic B-spline, 3x3
stencil, whole-vector atomics), grid update (gravity; slip walls that cancel the outward
velocity), G2P (APIC C matrix, volume ratio J updated through the determinant of I + dt*C).

The kiln port of bench/taichi_programs/mpm88.py: the Taichi program with `ti.` renamed to `kl.`
(tests/test_taichi_examples.py compares them line by line). The only differences:
- `ti.init(arch=ti.cpu)` is left out: `build()` below records the substep kernels into a graph of
  `substeps` substeps over symbolic arrays (as Taichi's ti.graph), compiled into a module that is
  saved to a .kiln file and loaded where it runs, on the CPU or an NVIDIA GPU (`main(device=...)`);
- the `__main__` block runs `main()`: the module is loaded in a fresh process (runtime only) that
  draws particles with `init_random` and steps a numpy state; the state is checked against
  tests/reference/mpm88_numpy.py, and the grid's mass against the particles' (conserved).
The program's own `run()` works too, with direct kernel calls, as in Taichi (kiln's ndarrays are
numpy arrays; `kl.Vector.ndarray` and friends add Taichi's `to_numpy`/`from_numpy`). The mypy
comment below is for the kernels' ndarray annotations, which are calls (docs/typing.md).

    python examples/mpm88.py [cpu|cuda]
"""

# mypy: disable-error-code="valid-type"

import os
import sys
import tempfile
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

vec2 = kl.math.vec2
mat2 = kl.math.mat2


@kl.func
def quadratic_weights(fx):
    # B-spline weights of the three nodes around a particle, per axis (fx is a vec2 in [0.5, 1.5))
    return [0.5 * (1.5 - fx) ** 2, 0.75 - (fx - 1.0) ** 2, 0.5 * (fx - 0.5) ** 2]


@kl.kernel
def init_random(x: kl.types.ndarray(dtype=vec2, ndim=1), v: kl.types.ndarray(dtype=vec2, ndim=1),
                C: kl.types.ndarray(dtype=mat2, ndim=1), J: kl.types.ndarray(dtype=kl.f32, ndim=1)):
    for p in x:
        x[p] = vec2(kl.random(), kl.random()) * 0.4 + 0.2
        v[p] = vec2(0.0, -1.0)
        C[p] = mat2(0.0)
        J[p] = 1.0


@kl.kernel
def clear_grid(grid_v: kl.types.ndarray(dtype=vec2, ndim=2),
               grid_m: kl.types.ndarray(dtype=kl.f32, ndim=2)):
    for i, j in grid_m:
        grid_v[i, j] = [0.0, 0.0]
        grid_m[i, j] = 0.0


@kl.kernel
def particle_to_grid(x: kl.types.ndarray(dtype=vec2, ndim=1), v: kl.types.ndarray(dtype=vec2, ndim=1),
                     C: kl.types.ndarray(dtype=mat2, ndim=1), J: kl.types.ndarray(dtype=kl.f32, ndim=1),
                     grid_v: kl.types.ndarray(dtype=vec2, ndim=2),
                     grid_m: kl.types.ndarray(dtype=kl.f32, ndim=2)):
    for p in x:
        cell = x[p] * inv_dx
        base = kl.cast(cell - 0.5, kl.i32)
        fx = cell - base
        w = quadratic_weights(fx)
        pressure_term = -dt * 4.0 * bulk_modulus * p_vol * (J[p] - 1.0) * inv_dx * inv_dx
        affine = kl.Matrix([[pressure_term, 0.0], [0.0, pressure_term]]) + p_mass * C[p]
        for i, j in kl.static(kl.ndrange(3, 3)):
            offset = kl.Vector([i, j])
            dpos = (offset - fx) * dx
            weight = w[i].x * w[j].y
            grid_v[base + offset] += weight * (p_mass * v[p] + affine @ dpos)
            grid_m[base + offset] += weight * p_mass


@kl.kernel
def update_grid(grid_v: kl.types.ndarray(dtype=vec2, ndim=2),
                grid_m: kl.types.ndarray(dtype=kl.f32, ndim=2)):
    for I in kl.grouped(grid_m):
        if grid_m[I] > 0:
            grid_v[I] /= grid_m[I]
        grid_v[I].y -= dt * gravity
        # no particle may leave through a wall: cancel the outward velocity component
        for d in kl.static(range(2)):
            if I[d] < wall and grid_v[I][d] < 0:
                grid_v[I][d] = 0.0
            if I[d] > n_grid - wall and grid_v[I][d] > 0:
                grid_v[I][d] = 0.0


@kl.kernel
def grid_to_particle(x: kl.types.ndarray(dtype=vec2, ndim=1), v: kl.types.ndarray(dtype=vec2, ndim=1),
                     C: kl.types.ndarray(dtype=mat2, ndim=1), J: kl.types.ndarray(dtype=kl.f32, ndim=1),
                     grid_v: kl.types.ndarray(dtype=vec2, ndim=2)):
    for p in x:
        cell = x[p] * inv_dx
        base = kl.cast(cell - 0.5, kl.i32)
        fx = cell - base
        w = quadratic_weights(fx)
        new_v = kl.Vector.zero(kl.f32, 2)
        new_C = kl.Matrix.zero(kl.f32, 2, 2)
        for i, j in kl.static(kl.ndrange(3, 3)):
            offset = kl.Vector([i, j])
            dpos = (offset - fx) * dx
            weight = w[i].x * w[j].y
            node_v = grid_v[base + offset]
            new_v += weight * node_v
            new_C += 4.0 * inv_dx * inv_dx * weight * node_v.outer_product(dpos)
        v[p] = new_v
        x[p] += dt * new_v
        J[p] *= (kl.Matrix.identity(kl.f32, 2) + dt * new_C).determinant()
        C[p] = new_C


def substep(x, v, C, J, grid_v, grid_m):
    clear_grid(grid_v, grid_m)
    particle_to_grid(x, v, C, J, grid_v, grid_m)
    update_grid(grid_v, grid_m)
    grid_to_particle(x, v, C, J, grid_v)


def make_state(n=n_particles):
    return (kl.Vector.ndarray(2, kl.f32, shape=n), kl.Vector.ndarray(2, kl.f32, shape=n),
            kl.Matrix.ndarray(2, 2, kl.f32, shape=n), kl.ndarray(kl.f32, shape=n),
            kl.Vector.ndarray(2, kl.f32, shape=(n_grid, n_grid)), kl.ndarray(kl.f32, shape=(n_grid, n_grid)))


def run(steps, x0=None, v0=None):
    """Run `steps` substeps. Without x0/v0 the particles start from kl.random(); with them
    (numpy (n, 2) float32 arrays) from that state, C = 0 and J = 1.
    Returns x, v, C, J, grid_v, grid_m as numpy arrays (grid after the last grid update)."""
    n = n_particles if x0 is None else len(x0)
    x, v, C, J, grid_v, grid_m = make_state(n)
    if x0 is None:
        init_random(x, v, C, J)
    else:
        x.from_numpy(np.asarray(x0, np.float32))
        v.from_numpy(np.asarray(v0, np.float32))
        C.from_numpy(np.zeros((n, 2, 2), np.float32))
        J.from_numpy(np.ones(n, np.float32))
    for _ in range(steps):
        substep(x, v, C, J, grid_v, grid_m)
    return tuple(a.to_numpy() for a in (x, v, C, J, grid_v, grid_m))


# -- kiln: the graph build that replaces ti.init, and the check ----------------------------------
STATE = ("x", "v", "C", "J", "grid_v", "grid_m")


def state_args() -> list[kl.Arg]:
    """The symbolic arrays of a graph: n particles (any n), the n_grid^2 grid."""
    return [kl.Arg("x", kl.ndarray(vec2, ndim=1), shape=("n",)), kl.Arg("v", kl.ndarray(vec2, ndim=1), shape=("n",)),
            kl.Arg("C", kl.ndarray(mat2, ndim=1), shape=("n",)), kl.Arg("J", kl.ndarray(kl.f32, ndim=1), shape=("n",)),
            kl.Arg("grid_v", kl.ndarray(vec2, ndim=2), shape=(n_grid, n_grid)),
            kl.Arg("grid_m", kl.ndarray(kl.f32, ndim=2), shape=(n_grid, n_grid))]


def build(substeps: int = 10, targets: tuple[str, ...] = ("cpu",)) -> kl.Module:
    """Graphs `init` (init_random) and `substeps` (that many substeps, kernel after kernel)."""
    x, v, C, J, grid_v, grid_m = state_args()
    m = kl.Module(targets=list(targets))
    g = kl.GraphBuilder()
    g.dispatch(init_random, x, v, C, J)
    m.add_graph("init", g)
    g = kl.GraphBuilder()
    for _ in range(substeps):
        g.dispatch(clear_grid, grid_v, grid_m)
        g.dispatch(particle_to_grid, x, v, C, J, grid_v, grid_m)
        g.dispatch(update_grid, grid_v, grid_m)
        g.dispatch(grid_to_particle, x, v, C, J, grid_v)
    m.add_graph("substeps", g)
    return m


def main(device: str = "cpu", n: int = 2048, steps: int = 30, substeps: int = 10) -> int:
    if steps % substeps:
        raise ValueError(f"steps must be a multiple of substeps ({substeps}), got {steps}")
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
    from fresh_process import run_saved

    from tests.reference import mpm88_numpy as ref

    # a blob falling and spinning (a rigid rotation, so that C is far from 0), with some noise
    rng = np.random.default_rng(7)
    x0 = (rng.random((n, 2)) * 0.4 + 0.2).astype(np.float32)
    spin = 5.0 * np.stack([-(x0[:, 1] - 0.4), x0[:, 0] - 0.4], axis=1)
    v0 = (spin + [0.0, -1.0] + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    state = dict(zip(STATE, make_state(n)))
    state["x"][:], state["v"][:], state["J"][:] = x0, v0, 1.0
    drawn = {k: a.copy() for k, a in state.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mpm88.kiln")
        build(substeps, ("cpu", "cuda") if device == "cuda" else ("cpu",)).save(path)
        got = run_saved(path, [{"graph": "substeps", "arrays": list(STATE), "repeat": steps // substeps}],
                        device, arrays=state)
        init = run_saved(path, [{"graph": "init", "arrays": ["x", "v", "C", "J"]}], device, arrays=drawn)
    want = dict(zip(STATE, ref.run(x0, v0, steps)))
    # max |kiln - numpy| relative to numpy's largest magnitude, against the tolerances that
    # bench/taichi_programs/check_references.py holds Taichi to (J: 1e-6 there; its error here is
    # a few f32 ulps of 1.0, which fma contraction on a GPU may double): f32 atomics add in any order
    tolerance = {"x": 1e-6, "v": 1e-5, "C": 1e-3, "J": 1e-5, "grid_v": 1e-4, "grid_m": 1e-5}
    errs = {k: float(abs(got[k] - want[k]).max() / abs(want[k]).max()) for k in STATE}
    worst = max(STATE, key=lambda k: errs[k] / tolerance[k])
    mass = float(got["grid_m"].sum(dtype=np.float64)) / (n * p_mass)   # P2G conserves mass
    drawn_ok = (0.2 <= init["x"].min() and init["x"].max() < 0.6 and abs(float(init["x"].mean()) - 0.4) < 0.01
                and (init["v"] == [0.0, -1.0]).all() and not init["C"].any() and (init["J"] == 1.0).all())
    print(f"mpm88 ({device}): {n} particles, {n_grid}^2 grid, {steps} substeps in a reloaded module; relative "
          f"error against numpy {errs[worst]:.1e} on {worst} (tolerance {tolerance[worst]:.0e}); grid mass / "
          f"particle mass - 1 = {mass - 1:.1e}; init_random particles in [0.2, 0.6): {drawn_ok}")
    ok = all(errs[k] <= tolerance[k] for k in STATE) and abs(mass - 1.0) < 1e-5 and drawn_ok
    print("mpm88: OK" if ok else "mpm88: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
