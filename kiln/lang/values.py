"""Front-end values: what visiting an expression yields before it becomes IR, and the typing
helpers (weak literals, implicit casts, promotion) shared by the expression and statement code."""

from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np

from kiln.ir import nodes as ir
from kiln.types import (
    DEFAULT_FLOAT,
    INDEX,
    ScalarType,
    bool_,
    f16,
    f32,
    from_numpy,
    int_range,
    literal_type,
    promote,
    promote_with_literal,
)


class LangError(Exception):
    """Raised anywhere in the front end; `ASTTransformer.visit` attaches the innermost AST node
    being visited (unless `node` is given) and the function compiler turns it into a KernelError
    with file, line, column and source line. This is the single place errors are rendered."""

    def __init__(self, msg: str, node: ast.AST | None = None, *, type_error: bool = False) -> None:
        super().__init__(msg)
        self.msg = msg
        self.node = node
        self.type_error = type_error


def type_error(msg: str, node: ast.AST | None = None) -> LangError:
    return LangError(msg, node, type_error=True)


@dataclass(frozen=True)
class Lit:
    """A Python literal (or a compile-time Python int/float/bool): *weak*, it adapts its type
    to the typed operand next to it (kiln.types.promote_with_literal)."""

    value: bool | int | float


@dataclass(frozen=True)
class Static:
    """Any other compile-time Python object: a module, a builtin stub, a kiln type, a func..."""

    obj: object


@dataclass(frozen=True)
class ShapeOf:
    """`x.shape` before it is indexed."""

    array: ir.ArrayRef


@dataclass(frozen=True)
class TupleVal:
    """A tuple expression `(a, b)` (ndrange bounds, multi-indices, tuple assignment)."""

    items: tuple[Value, ...]


@dataclass(frozen=True)
class VoidCall:
    """A call of a func without return value: only valid as an expression statement."""

    call: ir.Call | None      # None: an inlined func (its statements are already emitted)
    name: str


@dataclass(frozen=True)
class MatrixVal:
    """A vector (`shape == (n,)`) or matrix (`(n, m)`) value: scalar IR expressions of type
    `dtype`, row-major. Its operations expand into scalar IR in kiln.lang.matrices."""

    shape: tuple[int, ...]
    dtype: ScalarType
    items: tuple[ir.Expr, ...]


Value = ir.Expr | ir.ArrayRef | Lit | Static | ShapeOf | TupleVal | VoidCall | MatrixVal
Scalar = ir.Expr | Lit


def from_python(obj: object) -> Value:
    """The front-end value of a Python object captured at compile time (global, closure cell,
    module attribute)."""
    if isinstance(obj, bool | int | float) and not isinstance(obj, np.generic):
        return Lit(obj)
    if isinstance(obj, np.generic):
        t = from_numpy(obj.dtype)
        if t is None:
            raise LangError(f"numpy scalar of dtype {obj.dtype} is not supported in kernels")
        return ir.Const(t, ir.NO_LOC, _py_value(obj.item(), t))
    if isinstance(obj, np.ndarray) and obj.ndim in (1, 2) and 1 <= min(obj.shape) and max(obj.shape) <= 4:
        return _constant_matrix(obj)
    return Static(obj)


def _constant_matrix(arr: np.ndarray) -> Value:
    """A captured numpy array of 1..4 (x 1..4) numbers (`g = kl.vec3(0, -9.8, 0)` at module
    level) is a constant vector/matrix."""
    t = from_numpy(arr.dtype)
    if t is None:
        return Static(arr)
    if arr.dtype == np.float64:
        t = DEFAULT_FLOAT  # np.array([0.5, 1.0]) built in Python: Taichi's default_fp
    items = tuple(lit_const(_py_value(x.item(), t), t, ir.NO_LOC) for x in arr.ravel())
    return MatrixVal(tuple(arr.shape), t, items)


