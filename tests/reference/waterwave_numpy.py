"""numpy reference for bench/taichi_programs/waterwave.py: damped 2-D wave equation,
leapfrog on a grid with fixed (zero) edges, float32."""

from __future__ import annotations

import numpy as np

F32 = np.float32
SHAPE = (96, 64)
WAVE_SPEED, DAMPING, DX, DT = 1.0, 0.5, 0.02, 0.01


def gaussian_drops(drops, shape=SHAPE) -> np.ndarray:
    i, j = np.meshgrid(np.arange(shape[0], dtype=F32), np.arange(shape[1], dtype=F32), indexing="ij")
    h = np.zeros(shape, F32)
    for cx, cy, amplitude, width in drops:
        bump = F32(amplitude) * np.exp(-((i - F32(cx)) ** 2 + (j - F32(cy)) ** 2) / F32(width * width))
        h[1:-1, 1:-1] += bump[1:-1, 1:-1]
    return h


def step(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    courant2 = F32((WAVE_SPEED * DT / DX) ** 2)
    a = F32(0.5 * DAMPING * DT)
    lap = cur[:-2, 1:-1] + cur[2:, 1:-1] + cur[1:-1, :-2] + cur[1:-1, 2:] - F32(4) * cur[1:-1, 1:-1]
    nxt = np.zeros_like(cur)
    nxt[1:-1, 1:-1] = (F32(2) * cur[1:-1, 1:-1] - (F32(1) - a) * prev[1:-1, 1:-1]
                       + courant2 * lap) / (F32(1) + a)
    return nxt


def shade(h: np.ndarray) -> np.ndarray:
    padded = np.pad(h, 1)  # a zero neighbour outside the pond
    gx = (padded[2:, 1:-1] - padded[:-2, 1:-1]) * F32(0.5 / DX)
    gy = (padded[1:-1, 2:] - padded[1:-1, :-2]) * F32(0.5 / DX)
    cos_view = F32(1) / np.sqrt(F32(1) + gx * gx + gy * gy)
    return ((F32(1) - cos_view) ** 2).astype(F32)


def run(drops, steps: int):
    """Same contract as the Taichi program's run(): height, previous height, brightness,
    sum of squared heights (float64 sum, array of 1)."""
    prev = gaussian_drops(drops)
    cur = prev.copy()
    for _ in range(steps):
        prev, cur = cur, step(prev, cur)
    return cur, prev, shade(cur), np.array([np.sum(cur.astype(np.float64) ** 2)], np.float32)
