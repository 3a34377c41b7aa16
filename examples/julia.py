"""Julia set of z -> z^2 + c, ported from Taichi's example (bench/taichi_programs/julia.py):
per pixel the escape iteration count and a smooth brightness, animated by c moving with t.

The port renames `ti.` to `kl.` and turns `ti.init` + module-level fields into a graph over two
arrays, built once, saved, and loaded back (as a deployment would). The funcs are Taichi-style
generic funcs, inlined at their call sites; `escape` returns a tuple. Until kiln's vectors land
(issue 13) a complex number is two scalars, and `res[1]` is read from the array's shape.

    python examples/julia.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

import numpy as np

import kiln as kl

res = (160, 80)  # pixels (x, y); the view is [-2, 2] x [-1, 1]
max_iterations = 50
escape_radius2 = 4.0


@kl.func
def complex_sqr(zx, zy):
    return zx * zx - zy * zy, 2.0 * zx * zy


@kl.func
def escape(zx, zy, cx, cy):
    # iterate until |z| > 2 or the budget is used up; returns (iterations, last z)
    n = 0
    while n < max_iterations and zx * zx + zy * zy < escape_radius2:
        sx, sy = complex_sqr(zx, zy)
        zx, zy = sx + cx, sy + cy
        n += 1
    return n, zx, zy


@kl.kernel
def paint(t: kl.f32, iterations: kl.ndarray(kl.i32, ndim=2), brightness: kl.ndarray(kl.f32, ndim=2)):
    cx, cy = -0.8, kl.cos(t) * 0.2
    h = iterations.shape[1]
    for i, j in kl.ndrange(iterations.shape[0], iterations.shape[1]):
        n, lx, ly = escape((i / h - 1.0) * 2.0, (j / h - 0.5) * 2.0, cx, cy)
        iterations[i, j] = n
        smooth = kl.cast(n, kl.f32)
        if n < max_iterations:  # escaped: fractional count from how far past the radius z went
            smooth = n + 1 - kl.log(kl.log(kl.sqrt(lx * lx + ly * ly))) / kl.log(2.0)
        brightness[i, j] = 1.0 - pow(smooth / max_iterations, 0.5)


def build() -> kl.GraphBuilder:
    """One frame: paint both images for time t."""
    g = kl.GraphBuilder()
    g.dispatch(paint, kl.Arg("t", kl.f32), kl.Arg("iterations", kl.ndarray(kl.i32, ndim=2), shape=("w", "h")),
               kl.Arg("brightness", kl.ndarray(kl.f32, ndim=2), shape=("w", "h")))
    return g


def run(graph: Any, steps: int, size: tuple[int, int] = res, t0: float = 0.0,
        dt: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Paint `steps` frames (c moves with t) with a loaded graph; the last frame's images."""
    iterations, brightness = np.zeros(size, np.int32), np.zeros(size, np.float32)
    for frame in range(steps):
        graph.run({"t": t0 + frame * dt, "iterations": iterations, "brightness": brightness})
    return iterations, brightness


def main(steps: int = 10, size: tuple[int, int] = res) -> int:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    from tests.reference.julia_numpy import frame  # the numpy reference of the Taichi program

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "julia.kiln")
        build().compile(target="x86-64-v2").save(path)
        counts, light = run(kl.load(path), steps, size)
    want_counts, want_light = frame((steps - 1) * 0.03, size, max_iterations)
    same = counts == want_counts
    err = float(np.abs(light - want_light)[same].max())
    print(f"julia: {size[0]}x{size[1]} pixels, {steps} frames; {int((counts == max_iterations).sum())} inside the "
          f"set; counts equal numpy's at {same.mean():.2%} of pixels, max |brightness - numpy| there {err:.1e}")
    # i / h computes in f64 today (Taichi: the default f32), so z differs from numpy's complex64
    # in the last bits: an iteration count may differ right at the set's edge, and the smooth
    # brightness (a log of a log) by a few 1e-4
    ok = same.mean() > 0.99 and err < 1e-3
    print("julia: OK" if ok else "julia: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
