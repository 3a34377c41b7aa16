"""The kernel syntax of vectors and matrices: names, attributes (`v.x`, swizzles, methods),
subscripts, calls of vector types and `kl.math` functions, array elements of vector type, and
assignments to vector locals, components and elements. The hooks in exprs.py / stmts.py call in
here when a vector is involved; the arithmetic itself lives in kiln.lang.matrices.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from itertools import product
from typing import Any

from kiln.ir import nodes as ir
from kiln.lang import matrices as mx
from kiln.lang import matrix_decomp as decomp
from kiln.lang.kmath import VECTOR_FUNCS, Matrix, Vector
from kiln.lang.transformer import LocalVar
from kiln.lang.values import (
    LangError,
    Lit,
    MatrixVal,
    Scalar,
    Static,
    Value,
    cast_to,
    describe,
    index_expr,
    type_error,
)
from kiln.types import INDEX, MatrixType, ScalarType

_SWIZZLES = ("xyzw", "rgba")
_AUG_ATOMIC: dict[ir.BinaryOp, ir.AtomicOp] = {
    ir.BinaryOp.ADD: ir.AtomicOp.ADD, ir.BinaryOp.SUB: ir.AtomicOp.SUB, ir.BinaryOp.BITAND: ir.AtomicOp.AND,
    ir.BinaryOp.BITOR: ir.AtomicOp.OR, ir.BinaryOp.BITXOR: ir.AtomicOp.XOR,
}
#: methods of a vector/matrix value, and how many arguments each takes
_METHODS = {
    "norm": 0, "length": 0, "norm_sqr": 0, "normalized": 0, "transpose": 0, "trace": 0, "determinant": 0,
    "inverse": 0, "sum": 0, "min": 0, "max": 0, "any": 0, "all": 0, "dot": 1, "cross": 1,
    "outer_product": 1, "cast": 1,
}


@dataclass
class MatrixLocal(LocalVar):
    """A vector/matrix local: IR locals `<ir_name>.0`, `<ir_name>.1`, ... of type `type`."""

    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class BoundMethod:
    """`v.norm` before it is called."""

    value: MatrixVal
    name: str


# ------------------------------------------------------------------------------- reading
def local_value(cx: Any, name: str, lv: MatrixLocal, node: ast.AST) -> MatrixVal:
    cx.check_region(name, lv)
    loc = cx.loc(node)
    return MatrixVal(lv.shape, lv.type, tuple(ir.Var(lv.type, loc, f"{lv.ir_name}.{k}")
                                              for k in range(_size(lv.shape))))


def _size(shape: tuple[int, ...]) -> int:
    return shape[0] * (shape[1] if len(shape) == 2 else 1)


def _swizzle(v: MatrixVal, attr: str) -> list[int] | None:
    for letters in _SWIZZLES:
        if attr and all(c in letters for c in attr):
            if len(v.shape) != 1:
                raise type_error(f"'.{attr}' needs a vector, got {describe(v)}")
            picks = [letters.index(c) for c in attr]
            bad = [attr[i] for i, p in enumerate(picks) if p >= v.shape[0]]
            if bad:
                raise type_error(f"'.{attr}': component '{bad[0]}' is out of range for a vector of "
                                 f"{v.shape[0]} element(s)")
            if len(picks) > 4:
                raise type_error(f"'.{attr}': a swizzle has at most 4 components")
            return picks
    return None


def attribute(cx: Any, v: MatrixVal, node: ast.Attribute) -> Value:
    attr = node.attr
    picks = _swizzle(v, attr)
    if picks is not None:
        if len(picks) == 1:
            return v.items[picks[0]]
        return mx.make((len(picks),), [v.items[p] for p in picks])
    if attr == "n":
        return Lit(v.shape[0])
    if attr == "m":
        return Lit(v.shape[1] if len(v.shape) == 2 else 1)
    if attr in _METHODS:
        return Static(BoundMethod(v, attr))
    raise LangError(f"{describe(v)} has no attribute '{attr}'")


def _index_list(sl: ast.expr) -> list[ast.expr]:
    if isinstance(sl, ast.Slice) or (isinstance(sl, ast.Tuple) and any(isinstance(e, ast.Slice) for e in sl.elts)):
        raise LangError("slicing a vector is not supported in kernels; use a swizzle such as v.xy")
    return list(sl.elts) if isinstance(sl, ast.Tuple) else [sl]


def component_index(cx: Any, shape: tuple[int, ...], sl: ast.expr) -> int | ir.Expr:
    """The flat (row-major) position `v[i]` / `m[i, j]` selects: an int when static, else an
    i64 expression (dynamic indices are bounds-unchecked, like array indices)."""
    elts = _index_list(sl)
    if len(elts) != len(shape):
        raise type_error(f"a {'vector' if len(shape) == 1 else 'matrix'} of shape {shape} is indexed with "
                         f"{len(shape)} index(es), got {len(elts)}")
    statics: list[int | None] = []
    exprs: list[ir.Expr] = []
    for e, dim in zip(elts, shape):
        v = cx.visit(e)
        if isinstance(v, MatrixVal) or not isinstance(v, ir.Expr | Lit):
            raise type_error(f"a vector index must be an integer, got {describe(v)}", e)
        k = mx._const_int(v, "a vector index")
        if k is not None:
            if not -dim <= k < dim:
                raise type_error(f"index {k} is out of range for a dimension of size {dim}", e)
            k %= dim
        statics.append(k)
        exprs.append(index_expr(v, cx.loc(e), "a vector index"))
    if all(k is not None for k in statics):
        flat = statics[0]
        if len(shape) == 2:
            flat = flat * shape[1] + statics[1]  # type: ignore[operator]
        return flat  # type: ignore[return-value]
    loc = cx.loc(sl)
    flat_e = exprs[0]
    if len(shape) == 2:
        flat_e = cx.binary(ir.BinaryOp.ADD, cx.binary(ir.BinaryOp.MUL, exprs[0], Lit(shape[1]), loc), exprs[1], loc)
    return flat_e


def subscript(cx: Any, v: MatrixVal, node: ast.Subscript) -> Value:
    k = component_index(cx, v.shape, node.slice)
    if isinstance(k, int):
        return v.items[k]
    loc = cx.loc(node)
    acc: ir.Expr = v.items[-1]
    for j in range(len(v.items) - 2, -1, -1):
        acc = cx.select(cx.compare(ir.CompareOp.EQ, k, Lit(j), loc), v.items[j], acc, loc)
    return acc


def load_element(cx: Any, arr: ir.ArrayRef, node: ast.Subscript) -> MatrixVal:
    """`x[i]` of an ndarray of vectors: one Load per component."""
    idx = cx.array_indices(arr, node.slice)
    loc = cx.loc(node)
    dtype = arr.type.dtype
    assert dtype is not None  # arrays in kernels are concrete
    return mx.make(arr.type.element_shape, [ir.Load(dtype, loc, arr, idx + comp)
                                            for comp in _element_indices(arr, loc)])


def _element_indices(arr: ir.ArrayRef, loc: ir.Loc) -> list[tuple[ir.Expr, ...]]:
    return [tuple(ir.Const(INDEX, loc, k) for k in ks) for ks in product(*(range(d) for d in arr.type.element_shape))]


def expand_index(v: Value, node: ast.expr) -> list[Value]:
    """An integer vector used as an array index (`x[I]`) spreads into its components."""
    if isinstance(v, MatrixVal):
        if len(v.shape) != 1 or not (v.dtype.is_int):
            raise type_error(f"an array index must be an integer or an integer vector, got {describe(v)}", node)
        return list(v.items)
    return [v]


# --------------------------------------------------------------------------------- calls
def call(cx: Any, fv: Value, node: ast.Call) -> Value | None:
    """A call that involves vectors (constructors, methods, kl.math functions), else None."""
    if not isinstance(fv, Static):
        return None
    obj = fv.obj
    if isinstance(obj, MatrixType):
        return mx.construct_typed(cx, obj, node)
    if obj is Vector or obj is Matrix:
        return mx.construct_untyped(cx, obj.__name__, node)
    if isinstance(obj, BoundMethod):
        _no_keywords(node, obj.name)
        nargs = _METHODS[obj.name]
        if len(node.args) != nargs:
            raise type_error(f".{obj.name}() takes {nargs} argument(s), got {len(node.args)}")
        return apply(cx, obj.name, [obj.value] + [cx.visit(a) for a in node.args], node)
    name = VECTOR_FUNCS.get(id(obj))
    if name is None:
        return None
    if name.startswith(("Vector.", "Matrix.")):
        return mx.construct_special(cx, name, node)
    _no_keywords(node, name)
    return apply(cx, name, [cx.visit(a) for a in node.args], node)


def _no_keywords(node: ast.Call, name: str) -> None:
    if node.keywords:
        raise LangError(f"{name}() takes no keyword arguments in kernels", node)


_ARITY = {"dot": 2, "cross": 2, "outer_product": 2, "distance": 2, "clamp": 3, "mix": 3, "step": 2,
          "smoothstep": 3, "reflect": 2, "cast": 2}


def _arity(name: str, args: list[Value]) -> None:
    want = _ARITY.get(name, 1)
    if len(args) != want:
        raise type_error(f"{name}() takes {want} argument(s), got {len(args)}")


def _matrix(v: Value, name: str) -> MatrixVal:
    if not isinstance(v, MatrixVal):
        raise type_error(f"{name}() needs a vector or matrix, got {describe(v)}")
    return v


def apply(cx: Any, name: str, args: list[Value], node: ast.Call) -> Value:
    """A vector function or method, by name, on visited arguments (the receiver first)."""
    if name in ("svd", "polar_decompose"):
        return getattr(decomp, name)(cx, args, node)  # type: ignore[no-any-return]
    _arity(name, args)
    loc = cx.loc(node)
    binary = cx.binary
    if name in ("norm", "length"):
        return mx.norm(cx, _matrix(args[0], name), node)
    if name == "norm_sqr":
        return mx.norm_sqr(cx, _matrix(args[0], name), loc)
    if name == "normalized":
        v = _matrix(args[0], name)
        return mx.zip_map(cx, lambda x, n: binary(ir.BinaryOp.DIV, x, n, loc), [v, mx.norm(cx, v, node)], loc, name)
    if name in ("sum", "min", "max", "any", "all"):
        return mx.reduce(cx, name, _matrix(args[0], name), node)
    if name == "transpose":
        return mx.transpose(_matrix(args[0], name))
    if name == "trace":
        return mx.trace(cx, args[0], loc)
    if name == "determinant":
        return mx.determinant(cx, args[0], loc)
    if name == "inverse":
        return mx.inverse(cx, args[0], loc)
    if name == "dot":
        return mx.dot(cx, args[0], args[1], loc)
    if name == "cross":
        return mx.cross(cx, args[0], args[1], loc)
    if name == "outer_product":
        return mx.outer_product(cx, args[0], args[1], loc)
    if name == "distance":
        return mx.norm(cx, _matrix(mx.binop(cx, ir.BinaryOp.SUB, args[0], args[1], loc), name), node)
    if name == "cast":
        return cast(cx, args[0], args[1], loc)
    return _glsl(cx, name, args, node)


def _glsl(cx: Any, name: str, args: list[Value], node: ast.Call) -> Value:
    """The element-wise shader-style helpers of ti.math (clamp, mix, sign, fract, step...)."""
    loc = cx.loc(node)

    def b(op: ir.BinaryOp, x: Scalar, y: Scalar) -> Scalar:
        return cx.binary(op, x, y, loc)

    def call(fname: str, *xs: Scalar) -> Scalar:
        return cx.builtin_call_values(fname, list(xs), node)

    def clamp(x: Scalar, lo: Scalar, hi: Scalar) -> Scalar:
        return call("min", call("max", x, lo), hi)

    def smooth(e0: Scalar, e1: Scalar, x: Scalar) -> Scalar:
        t = clamp(b(ir.BinaryOp.DIV, b(ir.BinaryOp.SUB, x, e0), b(ir.BinaryOp.SUB, e1, e0)), Lit(0.0), Lit(1.0))
        return b(ir.BinaryOp.MUL, b(ir.BinaryOp.MUL, t, t), b(ir.BinaryOp.SUB, Lit(3.0), b(ir.BinaryOp.MUL, Lit(2.0), t)))

    def sign(x: Scalar) -> Scalar:
        pos = cx.compare(ir.CompareOp.GT, x, Lit(0), loc)
        neg = cx.compare(ir.CompareOp.LT, x, Lit(0), loc)
        return cx.select(pos, Lit(1), cx.select(neg, Lit(-1), b(ir.BinaryOp.MUL, x, Lit(0)), loc), loc)

    elementwise = {
        "clamp": clamp,
        "mix": lambda x, y, a: b(ir.BinaryOp.ADD, b(ir.BinaryOp.MUL, x, b(ir.BinaryOp.SUB, Lit(1.0), a)),
                                 b(ir.BinaryOp.MUL, y, a)),
        "sign": sign,
        "fract": lambda x: b(ir.BinaryOp.SUB, x, call("floor", x)),
        "step": lambda e, x: cx.select(cx.compare(ir.CompareOp.LT, x, e, loc), Lit(0.0), Lit(1.0), loc),
        "smoothstep": smooth,
    }
    if name in elementwise:
        return mx.zip_map(cx, elementwise[name], args, loc, name)
    if name == "reflect":
        x, n = args
        d2 = b(ir.BinaryOp.MUL, Lit(2.0), mx.dot(cx, x, n, loc))
        return mx.binop(cx, ir.BinaryOp.SUB, x, mx.binop(cx, ir.BinaryOp.MUL, d2, n, loc), loc)
    raise LangError(f"kl.math.{name}() is not supported inside kernels")


def cast(cx: Any, v: Value, tv: Value, loc: ir.Loc) -> Value:
    t = tv.obj if isinstance(tv, Static) else None
    if not isinstance(t, ScalarType):
        raise type_error("cast() needs a kiln scalar type such as kl.f32 as its second argument")
    return mx.zip_map(cx, lambda x: cx.cast(x, t, loc), [v], loc, "cast")


def builtin(cx: Any, name: str, args: list[Value], node: ast.AST) -> Value:
    """A scalar math builtin applied element-wise (`kl.sqrt(v)`, `kl.max(v, 0.0)`)."""
    return mx.zip_map(cx, lambda *xs: cx.builtin_call_values(name, list(xs), node), args, cx.loc(node), name)


def select(cx: Any, cond: Value, a: Value, b: Value, loc: ir.Loc) -> Value:
    """`a if c else b` / `kl.select(c, a, b)` with vectors: element-wise (a bool vector condition
    picks per element); both sides are evaluated, as kl.select always does."""
    return mx.zip_map(cx, lambda c, x, y: cx.select(c, x, y, loc), [cond, a, b], loc, "select")


def func_argument(cx: Any, func: str, pname: str, ann: MatrixType, v: Value, node: ast.expr) -> list[ir.Expr]:
    """The IR arguments of a vector passed to a func parameter annotated with a vector type."""
    if not isinstance(v, MatrixVal) or v.shape != ann.shape:
        raise type_error(f"argument '{pname}' of func '{func}' expects {ann!r}, got {describe(v)}", node)
    if v.dtype.is_float and not ann.dtype.is_float:
        raise type_error(f"argument '{pname}' of func '{func}' expects {ann!r}, got elements of type "
                         f"{v.dtype.name} (use .cast())", node)
    return [cast_to(x, ann.dtype, cx.loc(node)) for x in v.items]
