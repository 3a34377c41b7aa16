"""Typed kernel IR (kiln.ir.nodes) -> LLVM IR (llvmlite.ir), unoptimised.

Semantics chosen where C/LLVM and Python differ (all operations are poison- and trap-free):

- Integer arithmetic wraps (two's complement); no `nsw`/`nuw` on user arithmetic. Only the
  flattened array index arithmetic (`i * extent + j`) carries `nsw`.
- `//` floors and `%` takes the divisor's sign (ints and floats, numpy's `divmod` algorithm for
  floats). Integer `x // 0` and `x % 0` give 0; `INT_MIN // -1` wraps to INT_MIN (no SIGFPE: the
  divisor is replaced by 1 before the hardware divide when it is 0 or -1). Float division by zero
  follows IEEE (inf/nan), like numpy.
- Shifts follow numpy: the shift amount is read as unsigned 64-bit (a negative amount is huge);
  `x << n` and unsigned `x >> n` give 0 when n >= bit width, signed `x >> n` gives 0 or -1
  (the sign) when n >= bit width. The hardware shift always gets `n & (bits - 1)`, so no poison.
- float -> int casts use `llvm.fptosi.sat` / `llvm.fptoui.sat`: truncation toward zero, NaN -> 0,
  out-of-range values saturate to the type's min/max (never poison). numpy gives the same values
  for in-range inputs.
- int -> f16 goes through f32 (<= 16-bit ints, exact) or f64; f64 -> f16 rounds to odd into f32
  and then to nearest-even into f16, which is correctly rounded without `__truncdfhf2`.
- `int ** int` uses repeated squaring (wrapping); a negative exponent gives 0 unless the base is
  1 (-> 1) or -1 (-> +-1). Float `**` is `llvm.pow`.
- Comparisons: signed/unsigned by type, floats ordered except `!=`, which is unordered
  (NaN != NaN is True). `and`/`or` and `a if c else b` short-circuit (branches + phi).
- `min`/`max` on floats are `llvm.minnum`/`llvm.maxnum` (a NaN operand yields the other one).
- bool is i1 in registers and i8 (0/1) in memory; a loaded bool byte is `!= 0`.
- Serial `for` computes its trip count once (Python's range semantics; a zero step runs nothing)
  and assigns `var = start + k * step` at the top of each iteration, so reassigning the loop
  variable in the body does not change the iteration sequence.
- f16 values are `half` in registers: LLVM computes each op in f32 and rounds back (what numpy
  does). Math builtins on f16 are computed in f32.

This module holds `FunctionEmitter`: function setup, locals, array access and statements
(including serial loops). It is composed from two mixins: kiln.codegen.expr_emitter
(expressions, atomics, builtins, conversions) and kiln.codegen.parallel_emitter (parallel
loops, privatised reductions and arrays). The module-level code generation (`ModuleEmitter`)
lives in kiln.codegen.module_emitter, types and small IR helpers in kiln.codegen.llvm_util;
the names other modules import from here (kiln.codegen.nvptx, tests) are re-exported.
"""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from kiln.codegen.expr_emitter import ExprEmitterMixin, _declare_fabs64
from kiln.codegen.llvm_util import (
    _FLOATS,
    _FSUFFIX,
    DOUBLE,
    FLOAT,
    HALF,
    I1,
    I8,
    I32,
    I64,
    PTR,
    VOID,
    _alloca,
    _ArrayVal,
    _Callee,
    _err,
    _gep,
    c_ident,
    const_value,
    fn_attrs,
    mem_type,
    reg_type,
)
from kiln.codegen.module_emitter import ModuleEmitter
from kiln.codegen.parallel_emitter import HEAVY_ITERATION_WEIGHT, ParallelEmitterMixin
from kiln.codegen.reductions import ReductionKey, reduction_key
from kiln.ir import nodes as N
from kiln.types import INDEX, NdArrayType, ScalarType, i64

#: re-exported: the names kiln.codegen.nvptx, tests and benchmarks import from this module
__all__ = [
    "DOUBLE", "FLOAT", "HALF", "HEAVY_ITERATION_WEIGHT", "I1", "I8", "I32", "I64", "PTR", "VOID",
    "_FLOATS", "_FSUFFIX", "ExprEmitterMixin", "FunctionEmitter", "ModuleEmitter",
    "ParallelEmitterMixin", "_ArrayVal", "_Callee", "_alloca", "_declare_fabs64", "_err", "_gep",
    "c_ident", "const_value", "fn_attrs", "mem_type", "reg_type",
]


