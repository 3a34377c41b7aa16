"""Scalar semantics of the kernel language (docs/language.md), written from the documentation and
independently of the code generator and of the constant folder, for the reference interpreter.

Values: `bool` for bool, Python `int` wrapped to its type's width after every operation (exactly
numpy's fixed-width wraparound), and numpy scalars of the exact dtype for floats (np.float16 /
np.float32 / np.float64: every operation rounds to the type, as compiled code does).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.ir import nodes as ir
from kiln.types import ScalarType

Value = Any    # bool | int | np.floating

_NP_FLOATS = {16: np.float16, 32: np.float32, 64: np.float64}


def wrap(value: int, t: ScalarType) -> int:
    """Two's complement wraparound to `t`'s width."""
    v = value & ((1 << t.bits) - 1)
    if t.kind == "i" and v >> (t.bits - 1):
        v -= 1 << t.bits
    return v


def int_range(t: ScalarType) -> tuple[int, int]:
    if t.kind == "u":
        return 0, (1 << t.bits) - 1
    return -(1 << (t.bits - 1)), (1 << (t.bits - 1)) - 1


def make(value: Any, t: ScalarType) -> Value:
    """A value of type `t` from a Python or numpy number already of that type's kind."""
    if t.is_bool:
        return bool(value)
    if t.is_int:
        return wrap(int(value), t)
    with np.errstate(all="ignore"):
        return _NP_FLOATS[t.bits](value)


def cast(value: Value, src: ScalarType, dst: ScalarType) -> Value:
    """`kl.cast(value, dst)`: anything -> bool is `!= 0`; float -> int truncates toward zero, NaN
    gives 0 and out-of-range values saturate; int -> int wraps; -> float rounds to nearest."""
    if dst.is_bool:
        return bool(value != 0)
    if dst.is_int:
        if src.is_float:
            f = float(value)
            if math.isnan(f):
                return 0
            lo, hi = int_range(dst)
            if math.isinf(f):
                return hi if f > 0 else lo
            return min(max(int(f), lo), hi)      # int() truncates toward zero
        return wrap(int(value), dst)
    with np.errstate(all="ignore"):
        if src.is_float:
            # f64 -> f16 rounds once (kiln rounds to odd through f32 to get exactly this)
            return _NP_FLOATS[dst.bits](np.float64(value))
        return _NP_FLOATS[dst.bits](int(value))


def _int_pow(base: int, exp: int, t: ScalarType) -> int:
    if exp < 0:
        if base == 1:
            return 1
        if base == -1:
            return wrap(-1 if exp & 1 else 1, t)
        return 0
    return wrap(pow(base, exp, 1 << t.bits), t)


def _shift(op: ir.BinaryOp, a: int, n: int, t: ScalarType) -> int:
    """numpy's shifts: a count of at least the width (or negative) gives 0, or the sign for a
    signed right shift."""
    if n < 0 or n >= t.bits:
        return -1 if (op == ir.BinaryOp.SHR and a < 0) else 0
    return wrap(a << n, t) if op == ir.BinaryOp.SHL else a >> n


