"""numpy reference for bench/taichi_programs/julia.py: escape-time iteration of z -> z^2 + c
over the whole image at once (complex64), plus the smooth brightness."""

from __future__ import annotations

import numpy as np

F32 = np.float32
RES = (160, 80)
MAX_ITERATIONS = 50


def frame(t: float, res=RES, max_iterations: int = MAX_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    c = np.complex64(complex(-0.8, np.cos(F32(t)) * F32(0.2)))
    i, j = np.meshgrid(np.arange(res[0], dtype=F32), np.arange(res[1], dtype=F32), indexing="ij")
    z = ((i / F32(res[1]) - F32(1)) * F32(2) + 1j * (j / F32(res[1]) - F32(0.5)) * F32(2)).astype(np.complex64)
    count = np.zeros(res, np.int32)
    for _ in range(max_iterations):
        running = (z.real * z.real + z.imag * z.imag) < F32(4)  # not escaped yet
        z = np.where(running, z * z + c, z).astype(np.complex64)
        count += running
    smooth = count.astype(F32)
    escaped = count < max_iterations
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = count + F32(1) - np.log(np.log(np.abs(z))) / np.log(F32(2))
    smooth[escaped] = frac[escaped]
    return count, (F32(1) - np.sqrt(smooth / F32(max_iterations))).astype(F32)


def run(steps: int, t0: float = 0.0, dt: float = 0.03):
    """Same contract as the Taichi program's run(): the last frame's counts and brightness."""
    return frame(t0 + (steps - 1) * dt)
