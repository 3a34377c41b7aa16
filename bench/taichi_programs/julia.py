"""Julia set of z -> z^2 + c with complex numbers as ti.math.vec2 (Taichi 1.7).

Per pixel: the escape iteration count (integers) and a smooth brightness (floats)."""

import taichi as ti

ti.init(arch=ti.cpu)

res = (160, 80)  # pixels (x, y); the view is [-2, 2] x [-1, 1]
max_iterations = 50
escape_radius2 = 4.0

iterations = ti.field(ti.i32, shape=res)
brightness = ti.field(ti.f32, shape=res)


@ti.func
def complex_sqr(z):
    return ti.math.vec2(z.x * z.x - z.y * z.y, 2.0 * z.x * z.y)


@ti.func
def escape(z, c):
    # iterate until |z| > 2 or the budget is used up; returns (iterations, last z)
    n = 0
    while n < max_iterations and z.norm_sqr() < escape_radius2:
        z = complex_sqr(z) + c
        n += 1
    return n, z


@ti.kernel
def paint(t: ti.f32):
    c = ti.math.vec2(-0.8, ti.cos(t) * 0.2)
    for i, j in iterations:
        z = ti.math.vec2(i / res[1] - 1.0, j / res[1] - 0.5) * 2.0
        n, z_last = escape(z, c)
        iterations[i, j] = n
        smooth = ti.cast(n, ti.f32)
        if n < max_iterations:  # escaped: fractional count from how far past the radius z went
            smooth = n + 1 - ti.log(ti.log(z_last.norm())) / ti.log(2.0)
        brightness[i, j] = 1.0 - pow(smooth / max_iterations, 0.5)


def run(steps, t0=0.0, dt=0.03):
    """Paint `steps` frames of the animated set (c moves with t); returns the last frame's
    iteration counts and brightness."""
    for frame in range(steps):
        paint(t0 + frame * dt)
    return iterations.to_numpy(), brightness.to_numpy()


if __name__ == "__main__":
    counts, _ = run(10)
    print("pixels inside the set:", int((counts == max_iterations).sum()))
