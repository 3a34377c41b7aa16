"""Water waves: the damped 2-D wave equation on a square pond with fixed edges (Taichi 1.7).

Three height fields are rotated between steps (previous, current, next), so the update kernel
takes them as kl.template() arguments. Drops are Gaussian bumps; a shading pass turns the
surface slope into a brightness image.

The kiln port of bench/taichi_programs/waterwave.py: the Taichi program with `ti.` renamed to
`kl.` (tests/test_taichi_examples.py compares them line by line). The only differences:
- `ti.init(arch=ti.cpu)` is left out: `build()` below compiles the kernels into a module (the drops,
  three leapfrog steps -- one full rotation of the fields -- and the shading are its graphs), which
  is saved to a .kiln file and loaded where it runs, on the CPU or an NVIDIA GPU (`main(device=...)`);
- the `__main__` block runs `main()`: the module is loaded in a fresh process (runtime only) that
  runs it; the result is checked against tests/reference/waterwave_numpy.py.
The program's own `run()` works too, with direct kernel calls, as in Taichi.

    python examples/waterwave.py [cpu|cuda]
"""

import os
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
def laplacian(h, i, j):
    return h[i - 1, j] + h[i + 1, j] + h[i, j - 1] + h[i, j + 1] - 4.0 * h[i, j]


@kl.func
def slope(h, i, j):
    # central differences; the edges (fixed at height 0) use a zero outside neighbour
    right = h[i + 1, j] if i < shape[0] - 1 else 0.0
    left = h[i - 1, j] if i > 0 else 0.0
    up = h[i, j + 1] if j < shape[1] - 1 else 0.0
    down = h[i, j - 1] if j > 0 else 0.0
    return kl.Vector([right - left, up - down]) * (0.5 / dx)


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
        g = slope(h, i, j)
        cos_view = 1.0 / kl.sqrt(1.0 + g.dot(g))
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


# -- kiln: the module build that replaces ti.init, and the check ---------------------------------
def build(targets: tuple[str, ...] = ("cpu",)) -> kl.Module:
    """Graphs `drop` (one drop on the current and previous heights, as run() adds them), `step3`
    (three leapfrog steps, after which the fields are back in their roles) and `shade`."""
    m = kl.Module(targets=list(targets))
    drop = kl.GraphBuilder()
    args = [kl.Arg(name, kl.f32) for name in ("cx", "cy", "amplitude", "width")]
    drop.dispatch(add_drop, heights[0], *args)
    drop.dispatch(add_drop, heights[1], *args)  # start at rest: previous == current
    m.add_graph("drop", drop)
    steps = kl.GraphBuilder()
    prev, cur, nxt = heights
    for _ in range(3):
        steps.dispatch(step, prev, cur, nxt)
        prev, cur, nxt = cur, nxt, prev
    m.add_graph("step3", steps)
    sh = kl.GraphBuilder()
    sh.dispatch(shade, cur)  # after 3k steps `cur` is heights[1] again
    m.add_graph("shade", sh)
    return m


def main(device: str = "cpu", steps: int = 201,
         drops: tuple[tuple[float, ...], ...] = ((30.0, 20.0, 1.0, 4.0), (60.0, 40.0, -0.5, 3.0))) -> int:
    if steps % 3:
        raise ValueError("steps must be a multiple of 3 (one rotation of the three height fields per graph run)")
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
    from fresh_process import run_saved

    from tests.reference import waterwave_numpy as ref

    plan = [{"graph": "drop", "args": dict(zip(("cx", "cy", "amplitude", "width"), d))} for d in drops]
    plan += [{"graph": "step3", "repeat": steps // 3}, {"graph": "shade"}]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "waterwave.kiln")
        build(("cpu", "cuda") if device == "cuda" else ("cpu",)).save(path)
        got = run_saved(path, plan, device)
    # each field's name in the file is the one it was first used by (kl.field(..., name=...) to choose)
    cur, prev, light, total = (got[f"field:{f.name}"] for f in (heights[1], heights[0], brightness, energy))
    want_h, want_prev, want_b, want_e = ref.run(drops, steps)
    err_h, err_prev = float(abs(cur - want_h).max()), float(abs(prev - want_prev).max())
    err_b = float(abs(light - want_b).max())
    rel_e = abs(float(total) - float(want_e[0])) / float(want_e[0])
    print(f"waterwave ({device}): {shape} pond, {steps} steps in a reloaded module; max |h - numpy| = {err_h:.2e}, "
          f"|prev - numpy| = {err_prev:.2e}, |brightness - numpy| = {err_b:.2e}, sum h^2 rel. err {rel_e:.1e}")
    ok = err_h < 1e-4 and err_prev < 1e-4 and err_b < 1e-4 and rel_e < 1e-4 and float(want_e[0]) > 0
    print("waterwave: OK" if ok else "waterwave: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
