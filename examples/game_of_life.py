"""Conway's game of life on a torus (bench/taichi_programs/game_of_life.py, Taichi 1.7) ported to
kiln: integer fields, a `kl.grouped` struct-for, a static 3x3 neighbourhood, a 0-d population field.

The kernels are the Taichi program's with `ti.` renamed to `kl.`, except where a construct that
other parts of issue 13 add is not in kiln yet (marked "port:"): the random `seed` kernel is left
out (random numbers are coming; the board starts from a numpy array, as the Taichi program's
`run(steps, initial)` does) and `wrapped` wraps one index component at a time instead of an
integer vector. `ti.init` becomes a module build: the field contents at build time (the initial
board) are recorded in the file; the module is saved, loaded in a fresh process that runs the
generations, and the result is checked against tests/reference/game_of_life_numpy.py.

    python examples/game_of_life.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import kiln as kl

res = (80, 48)
alive = kl.field(kl.i32, shape=res)
neighbours = kl.field(kl.i32, shape=res)
population = kl.field(kl.i32, shape=())


@kl.func
def wrapped(i: kl.i32, n: kl.i32) -> kl.i32:         # port: one component (no integer vectors yet)
    return (i + n) % n


@kl.kernel
def count_neighbours():
    for I in kl.grouped(alive):
        total = 0
        for di, dj in kl.static(kl.ndrange((-1, 2), (-1, 2))):
            if kl.static(di != 0 or dj != 0):
                total += alive[wrapped(I[0] + di, res[0]), wrapped(I[1] + dj, res[1])]   # port
        neighbours[I] = total


@kl.kernel
def apply_rules():
    population[None] = 0
    for I in kl.grouped(alive):
        n = neighbours[I]
        survives = alive[I] == 1 and (n == 2 or n == 3)
        born = alive[I] == 0 and n == 3
        alive[I] = 1 if survives or born else 0
        population[None] += alive[I]


def build(initial: np.ndarray) -> kl.Module:
    """One graph, `generation`; the module's fields start from `initial` (recorded in the file)."""
    alive.from_numpy(np.asarray(initial, np.int32))
    population[None] = int(np.sum(initial))
    g = kl.GraphBuilder()
    g.dispatch(count_neighbours)
    g.dispatch(apply_rules)
    m = kl.Module()
    m.add_graph("generation", g)
    return m


RUN = """
import sys
import numpy as np
import kiln as kl
m = kl.load_module(sys.argv[1])
for _ in range(int(sys.argv[2])):
    m.graphs["generation"].run({})
np.savez(sys.argv[3], **{k: np.asarray(v) for k, v in m.fields.items()})
"""


def main(steps: int = 100, density: float = 0.25, seed: int = 0) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.reference import game_of_life_numpy as ref

    initial = (np.random.default_rng(seed).random(res) < density).astype(np.int32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "game_of_life.kiln")
        build(initial).save(path)
        out = os.path.join(tmp, "fields.npz")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(kl.__file__).parents[1]),
                                                                          os.environ.get("PYTHONPATH")])))
        subprocess.run([sys.executable, "-c", RUN, path, str(steps), out], check=True, env=env)
        got = dict(np.load(out))
    want_board, want_pop = ref.run(initial, steps)
    same = bool((got["alive"] == want_board).all())
    print(f"game_of_life: {res} torus, {steps} generations in a reloaded module; board matches numpy: {same}; "
          f"population {int(got['population'])} (numpy {int(want_pop[0])})")
    ok = same and int(got["population"]) == int(want_pop[0])
    print("game_of_life: OK" if ok else "game_of_life: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
