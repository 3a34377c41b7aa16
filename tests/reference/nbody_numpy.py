"""numpy reference for bench/taichi_programs/nbody.py: softened gravity (G = 1), leapfrog
kick-drift-kick, float32. All-pairs accelerations as an (n, n, 3) broadcast."""

from __future__ import annotations

import numpy as np

F32 = np.float32


def accelerations(pos: np.ndarray, mass: np.ndarray, eps2: float) -> np.ndarray:
    d = pos[None, :, :] - pos[:, None, :]  # d[i, j] = pos[j] - pos[i]
    r2 = np.einsum("ijk,ijk->ij", d, d) + F32(eps2)
    inv_r3 = F32(1.0) / (r2 * np.sqrt(r2))
    np.fill_diagonal(inv_r3, 0)  # no self force
    return np.einsum("ij,ijk->ik", inv_r3 * mass[None, :], d).astype(F32)


def total_energy(pos: np.ndarray, vel: np.ndarray, mass: np.ndarray, eps2: float) -> float:
    """Kinetic plus softened potential energy, in float64 (an exact yardstick)."""
    p, v, m = pos.astype(np.float64), vel.astype(np.float64), mass.astype(np.float64)
    d = p[None] - p[:, None]
    r = np.sqrt(np.einsum("ijk,ijk->ij", d, d) + eps2)
    pair = np.triu(m[:, None] * m[None, :] / r, k=1)
    return float(0.5 * (m * np.einsum("ik,ik->i", v, v)).sum() - pair.sum())


def run(pos0: np.ndarray, vel0: np.ndarray, mass: np.ndarray, steps: int,
        softening: float = 0.05, dt: float = 1e-3):
    """Same contract as the Taichi program's run(): pos, vel, mass, energy (array of 1)."""
    eps2 = softening * softening
    pos, vel, mass = (np.asarray(a, F32).copy() for a in (pos0, vel0, mass))
    acc = accelerations(pos, mass, eps2)
    half, full = F32(0.5 * dt), F32(dt)
    for _ in range(steps):
        vel += half * acc
        pos += full * vel
        acc = accelerations(pos, mass, eps2)
        vel += half * acc
    return pos, vel, mass, np.array([total_energy(pos, vel, mass, eps2)], np.float32)
