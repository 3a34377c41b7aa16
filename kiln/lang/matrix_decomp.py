"""`kl.svd` and `kl.polar_decompose` of 2x2 and 3x3 matrices, expanded into scalar IR.

2x2, closed form: the polar decomposition A = R P comes from B = A + det-sign-adjusted cofactor
matrix, scaled to an orthogonal matrix by 1/sqrt|det B|; the SVD then diagonalises the symmetric
P with one Jacobi rotation and orders the singular values descending, as Taichi's `ti.svd`
(A = U S V^T). 3x3: a fixed number of cyclic Jacobi sweeps on A^T A gives V (sorted, made a
rotation), U's columns are A v normalised (the third a cross product, so U is a rotation too and
the last singular value carries det(A)'s sign, as Taichi's); polar is R = U V^T, P = V S V^T.
Intermediate values go into fresh locals (queued on the lowering object and emitted before the
statement: kiln.lang.matrix_assign.take_pending), so the expression trees stay small.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
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
        name = f"decomp.{self.loc.line}.{self.loc.col}.{self.count}.{e.type.name}"
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

    def mat(self, rows: Sequence[Sequence[Scalar]]) -> MatrixVal:
        n = len(rows)
        return mx.make((n, n), [materialize(cast_to(x, self.t, self.loc), self.loc) for r in rows for x in r])

    def dot(self, a: Sequence[Scalar], b: Sequence[Scalar]) -> Scalar:
        acc = self.b(B.MUL, a[0], b[0])
        for x, y in zip(a[1:], b[1:]):
            acc = self.b(B.ADD, acc, self.b(B.MUL, x, y))
        return acc

    def unit(self, v: Sequence[Scalar], fallback: Sequence[Scalar]) -> list[ir.Expr]:
        """v / |v|, or `fallback` when v is (nearly) zero."""
        n = self.tmp(self.fn("sqrt", self.dot(v, v)))
        ok = self.tmp(self.cmp(ir.CompareOp.GT, n, Lit(1e-30)))
        inv = self.tmp(self.sel(ok, self.b(B.DIV, Lit(1.0), n), Lit(0.0)))
        return [self.tmp(self.sel(ok, self.b(B.MUL, x, inv), f)) for x, f in zip(v, fallback)]


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
        raise type_error(f"{name}() needs a 2x2 or 3x3 matrix, got {describe(a)}")
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
    """`R, P = kl.polar_decompose(A)`: A = R @ P, R orthogonal (a rotation for 3x3), P symmetric
    (positive semi-definite for 2x2; for 3x3, as Taichi, P = V S V^T with S's last entry
    negative when det(A) < 0)."""
    e = _input(cx, "polar_decompose", args, node)
    a: MatrixVal = args[0]  # type: ignore[assignment]
    if a.shape == (3, 3):
        u, sig, v = _svd3(e, a)
        # u and v hold columns: R = U V^T, P = V S V^T
        r = [[e.tmp(e.dot([u[k][i] for k in range(3)], [v[k][j] for k in range(3)])) for j in range(3)]
             for i in range(3)]
        p = [[e.tmp(e.dot([e.b(B.MUL, v[k][i], sig[k]) for k in range(3)], [v[k][j] for k in range(3)]))
              for j in range(3)] for i in range(3)]
        return TupleVal((e.mat(r), e.mat(p)))  # type: ignore[arg-type]
    r, p = _polar(e, a)
    return TupleVal((e.mat(r), e.mat(p)))  # type: ignore[arg-type]


def svd(cx: Any, args: list[Value], node: ast.Call) -> Value:
    """`U, S, V = kl.svd(A)`: A = U @ S @ V.transpose(), S diagonal, singular values descending
    (3x3: U and V rotations, so the last singular value is negative when det(A) < 0, as Taichi)."""
    e = _input(cx, "svd", args, node)
    if args[0].shape == (3, 3):  # type: ignore[union-attr]
        u, sig, v = _svd3(e, args[0])  # type: ignore[arg-type]
        zero = Lit(0.0)
        smat: list[list[Scalar]] = [[sig[0], zero, zero], [zero, sig[1], zero], [zero, zero, sig[2]]]
        return TupleVal((e.mat([[u[j][i] for j in range(3)] for i in range(3)]), e.mat(smat),
                         e.mat([[v[j][i] for j in range(3)] for i in range(3)])))  # type: ignore[arg-type]
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
    u2x2: list[list[Scalar]] = [[e.b(B.ADD, e.b(B.MUL, r[i][0], v[0][j]), e.b(B.MUL, r[i][1], v[1][j])) for j in range(2)] for i in range(2)]
    return TupleVal((e.mat(u2x2), e.mat([[hi, Lit(0.0)], [Lit(0.0), lo]]), e.mat(v)))  # type: ignore[arg-type]


#: cyclic Jacobi sweeps over the 3 off-diagonal pairs of A^T A (quadratic convergence: 6 sweeps
#: reach f64 round-off for 3x3 matrices)
JACOBI_SWEEPS = 6


def _jacobi3(e: _Emitter, s: list[list[Scalar]]) -> tuple[list[Scalar], list[list[Scalar]]]:
    """Eigenvalues and eigenvectors (columns of v) of the symmetric 3x3 `s`."""
    s = [row[:] for row in s]
    v: list[list[Scalar]] = [[Lit(1.0 if i == j else 0.0) for j in range(3)] for i in range(3)]
    for _ in range(JACOBI_SWEEPS):
        for p, q in ((0, 1), (0, 2), (1, 2)):
            spq = s[p][q]
            tiny = e.tmp(e.cmp(ir.CompareOp.LE, e.fn("abs", spq), Lit(1e-37)))
            theta = e.tmp(e.b(B.DIV, e.b(B.SUB, s[q][q], s[p][p]), e.b(B.MUL, Lit(2.0), e.sel(tiny, Lit(1.0), spq))))
            sgn = e.sel(e.cmp(ir.CompareOp.GE, theta, Lit(0.0)), Lit(1.0), Lit(-1.0))
            big = e.fn("sqrt", e.b(B.ADD, e.b(B.MUL, theta, theta), Lit(1.0)))
            t = e.tmp(e.sel(tiny, Lit(0.0), e.b(B.DIV, sgn, e.b(B.ADD, e.fn("abs", theta), big))))
            c = e.tmp(e.b(B.DIV, Lit(1.0), e.fn("sqrt", e.b(B.ADD, e.b(B.MUL, t, t), Lit(1.0)))))
            sn = e.tmp(e.b(B.MUL, t, c))
            r = 3 - p - q
            srp, srq = s[r][p], s[r][q]
            new_rp = e.tmp(e.b(B.SUB, e.b(B.MUL, c, srp), e.b(B.MUL, sn, srq)))
            new_rq = e.tmp(e.b(B.ADD, e.b(B.MUL, sn, srp), e.b(B.MUL, c, srq)))
            s[p][p] = e.tmp(e.b(B.SUB, s[p][p], e.b(B.MUL, t, spq)))
            s[q][q] = e.tmp(e.b(B.ADD, s[q][q], e.b(B.MUL, t, spq)))
            s[p][q] = s[q][p] = e.tmp(e.sel(tiny, spq, Lit(0.0)))
            s[r][p] = s[p][r] = new_rp
            s[r][q] = s[q][r] = new_rq
            for k in range(3):
                vp, vq = v[k][p], v[k][q]
                v[k][p] = e.tmp(e.b(B.SUB, e.b(B.MUL, c, vp), e.b(B.MUL, sn, vq)))
                v[k][q] = e.tmp(e.b(B.ADD, e.b(B.MUL, sn, vp), e.b(B.MUL, c, vq)))
    return [s[0][0], s[1][1], s[2][2]], v


def _svd3(e: _Emitter, a: MatrixVal) -> tuple[list[list[ir.Expr]], list[ir.Expr], list[list[Scalar]]]:
    """U columns, singular values and V columns of a 3x3 matrix (one-sided: the eigenvectors of
    A^T A give V; U's columns are A v normalised, the third their cross product)."""
    rows = [[e.tmp(a.items[i * 3 + j]) for j in range(3)] for i in range(3)]
    cols = [[rows[i][j] for i in range(3)] for j in range(3)]
    ata = [[e.tmp(e.dot(cols[i], cols[j])) if j >= i else Lit(0.0) for j in range(3)] for i in range(3)]
    for i in range(3):
        for j in range(i):
            ata[i][j] = ata[j][i]
    lam, vm = _jacobi3(e, ata)
    vcols = [[vm[k][i] for k in range(3)] for i in range(3)]
    # sort descending by eigenvalue: three compare-and-swap steps carry the columns along
    for i, j in ((0, 1), (0, 2), (1, 2)):
        swap = e.tmp(e.cmp(ir.CompareOp.LT, lam[i], lam[j]))
        lam[i], lam[j] = e.tmp(e.sel(swap, lam[j], lam[i])), e.tmp(e.sel(swap, lam[i], lam[j]))
        ci, cj = vcols[i], vcols[j]
        vcols[i] = [e.tmp(e.sel(swap, y, x)) for x, y in zip(ci, cj)]
        vcols[j] = [e.tmp(e.sel(swap, x, y)) for x, y in zip(ci, cj)]
    # V a rotation: v2 = v0 x v1
    v0, v1 = vcols[0], vcols[1]
    v2 = [e.tmp(e.b(B.SUB, e.b(B.MUL, v0[(k + 1) % 3], v1[(k + 2) % 3]), e.b(B.MUL, v0[(k + 2) % 3], v1[(k + 1) % 3])))
          for k in range(3)]
    av = [[e.tmp(e.dot(rows[i], vc)) for i in range(3)] for vc in (v0, v1, v2)]
    u0 = e.unit(av[0], [Lit(1.0), Lit(0.0), Lit(0.0)])
    proj = e.tmp(e.dot(u0, av[1]))
    w = [e.b(B.SUB, x, e.b(B.MUL, proj, y)) for x, y in zip(av[1], u0)]
    # a vector orthogonal to u0 for a rank-1 (or zero) A
    xs = e.tmp(e.cmp(ir.CompareOp.LT, e.fn("abs", u0[0]), Lit(0.9)))
    ax: list[Scalar] = [e.sel(xs, Lit(1.0), Lit(0.0)), e.sel(xs, Lit(0.0), Lit(1.0)), Lit(0.0)]
    perp = [e.b(B.SUB, e.b(B.MUL, u0[(k + 1) % 3], ax[(k + 2) % 3]), e.b(B.MUL, u0[(k + 2) % 3], ax[(k + 1) % 3]))
            for k in range(3)]
    u1 = e.unit(w, [e.tmp(x) for x in e.unit(perp, [Lit(0.0), Lit(1.0), Lit(0.0)])])
    u2 = [e.tmp(e.b(B.SUB, e.b(B.MUL, u0[(k + 1) % 3], u1[(k + 2) % 3]), e.b(B.MUL, u0[(k + 2) % 3], u1[(k + 1) % 3])))
          for k in range(3)]
    sig = [e.tmp(e.dot(u0, av[0])), e.tmp(e.dot(u1, av[1])), e.tmp(e.dot(u2, av[2]))]
    return [u0, u1, u2], sig, [list(v0), list(v1), list(v2)]