def binary(op: ir.BinaryOp, a: Value, b: Value, t: ScalarType) -> Value:
    """`a op b` with both operands already of type `t` (the result type; for shifts `b` may be of
    another int type)."""
    B = ir.BinaryOp
    if t.is_bool:
        if op == B.BITAND:
            return bool(a and b)
        if op == B.BITOR:
            return bool(a or b)
        if op == B.BITXOR:
            return bool(a) != bool(b)
        raise ValueError(f"{op} on bool")
    if t.is_int:
        if op == B.ADD:
            return wrap(a + b, t)
        if op == B.SUB:
            return wrap(a - b, t)
        if op == B.MUL:
            return wrap(a * b, t)
        if op == B.FLOORDIV:
            return 0 if b == 0 else wrap(a // b, t)     # Python rounds toward -inf
        if op == B.MOD:
            return 0 if b == 0 else wrap(a % b, t)      # sign of the divisor
        if op == B.POW:
            return _int_pow(a, b, t)
        if op == B.BITAND:
            return wrap(a & b, t)
        if op == B.BITOR:
            return wrap(a | b, t)
        if op == B.BITXOR:
            return wrap(a ^ b, t)
        if op in (B.SHL, B.SHR):
            return _shift(op, a, int(b), t)
        raise ValueError(f"{op} on {t}")
    with np.errstate(all="ignore"):
        if op == B.ADD:
            return a + b
        if op == B.SUB:
            return a - b
        if op == B.MUL:
            return a * b
        if op == B.DIV:
            return np.true_divide(a, b)
        if op == B.FLOORDIV:
            return np.floor_divide(a, b)        # Python's //, in the float type
        if op == B.MOD:
            return np.remainder(a, b)           # Python's %: the sign of the divisor
        if op == B.POW:
            return np.power(a, b)
    raise ValueError(f"{op} on {t}")


def unary(op: ir.UnaryOp, a: Value, t: ScalarType) -> Value:
    if op == ir.UnaryOp.NOT or (op == ir.UnaryOp.INVERT and t.is_bool):
        return not a
    if op == ir.UnaryOp.NEG:
        if t.is_int:
            return wrap(-a, t)
        return -a
    return wrap(~a, t)


def compare(op: ir.CompareOp, a: Value, b: Value) -> bool:
    C = ir.CompareOp
    return bool({C.EQ: a == b, C.NE: a != b, C.LT: a < b, C.LE: a <= b, C.GT: a > b,
                 C.GE: a >= b}[op])


class UnspecifiedBehavior(Exception):
    """The language documentation does not define the result (the interpreter will not guess)."""


def _minmax(a: Value, b: Value, t: ScalarType, smaller: bool, atomic: bool = False) -> Value:
    if t.is_float:
        if np.isnan(a):
            return b
        if np.isnan(b):
            return a
        if a == 0 and b == 0 and np.signbit(a) != np.signbit(b):
            if atomic:
                # docs/language.md leaves open which zero an atomic min/max keeps (LLVM's
                # atomicrmw fmin/fmax, hardware instructions on GPUs)
                raise UnspecifiedBehavior(f"kl.atomic_{'min' if smaller else 'max'} of +0.0 and -0.0")
            # -0.0 is below +0.0 (docs/language.md)
            return a if np.signbit(a) == smaller else b
    if smaller:
        return min(a, b)
    return max(a, b)


_FLOAT_UFUNCS = {"sqrt": np.sqrt, "exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos,
                 "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
                 "tanh": np.tanh, "floor": np.floor, "ceil": np.ceil, "round": np.rint,
                 "atan2": np.arctan2, "pow": np.power}

#: builtins whose compiled result may differ from the interpreter's by a few ulp (libm, LLVM's
#: own expansions); the others are exact
INEXACT_BUILTINS = frozenset({"exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "tanh",
                              "atan2", "pow", "rsqrt"})


def atomic_minmax(name: str, a: Value, b: Value, t: ScalarType) -> Value:
    """What an atomic min/max stores (as kl.min/kl.max, except for signed zeros)."""
    return _minmax(a, b, t, name == "min", atomic=True)


def builtin(name: str, args: list[Value], t: ScalarType) -> Value:
    """A math builtin (kiln.ir.builtins) on arguments already cast as the front end casts them;
    `t` is the result type."""
    with np.errstate(all="ignore"):
        if name == "abs":
            if t.is_int:
                return wrap(abs(args[0]), t)
            return np.abs(args[0])
        if name in ("min", "max"):
            return _minmax(args[0], args[1], t, name == "min")
        if name == "isnan":
            return bool(np.isnan(args[0]))
        if name == "isinf":
            return bool(np.isinf(args[0]))
        if name == "rsqrt":
            return np.true_divide(make(1, t), np.sqrt(args[0]))
        fn = _FLOAT_UFUNCS[name]
        return make(fn(*args), t)
