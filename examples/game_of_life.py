"""Conway's game of life on a torus (Taichi 1.7): integer fields, kl.grouped struct-for,
a static 3x3 neighbourhood, integer vectors for wrapped indices.

The kiln port of bench/taichi_programs/game_of_life.py: the Taichi program with `ti.` renamed to
`kl.` (tests/test_taichi_examples.py compares them line by line). The only differences:
- `ti.init(arch=ti.cpu)` is left out: `build()` below compiles the kernels into a module, which is
  saved to a .kiln file and loaded where it runs, on the CPU or an NVIDIA GPU (`main(device=...)`);
- the `__main__` block runs `main()`: the module is loaded in a fresh process (runtime only), seeds
  a board with `kl.random()`, and evolves a numpy board, checked against
  tests/reference/game_of_life_numpy.py.
The program's own `run()` works too, with direct kernel calls, as in Taichi.

    python examples/game_of_life.py [cpu|cuda]
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import kiln as kl

res = (80, 48)
alive = kl.field(kl.i32, shape=res)
neighbours = kl.field(kl.i32, shape=res)
population = kl.field(kl.i32, shape=())


@kl.kernel
def seed(density: kl.f32):
    for i, j in alive:
        alive[i, j] = 1 if kl.random() < density else 0


@kl.func
def wrapped(I):
    return (I + kl.Vector(res)) % kl.Vector(res)


@kl.kernel
def count_neighbours():
    for I in kl.grouped(alive):
        total = 0
        for di, dj in kl.static(kl.ndrange((-1, 2), (-1, 2))):
            if kl.static(di != 0 or dj != 0):
                total += alive[wrapped(I + kl.math.ivec2(di, dj))]
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


def run(steps, initial=None, density=0.25):
    """Evolve `steps` generations from `initial` (numpy int32 array of shape res) or, when it
    is None, from cells alive with probability `density` (kl.random()). Returns the board and
    the live-cell count (array of 1)."""
    if initial is None:
        seed(density)
        population[None] = int(alive.to_numpy().sum())
    else:
        alive.from_numpy(np.asarray(initial, np.int32))
        population[None] = int(np.sum(initial))
    for _ in range(steps):
        count_neighbours()
        apply_rules()
    return alive.to_numpy(), np.int32([population[None]])


# -- kiln: the module build that replaces ti.init, and the check ---------------------------------
def build(targets: tuple[str, ...] = ("cpu",)) -> kl.Module:
    """Two graphs: `seed` (a random board) and `generation` (one step of the rules)."""
    m = kl.Module(targets=list(targets))
    g = kl.GraphBuilder()
    g.dispatch(seed, kl.Arg("density", kl.f32))
    m.add_graph("seed", g)
    g = kl.GraphBuilder()
    g.dispatch(count_neighbours)
    g.dispatch(apply_rules)
    m.add_graph("generation", g)
    return m


def main(device: str = "cpu", steps: int = 100, density: float = 0.25) -> int:
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
    from fresh_process import run_saved

    from tests.reference import game_of_life_numpy as ref

    initial = (np.random.default_rng(0).random(res) < density).astype(np.int32)
    plan = [{"graph": "seed", "args": {"density": density}}, {"snapshot": "seeded"},
            {"graph": "generation", "repeat": steps}]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "game_of_life.kiln")
        build(("cpu", "cuda") if device == "cuda" else ("cpu",)).save(path)
        # each field's name in the file is the one it was first used by (kl.field(..., name=...) to choose)
        seeded = run_saved(path, plan[:2], device)[f"seeded/field:{alive.name}"]
        got = run_saved(path, plan[2:], device, fields={alive: initial})
    want_board, want_pop = ref.run(initial, steps)
    same = bool((got[f"field:{alive.name}"] == want_board).all())
    pop = int(got[f"field:{population.name}"])
    fraction = float(seeded.mean())
    print(f"game_of_life ({device}): {res} torus, {steps} generations in a reloaded module; board matches "
          f"numpy: {same}; population {pop} (numpy {int(want_pop[0])}); kl.random() seeded {fraction:.1%} "
          f"alive (density {density:.0%})")
    ok = same and pop == int(want_pop[0]) and set(np.unique(seeded)) <= {0, 1} and abs(fraction - density) < 0.03
    print("game_of_life: OK" if ok else "game_of_life: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
