"""Taichi's loop and local forms over the statement lowering: struct-for (`for i, j in x`,
`for I in kl.grouped(x)`), `kl.static(kl.ndrange(...))` unrolled with tuple targets, static-size
list/tuple locals (`w = [a, b, c]; w[k]`), and the warning when a float is stored into an int local.
"""

from __future__ import annotations

import ast
import itertools
import warnings

from kiln.errors import KilnWarning
from kiln.ir import nodes as ir
from kiln.lang.builtins_py import BuiltinStub
from kiln.lang.fields import grouped
from kiln.lang.stmts import StmtMixin, Stmts
from kiln.lang.transformer import LoopCtx
from kiln.lang.values import (
    LangError,
    Lit,
    MatrixVal,
    Scalar,
    Static,
    TupleVal,
    Value,
    describe,
    from_python,
    scalar_type_of,
)
from kiln.types import INDEX, MatrixType, ScalarType, i32

Dims = list[tuple[list[Scalar], ast.AST]]


class StructForMixin(StmtMixin):
    tuple_locals: dict[str, Value]

    # -- loops -----------------------------------------------------------------------------
    def visit_For(self, node: ast.For) -> Stmts:
        it = node.iter
        if isinstance(it, ast.Call) and not node.orelse:
            fv = self.visit(it.func)
            if isinstance(fv, Static) and fv.obj is grouped:
                return self.grouped_for(node, it)
        elif isinstance(it, ast.Name | ast.Attribute | ast.Subscript) and not node.orelse:
            v = self.visit(it)
            if isinstance(v, ir.ArrayRef):
                dims = self.array_dims(v, it)
                return self.struct_loop(node, self._targets(node.target, len(dims)), dims)
            raise LangError(f"a for loop cannot iterate over {describe(v)}; iterate a field or ndarray, "
                            "range(...), kl.ndrange(...), kl.grouped(...) or kl.static(...)", it)
        return super().visit_For(node)

    def array_dims(self, arr: ir.ArrayRef, node: ast.AST) -> Dims:
        """The index space of a field or ndarray: its shape without element dimensions (fields'
        extents are compile-time constants)."""
        f = self.field_of(arr)
        if f is not None:
            if not f.shape:
                raise LangError(f"cannot iterate over the 0-d field '{f.name}'; use x[None]", node)
            return [([Lit(0), Lit(n), Lit(1)], node) for n in f.shape]
        loc = self.loc(node)
        return [([Lit(0), ir.Shape(INDEX, loc, arr, d), Lit(1)], node) for d in range(arr.type.outer_ndim)]  # type: ignore[arg-type]

    def struct_loop(self, node: ast.For, names: list[str], dims: Dims) -> Stmts:
        if self.is_kernel and self.nesting == 0:
            return [self.parallel_for(node, names, dims)]
        return self.serial_for(node, names, dims, ndrange=True)

    def grouped_for(self, node: ast.For, it: ast.Call) -> Stmts:
        """`for I in kl.grouped(x)` / `kl.grouped(kl.ndrange(...))`: I is the whole index, an
        integer vector (i32 components)."""
        if len(it.args) != 1 or it.keywords:
            raise LangError("kl.grouped() takes one field, ndarray or kl.ndrange(...)", it)
        if not isinstance(node.target, ast.Name):
            raise LangError("a kl.grouped loop has one loop variable: for I in kl.grouped(x)", node.target)
        arg = it.args[0]
        inner = self.visit(arg.func) if isinstance(arg, ast.Call) else None
        if isinstance(inner, Static) and isinstance(inner.obj, BuiltinStub) and inner.obj.kind == "ndrange":
            assert isinstance(arg, ast.Call)
            if not arg.args:
                raise LangError("kl.ndrange() needs at least one dimension", arg)
            dims: Dims = [(self._ndrange_dim(a), a) for a in arg.args]
        else:
            v = self.visit(arg)
            if not isinstance(v, ir.ArrayRef):
                raise LangError(f"kl.grouped() takes a field, an ndarray or kl.ndrange(...), got {describe(v)}", arg)
            dims = self.array_dims(v, arg)
        name = node.target.id
        names = [f"{name}.{k}" for k in range(len(dims))]   # dotted: cannot collide with Python names
        loc = self.loc(node.target)
        items = tuple(ir.Cast(i32, loc, ir.Var(INDEX, loc, n)) for n in names)
        # an integer vector, as Taichi's (`I + kl.ivec2(1, 0)`, `x[I]`, `I[0]`); vectors have at
        # most 4 elements, so a deeper index stays a tuple (indexing and `I[k]` work the same)
        index: Value = MatrixVal((len(items),), i32, items) if len(items) <= 4 else TupleVal(items)
        self.scope.consts.append({name: index})
        try:
            return self.struct_loop(node, names, dims)
        finally:
            self.scope.consts.pop()

    # -- kl.static(kl.ndrange(...)) --------------------------------------------------------
    def static_value(self, node: ast.expr) -> Value:
        if isinstance(node, ast.Call):
            fv = self.visit(node.func)
            if isinstance(fv, Static) and isinstance(fv.obj, BuiltinStub) and fv.obj.kind == "ndrange":
                ranges = [self._static_range(a) for a in node.args]
                return Static(list(itertools.product(*ranges)))
        return super().static_value(node)

    def _static_range(self, a: ast.expr) -> range:
        v = self.visit(a)
        items = list(v.items) if isinstance(v, TupleVal) else [Lit(0), v]
        if not 2 <= len(items) <= 3 or not all(isinstance(x, Lit) and isinstance(x.value, int) for x in items):
            raise LangError("kl.static(kl.ndrange(...)) needs compile-time integer bounds: n or (start, stop)", a)
        return range(*[x.value for x in items])  # type: ignore[union-attr]

    def static_for(self, node: ast.For, it: Value) -> Stmts:
        if not isinstance(node.target, ast.Tuple):
            if isinstance(it, Static) and isinstance(it.obj, list | tuple) and it.obj and all(
                    isinstance(item, tuple) for item in it.obj):   # `for I in kl.static(kl.ndrange(3, 3))`
                it = TupleVal(tuple(TupleVal(tuple(from_python(v) for v in item)) for item in it.obj))
            return super().static_for(node, it)
        names = self._targets(node.target, len(node.target.elts))
        if isinstance(it, Static) and isinstance(it.obj, list | tuple | range):
            items = [from_python(x) for x in it.obj]
        elif isinstance(it, TupleVal):
            items = list(it.items)
        else:
            raise LangError("kl.static() in a for loop needs range(...), kl.ndrange(...) or a constant tuple",
                            node.iter)
        out: Stmts = []
        self.loops.append(LoopCtx("static", node.lineno))
        try:
            for item in items:
                parts = item.obj if isinstance(item, Static) else item.items if isinstance(item, TupleVal) else None
                if not isinstance(parts, tuple | list) or len(parts) != len(names):
                    raise LangError(f"each item of this kl.static loop must unpack into {len(names)} values",
                                    node.target)
                vals = [p if isinstance(item, TupleVal) else from_python(p) for p in parts]
                self.scope.consts.append(dict(zip(names, vals)))  # type: ignore[arg-type]
                try:
                    out.extend(self.block(node.body))
                finally:
                    self.scope.consts.pop()
        finally:
            self.loops.pop()
        return out

    # -- list / tuple locals ---------------------------------------------------------------
    def visit_List(self, node: ast.List) -> Value:
        return TupleVal(tuple(self.visit(e) for e in node.elts))

    def _tuple_key(self, name: str) -> str:
        """Where list/tuple local `name` is kept: per inlined expansion, like its scalar locals."""
        return name if self.inline is None else self.inline.prefix + name

    def visit_Name(self, node: ast.Name) -> Value:
        name = node.id
        key = self._tuple_key(name)
        if key in self.tuple_locals and not any(name in c for c in self.scope.consts):
            return self.tuple_locals[key]
        return super().visit_Name(node)

    def assign_name(self, name: str, v: Value, loc: ir.Loc, ann: ScalarType | MatrixType | None = None) -> Stmts:
        if isinstance(v, TupleVal) and ann is None:
            return self.assign_tuple(name, v, loc)
        held = self.tuple_locals.get(self._tuple_key(name))
        if held is not None:
            raise LangError(f"'{name}' holds a list/tuple of {len(held.items)} values "  # type: ignore[union-attr]
                            "and cannot be reassigned a scalar")
        lv = self.scope.locals.get(name)
        target = ann if ann is not None else lv.type if lv is not None else None
        if isinstance(target, ScalarType) and not target.is_float and isinstance(v, ir.Expr | Lit) \
                and scalar_type_of(v).is_float:
            warnings.warn_explicit(f"a float value is stored into the {target.name} variable '{name}' and "
                                   f"truncated; cast explicitly (kl.cast(v, kl.{target.name})) if intended",
                                   KilnWarning, loc.filename, loc.line)
        return super().assign_name(name, v, loc, ann)

    def assign_tuple(self, name: str, v: TupleVal, loc: ir.Loc) -> Stmts:
        """`w = [a, b, c]`: each run-time item (a scalar or a vector) is copied into its own local
        `w.k` (value semantics); compile-time items stay constants. Items are read with static
        indices (`w[k]`)."""
        if self.scope.locals.get(name) is not None:
            raise LangError(f"'{name}' is a scalar variable and cannot be reassigned a list/tuple")
        out: Stmts = []
        items: list[Value] = []
        for k, item in enumerate(v.items):
            if isinstance(item, ir.Expr) and not isinstance(item, ir.Const):
                out += super().assign_name(f"{name}.{k}", item, loc)
                lv = self.scope.locals[f"{name}.{k}"]
                items.append(ir.Var(lv.type, loc, lv.ir_name))
            elif isinstance(item, MatrixVal):
                out += super().assign_name(f"{name}.{k}", item, loc)
                lv = self.scope.locals[f"{name}.{k}"]
                items.append(MatrixVal(item.shape, lv.type, tuple(
                    ir.Var(lv.type, loc, f"{lv.ir_name}.{j}") for j in range(len(item.items)))))
            elif isinstance(item, Lit | ir.Const | Static | TupleVal):
                items.append(item)
            else:
                raise LangError(f"a list/tuple local cannot hold {describe(item)}")
        self.tuple_locals[self._tuple_key(name)] = TupleVal(tuple(items))
        return out
