"""Launch counts the CUDA runtime can evaluate on the host (to size a grid-stride launch's
grid; correctness never depends on them): per parallel dimension `[start, stop, step]` as JSON
expression trees over the kernel's scalar parameters and array shapes (docs/format.md,
`cuda.launches`; evaluated by kiln.runtime.cuda_launch.eval_host_expr)."""

from __future__ import annotations

from typing import Any

from kiln.ir import nodes as N
from kiln.ir.analysis import walk
from kiln.types import ScalarType


def _host_expr(e: N.Expr, params: dict[str, Any], assigned: set[str]) -> Any:
    """A JSON expression tree for `e` over kernel params, or None if it needs device state
    (evaluated by kiln.runtime.cuda.eval_host_expr)."""
    if isinstance(e, N.Const):
        return ["const", e.value]
    if isinstance(e, N.Shape):
        return ["shape", e.array.name, e.dim] if e.array.name in params else None
    if isinstance(e, N.Var):
        if e.name in params and e.name not in assigned and isinstance(params[e.name], ScalarType):
            return ["arg", e.name]
        return None
    if isinstance(e, N.Cast):
        inner = _host_expr(e.value, params, assigned)
        if inner is None or not e.type.is_int:
            return None
        return ["int", inner]
    if isinstance(e, N.Binary) and e.op.value in ("+", "-", "*", "//", "%") and e.type.is_int:
        a = _host_expr(e.lhs, params, assigned)
        b = _host_expr(e.rhs, params, assigned)
        return None if a is None or b is None else [e.op.value, a, b]
    if isinstance(e, N.BuiltinCall) and e.name in ("min", "max") and e.type.is_int:
        args = [_host_expr(a, params, assigned) for a in e.args]
        return None if any(a is None for a in args) else [e.name, *args]
    return None


def loop_count(kir: N.KernelIR, loop: N.ParallelFor, prefix: tuple[N.Stmt, ...]) -> list[Any] | None:
    """Per dim [start, stop, step] as host expressions, or None when one needs device state."""
    params = {p.name: p.type for p in kir.kernel.params}
    assigned = {n.name for n in walk(prefix) if isinstance(n, N.Assign)}
    assigned |= {n.var for n in walk(prefix) if isinstance(n, N.For)}
    dims = []
    for d in loop.dims:
        t = [_host_expr(e, params, assigned) for e in (d.start, d.stop, d.step)]
        if any(x is None for x in t):
            return None
        dims.append(t)
    return dims


def count_tuple(count: list[Any] | None) -> Any:
    """The manifest's form of a launch count (kiln.artifact.manifest.CudaLaunch.count)."""
    return None if count is None else tuple(tuple(dim) for dim in count)
