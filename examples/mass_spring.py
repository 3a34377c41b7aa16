"""Mass-spring cloth (Taichi 1.7): an n x n net of point masses in 3-D hanging from its two top
corners, with structural, shear and bending springs (Hooke force plus a dashpot along each
spring), gravity and air drag, stepped with semi-implicit Euler.

The kiln port of bench/taichi_programs/mass_spring.py: the Taichi program with `ti.` renamed to
`kl.` (tests/test_taichi_examples.py compares them line by line). The only differences:
- `ti.init(arch=ti.cpu)` is left out: `build()` below compiles the kernels into a module, which is
  saved to a .kiln file and loaded where it runs, on the CPU or an NVIDIA GPU (`main(device=...)`);
- the `__main__` block runs `main()`: the module is loaded in a fresh process (runtime only) that
  lays the net out flat (`init_flat`) and steps a slightly perturbed copy of it; both are checked
  against tests/reference/mass_spring_numpy.py.
The program's own `run()` works too, with direct kernel calls, as in Taichi.

    python examples/mass_spring.py [cpu|cuda]
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import kiln as kl

n = 24
spacing = 1.0 / n
particle_mass = 1.0 / (n * n)
stiffness = 3000.0 * particle_mass / spacing  # per unit strain
dashpot = 5.0 * particle_mass
drag = 0.5
gravity = kl.math.vec3(0.0, -9.8, 0.0)
dt = 2e-4

# neighbour offsets of each mass: structural, shear and bending springs
spring_offsets = []
for di in range(-2, 3):
    for dj in range(-2, 3):
        if (di, dj) != (0, 0) and abs(di) + abs(dj) <= 2:
            spring_offsets.append(kl.Vector([di, dj]))

x = kl.Vector.field(3, kl.f32, shape=(n, n))
v = kl.Vector.field(3, kl.f32, shape=(n, n))
force = kl.Vector.field(3, kl.f32, shape=(n, n))
pinned = kl.field(kl.i32, shape=(n, n))


@kl.kernel
def init_flat():
    # the net starts horizontal in the plane y = 0.6, at rest; the two far corners are pinned
    for i, j in x:
        x[i, j] = kl.math.vec3(i * spacing - 0.5, 0.6, j * spacing - 0.5)
        v[i, j] = kl.math.vec3(0.0)
        pinned[i, j] = 1 if j == n - 1 and (i == 0 or i == n - 1) else 0


@kl.func
def spring_force(xi, vi, xj, vj, rest):
    d = xj - xi
    length = d.norm()
    direction = d.normalized()
    stretch = length / rest - 1.0
    closing_speed = (vj - vi).dot(direction)
    return (stiffness * stretch + dashpot * closing_speed) * direction


@kl.kernel
def compute_forces():
    for I in kl.grouped(x):
        f = particle_mass * gravity
        for k in kl.static(range(len(spring_offsets))):
            J = I + spring_offsets[k]
            if 0 <= J[0] < n and 0 <= J[1] < n:
                rest = spacing * spring_offsets[k].cast(kl.f32).norm()
                f += spring_force(x[I], v[I], x[J], v[J], rest)
        force[I] = f


@kl.kernel
def integrate():
    for I in kl.grouped(x):
        if pinned[I] == 0:
            v[I] = (v[I] + dt * force[I] / particle_mass) * kl.exp(-drag * dt)
            x[I] += dt * v[I]
        else:
            v[I] = kl.math.vec3(0.0)


def run(steps, x0=None, v0=None):
    """`steps` time steps from the flat net, or from numpy (n, n, 3) float32 positions and
    velocities x0, v0 (the pinned corners stay the same). Returns positions and velocities."""
    init_flat()
    if x0 is not None:
        x.from_numpy(np.asarray(x0, np.float32))
        v.from_numpy(np.asarray(v0, np.float32))
    for _ in range(steps):
        compute_forces()
        integrate()
    return x.to_numpy(), v.to_numpy()


# -- kiln: the module build that replaces ti.init, and the check ---------------------------------
def build(targets: tuple[str, ...] = ("cpu",)) -> kl.Module:
    """Graphs `init` (init_flat) and `step` (forces, then semi-implicit Euler)."""
    m = kl.Module(targets=list(targets))
    g = kl.GraphBuilder()
    g.dispatch(init_flat)
    m.add_graph("init", g)
    g = kl.GraphBuilder()
    g.dispatch(compute_forces)
    g.dispatch(integrate)
    m.add_graph("step", g)
    return m


def main(device: str = "cpu", steps: int = 500) -> int:
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
    from fresh_process import run_saved

    from tests.reference import mass_spring_numpy as ref

    flat_x, flat_v, flat_pinned = ref.initial_state(n)
    x0 = (flat_x + 0.002 * np.random.default_rng(5).standard_normal(flat_x.shape)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mass_spring.kiln")
        build(("cpu", "cuda") if device == "cuda" else ("cpu",)).save(path)
        # each field's name in the file is the one it was first used by (kl.field(..., name=...) to choose)
        flat = run_saved(path, [{"graph": "init"}], device)
        got = run_saved(path, [{"graph": "step", "repeat": steps}], device,
                        fields={x: x0, v: flat_v, pinned: flat[f"field:{pinned.name}"]})
    flat_ok = bool(abs(flat[f"field:{x.name}"] - flat_x).max() < 1e-6 and not flat[f"field:{v.name}"].any()
                   and (flat[f"field:{pinned.name}"] == flat_pinned).all())
    want_x, want_v = ref.run(x0, flat_v, steps)
    err_x = float(abs(got[f"field:{x.name}"] - want_x).max() / abs(want_x).max())
    err_v = float(abs(got[f"field:{v.name}"] - want_v).max() / abs(want_v).max())
    print(f"mass_spring ({device}): {n}x{n} masses, {len(spring_offsets)} springs each, {steps} steps in a "
          f"reloaded module; relative error against numpy x {err_x:.1e}, v {err_v:.1e}; init_flat as numpy: "
          f"{flat_ok}")
    # the tolerances bench/taichi_programs/check_references.py holds Taichi to (a stiff system:
    # f32 rounding differences grow over the steps, the velocities most)
    ok = err_x < 1e-4 and err_v < 5e-3 and flat_ok
    print("mass_spring: OK" if ok else "mass_spring: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
