"""numpy reference for bench/taichi_programs/mass_spring.py: an n x n cloth of masses with
structural, shear and bending springs (Hooke + dashpot), gravity, drag, semi-implicit Euler,
float32. Springs are handled one neighbour offset at a time over the whole grid."""

from __future__ import annotations

import numpy as np

F32 = np.float32
N = 24
SPACING = 1.0 / N
MASS = 1.0 / (N * N)
STIFFNESS = 3000.0 * MASS / SPACING
DASHPOT = 5.0 * MASS
DRAG = 0.5
GRAVITY = np.array([0.0, -9.8, 0.0], F32)
DT = 2e-4
OFFSETS = [(di, dj) for di in range(-2, 3) for dj in range(-2, 3)
           if (di, dj) != (0, 0) and abs(di) + abs(dj) <= 2]


def initial_state(n: int = N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x = np.stack([i * F32(SPACING) - F32(0.5), np.full(i.shape, 0.6, F32),
                  j * F32(SPACING) - F32(0.5)], axis=-1).astype(F32)
    pinned = (j == n - 1) & ((i == 0) | (i == n - 1))
    return x, np.zeros_like(x), pinned


def forces(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    f = np.broadcast_to(F32(MASS) * GRAVITY, x.shape).copy()
    for di, dj in OFFSETS:
        # masses I whose neighbour I + (di, dj) exists, and those neighbours
        si = slice(max(0, -di), n - max(0, di))
        sj = slice(max(0, -dj), n - max(0, dj))
        ti_ = slice(max(0, di), n + min(0, di))
        tj = slice(max(0, dj), n + min(0, dj))
        d = x[ti_, tj] - x[si, sj]
        length = np.sqrt(np.sum(d * d, axis=-1, keepdims=True))
        direction = d / length
        rest = F32(SPACING * np.hypot(di, dj))
        closing = np.sum((v[ti_, tj] - v[si, sj]) * direction, axis=-1, keepdims=True)
        f[si, sj] += (F32(STIFFNESS) * (length / rest - F32(1)) + F32(DASHPOT) * closing) * direction
    return f


def run(x0: np.ndarray, v0: np.ndarray, steps: int):
    """Same contract as the Taichi program's run(): positions, velocities."""
    _, _, pinned = initial_state(x0.shape[0])
    x, v = np.asarray(x0, F32).copy(), np.asarray(v0, F32).copy()
    free = ~pinned
    decay = F32(np.exp(-DRAG * DT))
    for _ in range(steps):
        f = forces(x, v)
        v[free] = (v[free] + F32(DT) * f[free] / F32(MASS)) * decay
        x[free] += F32(DT) * v[free]
        v[pinned] = 0
    return x, v