def _py_value(v: bool | float, t: ScalarType) -> bool | int | float:
    if t.is_bool:
        return bool(v)
    if t.is_int:
        return int(v)
    if t.bits < 64:      # a Const holds its type's value: kl.f32(0.001) is f32(0.001), not 0.001
        with np.errstate(over="ignore"):
            return float(np.float32(v) if t.bits == 32 else np.float16(v))
    return float(v)


def arith_type(t: ScalarType) -> ScalarType:
    """f16 is a storage type: arithmetic on it happens in f32."""
    return f32 if t == f16 else t


def lit_const(value: bool | float, t: ScalarType, loc: ir.Loc) -> ir.Expr:
    """A weak literal as a Const of type `t` (or a Cast of its own Const when its kind is higher,
    e.g. a float literal stored into an int array: truncation, like numpy's astype)."""
    if isinstance(value, float) and not t.is_float:
        return ir.Cast(t, loc, ir.Const(literal_type(value), loc, value))
    if t.is_int:
        lo, hi = int_range(t)
        if not lo <= int(value) <= hi:
            raise type_error(f"integer literal {value} is out of range for {t.name}")
    elif t.is_bool and not isinstance(value, bool):
        return ir.Const(t, loc, value != 0)
    return ir.Const(t, loc, _py_value(value, t))


def materialize(v: Scalar, loc: ir.Loc) -> ir.Expr:
    """A standalone literal gets its default type (i64, f32, bool)."""
    if isinstance(v, Lit):
        return lit_const(v.value, literal_type(v.value), loc)
    return v


def cast_to(v: Scalar, t: ScalarType, loc: ir.Loc) -> ir.Expr:
    """Implicit conversion (assignment, argument passing, operand promotion)."""
    if isinstance(v, Lit):
        return lit_const(v.value, t, loc)
    if v.type == t:
        return v
    return ir.Cast(t, loc, v)


def scalar_type_of(v: Scalar) -> ScalarType:
    return literal_type(v.value) if isinstance(v, Lit) else v.type


def common_type(vals: list[Scalar]) -> ScalarType:
    """Promotion of several operands where literals are weak."""
    typed = [v.type for v in vals if not isinstance(v, Lit)]
    if typed:
        t = typed[0]
        for u in typed[1:]:
            t = promote(t, u)
        for v in vals:
            if isinstance(v, Lit):
                t = promote_with_literal(t, v.value)
        return t
    t = literal_type(vals[0].value)  # type: ignore[union-attr]
    for v in vals[1:]:
        t = promote(t, literal_type(v.value))  # type: ignore[union-attr]
    return t


def truthy(v: Scalar, loc: ir.Loc) -> ir.Expr:
    """Convert to bool as Python's truth test does (`!= 0`)."""
    if isinstance(v, Lit):
        return ir.Const(bool_, loc, bool(v.value))
    if v.type == bool_:
        return v
    t = arith_type(v.type)
    zero = ir.Const(t, loc, 0.0 if t.is_float else 0)
    return ir.Compare(bool_, loc, ir.CompareOp.NE, cast_to(v, t, loc), zero)


def index_expr(v: Scalar, loc: ir.Loc, what: str) -> ir.Expr:
    """An array index or loop bound: any int type (literals become INDEX)."""
    if isinstance(v, Lit):
        if isinstance(v.value, bool) or not isinstance(v.value, int):
            raise type_error(f"{what} must be an integer, got {v.value!r}")
        return lit_const(v.value, INDEX, loc)
    if not v.type.is_int:
        raise type_error(f"{what} must be an integer, got a value of type {v.type.name}")
    return v


def describe(v: Value) -> str:
    if isinstance(v, ir.ArrayRef):
        return f"array '{v.name}'"
    if isinstance(v, Static):
        o = v.obj
        return f"{getattr(o, '__name__', type(o).__name__)!s}"
    if isinstance(v, ShapeOf):
        return "a shape tuple"
    if isinstance(v, TupleVal):
        return "a tuple"
    if isinstance(v, VoidCall):
        return f"the result of func '{v.name}', which returns no value,"
    if isinstance(v, MatrixVal):
        return f"a {'vector' if len(v.shape) == 1 else 'matrix'} of shape {v.shape}"
    return "a scalar"