class FunctionEmitter(ParallelEmitterMixin, ExprEmitterMixin):
    def __init__(self, me: ModuleEmitter, fir: N.FunctionIR, fn: ir.Function) -> None:
        self.me = me
        self.fir = fir
        self.fn = fn
        self.entry = fn.append_basic_block("entry")
        self.ab = ir.IRBuilder(self.entry)          # allocas
        self.b = ir.IRBuilder(fn.append_basic_block("body"))
        self.vars: dict[str, tuple[ir.Value, ScalarType]] = {}
        self.arrays: dict[str, _ArrayVal] = {}
        self.loops: list[tuple[ir.Block, ir.Block]] = []
        self.in_parallel = False
        self.n_parallel = 0
        #: privatised reductions of the parallel body being emitted: key -> (accumulator, touched)
        self.reductions: dict[ReductionKey, tuple[ir.Value, ir.Value]] = {}
        #: arrays that the chunk loop being emitted scatters into a private copy (self.arrays
        #: then points at the copy): their atomics become plain load-op-store
        self.private: set[str] = set()

    # -- setup ------------------------------------------------------------------------------
    def new_var(self, name: str, t: ScalarType, init: ir.Value | None = None) -> None:
        slot = _alloca(self.ab, mem_type(t), name=name)
        slot.align = max(1, t.itemsize)
        self.ab.store(init if init is not None else ir.Constant(mem_type(t), None), slot)
        self.vars[name] = (slot, t)

    def _declare_locals(self) -> None:
        for name, t in self.fir.locals:
            if name not in self.vars:
                self.new_var(name, t)
        for s in self.fir.body:
            if isinstance(s, N.ParallelFor):
                for d in s.dims:
                    if d.var not in self.vars:
                        self.new_var(d.var, INDEX)

    def emit(self) -> None:
        args = iter(self.fn.args)
        for p in self.fir.params:
            if isinstance(p.type, NdArrayType):
                ptr = next(args)
                ptr.name = f"{p.name}.data"
                ext = [next(args) for _ in range(p.type.ndim)]
                for d, e in enumerate(ext):
                    e.name = f"{p.name}.n{d}"
                self.arrays[p.name] = _ArrayVal(ptr, ext, p.type)
            else:
                a = next(args)
                a.name = f"{p.name}.arg"
                self.new_var(p.name, p.type, self.to_mem(a, p.type, self.ab))
        self._declare_locals()
        self.stmts(self.fir.body)
        self.finish()

    def finish(self) -> None:
        if not self.b.block.is_terminated:
            rt = self.fn.function_type.return_type
            if isinstance(rt, ir.VoidType):
                self.b.ret_void()
            else:
                self.b.ret(ir.Constant(rt, None))
        self.ab.branch(self.fn.blocks[1])

    # -- memory helpers ---------------------------------------------------------------------
    @staticmethod
    def to_mem(v: ir.Value, t: ScalarType, b: ir.IRBuilder) -> ir.Value:
        return b.zext(v, I8) if t.is_bool else v

    @staticmethod
    def from_mem(v: ir.Value, t: ScalarType, b: ir.IRBuilder) -> ir.Value:
        return b.icmp_unsigned("!=", v, ir.Constant(I8, 0)) if t.is_bool else v

    def var_slot(self, name: str, loc: N.Loc) -> tuple[ir.Value, ScalarType]:
        try:
            return self.vars[name]
        except KeyError:
            raise _err(f"codegen: unknown variable {name!r}", loc) from None

    def array(self, ref: N.ArrayRef) -> _ArrayVal:
        try:
            return self.arrays[ref.name]
        except KeyError:
            raise _err(f"codegen: unknown array {ref.name!r}", ref.loc) from None

    def index64(self, e: N.Expr) -> ir.Value:
        v = self.expr(e)
        return self.int_to_i64(v, e.type)

    def int_to_i64(self, v: ir.Value, t: ScalarType) -> ir.Value:
        if t.bits == 64 and not t.is_bool:
            return v
        if t.is_float:
            return self.convert(v, t, i64)
        return self.b.sext(v, I64) if t.kind == "i" else self.b.zext(v, I64)

    def element_ptr(self, ref: N.ArrayRef, indices: tuple[N.Expr, ...]) -> tuple[ir.Value, _ArrayVal]:
        a = self.array(ref)
        if len(indices) != len(a.extents):
            raise _err(f"codegen: {ref.name} needs {len(a.extents)} indices", ref.loc)
        flat = None
        for d, ix in enumerate(indices):
            v = self.index64(ix)
            if flat is None:
                flat = v
            else:
                flat = self.b.add(self.b.mul(flat, a.extents[d], flags=("nsw",)), v, flags=("nsw",))
        p = _gep(self.b, a.ptr, [flat], inbounds=True, source_etype=mem_type(a.dtype))
        return p, a

    # -- statements -------------------------------------------------------------------------
    def stmts(self, body: Sequence[N.Stmt]) -> None:
        for s in body:
            if self.b.block.is_terminated:
                self.b.position_at_end(self.fn.append_basic_block("dead"))
            self.stmt(s)

    def stmt(self, s: N.Stmt) -> None:
        b = self.b
        if isinstance(s, N.Assign):
            slot, t = self.var_slot(s.name, s.loc)
            v = self.convert(self.expr(s.value), s.value.type, t)
            b.store(self.to_mem(v, t, b), slot)
        elif isinstance(s, N.Store):
            p, a = self.element_ptr(s.array, s.indices)
            v = self.convert(self.expr(s.value), s.value.type, a.dtype)
            b.store(self.to_mem(v, a.dtype, b), p, align=a.dtype.itemsize)
        elif isinstance(s, N.AugStore):
            if self.in_parallel:
                self.atomic(s.op, s.array, s.indices, s.value, s.loc)
            else:
                p, a = self.element_ptr(s.array, s.indices)
                t = a.dtype
                old = self.from_mem(b.load(p, typ=mem_type(t), align=t.itemsize), t, b)
                v = self.convert(self.expr(s.value), s.value.type, t)
                b.store(self.to_mem(self.rmw_op(s.op, old, v, t), t, b), p, align=t.itemsize)
        elif isinstance(s, N.ExprStmt):
            if isinstance(s.value, N.AtomicRMW) and s.value.array.name in self.private:
                self.private_rmw(s.value)
                return
            if isinstance(s.value, N.AtomicRMW) and self.reductions:
                acc = self.reductions.get(reduction_key(s.value))
                if acc is not None:
                    self.accumulate(s.value, *acc)
                    return
            self.expr(s.value)
        elif isinstance(s, N.If):
            c = self.expr(s.cond)
            then_bb = self.fn.append_basic_block("if.then")
            else_bb = self.fn.append_basic_block("if.else")
            end_bb = self.fn.append_basic_block("if.end")
            b.cbranch(c, then_bb, else_bb)
            b.position_at_end(then_bb)
            self.stmts(s.then_body)
            if not self.b.block.is_terminated:
                self.b.branch(end_bb)
            b.position_at_end(else_bb)
            self.stmts(s.else_body)
            if not self.b.block.is_terminated:
                self.b.branch(end_bb)
            b.position_at_end(end_bb)
        elif isinstance(s, N.While):
            cond_bb = self.fn.append_basic_block("while.cond")
            body_bb = self.fn.append_basic_block("while.body")
            end_bb = self.fn.append_basic_block("while.end")
            b.branch(cond_bb)
            b.position_at_end(cond_bb)
            b.cbranch(self.expr(s.cond), body_bb, end_bb)
            b.position_at_end(body_bb)
            self.loops.append((cond_bb, end_bb))
            self.stmts(s.body)
            self.loops.pop()
            if not self.b.block.is_terminated:
                self.b.branch(cond_bb)
            b.position_at_end(end_bb)
        elif isinstance(s, N.For):
            self.serial_for(s)
        elif isinstance(s, N.Break):
            if not self.loops:
                raise _err("codegen: break outside a loop", s.loc)
            b.branch(self.loops[-1][1])
        elif isinstance(s, N.Continue):
            if not self.loops:
                raise _err("codegen: continue outside a loop", s.loc)
            b.branch(self.loops[-1][0])
        elif isinstance(s, N.Return):
            if self.in_parallel:
                raise _err("codegen: return inside a parallel loop", s.loc)
            rt = self.fn.function_type.return_type
            if isinstance(rt, ir.VoidType):
                if s.value is not None:
                    self.expr(s.value)
                b.ret_void()
            else:
                assert self.fir.ret is not None
                if s.value is None:
                    b.ret(ir.Constant(rt, None))
                else:
                    b.ret(self.convert(self.expr(s.value), s.value.type, self.fir.ret))
        elif isinstance(s, N.ParallelFor):
            if self.in_parallel or not self.fir.is_kernel:
                raise _err("codegen: a parallel loop must be at the top level of a kernel", s.loc)
            self.parallel_for(s)
        else:
            raise _err(f"codegen: unsupported statement {type(s).__name__}", s.loc)

    def trip_count(self, start: ir.Value, stop: ir.Value, step: ir.Value, t: ScalarType,
                   step_expr: N.Expr | None = None) -> ir.Value:
        """Number of iterations of range(start, stop, step) as i64 (unsigned arithmetic)."""
        b = self.b
        s64, e64, st64 = (self.int_to_i64(v, t) for v in (start, stop, step))
        zero = ir.Constant(I64, 0)
        one = ir.Constant(I64, 1)

        def up(lo: ir.Value, hi: ir.Value, stp: ir.Value) -> ir.Value:
            lt = b.icmp_signed("<", lo, hi) if t.kind == "i" else b.icmp_unsigned("<", lo, hi)
            diff = b.sub(hi, lo)
            q = b.udiv(diff, stp)
            if not (isinstance(stp, ir.Constant) and stp.constant == 1):
                r = b.urem(diff, stp)
                q = b.add(q, b.zext(b.icmp_unsigned("!=", r, zero), I64))
            return b.select(lt, q, zero)

        if isinstance(step_expr, N.Const) and int(step_expr.value) > 0:
            return up(s64, e64, ir.Constant(I64, int(step_expr.value)))
        if isinstance(step_expr, N.Const) and int(step_expr.value) < 0 and t.kind == "i":
            return up(e64, s64, ir.Constant(I64, -int(step_expr.value)))
        if isinstance(step_expr, N.Const) and int(step_expr.value) == 0:
            return zero
        safe_pos = b.select(b.icmp_signed("==", st64, zero), one, st64)
        if t.kind == "u":
            return b.select(b.icmp_unsigned("==", st64, zero), zero, up(s64, e64, safe_pos))
        pos = b.icmp_signed(">", st64, zero)
        neg_step = b.sub(zero, st64)
        safe_neg = b.select(b.icmp_signed("<", st64, zero), neg_step, one)
        cnt_up = up(s64, e64, safe_pos)
        cnt_dn = up(e64, s64, safe_neg)
        is0 = b.icmp_signed("==", st64, zero)
        return b.select(is0, zero, b.select(pos, cnt_up, cnt_dn))

    def serial_for(self, s: N.For) -> None:
        b = self.b
        slot, t = self.var_slot(s.var, s.loc)
        start = self.convert(self.expr(s.start), s.start.type, t)
        stop = self.convert(self.expr(s.stop), s.stop.type, t)
        step = self.convert(self.expr(s.step), s.step.type, t)
        count = self.trip_count(start, stop, step, t, s.step)
        pre = b.block
        head = self.fn.append_basic_block("for.head")
        body_bb = self.fn.append_basic_block("for.body")
        latch = self.fn.append_basic_block("for.latch")
        end = self.fn.append_basic_block("for.end")
        kslot = _alloca(self.ab, I64, name=f"{s.var}.k")
        b.store(ir.Constant(I64, 0), kslot)
        b.branch(head)
        b.position_at_end(head)
        k = b.load(kslot, typ=I64)
        b.cbranch(b.icmp_unsigned("<", k, count), body_bb, end)
        b.position_at_end(body_bb)
        kt = b.trunc(k, reg_type(t)) if t.bits < 64 else k
        b.store(self.to_mem(b.add(start, b.mul(kt, step)), t, b), slot)
        self.loops.append((latch, end))
        self.stmts(s.body)
        self.loops.pop()
        if not self.b.block.is_terminated:
            self.b.branch(latch)
        b.position_at_end(latch)
        b.store(b.add(b.load(kslot, typ=I64), ir.Constant(I64, 1)), kslot)
        b.branch(head)
        b.position_at_end(end)
        del pre

