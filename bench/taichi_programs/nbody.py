"""Gravitational n-body in 3-D with Plummer softening and leapfrog (kick-drift-kick), Taichi 1.7.

Written as a @ti.data_oriented class: the fields are attributes, the kernels are methods, and
the pair interaction is a ti.func with generic (unannotated) vector and scalar parameters.
"""

import numpy as np
import taichi as ti

ti.init(arch=ti.cpu)

vec3 = ti.math.vec3


@ti.func
def pair_acceleration(p_i, p_j, m_j, eps2):
    # acceleration of body i caused by body j (G = 1), softened so close passes stay finite
    d = p_j - p_i
    r2 = d.norm_sqr() + eps2
    inv_r3 = 1.0 / (r2 * ti.sqrt(r2))
    return m_j * inv_r3 * d


@ti.data_oriented
class NBody:
    def __init__(self, n, softening=0.05, dt=1e-3):
        self.n = n
        self.eps2 = softening * softening
        self.dt = dt
        self.pos = ti.Vector.field(3, ti.f32, shape=n)
        self.vel = ti.Vector.field(3, ti.f32, shape=n)
        self.acc = ti.Vector.field(3, ti.f32, shape=n)
        self.mass = ti.field(ti.f32, shape=n)
        self.energy = ti.field(ti.f32, shape=())

    @ti.kernel
    def init_random(self, radius: ti.f32):
        # bodies uniform in a ball, at rest, masses in [0.5, 1.5) / n
        for i in self.pos:
            p = vec3(1.0)
            while p.norm() > 1.0:  # rejection sampling inside the unit ball
                p = vec3(ti.random(), ti.random(), ti.random()) * 2.0 - 1.0
            self.pos[i] = p * radius
            self.vel[i] = vec3(0.0)
            self.mass[i] = (0.5 + ti.random()) / self.n

    @ti.kernel
    def compute_acceleration(self):
        for i in self.pos:
            a = vec3(0.0)
            for j in range(self.n):
                if i != j:
                    a += pair_acceleration(self.pos[i], self.pos[j], self.mass[j], self.eps2)
            self.acc[i] = a

    @ti.kernel
    def kick(self, h: ti.f32):
        for i in self.vel:
            self.vel[i] += h * self.acc[i]

    @ti.kernel
    def drift(self, h: ti.f32):
        for i in self.pos:
            self.pos[i] += h * self.vel[i]

    @ti.kernel
    def total_energy(self) -> ti.f32:
        self.energy[None] = 0.0
        for i in self.pos:
            self.energy[None] += 0.5 * self.mass[i] * self.vel[i].norm_sqr()
            for j in range(i + 1, self.n):
                r = ti.sqrt((self.pos[i] - self.pos[j]).norm_sqr() + self.eps2)
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
    pos0 is None, from ti.random() bodies. Returns pos, vel, mass, total energy (array of 1)."""
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


if __name__ == "__main__":
    pos, vel, mass, energy = run(100)
    print("momentum", (mass[:, None] * vel).sum(axis=0), "energy", energy)
