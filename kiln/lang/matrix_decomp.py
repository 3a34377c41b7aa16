"""`kl.svd` and `kl.polar_decompose` of 2x2 matrices, expanded into scalar IR.

Closed forms (no iteration): the polar decomposition A = R P of a 2x2 matrix comes from
B = A + det-sign-adjusted cofactor matrix, scaled to a rotation (or reflection-free orthogonal
matrix) by 1/sqrt|det B|; the SVD then diagonalises the symmetric P with one Jacobi rotation and
orders the singular values descending, as Taichi's `ti.svd` (A = U S V^T). Intermediate values
go into fresh locals (`cx.pending`, emitted before the statement) so that the expression trees
stay small.
"""

from __future__ import annotations

import ast
from typing import Any

from kiln.ir import nodes as ir
from kiln.lang import matrices as mx
from kiln.lang.values import (
    Lit,
    MatrixVal,
    Scalar,
    TupleVal,
    Value,
    cast_to,
    describe,
    materialize,
    type_error,
)
from kiln.types import DEFAULT_FLOAT, ScalarType, bool_

B = ir.BinaryOp


class _Emitter:
    """Scalar helpers that stage values into locals."""

    def __init__(self, cx: Any, node: ast.AST, t: ScalarType) -> None:
        self.cx, self.node, self.t = cx, node, t
        self.loc = cx.loc(node)
        self.count = 0

    def tmp(self, v: Scalar) -> ir.Expr:
        e = cast_to(v, self.t, self.loc) if not isinstance(v, ir.Expr) or v.type != bool_ else v
        if isinstance(e, ir.Const | ir.Var):
            return e
        name = f"decomp.{self.loc.line}.{self.loc.col}.{self.count}"
        self.count += 1
        self.cx.local_decls[name] = e.type
        pending(self.cx).append(ir.Assign(self.loc, name, e))
        return ir.Var(e.type, self.loc, name)

    def b(self, op: ir.BinaryOp, x: Scalar, y: Scalar) -> Scalar:
        return self.cx.binary(op, x, y, self.loc)

    def cmp(self, op: ir.CompareOp, x: Scalar, y: Scalar) -> Scalar:
        return self.cx.compare(op, x, y, self.loc)

    def sel(self, c: Scalar, x: Scalar, y: Scalar) -> ir.Expr:
        return self.cx.select(c, x, y, self.loc)

    def fn(self, name: str, *xs: Scalar) -> Scalar:
        return self.cx.builtin_call_values(name, list(xs), self.node)

    def mat(self, rows: list[list[Scalar]]) -> MatrixVal:
        return mx.make((2, 2), [materialize(cast_to(x, self.t, self.loc), self.loc) for r in rows for x in r])


def pending(cx: Any) -> list[ir.Stmt]:
    """Statements an expression needs before the statement that holds it (see stmts.stmts)."""
    if not hasattr(cx, "pending_stmts"):
        cx.pending_stmts = []
    return cx.pending_stmts  # type: ignore[no-any-return]


def _input(cx: Any, name: str, args: list[Value], node: ast.Call) -> _Emitter:
    if not 1 <= len(args) <= 2:
        raise type_error(f"{name}() takes a matrix and an optional dtype, got {len(args)} arguments")
    a = args[0]
    if not isinstance(a, MatrixVal) or a.shape not in ((2, 2), (3, 3)):
        raise type_error(f"{name}() needs a 2x2 matrix, got {describe(a)}")
    if a.shape == (3, 3):
        raise type_error(f"{name}() of 3x3 matrices is not supported yet (2x2 only)")
    t = a.dtype if a.dtype.is_float and a.dtype.bits >= 32 else DEFAULT_FLOAT
    return _Emitter(cx, node, t)


