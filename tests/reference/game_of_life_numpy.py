"""numpy reference for bench/taichi_programs/game_of_life.py: Conway's rules (B3/S23) on a
torus, integer arithmetic, neighbour counts with np.roll."""

from __future__ import annotations

import numpy as np


def generation(board: np.ndarray) -> np.ndarray:
    count = sum(np.roll(board, (di, dj), axis=(0, 1))
                for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0))
    return ((count == 3) | ((board == 1) & (count == 2))).astype(np.int32)


def run(initial: np.ndarray, steps: int):
    """Same contract as the Taichi program's run(): board, live-cell count (array of 1)."""
    board = np.asarray(initial, np.int32).copy()
    for _ in range(steps):
        board = generation(board)
    return board, np.array([board.sum()], np.int32)
