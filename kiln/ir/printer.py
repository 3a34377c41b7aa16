"""A compact text form of the typed IR: one line per statement, nested blocks indented.

    kernel saxpy__f32_f32a1_f32a1(a: f32, x: f32[:], y: f32[:])            # saxpy.py:3
      parallel for i:i64 in range(0:i64, x.shape[0], 1:i64):             # saxpy.py:4
        y[i]:f32 = ((a * x[i]) + y[i])                                    # saxpy.py:5

Expressions print inline (the IR is a tree, not SSA): constants and declared names carry their
type (`1:i64`, `i:i64`), conversions print as calls of the target type (`f64(v)`), stores show
the element type. Each line ends with the source file and line that produced it. `str()` of IR
nodes stays the dataclass repr; use `format_ir` to read IR.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from kiln.ir import nodes as ir
from kiln.ir.graph import ArgBinding, GraphIR
from kiln.types import NdArrayType, ScalarType

#: the column where the `# file:line` comments start (longer lines push it right)
COMMENT_COLUMN = 72


def type_text(t: ScalarType | NdArrayType) -> str:
    if isinstance(t, NdArrayType):
        dims = ", ".join(":" for _ in range(t.ndim or 0))
        return f"{t.dtype.name if t.dtype else '?'}[{dims}]"
    return t.name


def expr_text(e: ir.Expr | ir.ArrayRef) -> str:
    """One expression, fully parenthesised, on one line."""
    if isinstance(e, ir.ArrayRef):
        return e.name
    if isinstance(e, ir.Const):
        value = ("true" if e.value else "false") if isinstance(e.value, bool) else repr(e.value)
        return f"{value}:{e.type.name}"
    if isinstance(e, ir.Var):
        return e.name
    if isinstance(e, ir.Shape):
        return f"{e.array.name}.shape[{e.dim}]"
    if isinstance(e, ir.Load):
        return _element(e.array, e.indices, e.check)
    if isinstance(e, ir.Unary):
        sep = " " if e.op is ir.UnaryOp.NOT else ""
        return f"{e.op.value}{sep}{expr_text(e.operand)}"
    if isinstance(e, ir.Binary) and e.check >= 0:
        return f"({expr_text(e.lhs)} {e.op.value}!{e.check} {expr_text(e.rhs)})"
    if isinstance(e, ir.Binary | ir.Compare | ir.Logical):
        return f"({expr_text(e.lhs)} {e.op.value} {expr_text(e.rhs)})"
    if isinstance(e, ir.Select):
        return f"select({expr_text(e.cond)}, {expr_text(e.if_true)}, {expr_text(e.if_false)})"
    if isinstance(e, ir.Cast):
        return f"{e.type.name}({expr_text(e.value)})"
    if isinstance(e, ir.BuiltinCall):
        return f"{e.name}({_args(e.args)}):{e.type.name}"
    if isinstance(e, ir.AtomicRMW):
        return f"atomic_{e.op.value}({_element(e.array, e.indices, e.check)}, {expr_text(e.value)})"
    if isinstance(e, ir.Call):
        return f"call {e.func}({_args(e.args)}):{e.type.name}"
    raise TypeError(f"format_ir: unknown expression node {type(e).__name__}")


def _args(args: Iterable[ir.Expr | ir.ArrayRef]) -> str:
    return ", ".join(expr_text(a) for a in args)


def _element(array: ir.ArrayRef, indices: tuple[ir.Expr, ...], check: int = -1) -> str:
    """`x[i, j]`, or `x[i, j]!3` when debug mode checks it (site 3 of the kernel's checks)."""
    mark = f"!{check}" if check >= 0 else ""
    return f"{array.name}[{_args(indices)}]{mark}"


def _range(var: str, start: ir.Expr, stop: ir.Expr, step: ir.Expr) -> str:
    return f"{var}:{start.type.name} in range({expr_text(start)}, {expr_text(stop)}, {expr_text(step)})"


class _Printer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, depth: int, text: str, loc: ir.Loc) -> None:
        code = "  " * depth + text
        where = f"# {os.path.basename(loc.filename)}:{loc.line}" if loc.line else ""
        if where:
            code = code.ljust(COMMENT_COLUMN) + " " + where if len(code) < COMMENT_COLUMN else f"{code}  {where}"
        self.lines.append(code)

    def body(self, depth: int, stmts: tuple[ir.Stmt, ...]) -> None:
        if not stmts:
            self.lines.append("  " * depth + "pass")
        for s in stmts:
            self.stmt(depth, s)

    def stmt(self, d: int, s: ir.Stmt) -> None:
        if isinstance(s, ir.Assign):
            self.line(d, f"{s.name}:{s.value.type.name} = {expr_text(s.value)}", s.loc)
        elif isinstance(s, ir.Store):
            self.line(d, f"{_element(s.array, s.indices, s.check)}:{s.value.type.name} = {expr_text(s.value)}",
                      s.loc)
        elif isinstance(s, ir.AugStore):
            self.line(d, f"{_element(s.array, s.indices)}:{s.value.type.name} {s.op.value}= {expr_text(s.value)}",
                      s.loc)
        elif isinstance(s, ir.ExprStmt):
            self.line(d, f"eval {expr_text(s.value)}", s.loc)
        elif isinstance(s, ir.Print):
            pieces = [repr(s.texts[0])] + [x for v, t in zip(s.values, s.texts[1:])
                                          for x in (expr_text(v), repr(t))]
            self.line(d, f"print {', '.join(pieces)}", s.loc)
        elif isinstance(s, ir.If):
            self.line(d, f"if {expr_text(s.cond)}:", s.loc)
            self.body(d + 1, s.then_body)
            if s.else_body:
                self.lines.append("  " * d + "else:")
                self.body(d + 1, s.else_body)
        elif isinstance(s, ir.While):
            self.line(d, f"while {expr_text(s.cond)}:", s.loc)
            self.body(d + 1, s.body)
        elif isinstance(s, ir.For):
            self.line(d, f"for {_range(s.var, s.start, s.stop, s.step)}:", s.loc)
            self.body(d + 1, s.body)
        elif isinstance(s, ir.ParallelFor):
            dims = ", ".join(_range(r.var, r.start, r.stop, r.step) for r in s.dims)
            self.line(d, f"parallel for {dims}:", s.loc)
            if s.plan is not None:
                self.lines.append("  " * (d + 1) + f"# plan: {plan_text(s.plan)}")
            self.body(d + 1, s.body)
        elif isinstance(s, ir.Break | ir.Continue):
            self.line(d, type(s).__name__.lower(), s.loc)
        elif isinstance(s, ir.Return):
            self.line(d, "return" if s.value is None else f"return {expr_text(s.value)}", s.loc)
        else:
            raise TypeError(f"format_ir: unknown statement node {type(s).__name__}")

    def function(self, fn: ir.FunctionIR) -> None:
        params = ", ".join(f"{p.name}: {type_text(p.type)}" for p in fn.params)
        ret = f" -> {fn.ret.name}" if fn.ret is not None else ""
        self.line(0, f"{'kernel' if fn.is_kernel else 'func'} {fn.name}({params}){ret}", fn.loc)
        if fn.locals:
            self.lines.append("  locals " + ", ".join(f"{n}: {t.name}" for n, t in fn.locals))
        self.body(1, fn.body)


