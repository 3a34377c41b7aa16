"""Checks the invariants of the typed IR (see the kiln.ir.nodes docstring).

`verify(kir)` raises IRVerifyError (an AssertionError) naming the function, the node and its
source location. The compiler runs it after the passes; tests run it on every KernelIR.
"""

from __future__ import annotations

from kiln.ir import nodes as ir
from kiln.ir.builtins import BUILTINS
from kiln.types import INDEX, NdArrayType, ScalarType, bool_, f16, f32

_ARITH = (ir.BinaryOp.ADD, ir.BinaryOp.SUB, ir.BinaryOp.MUL, ir.BinaryOp.FLOORDIV, ir.BinaryOp.MOD,
          ir.BinaryOp.POW)
_BITWISE = (ir.BinaryOp.BITAND, ir.BinaryOp.BITOR, ir.BinaryOp.BITXOR)
_INT_ATOMICS = (ir.AtomicOp.AND, ir.AtomicOp.OR, ir.AtomicOp.XOR)


class IRVerifyError(AssertionError):
    """The IR breaks one of its invariants (a bug in the front end or in a pass)."""


def verify(kir: ir.KernelIR, *, lowered: bool = False) -> None:
    """Check `kir`; with `lowered=True`, also check that no AugStore is left. Plans, where the
    kernel has them, must name array parameters and the kernel body's statements."""
    funcs: dict[str, ir.FunctionIR] = {}
    for f in kir.funcs:
        if f.is_kernel:
            raise IRVerifyError(f"{f.name}: a callee is marked as a kernel")
        if f.name in funcs or f.name == kir.kernel.name:
            raise IRVerifyError(f"duplicate function name {f.name!r}")
        _Verifier(f, funcs, lowered, kir.checks).run()
        funcs[f.name] = f
    if not kir.kernel.is_kernel:
        raise IRVerifyError(f"{kir.kernel.name}: KernelIR.kernel is not marked as a kernel")
    _Verifier(kir.kernel, funcs, lowered, kir.checks).run()
    if kir.launch_plan is not None:
        _verify_launch_plan(kir.kernel, kir.launch_plan)


def _verify_launch_plan(fn: ir.FunctionIR, plan: ir.LaunchPlan) -> None:
    n = len(fn.body)
    for ph in plan.phases:
        if ph.mode not in ("loop", "single"):
            raise IRVerifyError(f"{fn.name}: launch phase mode {ph.mode!r}")
        if not all(0 <= k < n for k in ph.stmts + ph.prefix):
            raise IRVerifyError(f"{fn.name}: launch phase names a statement outside the kernel body")
        if ph.mode == "loop" and (len(ph.stmts) != 1 or not isinstance(fn.body[ph.stmts[0]], ir.ParallelFor)):
            raise IRVerifyError(f"{fn.name}: a loop launch phase is not one parallel loop")
    if not plan.phases and not plan.cuda_refusal:
        raise IRVerifyError(f"{fn.name}: a launch plan without phases or a refusal")


