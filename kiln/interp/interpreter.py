"""The reference interpreter: runs a kernel's typed IR (kiln.ir.nodes) on numpy arrays, following
docs/language.md, one node at a time. It is slow on purpose: every rule is written out once, so
that compiled code can be checked against it (tests/test_differential.py).

Dispatch is by node class name (`visit_<NodeClass>` / `exec_<NodeClass>`): a new node type is a new
method. Parallel loops run serially in row-major order (the language allows any order, so a
kernel whose result depends on the order is not a valid differential test). Array accesses are
bounds-checked and raise IndexError (compiled code does not check: the generator of test kernels
keeps every index in range). Debug builds' checks (the `check` marks of
kiln.passes.insert_bounds_checks) raise what compiled debug code raises, with the same message:
kl.KernelIndexError and kl.KernelZeroDivisionError (kiln.runtime.debug_record words them).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np

from kiln.interp import scalars
from kiln.interp.scalars import Value
from kiln.ir import nodes as ir
from kiln.runtime.debug_record import describe
from kiln.runtime.print_buffer import format_value
from kiln.types import MAX_NDIM, ScalarType

__all__ = ["Interpreter", "run_kernel"]


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    def __init__(self, value: Value) -> None:
        self.value = value


#: AtomicOp -> the binary operation it applies (min/max go through the builtins)
_ATOMIC_BINARY = {ir.AtomicOp.ADD: ir.BinaryOp.ADD, ir.AtomicOp.SUB: ir.BinaryOp.SUB,
                  ir.AtomicOp.AND: ir.BinaryOp.BITAND, ir.AtomicOp.OR: ir.BinaryOp.BITOR,
                  ir.AtomicOp.XOR: ir.BinaryOp.BITXOR}


class _Frame:
    """One function activation: scalar locals/params and array params."""

    def __init__(self, fn: ir.FunctionIR) -> None:
        self.fn = fn
        self.scalars: dict[str, Value] = {name: scalars.make(0, t) for name, t in fn.locals}
        self.types: dict[str, ScalarType] = dict(fn.locals)
        self.arrays: dict[str, np.ndarray] = {}


class Interpreter:
    """Runs one KernelIR; `run(args)` updates the numpy arrays in `args` in place."""

    def __init__(self, kir: ir.KernelIR, out: TextIO | None = None) -> None:
        self.kir = kir
        #: where `print` writes (sys.stdout, looked up when the interpreter is made)
        self.out = out or sys.stdout
        self.funcs = {f.name: f for f in kir.funcs}
        self.frame: _Frame | None = None

    # ------------------------------------------------------------------------------ entry
    def run(self, args: Mapping[str, Any]) -> None:
        fn = self.kir.kernel
        frame = _Frame(fn)
        for p in fn.params:
            value = args[p.name]
            if isinstance(p.type, ScalarType):
                frame.scalars[p.name] = scalars.make(value, p.type)
                frame.types[p.name] = p.type
            else:
                frame.arrays[p.name] = value
        self._call(frame)

    def _call(self, frame: _Frame) -> Value:
        saved, self.frame = self.frame, frame
        try:
            self.block(frame.fn.body)
        except _Return as r:
            return r.value
        finally:
            self.frame = saved
        return None

    # ------------------------------------------------------------------------------ statements
    def block(self, body: tuple[ir.Stmt, ...]) -> None:
        for s in body:
            getattr(self, "exec_" + type(s).__name__)(s)

    def exec_Assign(self, s: ir.Assign) -> None:
        assert self.frame is not None
        self.frame.scalars[s.name] = self.eval(s.value)

    def exec_Store(self, s: ir.Store) -> None:
        arr = self._array(s.array)
        idx = self._index(arr, s.indices, s.check)
        value = self.eval(s.value)
        arr[idx] = value

    def exec_AugStore(self, s: ir.AugStore) -> None:   # only before lower_aug_stores
        self._atomic(s.op, s.array, s.indices, s.value)

    def exec_ExprStmt(self, s: ir.ExprStmt) -> None:
        self.eval(s.value)

    def exec_Print(self, s: ir.Print) -> None:
        """The text compiled code's print record becomes (one rule: kiln.runtime.print_buffer),
        written at once (compiled code's text appears after the run)."""
        values = [format_value(self.eval(v), v.type.name) for v in s.values]
        self.out.write(s.texts[0] + "".join(v + t for v, t in zip(values, s.texts[1:])))

    def exec_If(self, s: ir.If) -> None:
        self.block(s.then_body if self.eval(s.cond) else s.else_body)

    def exec_While(self, s: ir.While) -> None:
        while self.eval(s.cond):
            try:
                self.block(s.body)
            except _Break:
                break
            except _Continue:
                continue

    def exec_For(self, s: ir.For) -> None:
        """Python's `for var in range(start, stop, step)` (bounds and step evaluated once; a
        zero step runs nothing); the variable takes each value of the range in turn."""
        assert self.frame is not None
        start, stop, step = (int(self.eval(e)) for e in (s.start, s.stop, s.step))
        if step == 0:
            return
        for v in range(start, stop, step):
            self.frame.scalars[s.var] = v
            try:
                self.block(s.body)
            except _Break:
                break
            except _Continue:
                continue

    def exec_Break(self, s: ir.Break) -> None:
        raise _Break

    def exec_Continue(self, s: ir.Continue) -> None:
        raise _Continue

    def exec_Return(self, s: ir.Return) -> None:
        raise _Return(None if s.value is None else self.eval(s.value))

    def exec_ParallelFor(self, s: ir.ParallelFor) -> None:
        """Iterations in row-major order over the dimensions (last fastest), one at a time."""
        assert self.frame is not None
        ranges = []
        for d in s.dims:
            start, stop, step = (int(self.eval(e)) for e in (d.start, d.stop, d.step))
            ranges.append(range(start, stop, step) if step else range(0))
        for point in np.ndindex(*(len(r) for r in ranges)):
            for d, r, k in zip(s.dims, ranges, point):
                self.frame.scalars[d.var] = r[k]
            self.block(s.body)

    # ------------------------------------------------------------------------------ expressions
    def eval(self, e: ir.Expr) -> Value:
        return getattr(self, "visit_" + type(e).__name__)(e)

    def visit_Const(self, e: ir.Const) -> Value:
        return scalars.make(e.value, e.type)

    def visit_Var(self, e: ir.Var) -> Value:
        assert self.frame is not None
        return self.frame.scalars[e.name]

    def visit_Shape(self, e: ir.Shape) -> Value:
        return int(self._array(e.array).shape[e.dim])

    def visit_Load(self, e: ir.Load) -> Value:
        arr = self._array(e.array)
        return scalars.make(arr[self._index(arr, e.indices, e.check)], e.type)

    def visit_Unary(self, e: ir.Unary) -> Value:
        return scalars.unary(e.op, self.eval(e.operand), e.type)

    def visit_Binary(self, e: ir.Binary) -> Value:
        lhs, rhs = self.eval(e.lhs), self.eval(e.rhs)
        if e.check >= 0 and rhs == 0:
            raise self._failure(e.check, (), ())
        return scalars.binary(e.op, lhs, rhs, e.type)

    def visit_Compare(self, e: ir.Compare) -> Value:
        return scalars.compare(e.op, self.eval(e.lhs), self.eval(e.rhs))

    def visit_Logical(self, e: ir.Logical) -> Value:
        lhs = bool(self.eval(e.lhs))
        if e.op == ir.LogicalOp.AND:
            return lhs and bool(self.eval(e.rhs))
        return lhs or bool(self.eval(e.rhs))

    def visit_Select(self, e: ir.Select) -> Value:
        return self.eval(e.if_true) if self.eval(e.cond) else self.eval(e.if_false)

    def visit_Cast(self, e: ir.Cast) -> Value:
        return scalars.cast(self.eval(e.value), e.value.type, e.type)

    def visit_BuiltinCall(self, e: ir.BuiltinCall) -> Value:
        return scalars.builtin(e.name, [self.eval(a) for a in e.args], e.type)

    def visit_AtomicRMW(self, e: ir.AtomicRMW) -> Value:
        return self._atomic(e.op, e.array, e.indices, e.value, e.check)

    def visit_Call(self, e: ir.Call) -> Value:
        assert self.frame is not None
        fn = self.funcs[e.func]
        frame = _Frame(fn)
        for p, a in zip(fn.params, e.args):
            if isinstance(a, ir.ArrayRef):
                frame.arrays[p.name] = self._array(a)
            else:
                assert isinstance(p.type, ScalarType)
                frame.scalars[p.name] = self.eval(a)
                frame.types[p.name] = p.type
        result = self._call(frame)
        return result if fn.ret is not None else False

    # ------------------------------------------------------------------------------ helpers
    def _array(self, ref: ir.ArrayRef) -> np.ndarray:
        assert self.frame is not None
        return self.frame.arrays[ref.name]

    def _index(self, arr: np.ndarray, indices: tuple[ir.Expr, ...], check: int = -1) -> tuple[int, ...]:
        idx = tuple(int(self.eval(i)) for i in indices)
        for k, (i, n) in enumerate(zip(idx, arr.shape)):
            if not 0 <= i < n:     # no negative wraparound in kiln
                if check >= 0:
                    raise self._failure(check, idx, arr.shape)
                raise IndexError(f"index {i} out of range for dimension {k} of size {n}")
        return idx

    def _failure(self, check: int, index: tuple[int, ...], shape: tuple[int, ...]) -> Exception:
        """The exception compiled debug code raises for a failed check `check`: the record it
        would fill (kiln.runtime.debug_record), described the same way."""
        pad = [0] * (MAX_NDIM - len(index))
        rec = [1, 0, check, len(index), *index, *pad, *shape, *pad]
        sites = [[c.kind, c.array, os.path.basename(c.loc.filename), c.loc.line] for c in self.kir.checks]
        return describe(rec, self.kir.display_name or self.kir.kernel.name, sites)

    def _atomic(self, op: ir.AtomicOp, ref: ir.ArrayRef, indices: tuple[ir.Expr, ...],
                value_expr: ir.Expr, check: int = -1) -> Value:
        arr = self._array(ref)
        idx = self._index(arr, indices, check)
        dtype = ref.type.dtype
        assert dtype is not None
        value = self.eval(value_expr)
        old = scalars.make(arr[idx], dtype)
        compute = dtype if not (dtype.is_float and dtype.bits == 16) else ScalarType("f32", "f", 32)
        a = scalars.cast(old, dtype, compute)
        b = scalars.cast(value, dtype, compute)
        if op in (ir.AtomicOp.MIN, ir.AtomicOp.MAX):
            new = scalars.atomic_minmax(op.value, a, b, compute)
        else:
            new = scalars.binary(_ATOMIC_BINARY[op], a, b, compute)
        arr[idx] = scalars.cast(new, compute, dtype)
        return old


def run_kernel(kir: ir.KernelIR, args: Mapping[str, Any]) -> None:
    """Run `kir` on `args` (numpy arrays are updated in place), serially."""
    Interpreter(kir).run(args)
