"""A generic bottom-up rewriter over the frozen IR dataclasses, shared by the passes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from kiln.ir import nodes as ir

ExprFn = Callable[[ir.Expr], ir.Expr]
StmtFn = Callable[[ir.Stmt, tuple[str, ...]], "ir.Stmt | tuple[ir.Stmt, ...]"]


def _map_value(v: Any, fe: ExprFn, fs: StmtFn | None, loops: tuple[str, ...]) -> Any:
    if isinstance(v, ir.Expr):
        return rewrite_expr(v, fe)
    if isinstance(v, ir.ParallelRange):
        return _rebuild(v, fe, fs, loops)
    if isinstance(v, tuple):
        if v and isinstance(v[0], ir.Stmt):
            return rewrite_body(v, fe, fs, loops)
        return tuple(_map_value(x, fe, fs, loops) for x in v)
    return v


#: per node class, the fields a rewrite visits (dataclasses.fields per node is slow, and the
#: field list of a class never changes)
_rewritten_fields: dict[type, tuple[str, ...]] = {}


def _fields_of(cls: type) -> tuple[str, ...]:
    names = _rewritten_fields.get(cls)
    if names is None:
        names = _rewritten_fields[cls] = tuple(f.name for f in dataclasses.fields(cls)
                                               if f.name not in ("loc", "type"))
    return names


def _rebuild(node: Any, fe: ExprFn, fs: StmtFn | None, loops: tuple[str, ...]) -> Any:
    changes = {}
    for name in _fields_of(type(node)):
        old = getattr(node, name)
        new = _map_value(old, fe, fs, loops)
        if new is not old:
            changes[name] = new
    return dataclasses.replace(node, **changes) if changes else node


def rewrite_expr(e: ir.Expr, fe: ExprFn) -> ir.Expr:
    """Rewrite children first, then `fe(node)`."""
    return fe(_rebuild(e, fe, None, ()))


def rewrite_body(body: tuple[ir.Stmt, ...], fe: ExprFn, fs: StmtFn | None = None,
                 loops: tuple[str, ...] = ()) -> tuple[ir.Stmt, ...]:
    """Rewrite every statement (children first); `fs(stmt, loops)` may return several statements.
    `loops` is the stack of enclosing loop kinds ("parallel", "serial")."""
    out: list[ir.Stmt] = []
    for s in body:
        inner = loops
        if isinstance(s, ir.ParallelFor):
            inner = loops + ("parallel",)
        elif isinstance(s, ir.For | ir.While):
            inner = loops + ("serial",)
        new = _rebuild(s, fe, fs, inner)
        r = fs(new, loops) if fs is not None else new
        if isinstance(r, tuple):
            out.extend(r)
        else:
            out.append(r)
    return tuple(out)


def rewrite_function(fn: ir.FunctionIR, fe: ExprFn, fs: StmtFn | None = None) -> ir.FunctionIR:
    body = rewrite_body(fn.body, fe, fs)
    return fn if body == fn.body else dataclasses.replace(fn, body=body)


def identity(e: ir.Expr) -> ir.Expr:
    return e
