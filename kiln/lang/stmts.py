"""Statement lowering: assignments, control flow, the kernel's parallel loop, returns."""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from kiln.ir import nodes as ir
from kiln.lang import matrix_assign as vec_assign
from kiln.lang.builtins_py import BuiltinStub
from kiln.lang.exprs import _BINOPS, ExprMixin, as_scalar_type
from kiln.lang.inline import InlineFrame, dynamic_block, inline_return
from kiln.lang.print_stmt import is_print_call, lower_print
from kiln.lang.random import RngUse, start_parallel_loop
from kiln.lang.transformer import LocalVar, LoopCtx
from kiln.lang.values import (
    LangError,
    Lit,
    MatrixVal,
    Scalar,
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
    truthy,
    type_error,
)
from kiln.types import DEFAULT_INT, INDEX, MatrixType, ScalarType, bool_

_AUG_ATOMIC: dict[type, ir.AtomicOp] = {
    ast.Add: ir.AtomicOp.ADD, ast.Sub: ir.AtomicOp.SUB, ast.BitAnd: ir.AtomicOp.AND,
    ast.BitOr: ir.AtomicOp.OR, ast.BitXor: ir.AtomicOp.XOR,
}

Stmts = list[ir.Stmt]


class StmtMixin(ExprMixin):
    nesting: int
    func_name: str
    ret: ScalarType | None
    local_decls: dict[str, ScalarType]
    #: statements of inlined funcs called by the statement being lowered (emitted before it)
    pending: Stmts
    #: the expansion being lowered when inside an inlined func (kiln.lang.inline)
    inline: InlineFrame | None
    #: where the kernel draws random numbers (kiln.lang.random)
    rng: RngUse
    #: compiling a func as its own IR function (not a kernel, not an inline expansion)
    compiling_func: bool

    def block(self, body: list[ast.stmt]) -> tuple[ir.Stmt, ...]:
        self.nesting += 1
        try:
            return tuple(self.stmts(body))
        finally:
            self.nesting -= 1

    def stmts(self, body: list[ast.stmt]) -> Stmts:
        outer = vec_assign.take_pending(self)  # an enclosing `if` test's helpers stay outside this body
        out: Stmts = []
        for s in body:
            if self.inline is not None and self.inline.returned:
                break       # an inlined func returned: what follows is not compiled (Taichi's rule)
            lowered, pending = self.capture(lambda s=s: self.visit(s))  # type: ignore[misc]
            out.extend(vec_assign.take_pending(self))  # locals that kl.svd() & co. computed first
            out.extend(pending)     # statements of funcs inlined in this one, first
            out.extend(lowered)
        vec_assign.restore_pending(self, outer)
        return out

    def capture(self, fn: Callable[[], Any]) -> tuple[Any, Stmts]:
        """Run `fn` with a fresh list of pending statements; return its result and them."""
        saved, self.pending = self.pending, []
        try:
            return fn(), self.pending
        finally:
            self.pending = saved

    # -- locals ----------------------------------------------------------------------------
    def declare(self, name: str, t: ScalarType, line: int, ir_name: str | None = None) -> LocalVar:
        ir_name = ir_name or (name if self.inline is None else self.inline.prefix + name)
        prev = self.local_decls.get(ir_name)
        if prev is not None and prev != t:
            raise type_error(f"'{name}' already has type {prev.name} and cannot be redeclared as {t.name}")
        self.local_decls[ir_name] = t
        lv = LocalVar(ir_name, t, self.region, line)
        self.scope.locals[name] = lv
        return lv

    def writable_local(self, name: str) -> LocalVar | None:
        """The existing local `name` if this position may assign it, None if `name` is new."""
        for consts in self.scope.consts:
            if name in consts:
                raise LangError(f"cannot assign to '{name}': it is a compile-time (kl.static) loop variable")
        if name in self.scope.params and name not in self.scope.locals:
            p = self.scope.params[name]
            if isinstance(p, ir.ArrayRef):
                raise LangError(f"cannot assign to array parameter '{name}'; assign its elements instead")
        lv = self.scope.locals.get(name)
        if lv is None:
            return None
        if lv.region != self.region:
            if lv.region is None:
                raise LangError(f"cannot assign to '{name}' inside the parallel loop: it was defined "
                                f"outside it; use an array element")
            if self.region is None:
                self.check_region(name, lv)
            # a private local of an earlier parallel loop: a fresh private variable of this one
            lv = LocalVar(lv.ir_name, lv.type, self.region, lv.line)
            self.scope.locals[name] = lv
        return lv

    def assign_name(self, name: str, v: Value, loc: ir.Loc, ann: ScalarType | MatrixType | None = None) -> Stmts:
        current = self.scope.locals.get(name)
        if isinstance(v, MatrixVal) or isinstance(ann, MatrixType) or isinstance(current, vec_assign.MatrixLocal):
            if isinstance(current, vec_assign.MatrixLocal) and not isinstance(v, MatrixVal) and ann is None:
                raise vec_assign.scalar_into_vector_local(name, current)
            return vec_assign.assign_local(self, name, v, loc, ann)
        if not isinstance(v, ir.Expr | Lit):
            if isinstance(v, ir.ArrayRef):
                raise LangError(f"cannot assign array '{v.name}' to a variable: arrays are only "
                                f"parameters; copy elements in a loop instead")
            raise LangError(f"cannot assign {describe(v)} to a variable in a kernel")
        lv = self.writable_local(name)
        if lv is None:
            t = ann or arith_type(common_type([v]))
            lv = self.declare(name, t, loc.line)
        elif ann is not None and ann != lv.type:
            raise type_error(f"'{name}' already has type {lv.type.name}")
        return [ir.Assign(loc, lv.ir_name, cast_to(v, lv.type, loc))]

    def array_target(self, target: ast.Subscript) -> tuple[ir.ArrayRef, tuple[ir.Expr, ...]]:
        base = self.visit(target.value)
        if not isinstance(base, ir.ArrayRef):
            raise LangError(f"cannot assign to an element of {describe(base)}", target)
        return base, self.array_indices(base, target.slice)

    def assign_target(self, target: ast.expr, v: Value, loc: ir.Loc) -> Stmts:
        if isinstance(target, ast.Name):
            return self.assign_name(target.id, v, loc)
        if isinstance(target, ast.Subscript | ast.Attribute):
            stored = vec_assign.store(self, target, v, loc)  # vector elements and components
            if stored is not None:
                return stored
        if isinstance(target, ast.Subscript):
            arr, idx = self.array_target(target)
            if not isinstance(v, ir.Expr | Lit):
                raise type_error(f"cannot store {describe(v)} into an array element")
            return [ir.Store(loc, arr, idx, cast_to(v, arr.type.dtype, loc))]  # type: ignore[arg-type]
        raise LangError("only variables and array elements can be assigned to", target)

    # -- assignments -----------------------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> Stmts:
        if len(node.targets) != 1:
            raise LangError("chained assignment (a = b = ...) is not supported in kernels")
        target, loc = node.targets[0], self.loc(node)
        if isinstance(target, ast.Tuple):
            if isinstance(node.value, ast.Tuple):
                raw = [self.visit(e) for e in node.value.elts]
            else:
                tv = self.visit(node.value)
                if not (isinstance(tv, MatrixVal) and len(tv.shape) == 1):
                    return vec_assign.unpack(self, target, tv, loc)  # U, S, V = kl.svd(F); n, z = f(z)
                raw = list(tv.items)            # `i, j = I`: a vector's components
            if len(raw) != len(target.elts):
                raise LangError("tuple assignment needs a tuple of the same length on the right")
            vals: list[Value] = []
            out: Stmts = []
            prefix = "" if self.inline is None else self.inline.prefix
            for i, v in enumerate(raw):  # evaluate every right side first
                if isinstance(v, ir.Expr) and not isinstance(v, ir.Const):
                    tmp = f"{prefix}tuple.{node.lineno}.{node.col_offset}.{i}"
                    t = v.type
                    self.local_decls[tmp] = t
                    out.append(ir.Assign(loc, tmp, v))
                    v = ir.Var(t, loc, tmp)
                vals.append(v)
            for t_node, v in zip(target.elts, vals):
                out.extend(self.assign_target(t_node, v, loc))
            return out
        if isinstance(node.value, ast.List) and isinstance(target, ast.Subscript | ast.Attribute):
            stored = vec_assign.store_list(self, target, node.value, loc)  # grid_v[i, j] = [0.0, 0.0]
            if stored is not None:
                return stored
        return self.assign_target(target, self.visit(node.value), loc)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> Stmts:
        if not isinstance(node.target, ast.Name):
            raise LangError("annotated assignment needs a simple variable name")
        if node.value is None:
            raise LangError("a variable declaration needs a value: x: kl.f32 = 0.0")
        tv = self.visit(node.annotation)
        if isinstance(tv, Static) and isinstance(tv.obj, MatrixType):
            return self.assign_name(node.target.id, self.visit(node.value), self.loc(node), ann=tv.obj)
        t = as_scalar_type(tv.obj) if isinstance(tv, Static) else None
        if t is None:
            raise type_error("local variable annotations must be kiln scalar types such as kl.f32",
                             node.annotation)
        return self.assign_name(node.target.id, self.visit(node.value), self.loc(node), ann=t)

    def visit_AugAssign(self, node: ast.AugAssign) -> Stmts:
        loc = self.loc(node)
        op = _BINOPS.get(type(node.op))  # None: '@='
        target = node.target
        rhs = self.visit(node.value)
        if isinstance(target, ast.Name | ast.Subscript | ast.Attribute):
            stored = vec_assign.aug_store(self, target, op, rhs, loc)
            if stored is not None:
                return stored
        if op is None:
            raise LangError("the '@=' operator needs a matrix or vector target")
        if isinstance(target, ast.Name):
            cur = self.scalar(target)
            if isinstance(rhs, MatrixVal):
                raise type_error(f"'{target.id}' is a scalar and cannot be updated with {describe(rhs)}")
            new = self.binary(op, cur, self.as_scalar(rhs, node.value), loc)
            return self.assign_name(target.id, new, loc)
        if isinstance(target, ast.Subscript):
            arr, idx = self.array_target(target)
            dtype = arr.type.dtype
            assert dtype is not None
            if isinstance(rhs, MatrixVal):
                raise type_error(f"cannot update a scalar array element with {describe(rhs)}")
            value = self.as_scalar(rhs, node.value)
            aop = _AUG_ATOMIC.get(type(node.op))
            if aop is not None:
                if aop in (ir.AtomicOp.AND, ir.AtomicOp.OR, ir.AtomicOp.XOR) and dtype.is_float:
                    raise type_error(f"bitwise operator '{op.value}=' needs an int or bool array, "
                                     f"'{arr.name}' has dtype {dtype.name}")
                return [ir.AugStore(loc, aop, arr, idx, cast_to(value, dtype, loc))]
            cur_v = ir.Load(dtype, loc, arr, idx)
            new = self.binary(op, cur_v, value, loc)
            return [ir.Store(loc, arr, idx, cast_to(new, dtype, loc))]
        raise LangError("only variables and array elements can be assigned to", target)

    # -- simple statements -----------------------------------------------------------------
    def visit_Expr(self, node: ast.Expr) -> Stmts:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return []  # docstring / string used as a comment
        if is_print_call(node.value):
            assert isinstance(node.value, ast.Call)
            return [lower_print(node.value, self.visit, self.loc(node))]
        v = self.visit(node.value)
        if isinstance(v, VoidCall):
            return [] if v.call is None else [ir.ExprStmt(self.loc(node), v.call)]
        if isinstance(v, ir.Expr) and not isinstance(v, ir.Const):
            return [ir.ExprStmt(self.loc(node), v)]
        return []

    def visit_Pass(self, node: ast.Pass) -> Stmts:
        return []

    def _loop_jump(self, what: str) -> None:
        if not self.loops:
            raise LangError(f"'{what}' outside loop")
        kind = self.loops[-1].kind
        if kind == "parallel":
            raise LangError(f"'{what}' is not allowed in the body of the parallel loop (only in serial "
                            f"loops nested inside it)")
        if kind == "static":
            raise LangError(f"'{what}' is not supported inside a kl.static loop")
        if kind == "ndrange" and what == "break":
            raise LangError("'break' is not supported in a serial kl.ndrange loop")

    def visit_Break(self, node: ast.Break) -> Stmts:
        self._loop_jump("break")
        return [ir.Break(self.loc(node))]

    def visit_Continue(self, node: ast.Continue) -> Stmts:
        self._loop_jump("continue")
        return [ir.Continue(self.loc(node))]

    def visit_Return(self, node: ast.Return) -> Stmts:
        if self.inline is not None:
            return inline_return(self, node)
        loc = self.loc(node)
        if self.is_kernel:
            if self.region is not None:
                raise LangError("'return' is not allowed inside the parallel loop")
            if node.value is not None:
                return self.kernel_return(node.value, loc)
            return [ir.Return(loc, None)]
        if node.value is None:
            if self.ret is not None:
                raise type_error(f"func '{self.func_name}' must return a value of type {self.ret.name}")
            return [ir.Return(loc, None)]
        if self.ret is None:
            raise type_error(f"func '{self.func_name}' returns a value but has no return type annotation")
        return [ir.Return(loc, cast_to(self.scalar(node.value), self.ret, loc))]

    # -- control flow ----------------------------------------------------------------------
    def visit_If(self, node: ast.If) -> Stmts:
        cond = self.visit(node.test)
        if isinstance(cond, Lit | Static):  # compile-time condition (kl.static or constant)
            taken = bool(cond.value if isinstance(cond, Lit) else cond.obj)
            return list(self.block(node.body if taken else node.orelse))
        if not isinstance(cond, ir.Expr):
            raise type_error(f"an if condition must be a scalar, got {describe(cond)}", node.test)
        with dynamic_block(self):
            return [ir.If(self.loc(node), truthy(cond, self.loc(node.test)), self.block(node.body),
                          self.block(node.orelse))]

    def visit_While(self, node: ast.While) -> Stmts:
        if node.orelse:
            raise LangError("while ... else is not supported in kernels")
        cond, pre = self.capture(lambda: truthy(self.scalar(node.test), self.loc(node.test)))
        vec_assign.no_pending(self, "a while condition")
        self.loops.append(LoopCtx("serial", node.lineno))
        try:
            with dynamic_block(self):
                body = self.block(node.body)
        finally:
            self.loops.pop()
        if pre:     # the condition calls an inlined func: run its statements before every test
            loc = self.loc(node.test)
            test = ir.If(loc, ir.Unary(bool_, loc, ir.UnaryOp.NOT, cond), (ir.Break(loc),), ())
            return [ir.While(self.loc(node), ir.Const(bool_, loc, True), (*pre, test, *body))]
        return [ir.While(self.loc(node), cond, body)]

    def visit_For(self, node: ast.For) -> Stmts:
        if node.orelse:
            raise LangError("for ... else is not supported in kernels")
        it = node.iter
        fv = self.visit(it.func) if isinstance(it, ast.Call) else None
        obj = fv.obj if isinstance(fv, Static) else None
        if obj is None or not (obj is range or isinstance(obj, BuiltinStub) and
                               obj.kind in ("ndrange", "static")):
            raise LangError("a for loop must iterate over range(...), kl.ndrange(...) or kl.static(...)", it)
        assert isinstance(it, ast.Call)
        if it.keywords:
            raise LangError("keyword arguments are not supported in calls inside kernels", it)
        if isinstance(obj, BuiltinStub) and obj.kind == "static":
            assert obj.arity is not None     # the registry declares static(x)
            self._arity(obj.name, obj.arity, it)
            return self.static_for(node, self.static_value(it.args[0]))
        if obj is range:
            if not 1 <= len(it.args) <= 3:
                raise type_error(f"range() takes 1 to 3 arguments but {len(it.args)} were given", it)
            bounds = [self.scalar(a) for a in it.args]
            if len(bounds) == 1:
                bounds = [Lit(0), bounds[0]]
            if len(bounds) == 2:
                bounds.append(Lit(1))
            dims = [(bounds, it)]
            names = self._targets(node.target, 1)
        else:
            if not it.args:
                raise type_error("kl.ndrange() needs at least one dimension", it)
            dims = [(self._ndrange_dim(a), a) for a in it.args]
            names = self._targets(node.target, len(dims))
        if self.is_kernel and self.nesting == 0:
            return [self.parallel_for(node, names, dims)]
        return self.serial_for(node, names, dims, ndrange=obj is not range)

    def _targets(self, target: ast.expr, n: int) -> list[str]:
        elts = target.elts if isinstance(target, ast.Tuple) else [target]
        if not all(isinstance(e, ast.Name) for e in elts):
            raise LangError("loop variables must be simple names", target)
        if len(elts) != n:
            if n > 1 and len(elts) == 1:
                raise LangError(f"iterate a {n}-dimensional kl.ndrange with one variable per "
                                f"dimension: for i, j in kl.ndrange(...)", target)
            raise LangError(f"the loop has {n} dimension(s) but {len(elts)} loop variable(s)", target)
        return [e.id for e in elts]  # type: ignore[attr-defined]

    def _ndrange_dim(self, a: ast.expr) -> list[Scalar]:
        v = self.visit(a)
        if isinstance(v, TupleVal):
            items = list(v.items)
            if len(items) not in (2, 3) or not all(isinstance(x, ir.Expr | Lit) for x in items):
                raise LangError("a kl.ndrange dimension is n or a (start, stop) pair", a)
            if len(items) == 2:
                items.append(Lit(1))
            return items  # type: ignore[return-value]
        if isinstance(v, ir.Expr | Lit):
            return [Lit(0), v, Lit(1)]
        raise LangError("a kl.ndrange dimension is n or a (start, stop) pair", a)

    def parallel_for(self, node: ast.For, names: list[str], dims: list[tuple[list[Scalar], ast.AST]]) -> ir.Stmt:
        k = len(self.region_lines)
        self.region_lines[k] = node.lineno + self.src.first_line - 1
        ranges = []
        for name, (bounds, dnode) in zip(names, dims):
            dl = self.loc(dnode)
            start, stop, step = (cast_to(index_expr(b, dl, "a loop bound"), INDEX, dl) for b in bounds)
            ranges.append((name, start, stop, step))
        self.region = k
        self.loops.append(LoopCtx("parallel", node.lineno))
        try:
            for name, *_ in ranges:
                if self.writable_local(name) is None:
                    self.declare(name, INDEX, node.lineno)
                elif self.scope.locals[name].type != INDEX:
                    raise type_error(f"loop variable '{name}' already has type {self.scope.locals[name].type.name}")
            body = self.block(node.body)
        finally:
            self.region = None
            self.loops.pop()
        prs = tuple(ir.ParallelRange(self.scope.locals[n].ir_name, a, b, c) for n, a, b, c in ranges)
        return ir.ParallelFor(self.loc(node), prs, start_parallel_loop(self, k, prs, body))

    def serial_for(self, node: ast.For, names: list[str], dims: list[tuple[list[Scalar], ast.AST]],
                   ndrange: bool) -> Stmts:
        loc = self.loc(node)
        headers = []
        for name, (bounds, dnode) in zip(names, dims):
            dl = self.loc(dnode)
            for b in bounds:
                index_expr(b, dl, "range() argument")
            lv = self.writable_local(name)
            if lv is not None:
                if not lv.type.is_int:
                    raise type_error(f"loop variable '{name}' already has type {lv.type.name}")
            else:
                t = INDEX if ndrange else common_type(bounds)
                lv = self.declare(name, DEFAULT_INT if t.is_bool else t, node.lineno)
            headers.append((lv, [cast_to(b, lv.type, dl) for b in bounds]))
        self.loops.append(LoopCtx("ndrange" if ndrange else "serial", node.lineno))
        try:
            with dynamic_block(self):
                body = self.block(node.body)
        finally:
            self.loops.pop()
        for lv, (start, stop, step) in reversed(headers):
            body = (ir.For(loc, lv.ir_name, start, stop, step, body),)
        return list(body)

    def static_for(self, node: ast.For, it: Value) -> Stmts:
        if isinstance(it, TupleVal):
            items: list[Value] = list(it.items)
        elif isinstance(it, Static) and isinstance(it.obj, range | tuple | list):
            items = [from_python(x) for x in it.obj]
        else:
            raise LangError("kl.static() in a for loop needs range(...) of constants or a constant tuple",
                            node.iter)
        if not isinstance(node.target, ast.Name):
            raise LangError("a kl.static loop needs a single loop variable", node.target)
        # every unrolled copy is compiled: cap the total per function (docs/language.md)
        self.unrolled: int = getattr(self, "unrolled", 0) + len(items)
        if self.unrolled > STATIC_UNROLL_LIMIT:
            raise LangError(f"kl.static loops unroll to more than {STATIC_UNROLL_LIMIT} iterations in this "
                            "function; use a plain range() loop", node.iter)
        out: Stmts = []
        self.loops.append(LoopCtx("static", node.lineno))
        try:
            for item in items:
                if self.inline is not None and self.inline.returned:
                    break
                self.scope.consts.append({node.target.id: item})  # type: ignore[dict-item]
                try:
                    out.extend(self.block(node.body))
                finally:
                    self.scope.consts.pop()
        finally:
            self.loops.pop()
        return out


#: most loop bodies that kl.static loops of one function may unroll to, nested loops counted
#: with their multiplicity (each copy is compiled; far more makes LLVM take minutes)
STATIC_UNROLL_LIMIT = 4096


def always_returns(body: tuple[ir.Stmt, ...] | list[ir.Stmt]) -> bool:
    if not body:
        return False
    last: Any = body[-1]
    if isinstance(last, ir.Return):
        return True
    if isinstance(last, ir.If):
        return always_returns(last.then_body) and always_returns(last.else_body)
    return False
