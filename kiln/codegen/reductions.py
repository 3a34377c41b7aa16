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

Atomics whose index DOES vary (a histogram: `bins[keys[i]] += 1`) are handled per array instead
(`array_reductions`): when every use of an array in the loop is such a statement-level atomic with
one privatisable op (ADD and SUB may mix: both accumulate a signed delta), each chunk can scatter
into a private copy of the array with plain load-op-store and then merge the copy into the real
array with one atomic per element that changed. The code generator does that only when the array
is small (a runtime check; see `PRIVATE_LIMIT`) and keeps the atomic loop for larger arrays.
Arrays that `find_reductions` already covers (invariant indices only) keep the cheaper scalar path.
"""

from __future__ import annotations

from kiln.ir import nodes as N
from kiln.ir.analysis import walk
from kiln.types import ScalarType

PRIVATIZABLE = frozenset({N.AtomicOp.ADD, N.AtomicOp.SUB, N.AtomicOp.MIN, N.AtomicOp.MAX,
                          N.AtomicOp.AND, N.AtomicOp.OR, N.AtomicOp.XOR})

ReductionKey = tuple[str, N.AtomicOp, tuple[N.Expr, ...]]

#: Largest array (in elements) that a chunk privatises: the private copy lives on the thread's
#: stack (PRIVATE_LIMIT * 8 bytes at most per array), is cleared before and scanned after every
#: chunk (O(PRIVATE_LIMIT), under a microsecond), and should stay in L1/L2.
PRIVATE_LIMIT = 2048


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
    disqualified |= _other_uses(loop)
    out: list[ReductionKey] = []
    for name, keys in candidates.items():
        if name not in disqualified:
            out.extend(keys)
    return out


def _other_uses(loop: N.ParallelFor) -> set[str]:
    """Arrays used in the loop by anything but a statement-level atomic: loads, stores, atomics
    whose value is used, and calls that receive the array. Any such use disqualifies an array."""
    out: set[str] = set()
    for n in walk(loop.body):
        if isinstance(n, (N.Load, N.Store, N.AugStore)):
            out.add(n.array.name)
        elif isinstance(n, N.Call):
            out.update(a.name for a in n.args if isinstance(a, N.ArrayRef))
    stmt_atomics = {id(n.value) for n in walk(loop.body)
                    if isinstance(n, N.ExprStmt) and isinstance(n.value, N.AtomicRMW)}
    for n in walk(loop.body):
        if isinstance(n, N.AtomicRMW) and id(n) not in stmt_atomics:
            out.add(n.array.name)
    return out


def _private_dtype_ok(dtype: ScalarType | None) -> bool:
    # ints of 8..64 bits, f32, f64 (no bool, no f16), like the scalar reductions
    if dtype is None or dtype.is_bool:
        return False
    if dtype.is_float:
        return dtype.bits in (32, 64)
    return dtype.is_int and dtype.bits >= 8


def array_reductions(loop: N.ParallelFor) -> dict[str, N.AtomicOp]:
    """Arrays of `loop` that a chunk may scatter into a private copy of (see the module docstring),
    each with the op that merges the copy into the real array: ADD for arrays updated by ADD
    and/or SUB (the copy holds the net delta), else the one op all its atomics use. Body order."""
    scalar = {key[0] for key in find_reductions(loop)}
    ops: dict[str, set[N.AtomicOp]] = {}
    bad = _other_uses(loop) | scalar
    for n in walk(loop.body):
        if isinstance(n, N.ExprStmt) and isinstance(n.value, N.AtomicRMW):
            a = n.value
            ops.setdefault(a.array.name, set()).add(a.op)
            if a.op not in PRIVATIZABLE or not _private_dtype_ok(a.array.type.dtype):
                bad.add(a.array.name)
    out: dict[str, N.AtomicOp] = {}
    for name, used in ops.items():
        if name in bad:
            continue
        if used <= {N.AtomicOp.ADD, N.AtomicOp.SUB}:
            out[name] = N.AtomicOp.ADD
        elif len(used) == 1:
            out[name] = next(iter(used))
    return out


def find_array_reductions(loop: N.ParallelFor) -> list[str]:
    """Names of the arrays of `loop` that can be privatised per chunk as whole arrays."""
    return list(array_reductions(loop))
