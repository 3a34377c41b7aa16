"""`x[i] op= v` (AugStore) -> an atomic read-modify-write where iterations may race, otherwise a
plain load-op-store."""

from __future__ import annotations

import dataclasses

from kiln.ir import nodes as ir
from kiln.ir.ops import ATOMIC_AS_BINARY
from kiln.passes.walk import identity, rewrite_function
from kiln.types import f16, f32


def _load_op_store(s: ir.AugStore) -> ir.Store:
    dtype = s.array.type.dtype
    assert dtype is not None
    t = f32 if dtype == f16 else dtype     # f16 is storage only: compute in f32
    cur: ir.Expr = ir.Load(dtype, s.loc, s.array, s.indices)
    val = s.value
    if t != dtype:
        cur = ir.Cast(t, s.loc, cur)
        val = ir.Cast(t, s.loc, val)
    new: ir.Expr
    if s.op in (ir.AtomicOp.MIN, ir.AtomicOp.MAX):
        new = ir.BuiltinCall(t, s.loc, s.op.value, (cur, val))
    else:
        new = ir.Binary(t, s.loc, ATOMIC_AS_BINARY[s.op], cur, val)
    if t != dtype:
        new = ir.Cast(dtype, s.loc, new)
    return ir.Store(s.loc, s.array, s.indices, new)


def _lower(fn: ir.FunctionIR) -> ir.FunctionIR:
    def fs(s: ir.Stmt, loops: tuple[str, ...]) -> ir.Stmt:
        if not isinstance(s, ir.AugStore):
            return s
        # In funcs we cannot know whether a caller runs inside a parallel loop: stay atomic.
        if "parallel" in loops or not fn.is_kernel:
            dtype = s.array.type.dtype
            assert dtype is not None
            return ir.ExprStmt(s.loc, ir.AtomicRMW(dtype, s.loc, s.op, s.array, s.indices, s.value))
        return _load_op_store(s)
    return rewrite_function(fn, identity, fs)


def lower_aug_stores(kir: ir.KernelIR) -> ir.KernelIR:
    """Replace every AugStore: inside a ParallelFor (and in funcs, which may be called from one)
    by `ExprStmt(AtomicRMW)`, elsewhere by `Store(x, i, Load(x, i) op v)` (min/max through the
    builtin)."""
    return dataclasses.replace(kir, kernel=_lower(kir.kernel), funcs=tuple(_lower(f) for f in kir.funcs))
