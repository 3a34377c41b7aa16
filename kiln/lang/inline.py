"""Inline funcs: Taichi's `ti.func` semantics, a func body compiled at each call site in the
caller's context.

A `@kl.func` is inlined when it is generic (a parameter without annotation, or with an
annotation that is not a kiln scalar/ndarray type), when it returns a value without a scalar
return annotation (a tuple, a vector...), or when it draws random numbers (kl.random needs the
kernel's per-iteration state; see `InlineRequired`). Fully annotated scalar funcs keep their own
IR function (kiln.lang.function.CompileContext.specialize_func).

How a call is expanded (`inline_call`):
- the arguments are evaluated in the caller, in order;
- each parameter is bound to its argument's Value: a scalar expression gets a fresh local of the
  expansion (`<func>.<n>.<param>`) assigned once, so that the body may reassign it and the
  argument is evaluated once, at the call; plain variables, constants and weak literals that the
  body never assigns are used as they are; arrays, compile-time objects, tuples and any other
  non-scalar Value are bound AS IS; a vector (MatrixVal) is bound as it is unless the body
  assigns the parameter, which then becomes a vector local of the expansion (pass by value);
- the body is lowered with the func's own source, globals and scope, its locals prefixed with
  the expansion's name; its statements are emitted before the statement holding the call (the
  compiler's `pending` list), and the call's value is the returned Value;
- `return` follows Taichi's rule for ti.func: at most one return per path, never inside a
  non-static `if`/`while`/`for` (kl.static ifs and loops are fine); statements after a return
  are not compiled. The returned scalars are kept in locals of the expansion, tuples item-wise.

Evaluation order: the body runs before the rest of the statement that contains the call, so
both operands of `and`/`or` and both sides of `a if c else b` run their inlined bodies (as in
Taichi, whose operators do not short-circuit), and an array element read in the same statement
before the call is read after the body ran.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kiln.errors import KernelError
from kiln.ir import nodes as ir
from kiln.lang.matrix_assign import assign_local
from kiln.lang.transformer import NameResolver, Scope
from kiln.lang.values import (
    LangError,
    Lit,
    MatrixVal,
    TupleVal,
    Value,
    VoidCall,
    arith_type,
    cast_to,
    common_type,
    describe,
    type_error,
)
from kiln.types import MatrixType, NdArrayType, ScalarType

if TYPE_CHECKING:
    from kiln.lang.callables import Func
    from kiln.lang.stmts import StmtMixin


class InlineRequired(KernelError):
    """Raised while compiling a func as its own IR function when its body needs the caller's
    context (kl.random); the call site catches it and inlines the func instead."""

    def __init__(self, func_name: str) -> None:
        super().__init__(f"func '{func_name}' must be inlined")


@dataclass
class InlineFrame:
    """One expansion of an inline func being lowered."""

    func: Func
    prefix: str                        # IR-name prefix of the expansion's locals
    ret_ann: Any                       # the return annotation (None: none)
    result: Value | None = None        # what `return` gave (None: no value)
    returned: bool = False
    #: non-static if/while/for around the current statement, within this func
    control_depth: int = 0
    stmts: list[ir.Stmt] = field(default_factory=list)


def inline_call(c: StmtMixin, func: Func, node: ast.Call) -> Value:
    """Expand `func(args)` at this call site; its statements go to `c.pending`."""
    names = func.param_names
    if len(node.args) != len(names):
        raise type_error(f"func '{func.name}' takes {len(names)} argument(s) but {len(node.args)} were given")
    stack = c.ctx.stack
    if any(f is func for f in stack):
        chain = " -> ".join(f.name for f in stack[stack.index(func):]) + f" -> {func.name}"
        raise LangError(f"recursive call to func '{func.name}' is not supported ({chain})")
    args = [c.visit(a) for a in node.args]
    for pname, v, a in zip(names, args, node.args):
        if isinstance(v, VoidCall):
            raise LangError(f"argument '{pname}' of func '{func.name}': {describe(v)} cannot be passed", a)
    locs = [c.loc(a) for a in node.args]
    anns = func.raw_annotations()
    c.ctx.inline_count += 1
    frame = InlineFrame(func, f"{func.name}.{c.ctx.inline_count}.", anns.get("return"))
    saved = _enter(c, func, frame)
    stack.append(func)
    try:
        fdef = func._fdef()
        params = fdef.args.posonlyargs + fdef.args.args
        assigned = _assigned_names(fdef)
        for arg, v, loc in zip(params, args, locs):
            frame.stmts.extend(_bind(c, func, arg, anns.get(arg.arg), v, arg.arg in assigned, loc))
        frame.stmts.extend(c.stmts(fdef.body))
    except LangError as e:
        raise c.to_kernel_error(e) from None       # rendered with the func's own source
    finally:
        stack.pop()
        _leave(c, saved)
    c.pending.extend(frame.stmts)
    if frame.result is None:
        return VoidCall(None, func.name)
    return frame.result


def _enter(c: StmtMixin, func: Func, frame: InlineFrame) -> tuple[Any, ...]:
    saved = (c.src, c.resolver, c.scope, c.func_name, c.ret, c.is_kernel, c.loops, c.nesting, c.inline)
    c.src = func._source_info()
    c.resolver = NameResolver(func.py_func)
    c.scope = Scope()
    c.func_name = func.name
    c.ret = None
    c.is_kernel = False        # loops in a func are serial
    c.loops = []               # break/continue cannot reach the caller's loops
    c.nesting = 1
    c.inline = frame
    return saved


def _leave(c: StmtMixin, saved: tuple[Any, ...]) -> None:
    (c.src, c.resolver, c.scope, c.func_name, c.ret, c.is_kernel, c.loops, c.nesting, c.inline) = saved


def _assigned_names(fdef: ast.FunctionDef) -> set[str]:
    """Names the body assigns, directly (`z = ...`) or through a component (`z.x = ...`,
    `z[0] += ...`): such a parameter needs a copy of its own."""
    out = set()
    for n in ast.walk(fdef):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.add(n.id)
        elif isinstance(n, ast.Attribute | ast.Subscript) and isinstance(n.ctx, ast.Store):
            base: ast.expr = n
            while isinstance(base, ast.Attribute | ast.Subscript):
                base = base.value
            if isinstance(base, ast.Name):
                out.add(base.id)
    return out


def _bind(c: StmtMixin, func: Func, arg: ast.arg, ann: Any, v: Value, assigned: bool,
          loc: ir.Loc) -> list[ir.Stmt]:
    """Bind parameter `arg` of the expansion to the argument value `v` (see the module doc)."""
    name = arg.arg
    if isinstance(ann, NdArrayType) and (not isinstance(v, ir.ArrayRef) or not ann.accepts(v.type)):
        raise type_error(f"argument '{name}' of func '{func.name}' expects {ann!r}, got {describe(v)}", arg)
    if isinstance(ann, MatrixType) and (not isinstance(v, MatrixVal) or v.shape != ann.shape):
        raise type_error(f"argument '{name}' of func '{func.name}' expects {ann!r}, got {describe(v)}", arg)
    scalar_ann = ann if isinstance(ann, ScalarType) else None
    if isinstance(v, MatrixVal) and assigned:
        # a vector the body reassigns (`z = complex_sqr(z) + c`): a vector local of the
        # expansion, as for scalars (pass by value)
        return assign_local(c, name, v, loc, None)
    if not isinstance(v, ir.Expr | Lit):
        # arrays, compile-time objects, tuples, vectors (MatrixVal): bound as they are
        if scalar_ann is not None:
            raise type_error(f"argument '{name}' of func '{func.name}' expects {scalar_ann.name}, got "
                             f"{describe(v)}", arg)
        c.scope.params[name] = v
        return []
    if scalar_ann is not None:
        v = cast_to(v, scalar_ann, loc)
    if not assigned and isinstance(v, ir.Var | ir.Const | Lit):
        c.scope.params[name] = v
        return []
    t = scalar_ann or arith_type(common_type([v]))
    lv = c.declare(name, t, loc.line, ir_name=c.inline.prefix + name)  # type: ignore[union-attr]
    return [ir.Assign(loc, lv.ir_name, cast_to(v, t, loc))]


def inline_return(c: StmtMixin, node: ast.Return) -> list[ir.Stmt]:
    """`return [value]` inside an inlined func (Taichi's rule, see the module doc)."""
    frame = c.inline
    assert frame is not None
    if frame.control_depth > 0:
        raise LangError(f"return inside a non-static if/while/for of func '{frame.func.name}' is not supported "
                        "(funcs are inlined, as in Taichi: return once, at the end, or use kl.static "
                        "conditions); assign a result variable and return it at the end")
    frame.returned = True
    if node.value is None:
        return []
    out: list[ir.Stmt] = []
    v = c.visit(node.value)
    v = _converted(frame, v, frame.ret_ann, c.loc(node))
    frame.result = _keep(c, v, c.loc(node), out, [0])
    return out


def _converted(frame: InlineFrame, v: Value, ann: Any, loc: ir.Loc) -> Value:
    """The returned value converted to a scalar return annotation (`-> kl.f32`), item-wise for a
    tuple of them (`-> (kl.i32, kl.f32)`, as Taichi allows); other annotations leave it as is."""
    if isinstance(ann, ScalarType):
        if not isinstance(v, ir.Expr | Lit):
            raise type_error(f"func '{frame.func.name}' must return a {ann.name}, got {describe(v)}")
        return cast_to(v, ann, loc)
    if isinstance(ann, tuple) and all(isinstance(a, ScalarType) for a in ann):
        if not isinstance(v, TupleVal) or len(v.items) != len(ann):
            raise type_error(f"func '{frame.func.name}' must return a tuple of {len(ann)} values, got {describe(v)}")
        return TupleVal(tuple(_converted(frame, x, a, loc) for x, a in zip(v.items, ann)))
    return v


def _keep(c: StmtMixin, v: Value, loc: ir.Loc, out: list[ir.Stmt], counter: list[int]) -> Value:
    """`v` with every scalar expression stored in a result local of the expansion (evaluated
    once, where the return is); variables, constants and non-scalar values pass as they are."""
    if isinstance(v, TupleVal):
        return TupleVal(tuple(_keep(c, x, loc, out, counter) for x in v.items))
    if isinstance(v, VoidCall):
        raise LangError(f"cannot return {describe(v)}")
    if not isinstance(v, ir.Expr) or isinstance(v, ir.Var | ir.Const):
        return v
    frame = c.inline
    assert frame is not None
    name = f"{frame.prefix}ret.{counter[0]}"
    counter[0] += 1
    c.local_decls[name] = v.type
    out.append(ir.Assign(loc, name, v))
    return ir.Var(v.type, loc, name)


def dynamic_block(c: StmtMixin) -> _DynamicBlock:
    """Context manager around the body of a non-static if/while/for (for the return rule)."""
    return _DynamicBlock(c)


class _DynamicBlock:
    def __init__(self, c: StmtMixin) -> None:
        self.frame = c.inline

    def __enter__(self) -> None:
        if self.frame is not None:
            self.frame.control_depth += 1

    def __exit__(self, *exc: object) -> None:
        if self.frame is not None:
            self.frame.control_depth -= 1