def plan_text(plan: ir.ParallelPlan) -> str:
    """One line: what each chunk/thread privatises, which atomics stay shared and why."""
    parts = [f"reduce {r.array}[{', '.join(expr_text(i) for i in r.indices)}] {r.op.name.lower()}"
             for r in plan.reductions]
    parts += [f"private {a.array} (merge {a.merge_op.name.lower()})" for a in plan.private_arrays]
    parts += [f"shared atomics {a.array} ({a.reason})" for a in plan.shared_atomics]
    parts += [flag for flag, on in (("heavy", plan.heavy_iterations), ("lockstep", plan.lockstep)) if on]
    if plan.coarsen is not None:
        co = plan.coarsen
        parts.append(f"gpu coarsen dim {co.dim} x{co.factor} (reuse {', '.join(co.reuse)})")
    if plan.vector is not None:
        parts.append(f"gpu vector x{plan.vector.width} ({', '.join(plan.vector.arrays)})")
    return "; ".join(parts) or "plain"


def launch_text(plan: ir.LaunchPlan) -> str:
    """The GPU launches of a kernel, or why CUDA refuses it."""
    if plan.cuda_refusal:
        return f"# cuda: refused ({plan.cuda_refusal})"
    phases = ", ".join(f"{ph.mode} stmts {list(ph.stmts)}" + (f" prefix {list(ph.prefix)}" if ph.prefix else "")
                       for ph in plan.phases)
    return f"# cuda launches: {phases}"


def format_function(fn: ir.FunctionIR) -> str:
    p = _Printer()
    p.function(fn)
    return "\n".join(p.lines) + "\n"


def format_ir(kir: ir.KernelIR) -> str:
    """The whole kernel: its funcs (callees first), then the kernel itself."""
    text = "\n".join(format_function(f) for f in (*kir.funcs, kir.kernel))
    if kir.launch_plan is not None:
        text += launch_text(kir.launch_plan) + "\n"
    for k, c in enumerate(kir.checks):
        what = f"index {c.array}" if c.kind == "index" else c.kind
        text += f"# check !{k}: {what} at {os.path.basename(c.loc.filename)}:{c.loc.line}\n"
    return text


def format_graph(g: GraphIR) -> str:
    params = ", ".join(f"{n}: {type_text(t)}" for n, t in g.params)
    lines = [f"graph {g.name}({params})"]
    for d in g.dispatches:
        args = ", ".join(b.name if isinstance(b, ArgBinding) else f"{b.value!r}:{b.type.name}" for b in d.bindings)
        lines.append(f"  dispatch {d.kernel}({args})")
    return "\n".join(lines) + "\n"
