"""Constant folding with exactly the code generator's semantics: ints wrap to their width,
`//` and `%` round toward -inf (Python), floats are rounded to their type after each op. Anything
whose result the code generator defines differently or not at all is left alone: division or
modulo by zero, float -> int casts of NaN/inf/out-of-range values, shifts by >= the bit width or
by a negative amount, negative integer exponents, builtin calls (libm rounding)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from kiln.ir import nodes as ir
from kiln.ir.ops import COMPARE, PLAIN_BINARY
from kiln.passes.walk import rewrite_function
from kiln.types import ScalarType, bool_, int_range, wrap_int

_NOFOLD = object()


def round_float(value: float, t: ScalarType) -> float:
    if t.bits == 64:
        return float(value)
    with np.errstate(over="ignore"):
        return float(np.float32(value) if t.bits == 32 else np.float16(value))


def normalize(value: bool | float, t: ScalarType) -> bool | int | float:
    if t.is_bool:
        return bool(value)
    if t.is_int:
        return wrap_int(int(value), t)
    return round_float(float(value), t)


def convert(value: bool | float, src: ScalarType, dst: ScalarType) -> object:
    """Value of `Cast(dst, Const(src, value))`, or _NOFOLD."""
    if dst.is_bool:
        return value != 0
    if dst.is_int:
        if src.is_float:
            if not math.isfinite(value):
                return _NOFOLD
            iv = int(value)  # truncates toward zero
            lo, hi = int_range(dst)
            if not lo <= iv <= hi:
                return _NOFOLD
            return iv
        return wrap_int(int(value), dst)
    if src.is_float:        # a Const made elsewhere may hold more precision than its type has
        value = round_float(float(value), src)
    return round_float(float(value), dst)


def _int_binary(op: ir.BinaryOp, a: int, b: int, t: ScalarType) -> object:
    plain = PLAIN_BINARY.get(op)
    if plain is not None:
        return plain.fold(a, b)          # wrapped to t by normalize
    if op in (ir.BinaryOp.FLOORDIV, ir.BinaryOp.MOD):
        if b == 0:
            return _NOFOLD
        return a // b if op == ir.BinaryOp.FLOORDIV else a % b
    if op == ir.BinaryOp.POW:
        if b < 0 or b > 4096:
            return _NOFOLD
        return pow(a, b, 1 << t.bits)
    return _NOFOLD


def _float_binary(op: ir.BinaryOp, a: float, b: float) -> object:
    try:
        plain = PLAIN_BINARY.get(op)
        if plain is not None and plain.float_insn is not None:
            return plain.fold(a, b)
        if op in (ir.BinaryOp.DIV, ir.BinaryOp.FLOORDIV, ir.BinaryOp.MOD):
            if b == 0:
                return _NOFOLD
            if op == ir.BinaryOp.DIV:
                return a / b
            if not (math.isfinite(a) and math.isfinite(b)):
                return _NOFOLD
            return a // b if op == ir.BinaryOp.FLOORDIV else a % b
        if op == ir.BinaryOp.POW:
            return math.pow(a, b)
    except (ArithmeticError, ValueError):
        return _NOFOLD
    return _NOFOLD


def fold_binary(op: ir.BinaryOp, a: ir.Const, b: ir.Const, t: ScalarType) -> object:
    if op in (ir.BinaryOp.SHL, ir.BinaryOp.SHR):
        n = int(b.value)
        if not t.is_int or not 0 <= n < t.bits:
            return _NOFOLD
        x = int(a.value)
        return x << n if op == ir.BinaryOp.SHL else x >> n   # x is in range: >> is arithmetic/logical
    if t.is_bool:
        if op in (ir.BinaryOp.BITAND, ir.BinaryOp.BITOR, ir.BinaryOp.BITXOR):
            return _int_binary(op, int(a.value), int(b.value), t) != 0
        return _NOFOLD
    if t.is_int:
        return _int_binary(op, int(a.value), int(b.value), t)
    return _float_binary(op, round_float(float(a.value), t), round_float(float(b.value), t))


def fold_expr(e: ir.Expr) -> ir.Expr:
    """Fold one node whose children are already folded."""
    r: object = _NOFOLD
    t = e.type
    if isinstance(e, ir.Binary) and isinstance(e.lhs, ir.Const) and isinstance(e.rhs, ir.Const):
        r = fold_binary(e.op, e.lhs, e.rhs, t)
    elif isinstance(e, ir.Unary) and isinstance(e.operand, ir.Const):
        v = e.operand.value
        if e.op == ir.UnaryOp.NOT or (e.op == ir.UnaryOp.INVERT and t.is_bool):
            r = not v
        elif e.op == ir.UnaryOp.NEG:
            r = -v
        elif e.op == ir.UnaryOp.INVERT and t.is_int:
            r = ~int(v)
    elif isinstance(e, ir.Compare) and isinstance(e.lhs, ir.Const) and isinstance(e.rhs, ir.Const):
        lt = e.lhs.type
        r = COMPARE[e.op](*(round_float(float(c.value), lt) if lt.is_float else c.value for c in (e.lhs, e.rhs)))
    elif isinstance(e, ir.Cast) and isinstance(e.value, ir.Const):
        r = convert(e.value.value, e.value.type, t)
    elif isinstance(e, ir.Logical) and isinstance(e.lhs, ir.Const):
        if e.op == ir.LogicalOp.AND:
            return e.rhs if e.lhs.value else ir.Const(bool_, e.loc, False)
        return ir.Const(bool_, e.loc, True) if e.lhs.value else e.rhs
    elif isinstance(e, ir.Select) and isinstance(e.cond, ir.Const):
        return e.if_true if e.cond.value else e.if_false
    if r is _NOFOLD:
        return e
    assert isinstance(r, bool | int | float)
    return ir.Const(t, e.loc, normalize(r, t))


def _fold_stmt(s: ir.Stmt, loops: tuple[str, ...]) -> ir.Stmt | tuple[ir.Stmt, ...]:
    if isinstance(s, ir.If) and isinstance(s.cond, ir.Const):
        return s.then_body if s.cond.value else s.else_body
    if isinstance(s, ir.While) and isinstance(s.cond, ir.Const) and not s.cond.value:
        return ()
    return s


def fold_function(fn: ir.FunctionIR) -> ir.FunctionIR:
    return rewrite_function(fn, fold_expr, _fold_stmt)


def fold_constants(kir: ir.KernelIR) -> ir.KernelIR:
    """Fold Binary/Unary/Compare/Cast/Logical/Select of constants and drop `if` branches and
    `while` loops whose condition is a constant."""
    return dataclasses.replace(kir, kernel=fold_function(kir.kernel),
                               funcs=tuple(fold_function(f) for f in kir.funcs))
