"""Gravitational n-body in 3-D with Plummer softening and leapfrog (kick-drift-kick), Taichi 1.7.

Written as a @kl.data_oriented class: the fields are attributes, the kernels are methods, and
the pair interaction is a kl.func with generic (unannotated) vector and scalar parameters.

The kiln port of bench/taichi_programs/nbody.py: the Taichi program with `ti.` renamed to `kl.`
(tests/test_taichi_examples.py compares them line by line). The only differences:
- `ti.init(arch=ti.cpu)` is left out: `build()` below records the methods of `system` into the
  graphs of a module (`step` is NBody.step's launches), which is saved to a .kiln file and loaded
  where it runs, on the CPU or an NVIDIA GPU (`main(device=...)`);
- the `__main__` block runs `main()`: the module is loaded in a fresh process (runtime only) that
  steps a numpy state; it is checked against tests/reference/nbody_numpy.py, and for conservation
  of momentum and energy; `init_random` is checked for bodies inside the ball.
The program's own `run()` works too, with direct kernel calls, as in Taichi. `total_energy`
returns its value to a direct call; in a compiled module it is the field `total_energy_result`.
The mypy comment below is for `np.float32([energy])` in `run()`, valid numpy that numpy's type
stubs do not describe.

    python examples/nbody.py [cpu|cuda]
"""

# mypy: disable-error-code="arg-type"

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import kiln as kl

vec3 = kl.math.vec3


@kl.func
def pair_acceleration(p_i, p_j, m_j, eps2):
    # acceleration of body i caused by body j (G = 1), softened so close passes stay finite
    d = p_j - p_i
    r2 = d.norm_sqr() + eps2
    inv_r3 = 1.0 / (r2 * kl.sqrt(r2))
    return m_j * inv_r3 * d


@kl.data_oriented
class NBody:
    def __init__(self, n, softening=0.05, dt=1e-3):
        self.n = n
        self.eps2 = softening * softening
        self.dt = dt
        self.pos = kl.Vector.field(3, kl.f32, shape=n)
        self.vel = kl.Vector.field(3, kl.f32, shape=n)
        self.acc = kl.Vector.field(3, kl.f32, shape=n)
        self.mass = kl.field(kl.f32, shape=n)
        self.energy = kl.field(kl.f32, shape=())

    @kl.kernel
    def init_random(self, radius: kl.f32):
        # bodies uniform in a ball, at rest, masses in [0.5, 1.5) / n
        for i in self.pos:
            p = vec3(1.0)
            while p.norm() > 1.0:  # rejection sampling inside the unit ball
                p = vec3(kl.random(), kl.random(), kl.random()) * 2.0 - 1.0
            self.pos[i] = p * radius
            self.vel[i] = vec3(0.0)
            self.mass[i] = (0.5 + kl.random()) / self.n

    @kl.kernel
    def compute_acceleration(self):
        for i in self.pos:
            a = vec3(0.0)
            for j in range(self.n):
                if i != j:
                    a += pair_acceleration(self.pos[i], self.pos[j], self.mass[j], self.eps2)
            self.acc[i] = a

    @kl.kernel
    def kick(self, h: kl.f32):
        for i in self.vel:
            self.vel[i] += h * self.acc[i]

    @kl.kernel
    def drift(self, h: kl.f32):
        for i in self.pos:
            self.pos[i] += h * self.vel[i]

    @kl.kernel
    def total_energy(self) -> kl.f32:
        self.energy[None] = 0.0
        for i in self.pos:
            self.energy[None] += 0.5 * self.mass[i] * self.vel[i].norm_sqr()
            for j in range(i + 1, self.n):
                r = kl.sqrt((self.pos[i] - self.pos[j]).norm_sqr() + self.eps2)
                self.energy[None] -= self.mass[i] * self.mass[j] / r
        return self.energy[None]

    def step(self):
        self.kick(0.5 * self.dt)
        self.drift(self.dt)
        self.compute_acceleration()
        self.kick(0.5 * self.dt)


n_bodies = 256
system = NBody(n_bodies)


def run(steps, pos0=None, vel0=None, mass0=None):
    """Leapfrog `steps` steps from the given numpy state (float32 (n, 3), (n, 3), (n,)) or, when
    pos0 is None, from kl.random() bodies. Returns pos, vel, mass, total energy (array of 1)."""
    if pos0 is None:
        system.init_random(1.0)
    else:
        system.pos.from_numpy(np.asarray(pos0, np.float32))
        system.vel.from_numpy(np.asarray(vel0, np.float32))
        system.mass.from_numpy(np.asarray(mass0, np.float32))
    system.compute_acceleration()
    for _ in range(steps):
        system.step()
    energy = system.total_energy()
    return system.pos.to_numpy(), system.vel.to_numpy(), system.mass.to_numpy(), np.float32([energy])


