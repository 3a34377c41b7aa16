"""Read-only analyses over kernel IR (used by passes, code generators, the graph layer and the manifest)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from kiln.ir.nodes import (
    NO_LOC,
    ArrayRef,
    AtomicRMW,
    AugStore,
    Call,
    Expr,
    FunctionIR,
    KernelIR,
    Load,
    Shape,
    Store,
)

#: fields that are not child nodes: types, locations, and the plans (their index expressions are
#: copies of expressions in the body, not code that runs)
_NOT_WALKED = frozenset({"type", "loc", "plan", "launch_plan"})


def walk(node: object) -> Iterator[object]:
    """Every IR node under `node` (pre-order), following dataclass fields and tuples."""
    stack = [node]
    child_fields = _child_fields
    is_node = _is_node_type
    while stack:
        n = stack.pop()
        if isinstance(n, tuple):
            stack.extend(reversed(n))
            continue
        yield n
        names = child_fields.get(type(n))
        if names is None:
            names = _learn_fields(type(n))
        for name in names:
            v = getattr(n, name)
            if isinstance(v, tuple):
                stack.extend(reversed(v))
            else:
                node = is_node.get(type(v))
                if node is None:
                    node = is_node[type(v)] = _is_node(v)
                if node:
                    stack.append(v)


#: per class, the names of the fields `walk` follows (dataclasses.fields per node was the top
#: Python cost of large compiles, bench/NOTES_COMPILE.md); () for classes that are not dataclasses
_child_fields: dict[type, tuple[str, ...]] = {}
#: per class of a field value: whether walk descends into it (a dataclass instance)
_is_node_type: dict[type, bool] = {}


def _learn_fields(cls: type) -> tuple[str, ...]:
    names: tuple[str, ...] = ()
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in _NOT_WALKED)
    _child_fields[cls] = names
    return names


def _is_node(v: object) -> bool:
    return dataclasses.is_dataclass(v) and not isinstance(v, type)


def without_locs(e: Expr) -> Expr:
    """`e` with every source location set to NO_LOC (to compare expressions by their meaning)."""
    changes: dict[str, object] = {"loc": NO_LOC}
    for f in dataclasses.fields(e):
        v = getattr(e, f.name)
        if isinstance(v, Expr):
            changes[f.name] = without_locs(v)
        elif isinstance(v, tuple) and v and all(isinstance(x, Expr) for x in v):
            changes[f.name] = tuple(without_locs(x) for x in v)
        elif isinstance(v, ArrayRef):
            changes[f.name] = dataclasses.replace(v, loc=NO_LOC)
    return dataclasses.replace(e, **changes)  # type: ignore[arg-type]


def array_access(kir: KernelIR) -> dict[str, str]:
    """How the kernel uses each ndarray parameter: "none", "read", "write" or "readwrite"."""
    funcs = {f.name: f for f in kir.funcs}
    memo: dict[str, dict[str, set[str]]] = {}

    def of(fn: FunctionIR) -> dict[str, set[str]]:
        if fn.name in memo:
            return memo[fn.name]
        acc: dict[str, set[str]] = {p.name: set() for p in fn.params}
        memo[fn.name] = acc
        for n in walk(fn.body):
            if isinstance(n, (Store, AugStore)):
                acc[n.array.name].add("write")
                if isinstance(n, AugStore):
                    acc[n.array.name].add("read")
            elif isinstance(n, AtomicRMW):
                acc[n.array.name].update(("read", "write"))
            elif isinstance(n, (Load, Shape)):
                if isinstance(n, Load):
                    acc[n.array.name].add("read")
            elif isinstance(n, Call) and n.func in funcs:
                callee = funcs[n.func]
                inner = of(callee)
                for p, a in zip(callee.params, n.args):
                    if isinstance(a, ArrayRef):
                        acc[a.name].update(inner.get(p.name, set()))
        return acc

    result = of(kir.kernel)
    out = {}
    for p in kir.kernel.params:
        if p.name in result and not hasattr(p.type, "bits"):
            modes = result[p.name]
            out[p.name] = ("readwrite" if modes == {"read", "write"} else
                           "write" if "write" in modes else "read" if "read" in modes else "none")
    return out