class _Verifier:
    def __init__(self, fn: ir.FunctionIR, funcs: dict[str, ir.FunctionIR], lowered: bool,
                 checks: tuple[ir.CheckSite, ...] = ()) -> None:
        self.fn = fn
        self.checks = checks
        self.funcs = funcs
        self.lowered = lowered
        self.params = {p.name: p for p in fn.params}
        self.locals: dict[str, ScalarType] = {}

    def fail(self, msg: str, node: object = None) -> IRVerifyError:
        loc = getattr(node, "loc", None)
        where = f" at {loc.filename}:{loc.line}:{loc.col + 1}" if isinstance(loc, ir.Loc) else ""
        kind = f" ({type(node).__name__})" if node is not None else ""
        return IRVerifyError(f"{self.fn.name}: {msg}{kind}{where}")

    def check(self, cond: bool, msg: str, node: object = None) -> None:
        if not cond:
            raise self.fail(msg, node)

    def site(self, check: int, kind: str, array: str, node: object) -> None:
        """A debug-mode check id (`Load.check`, ...) names a site of that kind and array."""
        if check < 0:
            return
        self.check(check < len(self.checks), f"check id {check} beyond the kernel's {len(self.checks)} sites",
                   node)
        c = self.checks[check]
        self.check(c.kind == kind and c.array == array, f"check id {check} names a {c.kind} site of "
                   f"{c.array!r}, not a {kind} site of {array!r}", node)

    def run(self) -> None:
        fn = self.fn
        self.check(len(self.params) == len(fn.params), "duplicate parameter names")
        for p in fn.params:
            if isinstance(p.type, NdArrayType):
                self.check(p.type.is_concrete, f"array parameter {p.name!r} has a generic type")
            else:
                self.check(isinstance(p.type, ScalarType), f"parameter {p.name!r} has no scalar type")
        for name, t in fn.locals:
            self.check(name not in self.locals, f"local {name!r} declared twice")
            self.check(name not in self.params, f"local {name!r} shadows a parameter")
            self.check(isinstance(t, ScalarType), f"local {name!r} has no scalar type")
            self.locals[name] = t
        if fn.is_kernel:
            self.check(fn.ret is None, "a kernel has a return type")
        self.block(fn.body, loops=(), top=True)

    # -- statements ------------------------------------------------------------------------
    def block(self, body: tuple[ir.Stmt, ...], loops: tuple[str, ...], top: bool = False) -> None:
        for s in body:
            self.stmt(s, loops, top)

    def stmt(self, s: ir.Stmt, loops: tuple[str, ...], top: bool) -> None:
        if isinstance(s, ir.Assign):
            self.check(s.name in self.locals, f"assignment to undeclared local {s.name!r}", s)
            self.expr(s.value)
            self.check(s.value.type == self.locals[s.name], f"value of type {s.value.type} assigned to "
                       f"{s.name!r} of type {self.locals[s.name]}", s)
        elif isinstance(s, ir.Store | ir.AugStore):
            if isinstance(s, ir.AugStore):
                self.check(not self.lowered, "AugStore left after lower_aug_stores", s)
            dtype = self.access(s.array, s.indices, s)
            if isinstance(s, ir.Store):
                self.site(s.check, "index", s.array.name, s)
            self.expr(s.value)
            self.check(s.value.type == dtype, f"stored value has type {s.value.type}, array dtype is {dtype}", s)
            if isinstance(s, ir.AugStore) and s.op in _INT_ATOMICS:
                self.check(not dtype.is_float, "bitwise AugStore on a float array", s)
        elif isinstance(s, ir.ExprStmt):
            self.expr(s.value)
        elif isinstance(s, ir.Print):
            self.check(len(s.texts) == len(s.values) + 1, "print texts and values do not interleave", s)
            for v in s.values:
                self.expr(v)
        elif isinstance(s, ir.If):
            self.cond(s.cond)
            self.block(s.then_body, loops)
            self.block(s.else_body, loops)
        elif isinstance(s, ir.While):
            self.cond(s.cond)
            self.block(s.body, loops + ("serial",))
        elif isinstance(s, ir.For):
            t = self.locals.get(s.var)
            self.check(t is not None, f"loop variable {s.var!r} is not a declared local", s)
            assert t is not None
            self.check(t.is_int, f"loop variable {s.var!r} is not an int", s)
            for e in (s.start, s.stop, s.step):
                self.expr(e)
                self.check(e.type == t, f"loop bound of type {e.type} for a loop variable of type {t}", s)
            self.block(s.body, loops + ("serial",))
        elif isinstance(s, ir.Break | ir.Continue):
            self.check(bool(loops) and loops[-1] == "serial",
                       f"{type(s).__name__} outside a serial loop", s)
        elif isinstance(s, ir.Return):
            if self.fn.is_kernel or self.fn.ret is None:
                self.check(s.value is None, "return with a value in a kernel or void func", s)
            else:
                self.check(s.value is not None, "return without a value in a func with a return type", s)
                assert s.value is not None
                self.expr(s.value)
                self.check(s.value.type == self.fn.ret, f"returned {s.value.type}, declared {self.fn.ret}", s)
            self.check("parallel" not in loops, "return inside a parallel loop", s)
        elif isinstance(s, ir.ParallelFor):
            self.check(self.fn.is_kernel, "ParallelFor in a func", s)
            self.check(top and not loops, "ParallelFor not at the kernel's top level", s)
            self.check(len(s.dims) >= 1, "ParallelFor without dimensions", s)
            for d in s.dims:
                self.check(self.locals.get(d.var) == INDEX, f"parallel loop variable {d.var!r} is not an "
                           f"{INDEX.name} local", s)
                for e in (d.start, d.stop, d.step):
                    self.expr(e)
                    self.check(e.type == INDEX, f"parallel loop bound of type {e.type}", s)
            self.block(s.body, ("parallel",))
            if s.plan is not None:
                self.plan(s.plan, s)
        else:
            raise self.fail("unknown statement", s)

    def plan(self, plan: ir.ParallelPlan, s: ir.ParallelFor) -> None:
        """A loop's plan names only array parameters, each privatised one way at most; a vector
        plan's loop ends in a dimension of step 1, which it needs."""
        named = [r.array for r in plan.reductions] + [p.array for p in plan.private_arrays]
        gpu = list(plan.coarsen.reuse if plan.coarsen else ()) + list(plan.vector.arrays if plan.vector else ())
        for name in named + [a.array for a in plan.shared_atomics] + gpu:
            p = self.params.get(name)
            self.check(p is not None and isinstance(p.type, NdArrayType),
                       f"plan names {name!r}, which is not an array parameter", s)
        private = {p.array for p in plan.private_arrays}
        self.check(not private & {r.array for r in plan.reductions},
                   "an array planned both as a scalar reduction and as a private copy", s)
        if plan.vector is not None:
            step = s.dims[-1].step
            self.check(plan.vector.width >= 2 and isinstance(step, ir.Const) and step.value == 1,
                       "a vector plan needs a width >= 2 and a last dimension of step 1", s)

    # -- expressions -----------------------------------------------------------------------
    def cond(self, e: ir.Expr) -> None:
        self.expr(e)
        self.check(e.type == bool_, f"condition of type {e.type}, expected bool", e)

    def access(self, arr: ir.ArrayRef, indices: tuple[ir.Expr, ...], node: object) -> ScalarType:
        p = self.params.get(arr.name)
        self.check(p is not None and p.type == arr.type, f"{arr.name!r} is not an array parameter of "
                   f"this type", node)
        self.check(arr.type.is_concrete, "generic array type", node)
        self.check(len(indices) == arr.type.ndim, f"{len(indices)} index(es) for a {arr.type.ndim}-d array", node)
        for i in indices:
            self.expr(i)
            self.check(i.type.is_int, f"index of type {i.type}", i)
        assert arr.type.dtype is not None
        return arr.type.dtype

    def expr(self, e: ir.Expr) -> None:
        self.check(isinstance(e, ir.Expr), f"expected an expression, got {type(e).__name__}", e)
        self.check(isinstance(e.type, ScalarType), "expression without a scalar type", e)
        t = e.type
        if isinstance(e, ir.Const):
            self.check(isinstance(e.value, bool | int | float), "constant of a non-numeric value", e)
            if t.is_int:
                self.check(isinstance(e.value, int) and not isinstance(e.value, bool), "int constant "
                           "holding a non-int", e)
        elif isinstance(e, ir.Var):
            p = self.params.get(e.name)
            if p is not None:
                self.check(p.type == t, f"read of parameter {e.name!r} with type {t}", e)
            else:
                self.check(self.locals.get(e.name) == t, f"read of undeclared local {e.name!r} or "
                           f"with the wrong type {t}", e)
        elif isinstance(e, ir.Shape):
            p = self.params.get(e.array.name)
            self.check(p is not None and p.type == e.array.type, f"{e.array.name!r} is not an array param", e)
            self.check(0 <= e.dim < (e.array.type.ndim or 0) and t == INDEX, "bad shape access", e)
        elif isinstance(e, ir.Load):
            self.check(self.access(e.array, e.indices, e) == t, "load type differs from the array dtype", e)
            self.site(e.check, "index", e.array.name, e)
        elif isinstance(e, ir.Unary):
            self.expr(e.operand)
            if e.op == ir.UnaryOp.NOT:
                self.check(t == bool_ and e.operand.type == bool_, "'not' on a non-bool", e)
            else:
                self.check(e.operand.type == t, "unary operand type differs from the result", e)
                self.check(t != f16, "arithmetic on f16 (must be done in f32)", e)
                if e.op == ir.UnaryOp.INVERT:
                    self.check(not t.is_float, "'~' on a float", e)
        elif isinstance(e, ir.Binary):
            self.binary(e)
        elif isinstance(e, ir.Compare):
            self.expr(e.lhs)
            self.expr(e.rhs)
            self.check(t == bool_, "comparison result is not bool", e)
            self.check(e.lhs.type == e.rhs.type, "comparison operands of different types", e)
        elif isinstance(e, ir.Logical):
            self.expr(e.lhs)
            self.expr(e.rhs)
            self.check(t == bool_ and e.lhs.type == bool_ and e.rhs.type == bool_, "and/or on non-bools", e)
        elif isinstance(e, ir.Select):
            self.cond(e.cond)
            self.expr(e.if_true)
            self.expr(e.if_false)
            self.check(e.if_true.type == t and e.if_false.type == t, "select branches of another type", e)
        elif isinstance(e, ir.Cast):
            self.expr(e.value)
        elif isinstance(e, ir.BuiltinCall):
            self.builtin_call(e)
        elif isinstance(e, ir.AtomicRMW):
            dtype = self.access(e.array, e.indices, e)
            self.site(e.check, "index", e.array.name, e)
            self.expr(e.value)
            self.check(t == dtype and e.value.type == dtype, "atomic type differs from the array dtype", e)
            if e.op in _INT_ATOMICS:
                self.check(not dtype.is_float, f"atomic {e.op.value} on a float array", e)
        elif isinstance(e, ir.Call):
            self.call(e)
        else:
            raise self.fail("unknown expression", e)

    def binary(self, e: ir.Binary) -> None:
        t = e.type
        self.expr(e.lhs)
        self.expr(e.rhs)
        self.check(t != f16, "arithmetic on f16 (must be done in f32)", e)
        if e.check >= 0:
            self.check(t.is_int and e.op in (ir.BinaryOp.FLOORDIV, ir.BinaryOp.MOD),
                       "a division check on something other than integer // or %", e)
            self.site(e.check, "divide", "", e)
        self.check(e.lhs.type == t, f"left operand of type {e.lhs.type} for a {t} result", e)
        if e.op in (ir.BinaryOp.SHL, ir.BinaryOp.SHR):
            self.check(t.is_int and e.rhs.type.is_int, "shift on non-ints", e)
        else:
            self.check(e.rhs.type == t, f"right operand of type {e.rhs.type} for a {t} result", e)
        if e.op == ir.BinaryOp.DIV:
            self.check(t.is_float, "true division with a non-float result", e)
        if e.op in _BITWISE:
            self.check(not t.is_float, "bitwise operator on floats", e)

    def builtin_call(self, e: ir.BuiltinCall) -> None:
        t = e.type
        b = BUILTINS.get(e.name)
        self.check(b is not None, f"unknown builtin {e.name!r}", e)
        assert b is not None
        self.check(len(e.args) == b.arity, f"{e.name}() with {len(e.args)} argument(s)", e)
        for a in e.args:
            self.expr(a)
        if b.arg_cast == "result":
            self.check(all(a.type == t for a in e.args), f"{e.name}() argument types differ from the "
                       f"result type {t}", e)
        elif b.arg_cast == "float":
            self.check(all(a.type.is_float for a in e.args), f"{e.name}() needs float arguments", e)
        rule = b.type_rule(tuple(a.type for a in e.args))
        self.check(rule == t or (rule == f16 and t == f32),
                   f"{e.name}() result type {t} does not follow its type rule", e)

    def call(self, e: ir.Call) -> None:
        t = e.type
        callee = self.funcs.get(e.func)
        self.check(callee is not None, f"call of unknown (or not yet defined) func {e.func!r}", e)
        assert callee is not None
        self.check(t == (callee.ret or bool_), "call type differs from the callee's return type", e)
        self.check(len(e.args) == len(callee.params), "wrong number of call arguments", e)
        for a, p in zip(e.args, callee.params):
            if isinstance(a, ir.ArrayRef):
                q = self.params.get(a.name)
                self.check(q is not None and q.type == a.type == p.type, f"array argument {a.name!r} "
                           f"does not match parameter {p.name!r}", e)
            else:
                self.expr(a)
                self.check(a.type == p.type, f"argument of type {a.type} for parameter {p.name!r} of "
                           f"type {p.type}", e)
