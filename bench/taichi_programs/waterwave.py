"""Water waves: the damped 2-D wave equation on a square pond with fixed edges (Taichi 1.7).

Three height fields are rotated between steps (previous, current, next), so the update kernel
takes them as ti.template() arguments. Drops are Gaussian bumps; a shading pass turns the
surface slope into a brightness image.
"""

import numpy as np
import taichi as ti

ti.init(arch=ti.cpu)

shape = (96, 64)
wave_speed = 1.0
damping = 0.5
dx = 0.02
dt = 0.01  # c * dt / dx = 0.5 < 1/sqrt(2): stable
courant2 = (wave_speed * dt / dx) ** 2

heights = [ti.field(ti.f32, shape=shape) for _ in range(3)]
brightness = ti.field(ti.f32, shape=shape)
energy = ti.field(ti.f32, shape=())


@ti.func
def laplacian(h, i, j):
    return h[i - 1, j] + h[i + 1, j] + h[i, j - 1] + h[i, j + 1] - 4.0 * h[i, j]


@ti.func
def slope(h, i, j):
    # central differences; the edges (fixed at height 0) use a zero outside neighbour
    right = h[i + 1, j] if i < shape[0] - 1 else 0.0
    left = h[i - 1, j] if i > 0 else 0.0
    up = h[i, j + 1] if j < shape[1] - 1 else 0.0
    down = h[i, j - 1] if j > 0 else 0.0
    return ti.Vector([right - left, up - down]) * (0.5 / dx)


@ti.kernel
def add_drop(h: ti.template(), cx: ti.f32, cy: ti.f32, amplitude: ti.f32, width: ti.f32):
    for i, j in h:
        if 0 < i < shape[0] - 1 and 0 < j < shape[1] - 1:
            r2 = (i - cx) ** 2 + (j - cy) ** 2
            h[i, j] += amplitude * ti.exp(-r2 / (width * width))


@ti.kernel
def step(prev: ti.template(), cur: ti.template(), nxt: ti.template()):
    # leapfrog for u_tt = c^2 lap(u) - damping u_t, edges stay at 0
    for i, j in ti.ndrange((1, shape[0] - 1), (1, shape[1] - 1)):
        accel_term = courant2 * laplacian(cur, i, j)
        nxt[i, j] = (2.0 * cur[i, j] - (1.0 - 0.5 * damping * dt) * prev[i, j] + accel_term) / (
            1.0 + 0.5 * damping * dt)


@ti.kernel
def shade(h: ti.template()):
    # brighter where the surface is steeper (a Fresnel-like look)
    energy[None] = 0.0
    for i, j in brightness:
        g = slope(h, i, j)
        cos_view = 1.0 / ti.sqrt(1.0 + g.dot(g))
        brightness[i, j] = pow(1.0 - cos_view, 2)
        energy[None] += h[i, j] * h[i, j]


def run(steps, drops=((30.0, 20.0, 1.0, 4.0), (60.0, 40.0, -0.5, 3.0))):
    """Start from a flat pond plus `drops` (cx, cy, amplitude, width in cells), run `steps`
    leapfrog steps. Returns the current height, the previous height, the brightness image and
    the sum of squared heights (array of 1)."""
    for h in heights:
        h.fill(0.0)
    for cx, cy, amplitude, width in drops:
        add_drop(heights[0], cx, cy, amplitude, width)
        add_drop(heights[1], cx, cy, amplitude, width)  # start at rest: previous == current
    prev, cur, nxt = heights
    for _ in range(steps):
        step(prev, cur, nxt)
        prev, cur, nxt = cur, nxt, prev
    shade(cur)
    return cur.to_numpy(), prev.to_numpy(), brightness.to_numpy(), np.float32([energy[None]])


if __name__ == "__main__":
    h, _, b, e = run(200)
    print("height range", h.min(), h.max(), "max brightness", b.max(), "sum h^2", e)
