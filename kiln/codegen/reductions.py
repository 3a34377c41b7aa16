"""Find atomics in a parallel loop that can be privatised per chunk (reductions).

`out[0] += x[i]` inside a parallel loop is an atomic on ONE element from every iteration: with
several threads that address bounces between cores and the loop runs at atomic speed, not memory
speed. Such an atomic can instead accumulate into a private variable per chunk of iterations, and
the chunk adds its partial result with one atomic at the end (Taichi and OpenMP do the same).

An atomic qualifies when its value is unused, its op is associative and commutative, its indices
do not change within the loop (constants, shapes, and variables the body never assigns), and the
array is touched in the loop by nothing but such atomics (no loads, stores, or calls passing it).
Float sums are then added in a different order than the serial loop would, which is also true of
the atomic version with more than one thread.
"""

from __future__ import annotations

from kiln.ir import nodes as N
from kiln.ir.analysis import walk

PRIVATIZABLE = frozenset({N.AtomicOp.ADD, N.AtomicOp.SUB, N.AtomicOp.MIN, N.AtomicOp.MAX,
                          N.AtomicOp.AND, N.AtomicOp.OR, N.AtomicOp.XOR})

ReductionKey = tuple[str, N.AtomicOp, tuple[N.Expr, ...]]


def _assigned(body: tuple[N.Stmt, ...]) -> set[str]:
    names: set[str] = set()
    for n in walk(body):
        if isinstance(n, N.Assign):
            names.add(n.name)
        elif isinstance(n, N.For):
            names.add(n.var)
    return names


def _invariant(e: N.Expr, assigned: set[str]) -> bool:
    for n in walk(e):
        if isinstance(n, N.Var) and n.name in assigned:
            return False
        if isinstance(n, (N.Load, N.AtomicRMW, N.Call)):
            return False
    return True


def reduction_key(e: N.AtomicRMW) -> ReductionKey:
    # Locations differ between textually equal indices; compare the index trees without them.
    return (e.array.name, e.op, tuple(_strip(i) for i in e.indices))


def _strip(e: N.Expr) -> N.Expr:
    import dataclasses
    changes: dict[str, object] = {"loc": N.NO_LOC}
    for f in dataclasses.fields(e):
        v = getattr(e, f.name)
        if isinstance(v, N.Expr):
            changes[f.name] = _strip(v)
        elif isinstance(v, tuple) and v and all(isinstance(x, N.Expr) for x in v):
            changes[f.name] = tuple(_strip(x) for x in v)
        elif isinstance(v, N.ArrayRef):
            changes[f.name] = dataclasses.replace(v, loc=N.NO_LOC)
    return dataclasses.replace(e, **changes)  # type: ignore[arg-type]


def find_reductions(loop: N.ParallelFor) -> list[ReductionKey]:
    """The privatisable atomics of `loop`, one key per (array, op, indices), in body order."""
    assigned = _assigned(loop.body) | {d.var for d in loop.dims}
    candidates: dict[str, list[ReductionKey]] = {}
    disqualified: set[str] = set()
    for n in walk(loop.body):
        if isinstance(n, N.ExprStmt) and isinstance(n.value, N.AtomicRMW):
            a = n.value
            dtype = a.array.type.dtype
            ok = (a.op in PRIVATIZABLE and dtype is not None and dtype.bits >= 8 and dtype.name != "f16"
                  and all(_invariant(i, assigned) for i in a.indices))
            if ok:
                key = reduction_key(a)
                if key not in candidates.setdefault(a.array.name, []):
                    candidates[a.array.name].append(key)
            else:
                disqualified.add(a.array.name)
    # Any other use of the array in the loop disqualifies it: loads, stores, atomics whose value is
    # used, and calls that receive it.
    for n in walk(loop.body):
        if isinstance(n, (N.Load, N.Store, N.AugStore)):
            disqualified.add(n.array.name)
        elif isinstance(n, N.Call):
            disqualified.update(a.name for a in n.args if isinstance(a, N.ArrayRef))
    used_atomics = [n for n in walk(loop.body) if isinstance(n, N.AtomicRMW)]
    stmt_atomics = {id(n.value) for n in walk(loop.body)
                    if isinstance(n, N.ExprStmt) and isinstance(n.value, N.AtomicRMW)}
    for a in used_atomics:
        if id(a) not in stmt_atomics:
            disqualified.add(a.array.name)
    out: list[ReductionKey] = []
    for name, keys in candidates.items():
        if name not in disqualified:
            out.extend(keys)
    return out
