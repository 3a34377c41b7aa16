"""Julia set of z -> z^2 + c with complex numbers as kl.math.vec2 (Taichi 1.7).

Per pixel: the escape iteration count (integers) and a smooth brightness (floats).

The kiln port of bench/taichi_programs/julia.py: the Taichi program with `ti.` renamed to `kl.`
(tests/test_taichi_examples.py compares them line by line). The only differences:
- `ti.init(arch=ti.cpu)` is left out: `build()` below compiles `paint` into a module, which is
  saved to a .kiln file and loaded where it runs, on the CPU or an NVIDIA GPU (`main(device=...)`);
- the `__main__` block runs `main()`: the module is loaded in a fresh process (runtime only) that
  paints the frames; the last one is checked against tests/reference/julia_numpy.py.
The program's own `run()` works too, with direct kernel calls, as in Taichi.

    python examples/julia.py [cpu|cuda]
"""

import os
import sys
import tempfile
from pathlib import Path

import kiln as kl

res = (160, 80)  # pixels (x, y); the view is [-2, 2] x [-1, 1]
max_iterations = 50
escape_radius2 = 4.0

iterations = kl.field(kl.i32, shape=res)
brightness = kl.field(kl.f32, shape=res)


@kl.func
def complex_sqr(z):
    return kl.math.vec2(z.x * z.x - z.y * z.y, 2.0 * z.x * z.y)


@kl.func
def escape(z, c):
    # iterate until |z| > 2 or the budget is used up; returns (iterations, last z)
    n = 0
    while n < max_iterations and z.norm_sqr() < escape_radius2:
        z = complex_sqr(z) + c
        n += 1
    return n, z


@kl.kernel
def paint(t: kl.f32):
    c = kl.math.vec2(-0.8, kl.cos(t) * 0.2)
    for i, j in iterations:
        z = kl.math.vec2(i / res[1] - 1.0, j / res[1] - 0.5) * 2.0
        n, z_last = escape(z, c)
        iterations[i, j] = n
        smooth = kl.cast(n, kl.f32)
        if n < max_iterations:  # escaped: fractional count from how far past the radius z went
            smooth = n + 1 - kl.log(kl.log(z_last.norm())) / kl.log(2.0)
        brightness[i, j] = 1.0 - pow(smooth / max_iterations, 0.5)


def run(steps, t0=0.0, dt=0.03):
    """Paint `steps` frames of the animated set (c moves with t); returns the last frame's
    iteration counts and brightness."""
    for frame in range(steps):
        paint(t0 + frame * dt)
    return iterations.to_numpy(), brightness.to_numpy()


# -- kiln: the module build that replaces ti.init, and the check ---------------------------------
def build(targets: tuple[str, ...] = ("cpu",)) -> kl.Module:
    """One graph, `paint`: a frame for time t (the images are the module's fields)."""
    m = kl.Module(targets=list(targets))
    g = kl.GraphBuilder()
    g.dispatch(paint, kl.Arg("t", kl.f32))
    m.add_graph("paint", g)
    return m


def main(device: str = "cpu", steps: int = 10, dt: float = 0.03) -> int:
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
    from fresh_process import run_saved

    from tests.reference.julia_numpy import frame

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "julia.kiln")
        build(("cpu", "cuda") if device == "cuda" else ("cpu",)).save(path)
        got = run_saved(path, [{"graph": "paint", "args": {"t": k * dt}} for k in range(steps)], device)
    # each field's name in the file is the one it was first used by (kl.field(..., name=...) to choose)
    counts, light = got[f"field:{iterations.name}"], got[f"field:{brightness.name}"]
    want_counts, want_light = frame((steps - 1) * dt, res, max_iterations)
    same = counts == want_counts
    err = float(abs(light - want_light)[same].max())
    print(f"julia ({device}): {res[0]}x{res[1]} pixels, {steps} frames in a reloaded module; "
          f"{int((counts == max_iterations).sum())} inside the set; counts equal numpy's at {same.mean():.2%} of "
          f"pixels, max |brightness - numpy| there {err:.1e}")
    # f32 as numpy's complex64, but LLVM may contract a*b+c into one fma: an iteration count may
    # differ where z lands right at the escape radius, and the smooth brightness (a log of a log)
    # by a few 1e-4 (Taichi's own: 3e-3, bench/taichi_programs/README.md)
    ok = same.mean() > 0.999 and err < 1e-3
    print("julia: OK" if ok else "julia: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
