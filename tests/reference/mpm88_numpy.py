"""numpy reference for bench/taichi_programs/mpm88.py: 2-D MLS-MPM fluid, float32.

Written from the method (quadratic B-spline MLS-MPM with APIC transfer), not from the Taichi
code: per-particle arrays of shape (n, 2) / (n, 2, 2), the grid as (G, G, 2) and (G, G); the
scatter of P2G is np.add.at over the 9 stencil nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32


@dataclass(frozen=True)
class MpmParams:
    n_grid: int = 128
    dt: float = 2e-4
    gravity: float = 9.8
    bulk_modulus: float = 400.0
    wall: int = 3

    @property
    def dx(self) -> float:
        return 1.0 / self.n_grid

    @property
    def p_vol(self) -> float:
        return (self.dx * 0.5) ** 2

    @property
    def p_mass(self) -> float:
        return self.p_vol  # density 1


STENCIL = [(i, j) for i in range(3) for j in range(3)]


def _stencil(x: np.ndarray, prm: MpmParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Base node (n, 2) int, fractional offset (n, 2) and per-axis weights (3, n, 2)."""
    cell = x * F32(prm.n_grid)
    base = (cell - F32(0.5)).astype(np.int32)
    fx = cell - base.astype(F32)
    w = np.stack([F32(0.5) * (F32(1.5) - fx) ** 2, F32(0.75) - (fx - F32(1.0)) ** 2,
                  F32(0.5) * (fx - F32(0.5)) ** 2])
    return base, fx, w


def particle_to_grid(x: np.ndarray, v: np.ndarray, C: np.ndarray, J: np.ndarray,
                     prm: MpmParams) -> tuple[np.ndarray, np.ndarray]:
    """Grid momentum (G, G, 2) and mass (G, G) scattered from the particles."""
    g = prm.n_grid
    base, fx, w = _stencil(x, prm)
    pressure = F32(-prm.dt * 4.0 * prm.bulk_modulus * prm.p_vol) * (J - F32(1.0)) * F32(g * g)
    affine = np.eye(2, dtype=F32)[None] * pressure[:, None, None] + F32(prm.p_mass) * C
    grid_p = np.zeros((g, g, 2), F32)
    grid_m = np.zeros((g, g), F32)
    for i, j in STENCIL:
        offset = np.array([i, j], F32)
        dpos = (offset - fx) * F32(prm.dx)
        weight = w[i, :, 0] * w[j, :, 1]
        momentum = F32(prm.p_mass) * v + np.einsum("nab,nb->na", affine, dpos)
        node = base + np.array([i, j])
        np.add.at(grid_p, (node[:, 0], node[:, 1]), weight[:, None] * momentum)
        np.add.at(grid_m, (node[:, 0], node[:, 1]), weight * F32(prm.p_mass))
    return grid_p, grid_m


def update_grid(grid_p: np.ndarray, grid_m: np.ndarray, prm: MpmParams) -> np.ndarray:
    """Grid velocity: momentum / mass, gravity, outward components zeroed near the walls."""
    g = prm.n_grid
    has_mass = grid_m > 0
    grid_v = grid_p.copy()
    grid_v[has_mass] = grid_p[has_mass] / grid_m[has_mass][:, None]
    grid_v[..., 1] -= F32(prm.dt * prm.gravity)
    idx = np.arange(g)
    for axis in range(2):
        coord = idx[:, None] if axis == 0 else idx[None, :]
        comp = grid_v[..., axis]
        comp[(coord < prm.wall) & (comp < 0)] = 0
        comp[(coord > g - prm.wall) & (comp > 0)] = 0
    return grid_v


def grid_to_particle(x: np.ndarray, J: np.ndarray, grid_v: np.ndarray,
                     prm: MpmParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    base, fx, w = _stencil(x, prm)
    new_v = np.zeros_like(x)
    new_C = np.zeros((len(x), 2, 2), F32)
    scale = F32(4.0 * prm.n_grid * prm.n_grid)
    for i, j in STENCIL:
        dpos = (np.array([i, j], F32) - fx) * F32(prm.dx)
        weight = w[i, :, 0] * w[j, :, 1]
        node = base + np.array([i, j])
        node_v = grid_v[node[:, 0], node[:, 1]]
        new_v += weight[:, None] * node_v
        new_C += scale * weight[:, None, None] * node_v[:, :, None] * dpos[:, None, :]
    step = np.eye(2, dtype=F32)[None] + F32(prm.dt) * new_C
    det = step[:, 0, 0] * step[:, 1, 1] - step[:, 0, 1] * step[:, 1, 0]
    return x + F32(prm.dt) * new_v, new_v, new_C, J * det


def run(x0: np.ndarray, v0: np.ndarray, steps: int, prm: MpmParams = MpmParams()):
    """Same contract as the Taichi program's run(): x, v, C, J, grid_v, grid_m."""
    x = np.asarray(x0, F32).copy()
    v = np.asarray(v0, F32).copy()
    C = np.zeros((len(x), 2, 2), F32)
    J = np.ones(len(x), F32)
    grid_v = np.zeros((prm.n_grid, prm.n_grid, 2), F32)
    grid_m = np.zeros((prm.n_grid, prm.n_grid), F32)
    for _ in range(steps):
        grid_p, grid_m = particle_to_grid(x, v, C, J, prm)
        grid_v = update_grid(grid_p, grid_m, prm)
        x, v, C, J = grid_to_particle(x, J, grid_v, prm)
    return x, v, C, J, grid_v, grid_m
