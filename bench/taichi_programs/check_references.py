"""Check each Taichi program in this folder against its independent numpy reference
(tests/reference/<name>_numpy.py) at a small size, on Taichi's CPU backend.

    python bench/taichi_programs/check_references.py [NAME ...]

Each program runs in its own process (every program calls ti.init at import, as Taichi programs
do). Initial states are generated in numpy and loaded into the fields, so agreement does not
depend on Taichi's random generator; where a program calls ti.random() itself, the rows named
"random ..." check statistical properties of what it produced instead. Integer programs must
agree exactly; float programs within the stated tolerance (max |taichi - numpy|, relative to
the reference's largest magnitude where the row says "rel"). Prints a markdown table and exits
non-zero when any row fails.

Tolerances are float32 rounding with a margin of 3-10x, set from measurement: for every float
row the numpy float32 reference itself differs from a float64 run of the same reference by about
as much as Taichi differs from it (waterwave after 200 steps: 5e-5 vs 3e-5; mass_spring v after
500 stiff steps: 1.0e-3 vs 1.3e-3). The Julia brightness uses the last z of up to 50 chaotic
iterations (error roughly doubles per iteration), hence its looser 1e-2; the MPM C matrix is a
sum of terms ~4*n_grid*|v| that cancel to O(|v|), hence 1e-3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROGRAMS = ["mpm88", "nbody", "waterwave", "game_of_life", "julia", "mass_spring"]
Row = dict


def row(program: str, check: str, size: str, error: float, tolerance: float) -> Row:
    return {"program": program, "check": check, "size": size, "max error": float(error),
            "tolerance": float(tolerance), "ok": bool(error <= tolerance)}


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return max_abs(a, b) / float(np.max(np.abs(b)))


def uniform_stats_error(samples: np.ndarray, low: float, high: float) -> float:
    """Largest deviation of mean and variance of samples that should be U(low, high), in
    standard errors; an out-of-range sample counts as infinitely far."""
    s = np.asarray(samples, np.float64).ravel()
    if s.min() < low or s.max() > high:
        return float("inf")
    n, width = len(s), high - low
    mean_se = width / np.sqrt(12 * n)
    var, var_se = width**2 / 12, width**2 * np.sqrt(1 / 180 / n)  # Var of s^2-estimate for U
    return float(max(abs(s.mean() - (low + high) / 2) / mean_se, abs(s.var() - var) / var_se))


# ---------------------------------------------------------------------------------------------
def check_mpm88() -> list[Row]:
    import mpm88

    from tests.reference import mpm88_numpy as ref

    n, steps = 2048, 30
    rng = np.random.default_rng(7)
    x0 = (rng.random((n, 2)) * 0.4 + 0.2).astype(np.float32)
    spin = 5.0 * np.stack([-(x0[:, 1] - 0.4), x0[:, 0] - 0.4], axis=1)  # rigid rotation, C != 0
    v0 = (spin + [0.0, -1.0] + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    got = mpm88.run(steps, x0, v0)
    want = ref.run(x0, v0, steps)
    size = f"{n} particles, {mpm88.n_grid}^2 grid, {steps} steps"
    rows = [row("mpm88", f"{name} vs numpy (rel)", size, max_rel(g, w), tol)
            for name, g, w, tol in zip(["x", "v", "C", "J", "grid_v", "grid_m"], got, want,
                                       [1e-6, 1e-5, 1e-3, 1e-6, 1e-4, 1e-5])]
    rows += mpm88_conservation(x0, v0, steps)
    x, *_ = mpm88.run(0)  # the program's own ti.random() initial state
    rows.append(row("mpm88", "random x in [0.2, 0.6) (std errors)", f"{len(x)} particles",
                    uniform_stats_error(x, 0.2, 0.6), 4.0))
    corr = abs(np.corrcoef(x[:, 0], x[:, 1])[0, 1]) * np.sqrt(len(x))
    rows.append(row("mpm88", "random x, y uncorrelated (std errors)", f"{len(x)} particles", corr, 4.0))
    return rows


def mpm88_conservation(x0: np.ndarray, v0: np.ndarray, steps: int) -> list[Row]:
    """P2G conserves mass and momentum exactly in exact arithmetic (the B-spline weights sum to
    one and have zero first moment), whatever state the particles are in after `steps`."""
    import mpm88

    x, v, C, J, grid_v, grid_m = mpm88.make_state(len(x0))
    x.from_numpy(x0)
    v.from_numpy(v0)
    C.from_numpy(np.zeros((len(x0), 2, 2), np.float32))
    J.from_numpy(np.ones(len(x0), np.float32))
    for _ in range(steps):
        mpm88.substep(x, v, C, J, grid_v, grid_m)
    mpm88.clear_grid(grid_v, grid_m)
    mpm88.particle_to_grid(x, v, C, J, grid_v, grid_m)
    p_mass = np.float64(mpm88.p_mass)
    mass_p = p_mass * len(x0)
    momentum_p = p_mass * v.to_numpy().astype(np.float64).sum(axis=0)
    grid_momentum = grid_v.to_numpy().astype(np.float64).sum(axis=(0, 1))
    size = f"{len(x0)} particles after {steps} steps"
    scale = p_mass * np.abs(v.to_numpy()).sum()  # total |momentum|: cancellation yardstick
    return [row("mpm88", "P2G mass conservation (rel)", size,
                abs(grid_m.to_numpy().astype(np.float64).sum() - mass_p) / mass_p, 1e-5),
            row("mpm88", "P2G momentum conservation (rel to sum |m v|)", size,
                float(np.max(np.abs(grid_momentum - momentum_p))) / scale, 1e-5)]


def check_nbody() -> list[Row]:
    import nbody

    from tests.reference import nbody_numpy as ref

    n, steps = nbody.n_bodies, 50
    rng = np.random.default_rng(3)
    pos0 = rng.standard_normal((n, 3)).astype(np.float32) * 0.5
    vel0 = (0.3 * rng.standard_normal((n, 3))).astype(np.float32)
    mass0 = ((0.5 + rng.random(n)) / n).astype(np.float32)
    pos, vel, mass, energy = nbody.run(steps, pos0, vel0, mass0)
    want = ref.run(pos0, vel0, mass0, steps)
    size = f"{n} bodies, {steps} steps"
    momentum0 = (mass0[:, None].astype(np.float64) * vel0).sum(axis=0)
    momentum = (mass[:, None].astype(np.float64) * vel).sum(axis=0)
    scale = float((mass0[:, None] * np.abs(vel0)).sum())
    e_exact = ref.total_energy(pos, vel, mass, nbody.system.eps2)
    e0 = ref.total_energy(pos0, vel0, mass0, nbody.system.eps2)
    rows = [row("nbody", "pos vs numpy (rel)", size, max_rel(pos, want[0]), 1e-5),
            row("nbody", "vel vs numpy (rel)", size, max_rel(vel, want[1]), 1e-4),
            row("nbody", "momentum conservation (rel to sum |m v|)", size,
                float(np.max(np.abs(momentum - momentum0))) / scale, 1e-5),
            row("nbody", "energy kernel vs float64 (rel)", size,
                abs(float(energy[0]) - e_exact) / abs(e_exact), 1e-4),
            row("nbody", "energy drift of leapfrog (rel)", size, abs(e_exact - e0) / abs(e0), 1e-3)]
    pos, vel, mass, _ = nbody.run(0)  # the program's own ti.random() bodies in the unit ball
    radius = np.linalg.norm(pos, axis=1)
    rows.append(row("nbody", "random bodies inside the ball (max radius - 1)", f"{n} bodies",
                    max(0.0, float(radius.max()) - 1.0), 0.0))
    # uniform in a ball: r^3 is U(0, 1); masses are U(0.5, 1.5) / n
    rows.append(row("nbody", "random r^3 uniform (std errors)", f"{n} bodies",
                    uniform_stats_error(radius**3, 0.0, 1.0 + 1e-6), 4.0))
    rows.append(row("nbody", "random masses uniform (std errors)", f"{n} bodies",
                    uniform_stats_error(mass * n, 0.5, 1.5), 4.0))
    return rows


def check_waterwave() -> list[Row]:
    import waterwave

    from tests.reference import waterwave_numpy as ref

    drops = ((30.0, 20.0, 1.0, 4.0), (60.0, 40.0, -0.5, 3.0), (10.0, 50.0, 0.7, 2.5))
    steps = 200
    got = waterwave.run(steps, drops)
    want = ref.run(drops, steps)
    size = f"{waterwave.shape[0]}x{waterwave.shape[1]}, {steps} steps"
    return [row("waterwave", f"{name} vs numpy (rel)", size, max_rel(g, w), tol)
            for name, g, w, tol in zip(["height", "previous height", "brightness", "sum h^2"],
                                       got, want, [1e-4, 1e-4, 1e-4, 1e-5])]


def check_game_of_life() -> list[Row]:
    import game_of_life

    from tests.reference import game_of_life_numpy as ref

    steps = 60
    rng = np.random.default_rng(11)
    initial = (rng.random(game_of_life.res) < 0.3).astype(np.int32)
    board, population = game_of_life.run(steps, initial)
    want_board, want_population = ref.run(initial, steps)
    size = f"{game_of_life.res[0]}x{game_of_life.res[1]}, {steps} generations"
    rows = [row("game_of_life", "board vs numpy (exact)", size, max_abs(board, want_board), 0),
            row("game_of_life", "population vs numpy (exact)", size,
                max_abs(population, want_population), 0)]
    density = 0.25
    seeded, _ = game_of_life.run(0, None, density)  # the program's own ti.random() board
    cells = seeded.size
    se = np.sqrt(density * (1 - density) / cells)
    rows.append(row("game_of_life", "random seed density 0.25 (std errors)", f"{cells} cells",
                    abs(seeded.mean() - density) / se, 4.0))
    rows.append(row("game_of_life", "random seed is 0/1 only", f"{cells} cells",
                    float(np.setdiff1d(seeded, [0, 1]).size), 0))
    return rows


def check_julia() -> list[Row]:
    import julia

    from tests.reference import julia_numpy as ref

    steps = 5
    counts, brightness = julia.run(steps)
    want_counts, want_brightness = ref.run(steps)
    size = f"{julia.res[0]}x{julia.res[1]}, {julia.max_iterations} iterations"
    # f32 rounding may move a pixel on the set's boundary by an iteration or so: count pixels
    # whose escape count differs, and compare brightness only where the counts agree
    differ = counts != want_counts
    same = ~differ
    return [row("julia", "pixels with a different escape count (fraction)", size,
                differ.mean(), 0.01),
            row("julia", "brightness where counts agree (abs)", size,
                max_abs(brightness[same], want_brightness[same]), 1e-2)]


def check_mass_spring() -> list[Row]:
    import mass_spring

    from tests.reference import mass_spring_numpy as ref

    steps = 500
    x0, v0, _ = ref.initial_state(mass_spring.n)
    rng = np.random.default_rng(5)
    x0 = (x0 + 0.002 * rng.standard_normal(x0.shape)).astype(np.float32)  # break symmetry
    x, v = mass_spring.run(steps, x0, v0)
    want_x, want_v = ref.run(x0, v0, steps)
    size = f"{mass_spring.n}x{mass_spring.n} masses, {steps} steps"
    return [row("mass_spring", "x vs numpy (rel)", size, max_rel(x, want_x), 1e-4),
            row("mass_spring", "v vs numpy (rel)", size, max_rel(v, want_v), 5e-3)]


CHECKS = {name: globals()[f"check_{name}"] for name in PROGRAMS}


def run_one(name: str) -> None:
    sys.path[:0] = [str(HERE), str(REPO)]
    print(json.dumps(CHECKS[name]()))


def main(names: list[str]) -> int:
    env = dict(os.environ, ENABLE_TAICHI_HEADER_PRINT="0")
    rows: list[Row] = []
    for name in names or PROGRAMS:
        proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True,
                              text=True, env=env, check=False)
        if proc.returncode != 0:
            rows.append({"program": name, "check": "ERROR: " + proc.stderr.strip().splitlines()[-1],
                         "size": "", "max error": float("nan"), "tolerance": 0.0, "ok": False})
            continue
        rows += json.loads(proc.stdout.strip().splitlines()[-1])
    print("| program | check | size | max error | tolerance | ok |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['program']} | {r['check']} | {r['size']} | {r['max error']:.3g} "
              f"| {r['tolerance']:.3g} | {'ok' if r['ok'] else 'FAIL'} |")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        run_one(sys.argv[2])
    else:
        sys.exit(main(sys.argv[1:]))
