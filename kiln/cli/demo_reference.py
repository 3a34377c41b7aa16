"""The demo's problem size and its numpy reference (numpy only: the fresh process imports it)."""

from __future__ import annotations

import numpy as np

GRID = (256, 256)
PAIRS_PER_RUN = 50      # each graph run = 2 * PAIRS_PER_RUN diffusion steps with sources, then an energy sum
RUNS = 3
ALPHA = 0.2
SOURCE = 0.05


def initial_state() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    u = rng.random(GRID, dtype=np.float32)
    return u, u.copy()


def reference(runs: int) -> tuple[np.ndarray, list[float]]:
    """The same simulation in numpy (float32 arithmetic, like the kernels)."""
    u, v = initial_state()
    a = np.float32(ALPHA)
    ci, cj = GRID[0] // 2, GRID[1] // 2
    energies = []
    for _ in range(runs):
        for _ in range(PAIRS_PER_RUN):
            for src, dst in ((u, v), (v, u)):
                c = src[1:-1, 1:-1]
                dst[1:-1, 1:-1] = c + a * (src[:-2, 1:-1] + src[2:, 1:-1] + src[1:-1, :-2] + src[1:-1, 2:]
                                           - np.float32(4.0) * c)
                dst[ci - 4:ci + 4, cj - 4:cj + 4] += np.float32(SOURCE)
        energies.append(float(u.astype(np.float64).sum()))
    return u, energies
