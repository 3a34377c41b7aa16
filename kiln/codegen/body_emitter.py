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

This module holds `KernelBodyEmitter`: function setup, locals, statements (including serial
loops) and what both targets' parallel loops share (dimensions, planned scalar reductions); it
extends kiln.codegen.expr_emitter.ExprEmitter. Each target subclasses it once with its parallel
loop: kiln.codegen.cpu_body.CpuBodyEmitter, kiln.codegen.nvptx_body.NvptxBodyEmitter.
"""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from kiln.codegen.expr_emitter import ExprEmitter
from kiln.codegen.llvm_util import I1, I64, ArrayVal, alloca, codegen_error, const_value, mem_type, reg_type
from kiln.codegen.print_sites import slot_value
from kiln.ir import nodes as N
from kiln.ir.ops import reduction_identity
from kiln.passes.plan_parallel import reduction_key
from kiln.types import INDEX, NdArrayType, ScalarType


class KernelBodyEmitter(ExprEmitter):
    """Emits one kernel or func body; a target subclass supplies `emit_parallel_loop`."""

    def emit(self) -> None:
        args = iter(self.fn.args)
        for p in self.fir.params:
            if isinstance(p.type, NdArrayType):
                ptr = next(args)
                ptr.name = f"{p.name}.data"
                ext = [next(args) for _ in range(p.type.rank)]
                strides = [next(args) for _ in range(p.type.rank)]
                for d, (e, st) in enumerate(zip(ext, strides)):
                    e.name = f"{p.name}.n{d}"
                    st.name = f"{p.name}.s{d}"
                self.arrays[p.name] = ArrayVal(ptr, ext, p.type, strides)
            else:
                a = next(args)
                a.name = f"{p.name}.arg"
                self.new_var(p.name, p.type, self.to_mem(a, p.type, self.ab))
        self._declare_locals()
        self.stmts(self.fir.body)
        self.finish()

    def _declare_locals(self) -> None:
        for name, t in self.fir.locals:
            if name not in self.vars:
                self.new_var(name, t)
        for s in self.fir.body:
            if isinstance(s, N.ParallelFor):
                for d in s.dims:
                    if d.var not in self.vars:
                        self.new_var(d.var, INDEX)

    def finish(self) -> None:
        if not self.b.block.is_terminated:
            rt = self.fn.function_type.return_type
            if isinstance(rt, ir.VoidType):
                self.b.ret_void()
            else:
                self.b.ret(ir.Constant(rt, None))
        self.ab.branch(self.fn.blocks[1])

    # -- statements -------------------------------------------------------------------------
    def stmts(self, body: Sequence[N.Stmt]) -> None:
        for s in body:
            if self.b.block.is_terminated:
                self.b.position_at_end(self.fn.append_basic_block("dead"))
            self.stmt(s)

    def stmt(self, s: N.Stmt) -> None:
        m = getattr(self, "s_" + type(s).__name__, None)
        if m is None:
            raise codegen_error(f"codegen: unsupported statement {type(s).__name__}", s.loc)
        m(s)

    def s_Assign(self, s: N.Assign) -> None:
        slot, t = self.var_slot(s.name, s.loc)
        v = self.convert(self.expr(s.value), s.value.type, t)
        self.b.store(self.to_mem(v, t, self.b), slot)

    def s_Store(self, s: N.Store) -> None:
        p, a = self.element_ptr(s.array, s.indices, s.check)
        v = self.convert(self.expr(s.value), s.value.type, a.dtype)
        self.b.store(self.to_mem(v, a.dtype, self.b), p, align=a.dtype.itemsize)

    def s_AugStore(self, s: N.AugStore) -> None:
        raise codegen_error("codegen: AugStore left in the IR (run kiln.passes.lower_aug_stores first)", s.loc)

    def s_ExprStmt(self, s: N.ExprStmt) -> None:
        if isinstance(s.value, N.AtomicRMW) and s.value.array.name in self.private:
            self.private_rmw(s.value)
            return
        if isinstance(s.value, N.AtomicRMW) and self.reductions:
            acc = self.reductions.get(reduction_key(s.value))
            if acc is not None:
                self.accumulate(s.value, *acc)
                return
        self.expr(s.value)

    def s_Print(self, s: N.Print) -> None:
        values = [slot_value(self.b, self.expr(v), v.type) for v in s.values]
        self.me.prints.emit(self.b, s, values)

    def _branch_if_open(self, target: ir.Block) -> None:
        if not self.b.block.is_terminated:
            self.b.branch(target)

    def s_If(self, s: N.If) -> None:
        b = self.b
        c = self.expr(s.cond)
        then_bb = self.fn.append_basic_block("if.then")
        else_bb = self.fn.append_basic_block("if.else")
        end_bb = self.fn.append_basic_block("if.end")
        b.cbranch(c, then_bb, else_bb)
        b.position_at_end(then_bb)
        self.stmts(s.then_body)
        self._branch_if_open(end_bb)
        b.position_at_end(else_bb)
        self.stmts(s.else_body)
        self._branch_if_open(end_bb)
        b.position_at_end(end_bb)

    def s_While(self, s: N.While) -> None:
        b = self.b
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
        self._branch_if_open(cond_bb)
        b.position_at_end(end_bb)

    def s_For(self, s: N.For) -> None:
        self.serial_for(s)

    def s_Break(self, s: N.Break) -> None:
        if not self.loops:
            raise codegen_error("codegen: break outside a loop", s.loc)
        self.b.branch(self.loops[-1][1])

    def s_Continue(self, s: N.Continue) -> None:
        if not self.loops:
            raise codegen_error("codegen: continue outside a loop", s.loc)
        self.b.branch(self.loops[-1][0])

    def s_Return(self, s: N.Return) -> None:
        b = self.b
        if self.in_parallel:
            raise codegen_error("codegen: return inside a parallel loop", s.loc)
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

    def s_ParallelFor(self, s: N.ParallelFor) -> None:
        if self.in_parallel or not self.fir.is_kernel:
            raise codegen_error("codegen: a parallel loop must be at the top level of a kernel", s.loc)
        if s.plan is None:
            raise codegen_error("codegen: parallel loop without a plan (run kiln.passes.plan_parallel "
                                "first)", s.loc)
        self.emit_parallel_loop(s, s.plan)

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
        head = self.fn.append_basic_block("for.head")
        body_bb = self.fn.append_basic_block("for.body")
        latch = self.fn.append_basic_block("for.latch")
        end = self.fn.append_basic_block("for.end")
        kslot = alloca(self.ab, I64, name=f"{s.var}.k")
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

    # -- what the targets' parallel loops share ----------------------------------------------
    def emit_parallel_loop(self, s: N.ParallelFor, plan: N.ParallelPlan) -> None:
        """Lower the kernel's top-level parallel loop `s` as `plan` says (each target's own)."""
        raise NotImplementedError(type(self).__name__)

    def private_rmw(self, e: N.AtomicRMW) -> None:
        """`x[idx] op= v` on a private copy of an array (only targets that make copies)."""
        raise codegen_error(f"codegen: no private copy of {e.array.name!r} on this target", e.loc)

    def parallel_dims(self, s: N.ParallelFor) -> list[tuple[ir.Value, ir.Value, ir.Value]]:
        """(start, step, trip count) of each dimension, as INDEX values (shared with NVPTX)."""
        dims = []
        for d in s.dims:
            start = self.convert(self.expr(d.start), d.start.type, INDEX)
            stop = self.convert(self.expr(d.stop), d.stop.type, INDEX)
            step = self.convert(self.expr(d.step), d.step.type, INDEX)
            dims.append((start, step, self.trip_count(start, stop, step, INDEX, d.step)))
        return dims

    def dim_value(self, s: N.ParallelFor, k: int, dv: tuple[ir.Value, ir.Value, ir.Value],
                   j: ir.Value) -> ir.Value:
        """start + j * step, with constant start/step folded in the body."""
        d = s.dims[k]
        b = self.b
        start = const_value(INDEX, d.start.value) if isinstance(d.start, N.Const) else dv[0]
        step = const_value(INDEX, d.step.value) if isinstance(d.step, N.Const) else dv[1]
        return b.add(start, b.mul(j, step))

    # -- planned scalar reductions -----------------------------------------------------------
    def start_reductions(self, plan: N.ParallelPlan) -> None:
        """A private accumulator (at the op's identity) and a `touched` flag per planned scalar
        reduction; the loop's matching atomics then go to `accumulate`."""
        for r in plan.reductions:
            dtype = self.arrays[r.array].dtype
            acc = alloca(self.ab, mem_type(dtype), name=f"red.{r.array}")
            self.ab.store(self.identity(r.op, dtype), acc)
            touched = alloca(self.ab, I1, name=f"red.{r.array}.touched")
            self.ab.store(ir.Constant(I1, 0), touched)
            self.reductions[(r.array, r.op, r.indices)] = (acc, touched)

    @staticmethod
    def identity(op: N.AtomicOp, t: ScalarType) -> ir.Constant:
        return ir.Constant(reg_type(t), reduction_identity(op, t))

    def accumulate(self, e: N.AtomicRMW, acc: ir.Value, touched: ir.Value) -> None:
        b = self.b
        t = self.arrays[e.array.name].dtype
        v = self.convert(self.expr(e.value), e.value.type, t)
        old = b.load(acc, typ=reg_type(t))
        if e.op in (N.AtomicOp.ADD, N.AtomicOp.SUB):
            # SUB accumulates the sum of what is subtracted; reassoc lets LLVM vectorise it.
            new = b.fadd(old, v, flags=("reassoc", "nsz")) if t.is_float else b.add(old, v)
        else:
            new = self.rmw_op(e.op, old, v, t)
        b.store(new, acc)
        b.store(ir.Constant(I1, 1), touched)