# -- kiln: the module build that replaces ti.init, and the check ---------------------------------
def build(targets: tuple[str, ...] = ("cpu",)) -> kl.Module:
    """Graphs `init` (random bodies, then their accelerations), `accel`, `step` (NBody.step:
    kick, drift, accelerations, kick) and `energy`."""
    m = kl.Module(targets=list(targets))
    g = kl.GraphBuilder()
    g.dispatch(system.init_random, kl.Arg("radius", kl.f32))
    g.dispatch(system.compute_acceleration)
    m.add_graph("init", g)
    g = kl.GraphBuilder()
    g.dispatch(system.compute_acceleration)
    m.add_graph("accel", g)
    g = kl.GraphBuilder()
    g.dispatch(system.kick, 0.5 * system.dt)
    g.dispatch(system.drift, system.dt)
    g.dispatch(system.compute_acceleration)
    g.dispatch(system.kick, 0.5 * system.dt)
    m.add_graph("step", g)
    g = kl.GraphBuilder()
    g.dispatch(system.total_energy)
    m.add_graph("energy", g)
    return m


def main(device: str = "cpu", steps: int = 50) -> int:
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
    from fresh_process import run_saved

    from tests.reference import nbody_numpy as ref

    rng = np.random.default_rng(3)
    pos0 = rng.standard_normal((n_bodies, 3)).astype(np.float32) * 0.5
    vel0 = (0.3 * rng.standard_normal((n_bodies, 3))).astype(np.float32)
    mass0 = ((0.5 + rng.random(n_bodies)) / n_bodies).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nbody.kiln")
        build(("cpu", "cuda") if device == "cuda" else ("cpu",)).save(path)
        plan: list[dict[str, Any]] = [{"graph": "accel"}, {"graph": "step", "repeat": steps}, {"graph": "energy"}]
        got = run_saved(path, plan, device, fields={system.pos: pos0, system.vel: vel0, system.mass: mass0})
        drawn = run_saved(path, [{"graph": "init", "args": {"radius": 1.0}}], device)
    # each field's name in the file is the one it was first used by (here: its attribute's)
    pos, vel, mass = (got[f"field:{f.name}"] for f in (system.pos, system.vel, system.mass))
    want_pos, want_vel, _, _ = ref.run(pos0, vel0, mass0, steps, np.sqrt(system.eps2), system.dt)
    rel = max(float(abs(pos - want_pos).max() / abs(want_pos).max()),
              float(abs(vel - want_vel).max() / abs(want_vel).max()))
    momentum0 = (mass0[:, None].astype(np.float64) * vel0).sum(axis=0)
    momentum = (mass[:, None].astype(np.float64) * vel).sum(axis=0)
    drift_p = float(abs(momentum - momentum0).max()) / float((mass0[:, None] * abs(vel0)).sum())
    e0 = ref.total_energy(pos0, vel0, mass0, system.eps2)
    e_exact = ref.total_energy(pos, vel, mass, system.eps2)
    # the result field's name: `total_energy_result`, suffixed when another load of this program
    # in the same process named one first (fields are named by first use)
    e_kernel = float(got[f"field:{type(system).__dict__['total_energy'].result_field.name}"])
    drift_e = abs(e_exact - e0) / abs(e0)
    p = drawn[f"field:{system.pos.name}"]
    drawn_ok = bool((np.linalg.norm(p, axis=1) <= 1.0 + 1e-6).all() and abs(p.mean(axis=0)).max() < 0.1
                    and not drawn[f"field:{system.vel.name}"].any())
    print(f"nbody ({device}): {n_bodies} bodies, {steps} leapfrog steps in a reloaded module; relative error "
          f"against numpy {rel:.1e}; momentum drift {drift_p:.1e}; energy drift {drift_e:.1e}; total_energy() "
          f"{e_kernel:.6f} (float64: {e_exact:.6f}); init_random bodies inside the ball: {drawn_ok}")
    ok = (rel < 1e-4 and drift_p < 1e-5 and drift_e < 1e-3 and abs(e_kernel - e_exact) < 1e-4 * abs(e_exact)
          and drawn_ok)
    print("nbody: OK" if ok else "nbody: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
