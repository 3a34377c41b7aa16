"""Water waves (bench/taichi_programs/waterwave.py, Taichi 1.7) ported to kiln: the damped 2-D wave
equation on a pond with fixed edges, three height fields rotated between steps as
`kl.template()` arguments, Gaussian drops, and a shading pass.

The kernels are the Taichi program's with `ti.` renamed to `kl.`, except where a construct that
other parts of issue 13 add is not in kiln yet (marked "port:"): `laplacian` has annotated
parameters (generic funcs are coming) and `slope` returns its two components instead of a
`kl.Vector` (vector values are coming). `ti.init` becomes a module build: the drops, three leapfrog
steps (one full rotation of the fields) and the shading are graphs of one module that owns the
fields; it is saved, loaded in a fresh process and run there, then checked against
tests/reference/waterwave_numpy.py.

    python examples/waterwave.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import kiln as kl

shape = (96, 64)
wave_speed = 1.0
damping = 0.5
dx = 0.02
dt = 0.01  # c * dt / dx = 0.5 < 1/sqrt(2): stable
courant2 = (wave_speed * dt / dx) ** 2

heights = [kl.field(kl.f32, shape=shape) for _ in range(3)]
brightness = kl.field(kl.f32, shape=shape)
energy = kl.field(kl.f32, shape=())


@kl.func
def laplacian(h: kl.template(), i: kl.i64, j: kl.i64) -> kl.f32:   # port: annotated parameters
    return h[i - 1, j] + h[i + 1, j] + h[i, j - 1] + h[i, j + 1] - 4.0 * h[i, j]


@kl.func
def slope_sq(h: kl.template(), i: kl.i64, j: kl.i64) -> kl.f32:    # port: |slope|^2, not a vector
    # central differences; the edges (fixed at height 0) use a zero outside neighbour
    right = h[i + 1, j] if i < shape[0] - 1 else 0.0
    left = h[i - 1, j] if i > 0 else 0.0
    up = h[i, j + 1] if j < shape[1] - 1 else 0.0
    down = h[i, j - 1] if j > 0 else 0.0
    gx = (right - left) * (0.5 / dx)
    gy = (up - down) * (0.5 / dx)
    return gx * gx + gy * gy


@kl.kernel
def add_drop(h: kl.template(), cx: kl.f32, cy: kl.f32, amplitude: kl.f32, width: kl.f32):
    for i, j in h:
        if 0 < i < shape[0] - 1 and 0 < j < shape[1] - 1:
            r2 = (i - cx) ** 2 + (j - cy) ** 2
            h[i, j] += amplitude * kl.exp(-r2 / (width * width))


@kl.kernel
def step(prev: kl.template(), cur: kl.template(), nxt: kl.template()):
    # leapfrog for u_tt = c^2 lap(u) - damping u_t, edges stay at 0
    for i, j in kl.ndrange((1, shape[0] - 1), (1, shape[1] - 1)):
        accel_term = courant2 * laplacian(cur, i, j)
        nxt[i, j] = (2.0 * cur[i, j] - (1.0 - 0.5 * damping * dt) * prev[i, j] + accel_term) / (
            1.0 + 0.5 * damping * dt)


@kl.kernel
def shade(h: kl.template()):
    # brighter where the surface is steeper (a Fresnel-like look)
    energy[None] = 0.0
    for i, j in brightness:
        g2 = slope_sq(h, i, j)                                # port: g.dot(g)
        cos_view = 1.0 / kl.sqrt(1.0 + g2)
        brightness[i, j] = pow(1.0 - cos_view, 2)
        energy[None] += h[i, j] * h[i, j]


def build() -> kl.Module:
    """The module: `drop` (one drop on the current and previous heights), `step3` (three leapfrog
    steps, after which the fields are back in their roles) and `shade`."""
    m = kl.Module()
    drop = kl.GraphBuilder()
    args = [kl.Arg(n, kl.f32) for n in ("cx", "cy", "amplitude", "width")]
    drop.dispatch(add_drop, heights[0], *args)
    drop.dispatch(add_drop, heights[1], *args)   # start at rest: previous == current
    m.add_graph("drop", drop)
    steps = kl.GraphBuilder()
    prev, cur, nxt = heights
    for _ in range(3):
        steps.dispatch(step, prev, cur, nxt)
        prev, cur, nxt = cur, nxt, prev
    m.add_graph("step3", steps)
    sh = kl.GraphBuilder()
    sh.dispatch(shade, cur)                   # after 3k steps `cur` is heights[1] again
    m.add_graph("shade", sh)
    return m


RUN = """
import json, sys
import numpy as np
import kiln as kl
path, drops, steps, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
m = kl.load_module(path)
for cx, cy, amplitude, width in drops:
    m.graphs["drop"].run({"cx": cx, "cy": cy, "amplitude": amplitude, "width": width})
for _ in range(steps // 3):
    m.graphs["step3"].run({})
m.graphs["shade"].run({})
np.savez(out, **{k: np.asarray(v) for k, v in m.fields.items()})
"""


def main(steps: int = 201, drops: tuple[tuple[float, ...], ...] = ((30.0, 20.0, 1.0, 4.0), (60.0, 40.0, -0.5, 3.0))
         ) -> int:
    if steps % 3:
        raise ValueError("steps must be a multiple of 3 (one rotation of the three height fields per graph run)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.reference import waterwave_numpy as ref

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "waterwave.kiln")
        build().save(path)
        out = os.path.join(tmp, "fields.npz")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(kl.__file__).parents[1]),
                                                                          os.environ.get("PYTHONPATH")])))
        subprocess.run([sys.executable, "-c", RUN, path, json.dumps(drops), str(steps), out], check=True, env=env)
        got = dict(np.load(out))
    want_h, want_prev, want_b, want_e = ref.run(drops, steps)
    names = [h.name for h in heights]
    err_h = float(np.abs(got[names[1]] - want_h).max())
    err_prev = float(np.abs(got[names[0]] - want_prev).max())
    err_b = float(np.abs(got[brightness.name] - want_b).max())
    rel_e = abs(float(got[energy.name]) - float(want_e[0])) / float(want_e[0])
    assert float(want_e[0]) > 0
    print(f"waterwave: {shape} pond, {steps} steps in a reloaded module; max |h - numpy| = {err_h:.2e}, "
          f"|prev - numpy| = {err_prev:.2e}, |brightness - numpy| = {err_b:.2e}, sum h^2 rel. err {rel_e:.1e}")
    ok = err_h < 1e-4 and err_prev < 1e-4 and err_b < 1e-4 and rel_e < 1e-4
    print("waterwave: OK" if ok else "waterwave: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
