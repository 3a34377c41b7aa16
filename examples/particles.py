"""Particles under gravity bouncing in a box: a Taichi AOT-style simulation step as a kiln graph.

Build the step once, save it, load it back (as a deployment would, with no kernel source needed)
and run many steps; the result is checked against the same simulation in numpy.

    python examples/particles.py
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

import kiln as kl

F32 = kl.ndarray(kl.f32, ndim=1)


@kl.kernel
def apply_forces(vx: F32, vy: F32, gravity: kl.f32, drag: kl.f32, dt: kl.f32):
    for i in range(vx.shape[0]):
        vx[i] = vx[i] * (1.0 - drag * dt)
        vy[i] = vy[i] * (1.0 - drag * dt) - gravity * dt


@kl.func
def bounce(p: kl.f32, v: kl.f32, lo: kl.f32, hi: kl.f32, restitution: kl.f32) -> kl.f32:
    # the velocity after hitting a wall: reflected and damped, only when moving outwards
    out = v
    if p < lo and v < 0.0 or p > hi and v > 0.0:
        out = -v * restitution
    return out


@kl.kernel
def advance(x: F32, y: F32, vx: F32, vy: F32, dt: kl.f32, restitution: kl.f32):
    for i in range(x.shape[0]):
        x[i] += vx[i] * dt
        y[i] += vy[i] * dt
        vx[i] = bounce(x[i], vx[i], 0.0, 1.0, restitution)
        vy[i] = bounce(y[i], vy[i], 0.0, 1.0, restitution)
        x[i] = kl.min(kl.max(x[i], 0.0), 1.0)
        y[i] = kl.min(kl.max(y[i], 0.0), 1.0)


@kl.kernel
def kinetic_energy(vx: F32, vy: F32, energy: kl.ndarray(kl.f64, ndim=1)):
    for i in range(vx.shape[0]):
        energy[0] += 0.5 * (vx[i] * vx[i] + vy[i] * vy[i])


SUBSTEPS = 10


def build() -> kl.GraphBuilder:
    """One frame: SUBSTEPS sub-steps of forces + advection, then the kinetic energy."""
    arr = {n: kl.Arg(n, F32, shape=("n",)) for n in ("x", "y", "vx", "vy")}
    dt = kl.Arg("dt", kl.f32)
    g = kl.GraphBuilder()
    sub = g.create_sequential("substep")
    sub.dispatch(apply_forces, arr["vx"], arr["vy"], 9.81, 0.1, dt)
    sub.dispatch(advance, arr["x"], arr["y"], arr["vx"], arr["vy"], dt, 0.8)
    for _ in range(SUBSTEPS):
        g.append(sub)
    g.dispatch(kinetic_energy, arr["vx"], arr["vy"], kl.Arg("energy", kl.ndarray(kl.f64, ndim=1), shape=(1,)))
    return g


def reference(state: dict[str, np.ndarray], dt: float, frames: int) -> dict[str, np.ndarray]:
    s = {k: v.copy() for k, v in state.items()}
    f32 = np.float32
    dt32 = f32(dt)
    for _ in range(frames * SUBSTEPS):
        damp = f32(1.0) - f32(0.1) * dt32
        s["vx"] = s["vx"] * damp
        s["vy"] = s["vy"] * damp - f32(9.81) * dt32
        for p, v in (("x", "vx"), ("y", "vy")):
            s[p] = s[p] + s[v] * dt32
            hit = ((s[p] < 0) & (s[v] < 0)) | ((s[p] > 1) & (s[v] > 0))
            s[v] = np.where(hit, -s[v] * f32(0.8), s[v]).astype(np.float32)
            s[p] = np.clip(s[p], f32(0), f32(1))
    return s


def main(n: int = 100_000, frames: int = 60) -> int:
    rng = np.random.default_rng(0)
    state = {"x": rng.random(n, dtype=np.float32), "y": rng.random(n, dtype=np.float32),
             "vx": (rng.random(n, dtype=np.float32) - 0.5) * 2, "vy": (rng.random(n, dtype=np.float32) - 0.5) * 2}
    start = {k: v.copy() for k, v in state.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "particles.kiln")
        build().compile(target="x86-64-v2").save(path)     # portable: any x86-64-v2 machine
        step = kl.load(path)
        print(f"particles: {n} particles, {frames} frames of {SUBSTEPS} sub-steps; args {step.args}")
        energy = np.zeros(1)
        for _ in range(frames):
            energy[0] = 0.0
            step.run({**state, "dt": 1.0 / 600, "energy": energy})
    ref = reference(start, 1.0 / 600, frames)
    err = max(float(np.abs(state[k] - ref[k]).max()) for k in state)
    ref_energy = float((0.5 * (ref["vx"].astype(np.float64) ** 2 + ref["vy"].astype(np.float64) ** 2)).sum())
    print(f"  max |state - numpy| = {err:.2e}; kinetic energy {energy[0]:.3f} (numpy {ref_energy:.3f})")
    ok = err < 1e-4 and abs(energy[0] - ref_energy) <= 1e-4 * ref_energy
    print("particles: OK" if ok else "particles: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
