"""Vector and matrix values in kernels: every operation expands into scalar IR.

A `MatrixVal` (kiln.lang.values) is a shape and a tuple of scalar IR expressions, row-major,
all of its dtype. The expression and statement lowering (exprs.py, stmts.py) call the functions
here through small hooks whenever a vector shows up; `cx` is that lowering object (ExprMixin /
StmtMixin), whose scalar operations (`binary`, `compare`, `builtin_call_values`, `select`,
`cast`) do all typing, so a vector op types exactly like the scalar ops it expands into.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

import numpy as np

from kiln.ir import nodes as ir
from kiln.lang.values import (
    LangError,
    Lit,
    MatrixVal,
    Scalar,
    Static,
    TupleVal,
    Value,
    arith_type,
    cast_to,
    common_type,
    describe,
    from_python,
    lit_const,
    materialize,
    truthy,
    type_error,
)
from kiln.types import DEFAULT_FLOAT, MAX_MATRIX_DIM, MatrixType, ScalarType, bool_, i32

_SWIZZLE_SETS = ("xyzw", "rgba")


# ------------------------------------------------------------------------------------ values
def make(shape: tuple[int, ...], items: list[ir.Expr] | tuple[ir.Expr, ...]) -> MatrixVal:
    """A MatrixVal of typed items (all of one type: the caller casts)."""
    return MatrixVal(tuple(shape), items[0].type, tuple(items))


def _unify(shape: tuple[int, ...], items: list[Scalar], loc: ir.Loc) -> MatrixVal:
    """Items of mixed types (and weak literals) promoted to one dtype, as a vector literal."""
    typed = [v for v in items if not isinstance(v, Lit)]
    if typed:
        t = arith_type(common_type(items))
    elif any(isinstance(v.value, float) for v in items):  # type: ignore[union-attr]
        t = DEFAULT_FLOAT
    elif all(isinstance(v.value, bool) for v in items):  # type: ignore[union-attr]
        t = bool_
    else:
        t = i32  # Taichi's default_ip for an all-int vector literal
    return make(shape, [cast_to(v, t, loc) for v in items])


def is_vector(v: MatrixVal) -> bool:
    return len(v.shape) == 1


def _rows(v: MatrixVal) -> list[list[ir.Expr]]:
    n, m = v.shape
    return [list(v.items[i * m:(i + 1) * m]) for i in range(n)]


def _scalar_arg(cx: Any, v: Value, what: str) -> Scalar:
    if isinstance(v, MatrixVal):
        raise type_error(f"{what} must be a scalar, got {describe(v)}")
    if not isinstance(v, ir.Expr | Lit):
        raise type_error(f"{what} must be a scalar, got {describe(v)}")
    return v


def _const_int(v: Value, what: str) -> int | None:
    if isinstance(v, Lit) and isinstance(v.value, int) and not isinstance(v.value, bool):
        return v.value
    if isinstance(v, ir.Const) and v.type.is_int:
        return int(v.value)
    if isinstance(v, ir.Expr):
        return None
    raise type_error(f"{what} must be an integer, got {describe(v)}")


# ------------------------------------------------------------------------- element-wise ops
def zip_map(cx: Any, fn: Any, operands: list[Value], loc: ir.Loc, what: str) -> Any:
    """Apply the scalar `fn(*items)` element by element; scalars broadcast, shapes must match."""
    shape: tuple[int, ...] | None = None
    for v in operands:
        if isinstance(v, MatrixVal):
            if shape is not None and v.shape != shape:
                raise type_error(f"{what}: shapes {shape} and {v.shape} do not match")
            shape = v.shape
        elif not isinstance(v, ir.Expr | Lit):
            raise type_error(f"{what}: cannot combine a vector with {describe(v)}")
    if shape is None:  # all scalars (kl.math.clamp(x, 0, 1) on a float)
        return fn(*operands)
    n = len(next(v for v in operands if isinstance(v, MatrixVal)).items)
    out = []
    for k in range(n):
        args = [v.items[k] if isinstance(v, MatrixVal) else v for v in operands]
        out.append(materialize(fn(*args), loc))
    return make(shape, out)


def binop(cx: Any, op: ir.BinaryOp | None, a: Value, b: Value, loc: ir.Loc) -> Value:
    """`a op b` with a vector on either side; op None is `@`."""
    if op is None:
        return matmul(cx, a, b, loc)
    return zip_map(cx, lambda x, y: cx.binary(op, x, y, loc), [a, b], loc, f"operator '{op.value}'")


def unary(cx: Any, node: ast.UnaryOp, v: MatrixVal) -> Value:
    loc = cx.loc(node)
    if isinstance(node.op, ast.UAdd):
        return v
    if isinstance(node.op, ast.USub):
        return zip_map(cx, lambda x: cx.binary(ir.BinaryOp.SUB, Lit(0), x, loc), [v], loc, "operator '-'")
    if isinstance(node.op, ast.Invert):
        return zip_map(cx, lambda x: ir.Unary(x.type, loc, ir.UnaryOp.INVERT, x), [v], loc, "operator '~'")
    raise type_error(f"'not' needs a scalar, got {describe(v)} (use kl.math any()/all())")


def compare(cx: Any, op: ir.CompareOp, a: Value, b: Value, loc: ir.Loc) -> Value:
    return zip_map(cx, lambda x, y: cx.compare(op, x, y, loc), [a, b], loc, f"comparison '{op.value}'")


def _sum(cx: Any, items: list[Scalar], loc: ir.Loc) -> Scalar:
    acc = items[0]
    for x in items[1:]:
        acc = cx.binary(ir.BinaryOp.ADD, acc, x, loc)
    return acc


def _mul(cx: Any, a: Scalar, b: Scalar, loc: ir.Loc) -> Scalar:
    return cx.binary(ir.BinaryOp.MUL, a, b, loc)


def matmul(cx: Any, a: Value, b: Value, loc: ir.Loc) -> Value:
    if not isinstance(a, MatrixVal) or not isinstance(b, MatrixVal):
        raise type_error(f"operator '@' needs a matrix and a matrix or vector, got {describe(a)} and "
                         f"{describe(b)}")
    if is_vector(a) and is_vector(b):
        raise type_error("operator '@' between two vectors: use a.dot(b) or a.outer_product(b)")
    ar = _rows(a) if not is_vector(a) else [list(a.items)]
    bshape = b.shape if not is_vector(b) else (b.shape[0], 1)
    k = len(ar[0])
    if k != bshape[0]:
        raise type_error(f"operator '@': shapes {a.shape} and {b.shape} do not match "
                         f"({k} columns against {bshape[0]} rows)")
    bm = bshape[1]
    out = [[_sum(cx, [_mul(cx, ar[i][t], b.items[t * bm + j], loc) for t in range(k)], loc)
            for j in range(bm)] for i in range(len(ar))]
    flat = [materialize(x, loc) for row in out for x in row]
    if is_vector(a):
        return make((bm,), flat)
    if is_vector(b):
        return make((a.shape[0],), flat)
    return make((a.shape[0], bm), flat)


# -------------------------------------------------------------------------------- reductions
def dot(cx: Any, a: Value, b: Value, loc: ir.Loc) -> Scalar:
    if not (isinstance(a, MatrixVal) and isinstance(b, MatrixVal) and is_vector(a) and is_vector(b)):
        raise type_error(f"dot() needs two vectors, got {describe(a)} and {describe(b)}")
    if a.shape != b.shape:
        raise type_error(f"dot(): shapes {a.shape} and {b.shape} do not match")
    return _sum(cx, [_mul(cx, x, y, loc) for x, y in zip(a.items, b.items)], loc)


def cross(cx: Any, a: Value, b: Value, loc: ir.Loc) -> Value:
    if not (isinstance(a, MatrixVal) and isinstance(b, MatrixVal) and a.shape == b.shape
            and a.shape in ((2,), (3,))):
        raise type_error(f"cross() needs two vectors of 2 or 3 elements, got {describe(a)} and {describe(b)}")
    x, y = a.items, b.items

    def det2(p: Scalar, q: Scalar, r: Scalar, s: Scalar) -> ir.Expr:
        return materialize(cx.binary(ir.BinaryOp.SUB, _mul(cx, p, q, loc), _mul(cx, r, s, loc), loc), loc)

    if a.shape == (2,):
        return det2(x[0], y[1], x[1], y[0])
    return make((3,), [det2(x[1], y[2], x[2], y[1]), det2(x[2], y[0], x[0], y[2]), det2(x[0], y[1], x[1], y[0])])


def norm_sqr(cx: Any, v: MatrixVal, loc: ir.Loc) -> Scalar:
    return _sum(cx, [_mul(cx, x, x, loc) for x in v.items], loc)


def norm(cx: Any, v: MatrixVal, node: ast.AST) -> Scalar:
    return cx.builtin_call_values("sqrt", [norm_sqr(cx, v, cx.loc(node))], node)


def reduce(cx: Any, name: str, v: MatrixVal, node: ast.AST) -> Scalar:
    """`v.sum()`, `v.min()`, `v.max()`, `v.any()`, `v.all()` (and `kl.math` any/all)."""
    loc = cx.loc(node)
    if name == "sum":
        return _sum(cx, list(v.items), loc)
    acc: Scalar = v.items[0]
    if name in ("min", "max"):
        for x in v.items[1:]:
            acc = cx.builtin_call_values(name, [acc, x], node)
        return acc
    op = ir.LogicalOp.AND if name == "all" else ir.LogicalOp.OR
    acc = truthy(v.items[0], loc)
    for x in v.items[1:]:
        acc = ir.Logical(bool_, loc, op, acc, truthy(x, loc))
    return acc


def outer_product(cx: Any, a: Value, b: Value, loc: ir.Loc) -> Value:
    if not (isinstance(a, MatrixVal) and isinstance(b, MatrixVal) and is_vector(a) and is_vector(b)):
        raise type_error(f"outer_product() needs two vectors, got {describe(a)} and {describe(b)}")
    return make((a.shape[0], b.shape[0]),
                [materialize(_mul(cx, x, y, loc), loc) for x in a.items for y in b.items])


def transpose(v: MatrixVal) -> MatrixVal:
    if is_vector(v):
        raise type_error("transpose() needs a matrix, got a vector")
    n, m = v.shape
    return make((m, n), [v.items[i * m + j] for j in range(m) for i in range(n)])


def _square(v: Value, what: str) -> MatrixVal:
    if not isinstance(v, MatrixVal) or is_vector(v) or v.shape[0] != v.shape[1]:
        raise type_error(f"{what}() needs a square matrix, got {describe(v)}")
    return v


def trace(cx: Any, v: Value, loc: ir.Loc) -> Scalar:
    m = _square(v, "trace")
    n = m.shape[0]
    return _sum(cx, [m.items[i * n + i] for i in range(n)], loc)


def _float_items(cx: Any, m: MatrixVal, loc: ir.Loc) -> MatrixVal:
    t = m.dtype if m.dtype.is_float else DEFAULT_FLOAT
    return make(m.shape, [cast_to(x, arith_type(t), loc) for x in m.items])


def _det(cx: Any, rows: Sequence[Sequence[Scalar]], loc: ir.Loc) -> Scalar:
    """Laplace expansion along the first row (n <= 4: at most 24 products)."""
    n = len(rows)
    if n == 1:
        return rows[0][0]
    if n == 2:
        return cx.binary(ir.BinaryOp.SUB, _mul(cx, rows[0][0], rows[1][1], loc),
                         _mul(cx, rows[0][1], rows[1][0], loc), loc)
    acc: Scalar | None = None
    for j in range(n):
        minor = [list(r[:j]) + list(r[j + 1:]) for r in rows[1:]]
        term = _mul(cx, rows[0][j], _det(cx, minor, loc), loc)
        if acc is None:
            acc = term
        else:
            acc = cx.binary(ir.BinaryOp.SUB if j % 2 else ir.BinaryOp.ADD, acc, term, loc)
    assert acc is not None
    return acc


def determinant(cx: Any, v: Value, loc: ir.Loc) -> Scalar:
    m = _square(v, "determinant")
    return _det(cx, _rows(m), loc)


def inverse(cx: Any, v: Value, loc: ir.Loc) -> Value:
    """Adjugate over determinant (n <= 4)."""
    m = _float_items(cx, _square(v, "inverse"), loc)
    n = m.shape[0]
    rows = _rows(m)
    inv_det = cx.binary(ir.BinaryOp.DIV, Lit(1.0), _det(cx, rows, loc), loc)
    if n == 1:
        return make((1, 1), [materialize(inv_det, loc)])
    out: list[ir.Expr] = []
    for i in range(n):
        for j in range(n):
            # adj[i][j] = (-1)^(i+j) * det(minor without row j and column i)
            minor = [list(r[:i]) + list(r[i + 1:]) for k, r in enumerate(rows) if k != j]
            c = _mul(cx, _det(cx, minor, loc), inv_det, loc)  # type: ignore[arg-type]
            if (i + j) % 2:
                c = cx.binary(ir.BinaryOp.SUB, Lit(0), c, loc)
            out.append(materialize(c, loc))
    return make((n, n), out)


# ----------------------------------------------------------------------------- construction
def _flatten_args(cx: Any, nodes: list[ast.expr]) -> list[tuple[Scalar, ast.AST]]:
    """Constructor arguments as scalars: nested [..]/(..) lists and vectors are spread."""
    out: list[tuple[Scalar, ast.AST]] = []
    for n in nodes:
        if isinstance(n, ast.List | ast.Tuple):
            out += _flatten_args(cx, list(n.elts))
            continue
        v = cx.visit(n)
        out += _spread(v, n)
    return out


def _spread(v: Value, n: ast.AST) -> list[tuple[Scalar, ast.AST]]:
    if isinstance(v, MatrixVal):
        return [(x, n) for x in v.items]
    if isinstance(v, TupleVal):
        return [p for x in v.items for p in _spread(x, n)]
    if isinstance(v, Static) and isinstance(v.obj, tuple | list):
        return [p for x in v.obj for p in _spread(from_python(x), n)]
    if isinstance(v, ir.Expr | Lit):
        return [(v, n)]
    raise type_error(f"a vector element must be a number, got {describe(v)}", n)  # type: ignore[arg-type]


def _list_shape(node: ast.expr) -> tuple[int, ...] | None:
    """Shape of a literal [[a, b], [c, d]] (None when an element is not itself a list)."""
    if isinstance(node, ast.List | ast.Tuple):
        if node.elts and all(isinstance(e, ast.List | ast.Tuple) for e in node.elts):
            widths = {len(e.elts) for e in node.elts}  # type: ignore[attr-defined]
            if len(widths) != 1:
                raise LangError("matrix rows must all have the same length", node)
            return (len(node.elts), widths.pop())
        return (len(node.elts),)
    return None


def _check_shape(shape: tuple[int, ...], what: str) -> None:
    if any(not 1 <= d <= MAX_MATRIX_DIM for d in shape):
        raise type_error(f"{what}: shape {shape} is not supported; vectors and matrices have 1..{MAX_MATRIX_DIM} "
                         f"elements per dimension")


def construct_typed(cx: Any, t: MatrixType, node: ast.Call) -> MatrixVal:
    """`kl.vec3(x, y, z)`, `kl.vec3(0)` (fill), `kl.vec3(v2, z)`, `kl.mat2([[a, b], [c, d]])`."""
    if node.keywords:
        raise LangError(f"{t!r}() takes no keyword arguments in kernels", node)
    if not node.args:
        items: list[tuple[Scalar, ast.AST]] = [(Lit(0), node)] * t.size
    else:
        items = _flatten_args(cx, list(node.args))
    if len(items) == 1 and t.size > 1:
        items = items * t.size
    if len(items) != t.size:
        raise type_error(f"{_type_name(t)}() needs {t.size} values (or 1 to fill), got {len(items)}")
    return make(t.shape, [cx.cast(v, t.dtype, cx.loc(n)) if isinstance(v, Lit) or v.type != t.dtype
                          else v for v, n in items])


def _type_name(t: MatrixType) -> str:
    names = {"f32": "vec", "i32": "ivec", "u32": "uvec"}
    if t.ndim == 1 and t.dtype.name in names:
        return f"kl.{names[t.dtype.name]}{t.shape[0]}"
    if t.ndim == 2 and t.shape[0] == t.shape[1] and t.dtype.name == "f32":
        return f"kl.mat{t.shape[0]}"
    return repr(t)


def construct_untyped(cx: Any, kind: str, node: ast.Call) -> MatrixVal:
    """`kl.Vector([a, b])`, `kl.Vector(captured_tuple)`, `kl.Matrix([[a, b], [c, d]])`, with an
    optional `dt=` keyword."""
    if len(node.args) != 1:
        raise type_error(f"kl.{kind}() takes one list of values, got {len(node.args)} arguments")
    dt: ScalarType | None = None
    for kw in node.keywords:
        if kw.arg not in ("dt", "dtype"):
            raise LangError(f"kl.{kind}() has no keyword argument '{kw.arg}'", kw)
        dt = _dtype_arg(cx, kw.value)
    return literal(cx, node.args[0], kind, dt)


def literal(cx: Any, arg: ast.expr, kind: str, dt: ScalarType | None) -> MatrixVal:
    """The value of `[a, b]` / `[[a, b], [c, d]]` (or a vector or captured tuple) as kind
    ("Vector" or "Matrix") of elements `dt` (None: from the elements)."""
    loc = cx.loc(arg)
    shape = _list_shape(arg)
    items = _flatten_args(cx, [arg])
    if shape is None:
        v = cx.visit(arg)
        if isinstance(v, MatrixVal):
            shape = v.shape
        elif kind == "Matrix" and isinstance(v, Static) and isinstance(v.obj, tuple | list):
            shape = np.shape(v.obj)
        else:
            shape = (len(items),)
    if len(shape) == 1 and len(items) != shape[0] and len(items) % shape[0] == 0:
        shape = (shape[0], len(items) // shape[0])  # a list of vectors: its rows
    if kind == "Vector" and len(shape) != 1:
        raise type_error(f"kl.Vector() takes a flat list of values, got shape {shape} (use kl.Matrix)")
    if kind == "Matrix" and len(shape) == 1:
        shape = (shape[0], 1)  # Taichi: a Matrix of a flat list is a column
    _check_shape(shape, f"kl.{kind}()")
    if int(np.prod(shape)) != len(items):
        raise type_error(f"kl.{kind}(): {len(items)} values do not fill shape {shape}")
    if dt is not None:
        return make(shape, [cx.cast(v, dt, cx.loc(n)) for v, n in items])
    return _unify(shape, [v for v, _ in items], loc)


def _dtype_arg(cx: Any, node: ast.expr) -> ScalarType:
    v = cx.visit(node)
    t = v.obj if isinstance(v, Static) else None
    if not isinstance(t, ScalarType):
        raise type_error("expected a kiln scalar type such as kl.f32", node)
    return t


def _int_arg(cx: Any, node: ast.expr, what: str) -> int:
    v = cx.visit(node)
    n = _const_int(v, what)
    if n is None:
        raise type_error(f"{what} must be a compile-time integer", node)
    return n


def construct_special(cx: Any, name: str, node: ast.Call) -> MatrixVal:
    """`kl.Vector.zero(dt, n)`, `kl.Matrix.zero(dt, n, m)`, `kl.Matrix.identity(dt, n)`..."""
    loc = cx.loc(node)
    arity = {"Vector.zero": 2, "Vector.one": 2, "Matrix.zero": 3, "Matrix.one": 3, "Matrix.identity": 2}[name]
    if len(node.args) != arity or node.keywords:
        raise type_error(f"kl.{name}() takes {arity} positional arguments (dtype first), got {len(node.args)}")
    dt = _dtype_arg(cx, node.args[0])
    dims = tuple(_int_arg(cx, a, f"kl.{name}() size") for a in node.args[1:])
    if name == "Matrix.identity":
        dims = (dims[0], dims[0])
    _check_shape(dims, f"kl.{name}()")
    if name.endswith("identity"):
        vals = [1 if i == j else 0 for i in range(dims[0]) for j in range(dims[1])]
    else:
        fill = 1 if name.endswith("one") else 0
        vals = [fill] * int(np.prod(dims))
    return make(dims, [lit_const(v, dt, loc) for v in vals])
