"""Expression lowering: Python AST expressions -> typed IR expressions (or compile-time values)."""

from __future__ import annotations

import ast
import builtins as py_builtins
import dataclasses
import operator
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.ir import nodes as ir
from kiln.ir.builtins import BUILTINS, as_float
from kiln.lang import matrices as mx
from kiln.lang import matrix_syntax as vec
from kiln.lang.builtins_py import PY_ALIASES, PY_BUILTINS, BuiltinStub
from kiln.lang.callables import Compilable, Func
from kiln.lang.fields import Field, Template, TemplateArg
from kiln.lang.inline import InlineRequired, inline_call
from kiln.lang.random import random_call
from kiln.lang.transformer import ASTTransformer, LocalVar, LoopCtx, NameResolver, Scope
from kiln.lang.values import (
    LangError,
    Lit,
    MatrixVal,
    Scalar,
    ShapeOf,
    Static,
    TupleVal,
    Value,
    VoidCall,
    arith_type,
    cast_to,
    common_type,
    describe,
    from_python,
    index_expr,
    lit_const,
    materialize,
    scalar_type_of,
    truthy,
    type_error,
)
from kiln.types import (
    DEFAULT_INT,
    INDEX,
    MatrixType,
    NdArrayType,
    ScalarType,
    bool_,
    default_fp,
    from_numpy,
    literal_type,
)

if TYPE_CHECKING:
    from kiln.lang.function import CompileContext

_BINOPS: dict[type, ir.BinaryOp] = {
    ast.Add: ir.BinaryOp.ADD, ast.Sub: ir.BinaryOp.SUB, ast.Mult: ir.BinaryOp.MUL,
    ast.Div: ir.BinaryOp.DIV, ast.FloorDiv: ir.BinaryOp.FLOORDIV, ast.Mod: ir.BinaryOp.MOD,
    ast.Pow: ir.BinaryOp.POW, ast.BitAnd: ir.BinaryOp.BITAND, ast.BitOr: ir.BinaryOp.BITOR,
    ast.BitXor: ir.BinaryOp.BITXOR, ast.LShift: ir.BinaryOp.SHL, ast.RShift: ir.BinaryOp.SHR,
}
_PYOPS = {
    ir.BinaryOp.ADD: operator.add, ir.BinaryOp.SUB: operator.sub, ir.BinaryOp.MUL: operator.mul,
    ir.BinaryOp.DIV: operator.truediv, ir.BinaryOp.FLOORDIV: operator.floordiv,
    ir.BinaryOp.MOD: operator.mod, ir.BinaryOp.POW: operator.pow, ir.BinaryOp.BITAND: operator.and_,
    ir.BinaryOp.BITOR: operator.or_, ir.BinaryOp.BITXOR: operator.xor,
    ir.BinaryOp.SHL: operator.lshift, ir.BinaryOp.SHR: operator.rshift,
}
_CMPOPS: dict[type, ir.CompareOp] = {
    ast.Eq: ir.CompareOp.EQ, ast.NotEq: ir.CompareOp.NE, ast.Lt: ir.CompareOp.LT,
    ast.LtE: ir.CompareOp.LE, ast.Gt: ir.CompareOp.GT, ast.GtE: ir.CompareOp.GE,
}
_PYCMP = {
    ir.CompareOp.EQ: operator.eq, ir.CompareOp.NE: operator.ne, ir.CompareOp.LT: operator.lt,
    ir.CompareOp.LE: operator.le, ir.CompareOp.GT: operator.gt, ir.CompareOp.GE: operator.ge,
}
_BITWISE = (ir.BinaryOp.BITAND, ir.BinaryOp.BITOR, ir.BinaryOp.BITXOR)
_PY_CASTS: dict[int, ScalarType] = {id(int): DEFAULT_INT, id(bool): bool_}   # float: default_fp()


