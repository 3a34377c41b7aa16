"""Parallel loops of `FunctionEmitter` (kiln.codegen.emit), as a mixin: the outlined parallel
body and its chunk loop over the flattened iteration space, privatised scalar reductions and
privatised arrays (histograms; see kiln.codegen.reductions)."""

from __future__ import annotations

from llvmlite import ir

from kiln.codegen.expr_emitter import EmitterState
from kiln.codegen.llvm_util import (
    I1,
    I8,
    I32,
    I64,
    PTR,
    VOID,
    _alloca,
    _ArrayVal,
    _gep,
    atomicrmw_op,
    const_value,
    fn_attrs,
    mem_type,
    reg_type,
)
from kiln.codegen.reductions import (
    PRIVATE_LIMIT,
    array_reductions,
    find_reductions,
)
from kiln.ir import nodes as N
from kiln.ir.analysis import walk
from kiln.types import INDEX, ScalarType

#: how many simple iterations one parallel iteration containing a loop or call is assumed to cost
HEAVY_ITERATION_WEIGHT = 256


class ParallelEmitterMixin(EmitterState):
    """Parallel-loop lowering for FunctionEmitter (state and statements live there)."""

    # -- parallel loops ---------------------------------------------------------------------
    def parallel_dims(self, s: N.ParallelFor) -> list[tuple[ir.Value, ir.Value, ir.Value]]:
        """(start, step, trip count) of each dimension, as INDEX values (shared with NVPTX)."""
        dims = []
        for d in s.dims:
            start = self.convert(self.expr(d.start), d.start.type, INDEX)
            stop = self.convert(self.expr(d.stop), d.stop.type, INDEX)
            step = self.convert(self.expr(d.step), d.step.type, INDEX)
            dims.append((start, step, self.trip_count(start, stop, step, INDEX, d.step)))
        return dims

    def parallel_for(self, s: N.ParallelFor) -> None:
        b = self.b
        me = self.me
        dims = self.parallel_dims(s)
        total = dims[0][2]
        for _, _, c in dims[1:]:
            total = b.mul(total, c)
        # context: arrays, every scalar var (params + locals), per-dim start/step/count
        fields: list[tuple[str, ir.Value]] = []
        arr_names = list(self.arrays)
        for name in arr_names:
            a = self.arrays[name]
            fields.append(("a", a.ptr))
            fields += [("a", e) for e in a.extents]
        var_names = list(self.vars)
        for name in var_names:
            slot, t = self.vars[name]
            fields.append(("v", b.load(slot, typ=mem_type(t))))
        for start, step, cnt in dims:
            fields += [("d", start), ("d", step), ("d", cnt)]
        ctx_ty = ir.LiteralStructType([v.type for _, v in fields])
        ctx = _alloca(self.ab, ctx_ty, name=f"ctx{self.n_parallel}")
        zero32 = ir.Constant(I32, 0)
        for i, (_, v) in enumerate(fields):
            b.store(v, _gep(b, ctx, [zero32, ir.Constant(I32, i)], inbounds=True, source_etype=ctx_ty))
        body_fn = ir.Function(me.module, ir.FunctionType(VOID, [PTR, I64, I64]),
                              name=me.unique(f"kiln_body_{self.fir.name}_{self.n_parallel}"))
        body_fn.linkage = "internal"
        fn_attrs(body_fn)
        self.n_parallel += 1
        from kiln.codegen.emit import FunctionEmitter  # emit imports this module

        sub = FunctionEmitter(me, self.fir, body_fn)
        sub.in_parallel = True
        cptr, lo, hi = body_fn.args
        cptr.name, lo.name, hi.name = "ctx", "lo", "hi"
        ab = sub.ab

        def get(i: int) -> ir.Value:
            return ab.load(_gep(ab, cptr, [zero32, ir.Constant(I32, i)], inbounds=True,
                                  source_etype=ctx_ty), typ=ctx_ty.elements[i])

        i = 0
        for name in arr_names:
            a = self.arrays[name]
            ptr = get(i)
            ext = [get(i + 1 + k) for k in range(len(a.extents))]
            i += 1 + len(a.extents)
            sub.arrays[name] = _ArrayVal(ptr, ext, a.type)
        for name in var_names:
            _, t = self.vars[name]
            sub.new_var(name, t, get(i))
            i += 1
        dvals = []
        for _ in dims:
            dvals.append((get(i), get(i + 1), get(i + 2)))
            i += 3
        sub.emit_parallel_body(s, dvals, lo, hi)
        sub.finish()
        heavy = any(isinstance(n, (N.For, N.While, N.Call)) for n in walk(s.body))
        weight = ir.Constant(I64, HEAVY_ITERATION_WEIGHT if heavy else 1)
        b.call(me.parallel_for(), [body_fn, ctx, total, weight])

    def _dim_value(self, s: N.ParallelFor, k: int, dv: tuple[ir.Value, ir.Value, ir.Value],
                   j: ir.Value) -> ir.Value:
        """start + j * step, with constant start/step folded in the body."""
        d = s.dims[k]
        b = self.b
        start = const_value(INDEX, d.start.value) if isinstance(d.start, N.Const) else dv[0]
        step = const_value(INDEX, d.step.value) if isinstance(d.step, N.Const) else dv[1]
        return b.add(start, b.mul(j, step))

    def emit_parallel_body(self, s: N.ParallelFor, dvals: list, lo: ir.Value, hi: ir.Value) -> None:
        """The chunk [lo, hi) of `s`: its iterations, then the merge of its privatised
        reductions (scalar accumulators, and private array copies where they apply)."""
        self.start_reductions(s)
        arrays = array_reductions(s)
        if arrays:
            self.emit_privatised_chunk(s, arrays, dvals, lo, hi)
        else:
            self.emit_chunk_loop(s, dvals, lo, hi)
        self.flush_reductions(s)

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
                b.store(self.convert(self._dim_value(s, k, dvals[k], idx), INDEX, t), slot)
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
        b.store(self.convert(self._dim_value(s, ndim - 1, dvals[-1], j), INDEX, t), slot)
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

    # -- privatised reductions (see kiln/codegen/reductions.py) -------------------------------
    def start_reductions(self, s: N.ParallelFor) -> None:
        for key in find_reductions(s):
            dtype = self.arrays[key[0]].dtype
            acc = _alloca(self.ab, mem_type(dtype), name=f"red.{key[0]}")
            self.ab.store(self._identity(key[1], dtype), acc)
            touched = _alloca(self.ab, I1, name=f"red.{key[0]}.touched")
            self.ab.store(ir.Constant(I1, 0), touched)
            self.reductions[key] = (acc, touched)

    def _identity(self, op: N.AtomicOp, t: ScalarType) -> ir.Constant:
        if op in (N.AtomicOp.MIN, N.AtomicOp.MAX):
            lo = op == N.AtomicOp.MAX
            if t.is_float:
                return ir.Constant(reg_type(t), float("-inf") if lo else float("inf"))
            bits = t.bits
            if t.kind == "i":
                return ir.Constant(reg_type(t), -(1 << (bits - 1)) if lo else (1 << (bits - 1)) - 1)
            return ir.Constant(reg_type(t), 0 if lo else (1 << bits) - 1)
        if op == N.AtomicOp.AND:
            return ir.Constant(reg_type(t), -1)
        return ir.Constant(reg_type(t), 0.0 if t.is_float else 0)

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

    def flush_reductions(self, s: N.ParallelFor) -> None:
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
            b.atomic_rmw(atomicrmw_op(op.value, t), p, val, "monotonic")
            b.branch(done)
            b.position_at_end(done)
        self.reductions = {}

    # -- privatised arrays (histograms; see reductions.array_reductions) ---------------------
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
            buf = _alloca(self.ab, ir.ArrayType(mem_type(a.dtype), PRIVATE_LIMIT), name=f"priv.{name}")
            buf.align = 64
            bufs[name] = buf
        priv_bb = fn.append_basic_block("priv.chunk")
        atomic_bb = fn.append_basic_block("atomic.chunk")
        join = fn.append_basic_block("chunk.done")
        b.cbranch(fits, priv_bb, atomic_bb)

        # Private version: clear the copies to the op's identity and point the arrays at them
        # (same extents, so indexing is unchanged) while the loop is emitted.
        b.position_at_end(priv_bb)
        for name, op in arrays.items():
            self._fill_identity(bufs[name], counts[name], op, real[name].dtype)
            self.arrays[name] = _ArrayVal(bufs[name], real[name].extents, real[name].type)
        self.private = set(arrays)
        try:
            self.emit_chunk_loop(s, dvals, lo, hi)
        finally:
            self.private = set()
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
        subtracts here and the merge adds the net delta (see array_reductions)."""
        b = self.b
        p, a = self.element_ptr(e.array, e.indices)
        t = a.dtype                       # never bool: mem_type == reg_type
        v = self.convert(self.expr(e.value), e.value.type, t)
        old = b.load(p, typ=reg_type(t), align=t.itemsize)
        b.store(self.rmw_op(e.op, old, v, t), p, align=t.itemsize)

    def _index_loop(self, n: ir.Value, name: str, body) -> None:
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
        ident = self._identity(op, t)
        ty = reg_type(t)
        if ident.constant == 0:           # ADD/SUB, OR, XOR, unsigned MAX: all-zero bytes
            memset = self.me.declare("llvm.memset.p0.i64", VOID, [PTR, I8, I64, I1])
            b.call(memset, [buf, ir.Constant(I8, 0), b.mul(count, ir.Constant(I64, t.itemsize)),
                            ir.Constant(I1, 0)])
        else:
            self._index_loop(count, "priv.init", lambda k: b.store(
                ident, _gep(b, buf, [k], source_etype=ty), align=t.itemsize))

    def _merge_private(self, buf: ir.Value, count: ir.Value, op: N.AtomicOp, a: _ArrayVal) -> None:
        """for k in [0, count): if copy[k] != identity: atomically real[k] = real[k] <op> copy[k].
        Elements still at the identity would not change the array, so they cost no atomic (a
        NaN float compares unequal and is merged)."""
        b = self.b
        t = a.dtype
        ty = reg_type(t)
        ident = self._identity(op, t)
        llop = atomicrmw_op(op.value, t)

        def merge(k: ir.Value) -> None:
            v = b.load(_gep(b, buf, [k], source_etype=ty), typ=ty, align=t.itemsize)
            changed = (b.fcmp_unordered("!=", v, ident) if t.is_float
                       else b.icmp_unsigned("!=", v, ident))
            with b.if_then(changed):
                b.atomic_rmw(llop, _gep(b, a.ptr, [k], source_etype=ty), v, "monotonic")

        self._index_loop(count, "priv.merge", merge)