def _polar(e: _Emitter, a: MatrixVal) -> tuple[list[list[ir.Expr]], list[list[ir.Expr]]]:
    a00, a01, a10, a11 = (e.tmp(x) for x in a.items)
    det = e.tmp(e.b(B.SUB, e.b(B.MUL, a00, a11), e.b(B.MUL, a10, a01)))
    neg = e.tmp(e.cmp(ir.CompareOp.LT, det, Lit(0.0)))
    # B = A + sign(det) * cof(A)^T: a scaled rotation for det >= 0, a scaled reflection otherwise
    b00 = e.tmp(e.sel(neg, e.b(B.SUB, a00, a11), e.b(B.ADD, a00, a11)))
    b01 = e.tmp(e.sel(neg, e.b(B.ADD, a01, a10), e.b(B.SUB, a01, a10)))
    b10 = e.tmp(e.sel(neg, e.b(B.ADD, a10, a01), e.b(B.SUB, a10, a01)))
    b11 = e.tmp(e.sel(neg, e.b(B.SUB, a11, a00), e.b(B.ADD, a11, a00)))
    adet_b = e.fn("abs", e.b(B.SUB, e.b(B.MUL, b00, b11), e.b(B.MUL, b10, b01)))
    zero = e.tmp(e.cmp(ir.CompareOp.EQ, adet_b, Lit(0.0)))  # A == 0: (I, A)
    k = e.tmp(e.sel(zero, Lit(1.0), e.b(B.DIV, Lit(1.0), e.fn("sqrt", adet_b))))
    adet_a = e.fn("abs", det)
    r = [[e.tmp(e.sel(zero, Lit(1.0), e.b(B.MUL, b00, k))), e.tmp(e.sel(zero, Lit(0.0), e.b(B.MUL, b01, k)))],
         [e.tmp(e.sel(zero, Lit(0.0), e.b(B.MUL, b10, k))), e.tmp(e.sel(zero, Lit(1.0), e.b(B.MUL, b11, k)))]]
    ata = [[e.b(B.ADD, e.b(B.MUL, a00, a00), e.b(B.MUL, a10, a10)), e.b(B.ADD, e.b(B.MUL, a00, a01), e.b(B.MUL, a10, a11))],
           [e.b(B.ADD, e.b(B.MUL, a01, a00), e.b(B.MUL, a11, a10)), e.b(B.ADD, e.b(B.MUL, a01, a01), e.b(B.MUL, a11, a11))]]
    p = [[e.tmp(e.sel(zero, a00, e.b(B.MUL, e.b(B.ADD, ata[0][0], adet_a), k))), e.tmp(e.sel(zero, a01, e.b(B.MUL, ata[0][1], k)))],
         [e.tmp(e.sel(zero, a10, e.b(B.MUL, ata[1][0], k))), e.tmp(e.sel(zero, a11, e.b(B.MUL, e.b(B.ADD, ata[1][1], adet_a), k)))]]
    return r, p


def polar_decompose(cx: Any, args: list[Value], node: ast.Call) -> Value:
    """`R, P = kl.polar_decompose(A)`: A = R @ P, R orthogonal, P symmetric positive semi-definite."""
    e = _input(cx, "polar_decompose", args, node)
    r, p = _polar(e, args[0])  # type: ignore[arg-type]
    return TupleVal((e.mat(r), e.mat(p)))  # type: ignore[arg-type]


def svd(cx: Any, args: list[Value], node: ast.Call) -> Value:
    """`U, S, V = kl.svd(A)`: A = U @ S @ V.transpose(), S diagonal, singular values descending."""
    e = _input(cx, "svd", args, node)
    r, p = _polar(e, args[0])  # type: ignore[arg-type]
    s00, s01, s11 = p[0][0], p[0][1], p[1][1]
    # one Jacobi rotation (c, s) diagonalises the symmetric P
    tiny = e.tmp(e.cmp(ir.CompareOp.LT, e.fn("abs", s01), Lit(1e-30)))
    tao = e.tmp(e.b(B.MUL, Lit(0.5), e.b(B.SUB, s00, s11)))
    w = e.tmp(e.fn("sqrt", e.b(B.ADD, e.b(B.MUL, tao, tao), e.b(B.MUL, s01, s01))))
    den = e.sel(e.cmp(ir.CompareOp.GT, tao, Lit(0.0)), e.b(B.ADD, tao, w), e.b(B.SUB, tao, w))
    t = e.tmp(e.sel(tiny, Lit(0.0), e.b(B.DIV, s01, den)))
    c = e.tmp(e.b(B.DIV, Lit(1.0), e.fn("sqrt", e.b(B.ADD, e.b(B.MUL, t, t), Lit(1.0)))))
    s = e.tmp(e.b(B.SUB, Lit(0.0), e.b(B.MUL, t, c)))
    cs2 = e.b(B.MUL, e.b(B.MUL, Lit(2.0), c), e.b(B.MUL, s, s01))
    sig1 = e.tmp(e.b(B.ADD, e.b(B.SUB, e.b(B.MUL, e.b(B.MUL, c, c), s00), cs2), e.b(B.MUL, e.b(B.MUL, s, s), s11)))
    sig2 = e.tmp(e.b(B.ADD, e.b(B.ADD, e.b(B.MUL, e.b(B.MUL, s, s), s00), cs2), e.b(B.MUL, e.b(B.MUL, c, c), s11)))
    swap = e.tmp(e.cmp(ir.CompareOp.LT, sig1, sig2))
    neg_s, neg_c = e.b(B.SUB, Lit(0.0), s), e.b(B.SUB, Lit(0.0), c)
    v = [[e.tmp(e.sel(swap, neg_s, c)), e.tmp(e.sel(swap, c, s))],
         [e.tmp(e.sel(swap, neg_c, neg_s)), e.tmp(e.sel(swap, neg_s, c))]]
    hi, lo = e.sel(swap, sig2, sig1), e.sel(swap, sig1, sig2)
    u = [[e.b(B.ADD, e.b(B.MUL, r[i][0], v[0][j]), e.b(B.MUL, r[i][1], v[1][j])) for j in range(2)] for i in range(2)]
    return TupleVal((e.mat(u), e.mat([[hi, Lit(0.0)], [Lit(0.0), lo]]), e.mat(v)))  # type: ignore[arg-type]