def as_scalar_type(obj: object) -> ScalarType | None:
    """A cast target: kl.f32, Python int/float/bool, numpy scalar classes such as np.float32."""
    if isinstance(obj, ScalarType):
        return obj
    if obj is float:   # float(x) casts to the default float, as in Taichi
        return default_fp()
    if id(obj) in _PY_CASTS:
        return _PY_CASTS[id(obj)]
    if isinstance(obj, type) and issubclass(obj, np.generic):
        try:
            return from_numpy(np.dtype(obj))
        except TypeError:
            return None
    return None


def _obj_name(obj: object) -> str:
    return str(getattr(obj, "__name__", type(obj).__name__))


class ExprMixin(ASTTransformer):
    scope: Scope
    resolver: NameResolver
    ctx: CompileContext
    is_kernel: bool
    region: int | None
    region_lines: dict[int, int]
    loops: list[LoopCtx]

    # -- helpers ---------------------------------------------------------------------------
    def scalar(self, node: ast.expr) -> Scalar:
        return self.as_scalar(self.visit(node), node)

    def as_scalar(self, v: Value, node: ast.expr) -> Scalar:
        if isinstance(v, ir.Expr | Lit):
            return v
        if isinstance(v, ir.ArrayRef):
            raise type_error(f"array '{v.name}' cannot be used as a scalar value here", node)
        if isinstance(v, VoidCall):
            raise LangError(f"func '{v.name}' returns no value", node)
        if isinstance(v, MatrixVal):
            raise type_error(f"{describe(v)} cannot be used where a scalar is needed", node)
        raise LangError(f"{describe(v)} cannot be used as a value here", node)

    def expr(self, node: ast.expr) -> ir.Expr:
        return materialize(self.scalar(node), self.loc(node))

    # -- leaves ----------------------------------------------------------------------------
    def visit_Constant(self, node: ast.Constant) -> Value:
        if isinstance(node.value, bool | int | float):
            return Lit(node.value)
        if node.value is None:
            raise LangError("None is not supported in kernels")
        if isinstance(node.value, str):
            raise LangError("string constants are not supported in kernels")
        raise LangError(f"constant {node.value!r} is not supported in kernels")

    def visit_Name(self, node: ast.Name) -> Value:
        name = node.id
        for consts in reversed(self.scope.consts):
            if name in consts:
                return consts[name]
        if name in self.scope.locals:
            lv = self.scope.locals[name]
            if isinstance(lv, vec.MatrixLocal):
                return vec.local_value(self, name, lv, node)
            self.check_region(name, lv)
            return ir.Var(lv.type, self.loc(node), lv.ir_name)
        if name in self.scope.params:
            p = self.scope.params[name]
            if isinstance(p, MatrixVal):
                return p
            if isinstance(p, ir.ArrayRef):
                return ir.ArrayRef(p.name, p.type, self.loc(node))
            if isinstance(p, ir.Expr):
                return dataclasses.replace(p, loc=self.loc(node))
            return p       # a template parameter's compile-time value, or an inlined func's
                           # parameter bound to a non-scalar value
        return self.captured(self.resolver.resolve(name), name, node)

    def captured(self, v: Value, name: str, node: ast.AST) -> Value:
        """A captured Python object's value: a field becomes its hidden array parameter."""
        if isinstance(v, Static) and isinstance(v.obj, Field):
            return self.field_ref(v.obj, name, self.loc(node))
        return self._at(v, node)

    def field_ref(self, f: Field, capture_name: str, loc: ir.Loc) -> ir.ArrayRef:
        raise NotImplementedError  # kiln.lang.function.FunctionCompiler

    def field_of(self, arr: ir.ArrayRef) -> Field | None:
        raise NotImplementedError  # kiln.lang.function.FunctionCompiler

    def _at(self, v: Value, node: ast.AST) -> Value:
        """Give a captured numpy constant the location of its use."""
        return dataclasses.replace(v, loc=self.loc(node)) if isinstance(v, ir.Const) else v

    def check_region(self, name: str, lv: LocalVar) -> None:
        if lv.region is not None and lv.region != self.region:
            raise LangError(f"'{name}' is private to the parallel loop at line "
                            f"{self.region_lines[lv.region]} and cannot be used outside it")

    def visit_Tuple(self, node: ast.Tuple) -> Value:
        return TupleVal(tuple(self.visit(e) for e in node.elts))

    def visit_Attribute(self, node: ast.Attribute) -> Value:
        base = self.visit(node.value)
        attr = node.attr
        if isinstance(base, MatrixVal):
            return vec.attribute(self, base, node)
        if isinstance(base, ir.ArrayRef):
            if attr == "shape":
                return ShapeOf(base)
            if attr == "ndim":
                return Lit(base.type.outer_ndim)  # type: ignore[arg-type]
            if attr == "dtype":
                return Static(base.type.dtype)
            raise LangError(f"arrays have no attribute '{attr}' in kernels (use .shape, .ndim, .dtype)")
        if isinstance(base, Static):
            try:
                obj = getattr(base.obj, attr)
            except AttributeError:
                raise LangError(f"{_obj_name(base.obj)!r} has no attribute '{attr}'") from None
            return self.captured(from_python(obj), attr, node)
        raise LangError(f"{describe(base)} has no attribute '{attr}'")

    def visit_Subscript(self, node: ast.Subscript) -> Value:
        base = self.visit(node.value)
        loc = self.loc(node)
        if isinstance(base, ShapeOf):
            idx = self.visit(node.slice)
            ndim = base.array.type.outer_ndim or 0
            if not isinstance(idx, Lit) or isinstance(idx.value, bool) or not isinstance(idx.value, int):
                raise LangError("x.shape must be indexed with a constant integer")
            dim = idx.value + ndim if idx.value < 0 else idx.value
            if not 0 <= dim < ndim:
                raise LangError(f"shape index {idx.value} is out of range for array "
                                f"'{base.array.name}' with {ndim} dimension(s)")
            return ir.Shape(INDEX, loc, base.array, dim)
        if isinstance(base, MatrixVal):
            return vec.subscript(self, base, node)
        if isinstance(base, ir.ArrayRef) and base.type.element_shape:
            return vec.load_element(self, base, node)
        if isinstance(base, ir.ArrayRef):
            indices = self.array_indices(base, node.slice)
            return ir.Load(base.type.dtype, loc, base, indices)  # type: ignore[arg-type]
        if isinstance(base, TupleVal):
            idx = self.visit(node.slice)
            if isinstance(idx, Lit) and isinstance(idx.value, int) and -len(base.items) <= idx.value < len(
                    base.items):
                return base.items[idx.value]
            raise LangError("a tuple must be indexed with an in-range constant integer")
        if isinstance(base, Static) and isinstance(base.obj, tuple | list):  # a captured tuple: res[0]
            idx = self.visit(node.slice)
            if isinstance(idx, Lit) and isinstance(idx.value, int) and -len(base.obj) <= idx.value < len(base.obj):
                return self._at(from_python(base.obj[idx.value]), node)
            raise LangError("a captured tuple or list must be indexed with an in-range constant integer")
        raise type_error(f"{describe(base)} cannot be indexed")

    def array_indices(self, arr: ir.ArrayRef, sl: ast.expr) -> tuple[ir.Expr, ...]:
        if isinstance(sl, ast.Slice) or (isinstance(sl, ast.Tuple) and any(
                isinstance(e, ast.Slice) for e in sl.elts)):
            raise LangError("slicing is not supported in kernels; index one element at a time")
        elts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
        ndim = arr.type.outer_ndim
        f = self.field_of(arr)
        if f is not None and not f.shape:
            if not (isinstance(sl, ast.Constant) and sl.value is None):
                raise type_error(f"field '{f.name}' is 0-d: index it as {f.name}[None]")
            elts = [ast.copy_location(ast.Constant(0), sl)]   # x[None] of a 0-d field: its one element
        values: list[tuple[Value, ast.expr]] = []
        for e in elts:
            v = self.visit(e)
            if isinstance(v, TupleVal):  # an index tuple (kl.grouped): one index per item
                values += [(item, e) for item in v.items]
            else:
                values += [(x, e) for x in vec.expand_index(v, e)]  # x[I]: I an ivec
        if len(values) != ndim:
            what = f"field '{f.name}'" if f is not None else f"array '{arr.name}'"
            hint = " (a 0-d field is indexed x[None])" if f is not None and not f.shape else ""
            raise type_error(f"{what} has {ndim} dimension(s) but is indexed with {len(values)} index(es){hint}")
        out = []
        for v, e in values:
            if isinstance(v, TupleVal | ShapeOf | Static | ir.ArrayRef | VoidCall | MatrixVal):
                raise type_error(f"array index must be an integer, got {describe(v)}", e)
            out.append(index_expr(v, self.loc(e), "array index"))
        return tuple(out)

    # -- operators -------------------------------------------------------------------------
    def visit_BinOp(self, node: ast.BinOp) -> Value:
        op = _BINOPS.get(type(node.op))  # None: '@'
        left, right = self.visit(node.left), self.visit(node.right)
        if op is None or isinstance(left, MatrixVal) or isinstance(right, MatrixVal):
            return mx.binop(self, op, left, right, self.loc(node))
        return self.binary(op, self.as_scalar(left, node.left), self.as_scalar(right, node.right), self.loc(node))

    def binary(self, op: ir.BinaryOp, a: Scalar, b: Scalar, loc: ir.Loc) -> Scalar:
        if isinstance(a, Lit) and isinstance(b, Lit):
            try:
                r = _PYOPS[op](a.value, b.value)
                if isinstance(r, bool | int | float):
                    return Lit(r)
            except (ArithmeticError, TypeError, ValueError):
                pass
        if op in (ir.BinaryOp.SHL, ir.BinaryOp.SHR):
            lhs = materialize(a, loc)
            rt = scalar_type_of(b)
            if not lhs.type.is_int or not rt.is_int:
                raise type_error(f"operator '{op.value}' needs integer operands, got "
                                 f"{lhs.type.name} and {rt.name}")
            rhs = lit_const(b.value, lhs.type, loc) if isinstance(b, Lit) else b
            return ir.Binary(lhs.type, loc, op, lhs, rhs)
        t = common_type([a, b])
        if op in _BITWISE:
            if t.is_float:
                raise type_error(f"bitwise operator '{op.value}' needs int or bool operands, got "
                                 f"{scalar_type_of(a).name} and {scalar_type_of(b).name}")
        else:
            t = arith_type(t)
            if op == ir.BinaryOp.DIV:
                t = arith_type(as_float(t))
            elif t.is_bool:
                t = DEFAULT_INT
        return ir.Binary(t, loc, op, cast_to(a, t, loc), cast_to(b, t, loc))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Value:
        operand = self.visit(node.operand)
        if isinstance(operand, MatrixVal):
            return mx.unary(self, node, operand)
        v = self.as_scalar(operand, node.operand)
        loc = self.loc(node)
        if isinstance(node.op, ast.Not):
            if isinstance(v, Lit):
                return Lit(not v.value)
            return ir.Unary(bool_, loc, ir.UnaryOp.NOT, truthy(v, loc))
        if isinstance(v, Lit):
            if isinstance(node.op, ast.USub):
                return Lit(-v.value)
            if isinstance(node.op, ast.UAdd):
                return Lit(+v.value)
            if isinstance(v.value, float):
                raise type_error("operator '~' needs an int or bool operand, got a float")
            return Lit(~int(v.value))
        if isinstance(node.op, ast.Invert):
            if v.type.is_float:
                raise type_error(f"operator '~' needs an int or bool operand, got {v.type.name}")
            return ir.Unary(v.type, loc, ir.UnaryOp.INVERT, v)
        t = arith_type(v.type)
        if t.is_bool:
            t = DEFAULT_INT
        v = cast_to(v, t, loc)
        if isinstance(node.op, ast.UAdd):
            return v
        return ir.Unary(t, loc, ir.UnaryOp.NEG, v)

    def visit_BoolOp(self, node: ast.BoolOp) -> Value:
        op = ir.LogicalOp.AND if isinstance(node.op, ast.And) else ir.LogicalOp.OR
        raw = [self.scalar(v) for v in node.values]
        if all(isinstance(v, Lit) for v in raw):
            bools = [bool(v.value) for v in raw]  # type: ignore[union-attr]
            return Lit(all(bools) if op == ir.LogicalOp.AND else any(bools))
        vals = [truthy(v, self.loc(n)) for v, n in zip(raw, node.values)]
        acc = vals[0]
        for v in vals[1:]:
            acc = ir.Logical(bool_, self.loc(node), op, acc, v)
        return acc

    def compare(self, op: ir.CompareOp, a: Scalar, b: Scalar, loc: ir.Loc) -> Scalar:
        if isinstance(a, Lit) and isinstance(b, Lit):
            return Lit(_PYCMP[op](a.value, b.value))
        t = arith_type(common_type([a, b]))
        return ir.Compare(bool_, loc, op, cast_to(a, t, loc), cast_to(b, t, loc))

    def visit_Compare(self, node: ast.Compare) -> Value:
        loc = self.loc(node)
        first = self.visit(node.left)
        if isinstance(first, MatrixVal) and len(node.ops) == 1 and type(node.ops[0]) in _CMPOPS:
            return mx.compare(self, _CMPOPS[type(node.ops[0])], first, self.visit(node.comparators[0]), loc)
        left = self.as_scalar(first, node.left)
        result: Scalar | None = None
        for op_node, right_node in zip(node.ops, node.comparators):
            op = _CMPOPS.get(type(op_node))
            if op is None:
                raise LangError(f"comparison '{type(op_node).__name__}' (is/in) is not supported in kernels")
            right = self.scalar(right_node)
            c = self.compare(op, left, right, loc)
            if result is None:
                result = c
            elif isinstance(result, Lit) and isinstance(c, Lit):
                result = Lit(bool(result.value) and bool(c.value))
            else:
                result = ir.Logical(bool_, loc, ir.LogicalOp.AND, truthy(result, loc), truthy(c, loc))
            left = right
        assert result is not None
        return result

    def select(self, cond: Scalar, a: Scalar, b: Scalar, loc: ir.Loc) -> ir.Expr:
        c = truthy(cond, loc)
        t = arith_type(common_type([a, b]))
        return ir.Select(t, loc, c, cast_to(a, t, loc), cast_to(b, t, loc))

    def visit_IfExp(self, node: ast.IfExp) -> Value:
        cond = self.scalar(node.test)
        a, b = self.visit(node.body), self.visit(node.orelse)
        if isinstance(a, MatrixVal) or isinstance(b, MatrixVal):
            return vec.select(self, cond, a, b, self.loc(node))
        if isinstance(a, TupleVal) or isinstance(b, TupleVal):   # item-wise, as `(x, y) if c else (u, v)`
            if not (isinstance(a, TupleVal) and isinstance(b, TupleVal) and len(a.items) == len(b.items)):
                raise type_error("both sides of a conditional expression must be tuples of the same length")
            if isinstance(cond, Lit):
                return a if cond.value else b
            return TupleVal(tuple(self.select(cond, self.as_scalar(x, node.body), self.as_scalar(y, node.orelse),
                                              self.loc(node)) for x, y in zip(a.items, b.items)))
        return self.select(cond, self.as_scalar(a, node.body), self.as_scalar(b, node.orelse), self.loc(node))

    # -- calls -----------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> Value:
        fv = self.visit(node.func)
        if isinstance(fv, Static) and isinstance(fv.obj, BuiltinStub) and fv.obj.kind == "random":
            return random_call(self, node, as_scalar_type)  # type: ignore[arg-type]   # takes dtype=...
        vector_result = vec.call(self, fv, node)  # vector types, kl.Vector, kl.math, v.norm()...
        if vector_result is not None:
            return vector_result
        if node.keywords:
            raise LangError("keyword arguments are not supported in calls inside kernels")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise LangError("*args in calls is not supported in kernels")
        if not isinstance(fv, Static):
            raise type_error(f"{describe(fv)} is not callable")
        obj = fv.obj
        if isinstance(obj, BuiltinStub):
            return self.stub_call(obj, node)
        if id(obj) in PY_ALIASES:
            return self.builtin_call(PY_ALIASES[id(obj)], node)
        if id(obj) in PY_BUILTINS:
            name = PY_BUILTINS[id(obj)]
            if name in ("min", "max") and len(node.args) > 2:
                acc = self.builtin_call_values(name, [self.scalar(node.args[0]), self.scalar(node.args[1])], node)
                for a in node.args[2:]:
                    acc = self.builtin_call_values(name, [acc, self.scalar(a)], node)
                return acc
            return self.builtin_call(name, node)
        if obj is py_builtins.pow:  # Python's pow(a, b) is a ** b
            self._arity("pow", 2, node)
            return self.binary(ir.BinaryOp.POW, self.scalar(node.args[0]), self.scalar(node.args[1]),
                               self.loc(node))
        if obj is range:
            raise LangError("range() can only be used as the iterable of a for loop")
        if obj is py_builtins.len:
            return self.static_len(node)
        target = as_scalar_type(obj)
        if target is not None:
            if len(node.args) != 1:
                raise LangError(f"{_obj_name(obj)}() takes exactly 1 argument in kernels")
            return self.cast(self.scalar(node.args[0]), target, self.loc(node))
        if isinstance(obj, Func):
            return self.func_call(obj, node)
        if isinstance(obj, Compilable):  # not a Func: a kernel
            raise LangError(f"cannot call kernel '{obj.name}' from a kernel or func; make it a @kl.func")
        raise LangError(f"cannot call '{_obj_name(obj)}' inside a kernel")

    def static_len(self, node: ast.Call) -> Lit:
        """`len(x)` of something whose length is known at compile time: a captured tuple or list
        (`range(len(spring_offsets))`), a tuple value, or a vector/matrix (its rows, as Taichi)."""
        self._arity("len", 1, node)
        v = self.visit(node.args[0])
        if isinstance(v, Static) and isinstance(v.obj, tuple | list | range):
            return Lit(len(v.obj))
        if isinstance(v, TupleVal):
            return Lit(len(v.items))
        if isinstance(v, MatrixVal):
            return Lit(v.shape[0])
        raise type_error(f"len() in a kernel needs a value of compile-time length (a captured tuple or list, "
                         f"a tuple, a vector), got {describe(v)}", node.args[0])

    def template_arg(self, v: Value, where: str) -> TemplateArg | NdArrayType:
        """The specialisation key of a template argument: a field, a constant or an object; an
        ndarray parameter passed on stays an array (array polymorphism)."""
        if isinstance(v, ir.ArrayRef):
            f = self.field_of(v)
            return TemplateArg(f) if f is not None else v.type
        if isinstance(v, Lit):
            return TemplateArg(v.value)
        if isinstance(v, Static):
            return TemplateArg(v.obj)
        if isinstance(v, ir.Const):
            return TemplateArg(v.value)
        raise LangError(f"{where} is a kl.template(): it needs a compile-time value (a field, a constant), "
                        f"got {describe(v)} computed at run time")

    def cast(self, v: Scalar, t: ScalarType, loc: ir.Loc) -> Value:
        if isinstance(v, Lit) and t.is_int and isinstance(v.value, float):
            return ir.Cast(t, loc, lit_const(v.value, literal_type(v.value), loc))
        if isinstance(v, ir.Expr) and v.type == t:
            return v
        if isinstance(v, Lit):
            return lit_const(v.value, t, loc)
        return ir.Cast(t, loc, v)

    def _arity(self, name: str, n: int, node: ast.Call) -> None:
        if len(node.args) != n:
            raise type_error(f"{name}() takes {n} argument{'s' if n != 1 else ''} but "
                             f"{len(node.args)} were given")

    def stub_call(self, stub: BuiltinStub, node: ast.Call) -> Value:
        loc = self.loc(node)
        if stub.kind == "math":
            return self.builtin_call(stub.name, node)
        if stub.arity is not None:
            self._arity(stub.name, stub.arity, node)    # the registry's parameter count
        if stub.kind == "select":
            c, a, b = (self.visit(x) for x in node.args)
            if any(isinstance(x, MatrixVal) for x in (c, a, b)):
                return vec.select(self, c, a, b, loc)
            return self.select(*(self.as_scalar(x, n) for x, n in zip((c, a, b), node.args)), loc)
        if stub.kind == "cast":
            tv = self.visit(node.args[1])
            t = as_scalar_type(tv.obj) if isinstance(tv, Static) else None
            if t is None:
                raise type_error("kl.cast() needs a kiln scalar type such as kl.f32 as its second argument")
            value = self.visit(node.args[0])
            if isinstance(value, MatrixVal):
                return vec.cast(self, value, tv, loc)
            return self.cast(self.as_scalar(value, node.args[0]), t, loc)
        if stub.kind == "atomic":
            op = ir.AtomicOp(stub.name.removeprefix("atomic_"))
            sub = node.args[0]
            arr = self.visit(sub.value) if isinstance(sub, ast.Subscript) else None
            if not isinstance(arr, ir.ArrayRef):
                raise LangError(f"the first argument of {stub.name}() must be an array element such as x[i]",
                                node.args[0])
            indices = self.array_indices(arr, sub.slice)  # type: ignore[union-attr]
            return self.atomic(op, arr, indices, self.scalar(node.args[1]), loc, stub.name)
        if stub.kind == "static":
            return self.static_value(node.args[0])
        raise LangError(f"kl.{stub.name}() can only be used as the iterable of a for loop")

    def atomic(self, op: ir.AtomicOp, arr: ir.ArrayRef, indices: tuple[ir.Expr, ...], value: Scalar,
               loc: ir.Loc, what: str) -> ir.AtomicRMW:
        dtype = arr.type.dtype
        assert dtype is not None
        if op in (ir.AtomicOp.AND, ir.AtomicOp.OR, ir.AtomicOp.XOR) and dtype.is_float:
            raise type_error(f"{what} needs an integer or bool array, '{arr.name}' has dtype {dtype.name}")
        return ir.AtomicRMW(dtype, loc, op, arr, indices, cast_to(value, dtype, loc))

    def static_value(self, node: ast.expr) -> Value:
        """`kl.static(x)`: x must be known at compile time (range(...) of constants allowed)."""
        if isinstance(node, ast.Call):
            fv = self.visit(node.func)
            if isinstance(fv, Static) and fv.obj is range:
                args = [self.visit(a) for a in node.args]
                if not all(isinstance(a, Lit) and isinstance(a.value, int) for a in args):
                    raise LangError("kl.static(range(...)) needs compile-time integer bounds")
                return Static(range(*[a.value for a in args]))  # type: ignore[union-attr]
        v = self.visit(node)
        if isinstance(v, ir.Const):
            return Lit(v.value)
        if isinstance(v, ir.Expr | ir.ArrayRef | ShapeOf):
            raise LangError("kl.static() needs a value known at compile time (constants, globals, "
                            "static loop variables)")
        return v

    def builtin_call(self, name: str, node: ast.Call) -> Value:
        b = BUILTINS[name]
        self._arity(name, b.arity, node)
        args = [self.visit(a) for a in node.args]
        if any(isinstance(a, MatrixVal) for a in args):
            return vec.builtin(self, name, args, node)
        return self.builtin_call_values(name, [self.as_scalar(a, n) for a, n in zip(args, node.args)], node)

    def builtin_call_values(self, name: str, args: list[Scalar], node: ast.AST) -> ir.Expr:
        b = BUILTINS[name]
        loc = self.loc(node)
        typed = [a.type for a in args if not isinstance(a, Lit)]
        ctx_t = common_type([a for a in args if not isinstance(a, Lit)]) if typed else None
        types: list[ScalarType] = []
        for a in args:
            if isinstance(a, Lit):
                types.append(common_type([ir.Const(ctx_t, loc, 0), a]) if ctx_t else literal_type(a.value))
            else:
                types.append(a.type)
        res = b.type_rule(tuple(types))
        res = arith_type(res)
        if b.arg_cast == "result":
            cargs = [cast_to(a, res, loc) for a in args]
        elif b.arg_cast == "float":
            cargs = [cast_to(a, arith_type(as_float(t)), loc) for a, t in zip(args, types)]
        else:
            cargs = [cast_to(a, t, loc) for a, t in zip(args, types)]
        return ir.BuiltinCall(res, loc, name, tuple(cargs))

    def func_call(self, func: Any, node: ast.Call) -> Value:
        if func.inlined:
            return inline_call(self, func, node)  # type: ignore[arg-type]
        try:
            return self._compiled_func_call(func, node)
        except InlineRequired:      # its body draws random numbers: expand it here instead
            func.require_inline()
            return inline_call(self, func, node)  # type: ignore[arg-type]

    def _compiled_func_call(self, func: Any, node: ast.Call) -> ir.Expr | VoidCall:
        loc = self.loc(node)
        if len(node.args) != len(func.param_names):
            raise type_error(f"func '{func.name}' takes {len(func.param_names)} argument(s) but "
                             f"{len(node.args)} were given")
        args: list[ir.Expr | ir.ArrayRef] = []
        types: list[ScalarType | NdArrayType] = []
        for pname, ann, a in zip(func.param_names, func.annotations, node.args):
            v = self.visit(a)
            if isinstance(ann, MatrixType):  # one IR argument per element, as kernels' vector params
                args += vec.func_argument(self, func.name, pname, ann, v, a)
                types.append(ann)  # type: ignore[arg-type]
                continue
            if isinstance(ann, Template):
                t = self.template_arg(v, f"argument '{pname}' of func '{func.name}'")
                if isinstance(t, NdArrayType):
                    args.append(v)  # type: ignore[arg-type]
                types.append(t)
                continue
            if isinstance(ann, NdArrayType):
                if not isinstance(v, ir.ArrayRef):
                    raise type_error(f"argument '{pname}' of func '{func.name}' must be an array, got "
                                     f"{describe(v)}", a)
                at = v.type
                if not ann.accepts(at):
                    raise type_error(f"argument '{pname}' of func '{func.name}' expects {ann!r}, got {at!r}", a)
                args.append(v)
                types.append(at)
                continue
            if not isinstance(v, ir.Expr | Lit):
                raise type_error(f"argument '{pname}' of func '{func.name}' expects {ann.name}, got "
                                 f"{describe(v)}", a)
            vt = scalar_type_of(v)
            if vt.is_float and not ann.is_float:
                raise type_error(f"argument '{pname}' of func '{func.name}' expects {ann.name}, got "
                                 f"{vt.name} (use an explicit cast)", a)
            args.append(cast_to(v, ann, self.loc(a)))
            types.append(ann)
        fir = self.ctx.specialize_func(func, tuple(types))
        for f in self.ctx.func_fields[fir.name].values():  # the callee's fields, passed on
            args.append(self.field_ref(f, f.name or "", loc))
        call = ir.Call(fir.ret or bool_, loc, fir.name, tuple(args))
        return call if fir.ret is not None else VoidCall(call, func.name)
