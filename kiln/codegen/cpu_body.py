"""`CpuBodyEmitter`: kernel bodies for the CPU. A parallel loop is outlined into an internal
body function `void body(ctx, lo, hi)` over a chunk of the flattened iteration space, which the
module's `kiln_parallel_for` helper runs on the GOMP thread team (or inline). Each chunk obeys
the loop's ParallelPlan: planned scalar reductions accumulate privately and merge with one atomic
per chunk; planned private arrays (histograms) are scattered into stack copies when small enough.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from llvmlite import ir

from kiln.codegen.body_emitter import KernelBodyEmitter
from kiln.codegen.llvm_util import (
    I1,
    I8,
    I32,
    I64,
    PTR,
    VOID,
    ArrayVal,
    alloca,
    fn_attrs,
    gep,
    mem_type,
    reg_type,
)
from kiln.codegen.module_base import ModuleEmitterBase
from kiln.config import TUNING
from kiln.ir import nodes as N
from kiln.ir.ops import atomicrmw_name
from kiln.types import INDEX, ScalarType

#: how many simple iterations one parallel iteration containing a loop or call is assumed to cost
#: (the loop runs on threads when count * weight >= kiln_rt_min_parallel_iters; kiln.config)
HEAVY_ITERATION_WEIGHT = TUNING.heavy_iteration_weight

#: Largest array (in elements) that a chunk privatises (kiln.config): the private copy lives on
#: the thread's stack (PRIVATE_LIMIT * 8 bytes at most per array), is cleared before and scanned
#: after every chunk (O(PRIVATE_LIMIT), under a microsecond), and should stay in L1/L2.
PRIVATE_LIMIT = TUNING.private_limit


class ParallelRuntime(Protocol):
    """The module-level helper a CPU parallel loop calls (kiln.codegen.cpu_module provides it;
    named structurally because that module imports this one)."""

    def parallel_for_fn(self) -> ir.Function:
        """`void kiln_parallel_for(ptr body, ptr ctx, i64 n, i64 weight)`."""
        ...


class CpuBodyEmitter(KernelBodyEmitter):
    """Kernel and func bodies for the CPU target."""

    def __init__(self, me: ModuleEmitterBase, fir: N.FunctionIR, fn: ir.Function,
                 runtime: ParallelRuntime) -> None:
        super().__init__(me, fir, fn)
        self.runtime = runtime
        self.n_parallel = 0             # parallel loops outlined so far (names their contexts)
        #: while a privatised chunk loop is emitted: array -> (the real array, its element count)
        self.private_real: dict[str, tuple[ArrayVal, ir.Value]] = {}

    # -- the outlined parallel loop -----------------------------------------------------------
    def emit_parallel_loop(self, s: N.ParallelFor, plan: N.ParallelPlan) -> None:
        b = self.b
        dims = self.parallel_dims(s)
        total = dims[0][2]
        for _, _, c in dims[1:]:
            total = b.mul(total, c)
        fields = self._context_fields(dims)
        ctx_ty = ir.LiteralStructType([v.type for v in fields])
        ctx = alloca(self.ab, ctx_ty, name=f"ctx{self.n_parallel}")
        zero32 = ir.Constant(I32, 0)
        for i, v in enumerate(fields):
            b.store(v, gep(b, ctx, [zero32, ir.Constant(I32, i)], inbounds=True, source_etype=ctx_ty))
        body_fn = self._outline(s, plan, ctx_ty)
        weight = ir.Constant(I64, HEAVY_ITERATION_WEIGHT if plan.heavy_iterations else 1)
        b.call(self.runtime.parallel_for_fn(), [body_fn, ctx, total, weight])
        self.leave_if_failed()

    def _context_fields(self, dims: list[tuple[ir.Value, ir.Value, ir.Value]]) -> list[ir.Value]:
        """What the body function reads from its context: every array (pointer, extents, strides), every
        scalar variable (params and locals), then start/step/count per dimension."""
        b = self.b
        fields: list[ir.Value] = []
        for a in self.arrays.values():
            fields.append(a.ptr)
            fields += a.extents
            fields += a.strides
        for slot, t in self.vars.values():
            fields.append(b.load(slot, typ=mem_type(t)))
        for start, step, cnt in dims:
            fields += [start, step, cnt]
        return fields

    def _outline(self, s: N.ParallelFor, plan: N.ParallelPlan, ctx_ty: ir.LiteralStructType) -> ir.Function:
        """The internal `void body(ptr ctx, i64 lo, i64 hi)` running iterations [lo, hi)."""
        me = self.me
        body_fn = ir.Function(me.module, ir.FunctionType(VOID, [PTR, I64, I64]),
                              name=me.unique(f"kiln_body_{self.fir.name}_{self.n_parallel}"))
        body_fn.linkage = "internal"
        fn_attrs(body_fn)
        self.n_parallel += 1
        sub = CpuBodyEmitter(me, self.fir, body_fn, self.runtime)
        sub.in_parallel = True
        cptr, lo, hi = body_fn.args
        cptr.name, lo.name, hi.name = "ctx", "lo", "hi"
        ab = sub.ab
        zero32 = ir.Constant(I32, 0)

        def get(i: int) -> ir.Value:
            return ab.load(gep(ab, cptr, [zero32, ir.Constant(I32, i)], inbounds=True,
                               source_etype=ctx_ty), typ=ctx_ty.elements[i])

        i = 0
        for name, a in self.arrays.items():
            rank = len(a.extents)
            ptr = get(i)
            ext = [get(i + 1 + k) for k in range(rank)]
            strides = [get(i + 1 + rank + k) for k in range(rank)]
            i += 1 + 2 * rank
            sub.arrays[name] = ArrayVal(ptr, ext, a.type, strides)
        for name, (_, t) in self.vars.items():
            sub.new_var(name, t, get(i))
            i += 1
        dvals = []
        for _ in s.dims:
            dvals.append((get(i), get(i + 1), get(i + 2)))
            i += 3
        sub.leave_if_failed()       # debug mode: another chunk failed a check, skip this one
        sub.emit_parallel_body(s, plan, dvals, lo, hi)
        sub.finish()
        return body_fn

    def emit_parallel_body(self, s: N.ParallelFor, plan: N.ParallelPlan, dvals: list, lo: ir.Value,
                           hi: ir.Value) -> None:
        """The chunk [lo, hi) of `s`: its iterations, then the merge of its planned privatised
        reductions (scalar accumulators, and private array copies where they apply)."""
        self.start_reductions(plan)
        arrays = {p.array: p.merge_op for p in plan.private_arrays}
        if arrays:
            self.emit_privatised_chunk(s, arrays, dvals, lo, hi)
        else:
            self.emit_chunk_loop(s, dvals, lo, hi)
        self.flush_reductions()

    def emit_chunk_loop(self, s: N.ParallelFor, dvals: list, lo: ir.Value, hi: ir.Value) -> None:
        """The loop over the iterations [lo, hi) of `s` (flattened over its dims). Emitted once,
        or twice by emit_privatised_chunk (once with self.private set, once without)."""
        b = self.b
        fn = self.fn
        ndim = len(s.dims)
        inner_var = s.dims[-1].var
        if ndim == 1:
            j0, j1 = lo, hi
            outer_latch = None
        else:
            head = fn.append_basic_block("flat.head")
            obody = fn.append_basic_block("flat.body")
            outer_latch = fn.append_basic_block("flat.latch")
            exit_bb = fn.append_basic_block("flat.exit")
            pre = b.block
            b.branch(head)
            b.position_at_end(head)
            f = b.phi(I64, "f")
            f.add_incoming(lo, pre)
            b.cbranch(b.icmp_signed("<", f, hi), obody, exit_bb)
            b.position_at_end(obody)
            inner = dvals[-1][2]
            o = b.udiv(f, inner)
            j0 = b.sub(f, b.mul(o, inner))
            lim = b.add(j0, b.sub(hi, f))
            j1 = b.select(b.icmp_signed("<", lim, inner), lim, inner)
            for k in range(ndim - 2, -1, -1):
                cnt = dvals[k][2]
                if k > 0:
                    idx = b.urem(o, cnt)
                    o = b.udiv(o, cnt)
                else:
                    idx = o
                slot, t = self.vars[s.dims[k].var]
                b.store(self.convert(self.dim_value(s, k, dvals[k], idx), INDEX, t), slot)
        # the innermost, canonical loop j in [j0, j1)
        pre = self.b.block
        ihead = fn.append_basic_block("inner.head")
        ibody = fn.append_basic_block("inner.body")
        ilatch = fn.append_basic_block("inner.latch")
        iend = fn.append_basic_block("inner.end")
        b.branch(ihead)
        b.position_at_end(ihead)
        j = b.phi(I64, "j")
        j.add_incoming(j0, pre)
        b.cbranch(b.icmp_signed("<", j, j1), ibody, iend)
        b.position_at_end(ibody)
        slot, t = self.vars[inner_var]
        b.store(self.convert(self.dim_value(s, ndim - 1, dvals[-1], j), INDEX, t), slot)
        self.stmts(s.body)
        if not self.b.block.is_terminated:
            self.b.branch(ilatch)
        b.position_at_end(ilatch)
        jn = b.add(j, ir.Constant(I64, 1), flags=("nsw",))
        j.add_incoming(jn, ilatch)
        b.branch(ihead)
        b.position_at_end(iend)
        if outer_latch is not None:
            b.branch(outer_latch)
            b.position_at_end(outer_latch)
            f.add_incoming(b.add(f, b.sub(j1, j0)), outer_latch)
            b.branch(head)
            b.position_at_end(exit_bb)

    # -- planned scalar reductions: one atomic per chunk ---------------------------------------
    def flush_reductions(self) -> None:
        """One atomic per chunk with the chunk's partial result (only if the chunk produced one,
        so an empty chunk never evaluates the indices)."""
        fn = self.fn
        for key, (acc, touched) in self.reductions.items():
            b = self.b
            do = fn.append_basic_block("red.flush")
            done = fn.append_basic_block("red.done")
            b.cbranch(b.load(touched, typ=I1), do, done)
            b.position_at_end(do)
            name, op, indices = key
            p, a = self.element_ptr(N.ArrayRef(name, self.arrays[name].type, N.NO_LOC), indices)
            t = a.dtype
            val = b.load(acc, typ=reg_type(t))
            b.atomic_rmw(atomicrmw_name(op, t), p, val, "monotonic")
            b.branch(done)
            b.position_at_end(done)
        self.reductions = {}

    # -- privatised arrays (histograms; planned by kiln.passes.plan_parallel) ---------------------
    def emit_privatised_chunk(self, s: N.ParallelFor, arrays: dict[str, N.AtomicOp], dvals: list,
                              lo: ir.Value, hi: ir.Value) -> None:
        """The chunk loop emitted twice from the same IR: once scattering `arrays` into private
        copies on the stack (plain load-op-store, then one merge atomic per changed element),
        once with the ordinary atomics on the real arrays.

        Which one runs is decided at run time: the copies have a fixed size (PRIVATE_LIMIT
        elements, a static alloca each), so the private version runs only when every array fits.
        Clearing and merging a copy costs O(PRIVATE_LIMIT) per chunk at most, under a
        microsecond; iterations are not counted against it because one iteration may run a
        whole serial loop of atomics."""
        b = self.b
        fn = self.fn
        real = {name: self.arrays[name] for name in arrays}
        fits = ir.Constant(I1, 1)
        bufs: dict[str, ir.Value] = {}
        counts: dict[str, ir.Value] = {}
        for name, a in real.items():
            count: ir.Value = ir.Constant(I64, 1)
            for e in a.extents:
                count = b.mul(count, e)
            counts[name] = count
            fits = b.and_(fits, b.icmp_unsigned("<=", count, ir.Constant(I64, PRIVATE_LIMIT)))
            # in the entry block: a static alloca, no stack adjustment per chunk
            buf = alloca(self.ab, ir.ArrayType(mem_type(a.dtype), PRIVATE_LIMIT), name=f"priv.{name}")
            buf.align = 64
            bufs[name] = buf
        priv_bb = fn.append_basic_block("priv.chunk")
        atomic_bb = fn.append_basic_block("atomic.chunk")
        join = fn.append_basic_block("chunk.done")
        b.cbranch(fits, priv_bb, atomic_bb)

        # Private version: clear the copies to the op's identity and point the arrays at them
        # (same extents, C-ordered strides) while the loop is emitted.
        b.position_at_end(priv_bb)
        for name, op in arrays.items():
            self._fill_identity(bufs[name], counts[name], op, real[name].dtype)
            self.arrays[name] = ArrayVal(bufs[name], real[name].extents, real[name].type,
                                         ArrayVal.contiguous_strides(b, real[name].extents))
        self.private = set(arrays)
        self.private_real = {name: (real[name], counts[name]) for name in arrays}
        try:
            self.emit_chunk_loop(s, dvals, lo, hi)
        finally:
            self.private = set()
            self.private_real = {}
            self.arrays.update(real)
        # Other chunks merge into the same real arrays concurrently: the merge stays atomic.
        for name, op in arrays.items():
            self._merge_private(bufs[name], counts[name], op, real[name])
        b.branch(join)

        # Atomic version: the same loop on the real arrays (arrays too big to copy).
        b.position_at_end(atomic_bb)
        self.emit_chunk_loop(s, dvals, lo, hi)
        b.branch(join)
        b.position_at_end(join)

    def private_rmw(self, e: N.AtomicRMW) -> None:
        """`x[idx] op= v` on a private copy: nobody else sees it, so no atomic is needed. SUB
        subtracts here and the merge adds the net delta (see kiln.passes.plan_parallel).

        The copy holds exactly the array's elements, so an element number outside the array
        (a bin computed from bad data) must never reach it: that update goes to the real
        array's atomic, exactly what the unprivatised loop does (docs/language.md, "Histograms")."""
        b = self.b
        a = self.array(e.array)
        values = self.index_values(e.array, e.indices)
        flat = self.offset(values, a.strides)          # the copy's element number (C order)
        real, count = self.private_real[e.array.name]
        t = a.dtype                       # never bool: mem_type == reg_type
        v = self.convert(self.expr(e.value), e.value.type, t)
        inside = b.icmp_unsigned("<", flat, count)
        with b.if_else(inside, likely=True) as (private, shared):
            with private:
                p = gep(b, a.ptr, [flat], inbounds=True, source_etype=mem_type(t))
                old = b.load(p, typ=reg_type(t), align=t.itemsize)
                b.store(self.rmw_op(e.op, old, v, t), p, align=t.itemsize)
            with shared:
                p = gep(b, real.ptr, [self.offset(values, real.strides)], inbounds=False, source_etype=mem_type(t))
                b.atomic_rmw(atomicrmw_name(e.op, t), p, v, "monotonic")

    def _index_loop(self, n: ir.Value, name: str, body: Callable[[ir.Value], None]) -> None:
        """for k in [0, n): body(k), at the builder's position (k is an i64)."""
        b = self.b
        pre = b.block
        head = self.fn.append_basic_block(f"{name}.head")
        body_bb = self.fn.append_basic_block(f"{name}.body")
        end = self.fn.append_basic_block(f"{name}.end")
        b.branch(head)
        b.position_at_end(head)
        k = b.phi(I64, f"{name}.k")
        k.add_incoming(ir.Constant(I64, 0), pre)
        b.cbranch(b.icmp_signed("<", k, n), body_bb, end)
        b.position_at_end(body_bb)
        body(k)
        k.add_incoming(b.add(k, ir.Constant(I64, 1), flags=("nsw",)), b.block)
        b.branch(head)
        b.position_at_end(end)

    def _fill_identity(self, buf: ir.Value, count: ir.Value, op: N.AtomicOp, t: ScalarType) -> None:
        b = self.b
        ident = self.identity(op, t)
        ty = reg_type(t)
        if ident.constant == 0:           # ADD/SUB, OR, XOR, unsigned MAX: all-zero bytes
            memset = self.me.declare("llvm.memset.p0.i64", VOID, [PTR, I8, I64, I1])
            b.call(memset, [buf, ir.Constant(I8, 0), b.mul(count, ir.Constant(I64, t.itemsize)),
                            ir.Constant(I1, 0)])
        else:
            self._index_loop(count, "priv.init", lambda k: b.store(
                ident, gep(b, buf, [k], source_etype=ty), align=t.itemsize))

    def _real_offset(self, k: ir.Value, a: ArrayVal) -> ir.Value:
        """The offset in the real (strided) array of the element a C-ordered copy holds at `k`."""
        b = self.b
        values: list[ir.Value] = []
        for e in reversed(a.extents[1:]):
            values.insert(0, b.urem(k, e))
            k = b.udiv(k, e)
        return self.offset([k, *values], a.strides)

    def _merge_private(self, buf: ir.Value, count: ir.Value, op: N.AtomicOp, a: ArrayVal) -> None:
        """for k in [0, count): if copy[k] != identity: atomically real[k] = real[k] <op> copy[k].
        Elements still at the identity would not change the array, so they cost no atomic (a
        NaN float compares unequal and is merged)."""
        b = self.b
        t = a.dtype
        ty = reg_type(t)
        ident = self.identity(op, t)
        llop = atomicrmw_name(op, t)

        def merge(k: ir.Value) -> None:
            v = b.load(gep(b, buf, [k], source_etype=ty), typ=ty, align=t.itemsize)
            changed = (b.fcmp_unordered("!=", v, ident) if t.is_float
                       else b.icmp_unsigned("!=", v, ident))
            with b.if_then(changed):
                b.atomic_rmw(llop, gep(b, a.ptr, [self._real_offset(k, a)], source_etype=ty), v, "monotonic")

        self._index_loop(count, "priv.merge", merge)

