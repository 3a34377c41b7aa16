"""Conway's game of life on a torus (Taichi 1.7): integer fields, ti.grouped struct-for,
a static 3x3 neighbourhood, integer vectors for wrapped indices."""

import numpy as np
import taichi as ti

ti.init(arch=ti.cpu)

res = (80, 48)
alive = ti.field(ti.i32, shape=res)
neighbours = ti.field(ti.i32, shape=res)
population = ti.field(ti.i32, shape=())


@ti.kernel
def seed(density: ti.f32):
    for i, j in alive:
        alive[i, j] = 1 if ti.random() < density else 0


@ti.func
def wrapped(I):
    return (I + ti.Vector(res)) % ti.Vector(res)


@ti.kernel
def count_neighbours():
    for I in ti.grouped(alive):
        total = 0
        for di, dj in ti.static(ti.ndrange((-1, 2), (-1, 2))):
            if ti.static(di != 0 or dj != 0):
                total += alive[wrapped(I + ti.math.ivec2(di, dj))]
        neighbours[I] = total


@ti.kernel
def apply_rules():
    population[None] = 0
    for I in ti.grouped(alive):
        n = neighbours[I]
        survives = alive[I] == 1 and (n == 2 or n == 3)
        born = alive[I] == 0 and n == 3
        alive[I] = 1 if survives or born else 0
        population[None] += alive[I]


def run(steps, initial=None, density=0.25):
    """Evolve `steps` generations from `initial` (numpy int32 array of shape res) or, when it
    is None, from cells alive with probability `density` (ti.random()). Returns the board and
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


if __name__ == "__main__":
    board, pop = run(100)
    print("alive after 100 generations:", pop[0])
