"""Assignments involving vectors: vector locals (`v = ...`, `v += ...`), components and swizzles
(`v.x = 1`, `m[i, j] += a`, `v.xy = w`), and whole elements of ndarrays of vectors
(`x[i] = v`, `grid_v[I] += w * v`, which in a parallel loop are per-component atomic adds).

A writable vector is a list of `_Place`s, one per scalar slot: an IR local or an array element.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any

from kiln.abi import element_params
from kiln.ir import nodes as ir
from kiln.lang import matrices as mx
from kiln.lang.matrix_syntax import (
    _AUG_ATOMIC,
    MatrixLocal,
    _element_indices,
    _size,
    _swizzle,
    component_index,
)
from kiln.lang.values import (
    LangError,
    Lit,
    MatrixVal,
    Scalar,
    TupleVal,
    Value,
    arith_type,
    cast_to,
    describe,
    type_error,
)
from kiln.types import MatrixType, ScalarType

Stmts = list[ir.Stmt]


@dataclasses.dataclass(frozen=True)
class _Place:
    """One writable scalar: a local (`arr` None) or an array element."""

    dtype: ScalarType
    local: str = ""
    arr: ir.ArrayRef | None = None
    idx: tuple[ir.Expr, ...] = ()

    def read(self, loc: ir.Loc) -> ir.Expr:
        if self.arr is None:
            return ir.Var(self.dtype, loc, self.local)
        return ir.Load(self.dtype, loc, self.arr, self.idx)

    def write(self, v: Scalar, loc: ir.Loc) -> ir.Stmt:
        if self.arr is None:
            return ir.Assign(loc, self.local, cast_to(v, self.dtype, loc))
        return ir.Store(loc, self.arr, self.idx, cast_to(v, self.dtype, loc))

    @property
    def key(self) -> str:
        return self.local if self.arr is None else self.arr.name


@dataclasses.dataclass(frozen=True)
class _Dynamic:
    """`v[i] = ...` with a runtime i: writes the slot whose position equals i."""

    places: tuple[_Place, ...]
    pos: ir.Expr

    @property
    def dtype(self) -> ScalarType:
        return self.places[0].dtype

    @property
    def key(self) -> str:
        return self.places[0].key


Place = _Place | _Dynamic


# ---------------------------------------------------------------------------------- places
def _local_places(lv: MatrixLocal) -> list[_Place]:
    return [_Place(lv.type, local=f"{lv.ir_name}.{k}") for k in range(_size(lv.shape))]


def places_of(cx: Any, node: ast.expr) -> tuple[tuple[int, ...], list[Place]] | None:
    """The shape and slots of an assignable vector expression, or None when it is not one
    (a scalar local or a scalar array element: the scalar code handles those)."""
    if isinstance(node, ast.Name):
        lv = cx.scope.locals.get(node.id)
        if not isinstance(lv, MatrixLocal):
            return None
        lv = writable(cx, node.id)
        return lv.shape, list(_local_places(lv))
    if isinstance(node, ast.Subscript):
        base = cx.visit(node.value)
        if isinstance(base, ir.ArrayRef):
            if not base.type.element_shape:
                return None
            idx = cx.array_indices(base, node.slice)
            loc = cx.loc(node)
            assert base.type.dtype is not None  # arrays in kernels are concrete
            return base.type.element_shape, [_Place(base.type.dtype, arr=base, idx=idx + comp)
                                             for comp in _element_indices(base, loc)]
        inner = places_of(cx, node.value)
        if inner is None:
            if isinstance(base, MatrixVal):
                raise LangError("only vector variables and array elements can be assigned to", node)
            return None
        shape, places = inner
        k = component_index(cx, shape, node.slice)
        if isinstance(k, int):
            return (), [places[k]]
        return (), [_Dynamic(tuple(p for p in places if isinstance(p, _Place)), k)]
    if isinstance(node, ast.Attribute):
        inner = places_of(cx, node.value)
        if inner is None:
            return None
        shape, places = inner
        probe = MatrixVal(shape, places[0].dtype, tuple(ir.Const(places[0].dtype, ir.NO_LOC, 0) for _ in places))
        picks = _swizzle(probe, node.attr)
        if picks is None:
            raise LangError(f"cannot assign to attribute '{node.attr}' of a vector", node)
        if len(set(picks)) != len(picks):
            raise type_error(f"'.{node.attr}' repeats a component and cannot be assigned to", node)
        return ((len(picks),) if len(picks) > 1 else ()), [places[p] for p in picks]
    return None


def writable(cx: Any, name: str) -> MatrixLocal:
    old = cx.scope.locals[name]
    lv = cx.writable_local(name)
    if not isinstance(lv, MatrixLocal):  # a fresh private copy in another parallel loop
        lv = MatrixLocal(lv.ir_name, lv.type, lv.region, lv.line, old.shape)
        cx.scope.locals[name] = lv
    return lv


def _read(p: Place, loc: ir.Loc, cx: Any) -> ir.Expr:
    if isinstance(p, _Place):
        return p.read(loc)
    acc = p.places[-1].read(loc)
    for j in range(len(p.places) - 2, -1, -1):
        acc = cx.select(cx.compare(ir.CompareOp.EQ, p.pos, Lit(j), loc), p.places[j].read(loc), acc, loc)
    return acc


def _write(p: Place, v: Scalar, loc: ir.Loc, cx: Any) -> Stmts:
    if isinstance(p, _Place):
        return [p.write(v, loc)]
    out: Stmts = []
    for j, q in enumerate(p.places):  # v is a Var or Const here (staged), safe to repeat
        cond = cx.compare(ir.CompareOp.EQ, p.pos, Lit(j), loc)
        out.append(ir.If(loc, cond, (q.write(v, loc),), ()))
    return out


# ------------------------------------------------------------------------------ assignment
def _reads(e: object, acc: set[str]) -> set[str]:
    if isinstance(e, ir.Var):
        acc.add(e.name)
    elif isinstance(e, ir.Load):
        acc.add(e.array.name)
    if dataclasses.is_dataclass(e):
        for f in dataclasses.fields(e):
            sub = getattr(e, f.name)
            if isinstance(sub, ir.Expr | ir.ArrayRef):
                _reads(sub, acc)
            elif isinstance(sub, tuple):
                for x in sub:
                    if isinstance(x, ir.Expr):
                        _reads(x, acc)
    return acc


def _stage(cx: Any, items: list[Scalar], places: list[Place], loc: ir.Loc) -> tuple[Stmts, list[Scalar]]:
    """Copy right-hand items to temporaries when writing one slot could change another item
    (`v = v.yx`, `x[i] = x[i].yx`) or when a dynamic write repeats the value."""
    keys = {p.key for p in places}
    risky = any(isinstance(p, _Dynamic) for p in places) or (
        len(places) > 1 and any(_reads(x, set()) & keys for x in items if isinstance(x, ir.Expr)))
    if not risky:
        return [], items
    out: Stmts = []
    staged: list[Scalar] = []
    for k, x in enumerate(items):
        if isinstance(x, Lit | ir.Const):
            staged.append(x)
            continue
        name = f"vtmp.{loc.line}.{loc.col}.{k}.{x.type.name}"  # one type per name, even when unrolled
        cx.local_decls[name] = x.type
        out.append(ir.Assign(loc, name, x))
        staged.append(ir.Var(x.type, loc, name))
    return out, staged


def _items_for(v: Value, shape: tuple[int, ...], n: int, what: str) -> list[Scalar]:
    if isinstance(v, MatrixVal):
        if v.shape != shape and not (len(v.items) == n and len(v.shape) == 1 and len(shape) == 1):
            raise type_error(f"{what}: cannot assign {describe(v)} to a value of shape {shape or '()'}")
        return list(v.items)
    if isinstance(v, ir.Expr | Lit):
        return [v] * n  # a scalar fills every slot
    raise type_error(f"{what}: cannot assign {describe(v)}")


def store(cx: Any, target: ast.expr, v: Value, loc: ir.Loc) -> Stmts | None:
    """`target = v` when target is a vector slot or v is a vector; None: the scalar path."""
    got = places_of(cx, target)
    if got is None:
        return None
    shape, places = got
    items = _items_for(v, shape, len(places), "assignment")
    out, items = _stage(cx, items, places, loc)
    for p, x in zip(places, items):
        out += _write(p, x, loc, cx)
    return out


def aug_store(cx: Any, target: ast.expr, op: ir.BinaryOp | None, v: Value, loc: ir.Loc) -> Stmts | None:
    """`target op= v` on vector slots: atomic-capable per-component AugStores on array elements
    (the parallel loop makes them atomic where needed), read-modify-write elsewhere."""
    got = places_of(cx, target)
    if got is None:
        return None
    shape, places = got
    if op is None:  # m @= a
        cur = mx.make(shape, [_read(p, loc, cx) for p in places])
        items = list(mx.matmul(cx, cur, v, loc).items)  # type: ignore[union-attr]
        if len(items) != len(places):
            raise type_error(f"'@=': the result has {len(items)} elements, the target {len(places)}")
    else:
        rhs = _items_for(v, shape, len(places), f"'{op.value}='")
        aop = _AUG_ATOMIC.get(op)
        if aop is not None and all(isinstance(p, _Place) and p.arr is not None for p in places):
            out: Stmts = []
            for p, x in zip(places, rhs):
                assert isinstance(p, _Place) and p.arr is not None
                if aop in (ir.AtomicOp.AND, ir.AtomicOp.OR, ir.AtomicOp.XOR) and p.dtype.is_float:
                    raise type_error(f"bitwise operator '{op.value}=' needs an int or bool array, "
                                     f"'{p.arr.name}' has dtype {p.dtype.name}")
                out.append(ir.AugStore(loc, aop, p.arr, p.idx, cast_to(x, p.dtype, loc)))
            return out
        items = [mx.materialize(cx.binary(op, _read(p, loc, cx), x, loc), loc) for p, x in zip(places, rhs)]
    out, items = _stage(cx, items, places, loc)  # type: ignore[arg-type]
    for p, x in zip(places, items):
        out += _write(p, x, loc, cx)
    return out


def assign_local(cx: Any, name: str, v: Value, loc: ir.Loc, ann: ScalarType | MatrixType | None) -> Stmts:
    """`v = <vector>` (declaring `v` on first assignment) or `v: kl.vec3 = ...`."""
    lv = cx.scope.locals.get(name)
    if name in cx.scope.params and lv is None:
        raise LangError(f"cannot assign to parameter '{name}' here; copy it first: {name}_copy = {name}")
    if isinstance(ann, ScalarType):
        raise type_error(f"'{name}' is annotated {ann.name} but assigned {describe(v)}")
    if isinstance(lv, MatrixLocal):
        if ann is not None and (ann.shape != lv.shape or ann.dtype != lv.type):
            raise type_error(f"'{name}' already has type {_describe_local(lv)}")
        return store(cx, ast.Name(id=name, ctx=ast.Store()), v, loc) or []
    if cx.writable_local(name) is not None:
        raise type_error(f"'{name}' is a scalar of type {lv.type.name} and cannot be assigned "  # type: ignore[union-attr]
                         f"{describe(v)}")
    if not isinstance(v, MatrixVal):
        if ann is None:
            raise LangError(f"cannot assign {describe(v)} to a variable in a kernel")
        v = mx.make(ann.shape, [cast_to(v, ann.dtype, loc)] * ann.size)  # type: ignore[arg-type]
    shape = ann.shape if ann is not None else v.shape
    dtype = ann.dtype if ann is not None else arith_type(v.dtype)
    if ann is not None and v.shape != ann.shape:
        raise type_error(f"'{name}' is annotated {ann!r} but assigned {describe(v)}")
    # an inlined func's locals carry its expansion's prefix, as scalar locals do (kiln.lang.inline)
    ir_name = name if cx.inline is None else cx.inline.prefix + name
    for k in range(_size(shape)):
        prev = cx.local_decls.get(f"{ir_name}.{k}")
        if prev is not None and prev != dtype:
            raise type_error(f"'{name}' already has element type {prev.name} and cannot be redeclared "
                             f"with {dtype.name}")
        cx.local_decls[f"{ir_name}.{k}"] = dtype
    new = MatrixLocal(ir_name, dtype, cx.region, loc.line, shape)
    cx.scope.locals[name] = new
    out, items = _stage(cx, list(v.items), list(_local_places(new)), loc)
    return out + [p.write(x, loc) for p, x in zip(_local_places(new), items)]


def _describe_local(lv: MatrixLocal) -> str:
    return repr(MatrixType(lv.shape, lv.type))


def scalar_into_vector_local(name: str, lv: MatrixLocal) -> LangError:
    return type_error(f"'{name}' is a vector local of type {_describe_local(lv)} and cannot be assigned a scalar "
                      f"(assign a component such as {name}[0] or fill with {name} = kl.types.vector(...)(x))")


def unpack(cx: Any, target: ast.Tuple, v: Value, loc: ir.Loc) -> Stmts:
    """`a, b = value` where value is a tuple-valued call (`kl.svd`): its items are locals or
    constants already, so they are assigned in order without staging."""
    if not isinstance(v, TupleVal) or len(v.items) != len(target.elts):
        n = len(v.items) if isinstance(v, TupleVal) else 1
        raise LangError(f"tuple assignment needs {len(target.elts)} values on the right, got {n}")
    out: Stmts = []
    for t_node, item in zip(target.elts, v.items):
        out += cx.assign_target(t_node, item, loc)
    return out


def take_pending(cx: Any) -> Stmts:
    stmts = getattr(cx, "pending_stmts", None)
    if not stmts:
        return []
    cx.pending_stmts = []
    return list(stmts)


def restore_pending(cx: Any, stmts: Stmts) -> None:
    cx.pending_stmts = stmts


def no_pending(cx: Any, where: str) -> None:
    if getattr(cx, "pending_stmts", None):
        cx.pending_stmts = []
        raise LangError(f"kl.svd() and kl.polar_decompose() cannot be used in {where}; assign the result to "
                        f"variables first")


def vector_params(cx: Any, name: str, t: MatrixType, loc: ir.Loc) -> list[ir.Param]:
    """A kernel parameter of vector/matrix type: IR params `name.0`, `name.1`, ... (the binder
    spreads the caller's tuple or array over them) and a read-only vector value in scope."""
    params = [ir.Param(n, t.dtype, loc) for n in element_params(name, t.size)]
    cx.scope.params[name] = MatrixVal(t.shape, t.dtype, tuple(ir.Var(t.dtype, loc, p.name) for p in params))
    return params


def store_list(cx: Any, target: ast.expr, value: ast.List, loc: ir.Loc) -> Stmts | None:
    """`x[i] = [0.0, 0.0]`: a list literal stored into a vector element or component slots."""
    got = places_of(cx, target)
    if got is None:
        return None
    shape = got[0]
    return store(cx, target, mx.literal(cx, value, "Matrix" if len(shape) == 2 else "Vector", None), loc)
