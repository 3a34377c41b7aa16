"""MLS-MPM in 2-D: a weakly compressible fluid blob falling into a box (Taichi 1.7).

State lives in ndarrays of ti.math vectors and matrices so the same kernels can be recorded
into a ti.graph (see mpm88_bench.py). One substep = clear grid, P2G (quadratic B-spline, 3x3
stencil, whole-vector atomics), grid update (gravity; slip walls that cancel the outward
velocity), G2P (APIC C matrix, volume ratio J updated through the determinant of I + dt*C).
"""

import numpy as np
import taichi as ti

ti.init(arch=ti.cpu)

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

vec2 = ti.math.vec2
mat2 = ti.math.mat2


@ti.func
def quadratic_weights(fx):
    # B-spline weights of the three nodes around a particle, per axis (fx is a vec2 in [0.5, 1.5))
    return [0.5 * (1.5 - fx) ** 2, 0.75 - (fx - 1.0) ** 2, 0.5 * (fx - 0.5) ** 2]


@ti.kernel
def init_random(x: ti.types.ndarray(dtype=vec2, ndim=1), v: ti.types.ndarray(dtype=vec2, ndim=1),
                C: ti.types.ndarray(dtype=mat2, ndim=1), J: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    for p in x:
        x[p] = vec2(ti.random(), ti.random()) * 0.4 + 0.2
        v[p] = vec2(0.0, -1.0)
        C[p] = mat2(0.0)
        J[p] = 1.0


@ti.kernel
def clear_grid(grid_v: ti.types.ndarray(dtype=vec2, ndim=2),
               grid_m: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    for i, j in grid_m:
        grid_v[i, j] = [0.0, 0.0]
        grid_m[i, j] = 0.0


@ti.kernel
def particle_to_grid(x: ti.types.ndarray(dtype=vec2, ndim=1), v: ti.types.ndarray(dtype=vec2, ndim=1),
                     C: ti.types.ndarray(dtype=mat2, ndim=1), J: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     grid_v: ti.types.ndarray(dtype=vec2, ndim=2),
                     grid_m: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    for p in x:
        cell = x[p] * inv_dx
        base = ti.cast(cell - 0.5, ti.i32)
        fx = cell - base
        w = quadratic_weights(fx)
        pressure_term = -dt * 4.0 * bulk_modulus * p_vol * (J[p] - 1.0) * inv_dx * inv_dx
        affine = ti.Matrix([[pressure_term, 0.0], [0.0, pressure_term]]) + p_mass * C[p]
        for i, j in ti.static(ti.ndrange(3, 3)):
            offset = ti.Vector([i, j])
            dpos = (offset - fx) * dx
            weight = w[i].x * w[j].y
            grid_v[base + offset] += weight * (p_mass * v[p] + affine @ dpos)
            grid_m[base + offset] += weight * p_mass


@ti.kernel
def update_grid(grid_v: ti.types.ndarray(dtype=vec2, ndim=2),
                grid_m: ti.types.ndarray(dtype=ti.f32, ndim=2)):
    for I in ti.grouped(grid_m):
        if grid_m[I] > 0:
            grid_v[I] /= grid_m[I]
        grid_v[I].y -= dt * gravity
        # no particle may leave through a wall: cancel the outward velocity component
        for d in ti.static(range(2)):
            if I[d] < wall and grid_v[I][d] < 0:
                grid_v[I][d] = 0.0
            if I[d] > n_grid - wall and grid_v[I][d] > 0:
                grid_v[I][d] = 0.0


@ti.kernel
def grid_to_particle(x: ti.types.ndarray(dtype=vec2, ndim=1), v: ti.types.ndarray(dtype=vec2, ndim=1),
                     C: ti.types.ndarray(dtype=mat2, ndim=1), J: ti.types.ndarray(dtype=ti.f32, ndim=1),
                     grid_v: ti.types.ndarray(dtype=vec2, ndim=2)):
    for p in x:
        cell = x[p] * inv_dx
        base = ti.cast(cell - 0.5, ti.i32)
        fx = cell - base
        w = quadratic_weights(fx)
        new_v = ti.Vector.zero(ti.f32, 2)
        new_C = ti.Matrix.zero(ti.f32, 2, 2)
        for i, j in ti.static(ti.ndrange(3, 3)):
            offset = ti.Vector([i, j])
            dpos = (offset - fx) * dx
            weight = w[i].x * w[j].y
            node_v = grid_v[base + offset]
            new_v += weight * node_v
            new_C += 4.0 * inv_dx * inv_dx * weight * node_v.outer_product(dpos)
        v[p] = new_v
        x[p] += dt * new_v
        J[p] *= (ti.Matrix.identity(ti.f32, 2) + dt * new_C).determinant()
        C[p] = new_C


def substep(x, v, C, J, grid_v, grid_m):
    clear_grid(grid_v, grid_m)
    particle_to_grid(x, v, C, J, grid_v, grid_m)
    update_grid(grid_v, grid_m)
    grid_to_particle(x, v, C, J, grid_v)


def make_state(n=n_particles):
    return (ti.Vector.ndarray(2, ti.f32, shape=n), ti.Vector.ndarray(2, ti.f32, shape=n),
            ti.Matrix.ndarray(2, 2, ti.f32, shape=n), ti.ndarray(ti.f32, shape=n),
            ti.Vector.ndarray(2, ti.f32, shape=(n_grid, n_grid)), ti.ndarray(ti.f32, shape=(n_grid, n_grid)))


def run(steps, x0=None, v0=None):
    """Run `steps` substeps. Without x0/v0 the particles start from ti.random(); with them
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


if __name__ == "__main__":
    x, v, C, J, _, _ = run(50)
    print("mean position", x.mean(axis=0), "mean J", J.mean())
