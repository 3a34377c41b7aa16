"""Mass-spring cloth (Taichi 1.7): an n x n net of point masses in 3-D hanging from its two top
corners, with structural, shear and bending springs (Hooke force plus a dashpot along each
spring), gravity and air drag, stepped with semi-implicit Euler."""

import numpy as np
import taichi as ti

ti.init(arch=ti.cpu)

n = 24
spacing = 1.0 / n
particle_mass = 1.0 / (n * n)
stiffness = 3000.0 * particle_mass / spacing  # per unit strain
dashpot = 5.0 * particle_mass
drag = 0.5
gravity = ti.math.vec3(0.0, -9.8, 0.0)
dt = 2e-4

# neighbour offsets of each mass: structural, shear and bending springs
spring_offsets = []
for di in range(-2, 3):
    for dj in range(-2, 3):
        if (di, dj) != (0, 0) and abs(di) + abs(dj) <= 2:
            spring_offsets.append(ti.Vector([di, dj]))

x = ti.Vector.field(3, ti.f32, shape=(n, n))
v = ti.Vector.field(3, ti.f32, shape=(n, n))
force = ti.Vector.field(3, ti.f32, shape=(n, n))
pinned = ti.field(ti.i32, shape=(n, n))


@ti.kernel
def init_flat():
    # the net starts horizontal in the plane y = 0.6, at rest; the two far corners are pinned
    for i, j in x:
        x[i, j] = ti.math.vec3(i * spacing - 0.5, 0.6, j * spacing - 0.5)
        v[i, j] = ti.math.vec3(0.0)
        pinned[i, j] = 1 if j == n - 1 and (i == 0 or i == n - 1) else 0


@ti.func
def spring_force(xi, vi, xj, vj, rest):
    d = xj - xi
    length = d.norm()
    direction = d.normalized()
    stretch = length / rest - 1.0
    closing_speed = (vj - vi).dot(direction)
    return (stiffness * stretch + dashpot * closing_speed) * direction


@ti.kernel
def compute_forces():
    for I in ti.grouped(x):
        f = particle_mass * gravity
        for k in ti.static(range(len(spring_offsets))):
            J = I + spring_offsets[k]
            if 0 <= J[0] < n and 0 <= J[1] < n:
                rest = spacing * spring_offsets[k].cast(ti.f32).norm()
                f += spring_force(x[I], v[I], x[J], v[J], rest)
        force[I] = f


@ti.kernel
def integrate():
    for I in ti.grouped(x):
        if pinned[I] == 0:
            v[I] = (v[I] + dt * force[I] / particle_mass) * ti.exp(-drag * dt)
            x[I] += dt * v[I]
        else:
            v[I] = ti.math.vec3(0.0)


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


if __name__ == "__main__":
    pos, vel = run(2000)
    print("lowest point", pos[..., 1].min(), "max speed", np.linalg.norm(vel, axis=-1).max())
