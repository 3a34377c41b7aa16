"""`CpuModuleEmitter`: the x86-64 module: runtime hook globals, kernel implementations with
their packed-argument entries and PyObject wrappers, graph entries, and the `kiln_parallel_for`
helper that CPU parallel loops (kiln.codegen.cpu_body) call. See kiln.codegen.target for the
object contract these implement."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
from llvmlite import ir

from kiln.abi import SLOT, ParamLayout, block_size, layout_params
from kiln.codegen.cpu_body import CpuBodyEmitter
from kiln.codegen.llvm_util import (
    I8,
    I32,
    I64,
    PTR,
    VOID,
    FnPointer,
    alloca,
    fn_attrs,
    gep,
    mem_type,
    runtime_global,
)
from kiln.codegen.module_base import ModuleEmitterBase
from kiln.config import TUNING
from kiln.errors import KilnError
from kiln.ir import nodes as N
from kiln.ir.graph import ArgBinding, ConstBinding, GraphIR
from kiln.runtime.debug_record import STATUS_CHECK_FAILED
from kiln.types import SCALARS_BY_NAME, NdArrayType, ScalarType

#: the parallel-loop body type: void body(ptr ctx, i64 lo, i64 hi)
_BODY_TY = ir.FunctionType(VOID, [PTR, I64, I64])
#: what the GOMP trampoline receives: {body, ctx, n}
_GOMP_DATA_TY = ir.LiteralStructType([PTR, PTR, I64])


class CpuModuleEmitter(ModuleEmitterBase):
    """The CPU module: kernels, graphs and the runtime helpers they use."""

    def __init__(self, triple: str = "", data_layout: str = "") -> None:
        super().__init__(triple, data_layout)
        self.kernel_entries: dict[str, ir.Function] = {}
        self.graph_symbols: dict[str, str] = {}
        self._parallel_for: ir.Function | None = None
        self._emit_runtime_globals()

    def new_body_emitter(self, fir: N.FunctionIR, fn: ir.Function) -> CpuBodyEmitter:
        return CpuBodyEmitter(self, fir, fn, self)

    def _emit_runtime_globals(self) -> None:
        m = self.module

        def gv(name: str, ty: ir.Type, init: ir.Constant) -> ir.GlobalVariable:
            self.used.add(name)
            return runtime_global(m, name, ty, init, 8 if ty != I32 else 4)

        self.g_gomp = gv("kiln_rt_gomp_parallel", PTR, ir.Constant(PTR, None))
        self.g_tnum = gv("kiln_rt_omp_get_thread_num", PTR, ir.Constant(PTR, None))
        self.g_tcount = gv("kiln_rt_omp_get_num_threads", PTR, ir.Constant(PTR, None))
        self.g_nthreads = gv("kiln_rt_num_threads", I32, ir.Constant(I32, 1))
        self.g_miniters = gv("kiln_rt_min_parallel_iters", I64, ir.Constant(I64, TUNING.min_parallel_iters))

    # -- kernels and graphs ----------------------------------------------------------------
    def add_kernels(self, kernels: Sequence[N.KernelIR]) -> None:
        todo = self.declare_funcs(kernels)
        for k in kernels:
            kf = k.kernel
            if kf.name in self.kernel_irs:
                raise KilnError(f"kernel {kf.name!r} given twice")
            self.kernel_irs[kf.name] = kf
            impl = ir.Function(self.module, self.function_type(kf), name=self.unique(f"kiln_impl_{kf.name}"))
            impl.linkage = "internal"
            # Never inline a kernel body into graph entries: a graph dispatching the same kernel
            # hundreds of times would otherwise compile (and load) hundreds of copies of it.
            fn_attrs(impl, "noinline")
            todo.append((kf, impl))
            sym = self.unique(f"kiln_kernel_{kf.name}")
            entry = ir.Function(self.module, ir.FunctionType(I32, [PTR]), name=sym)
            entry.linkage = "dso_local"
            fn_attrs(entry)
            self.kernel_entries[kf.name] = entry
            self.kernel_symbols[kf.name] = sym
            self._emit_entry(kf, impl, entry)
            self._emit_pyobj_wrapper(entry, layout_params([(p.name, p.type) for p in kf.params]))
        for f, fn in todo:
            self.emit_body(f, fn)
        self.debug.emit_table()
        self.prints.emit_table()

    def _emit_entry(self, kf: N.FunctionIR, impl: ir.Function, entry: ir.Function) -> None:
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        block = entry.args[0]
        block.name = "args"
        layout = layout_params([(p.name, p.type) for p in kf.params])
        args: list[ir.Value] = []
        for pl, p in zip(layout, kf.params):
            def at(off: int) -> ir.Value:
                return gep(b, block, [ir.Constant(I64, off)], inbounds=True, source_etype=I8)
            if isinstance(p.type, NdArrayType):
                args.append(b.load(at(pl.offset), typ=PTR, align=8, name=f"{p.name}.data"))
                for d in range(2 * p.type.rank):      # extents, then strides (kiln.abi)
                    args.append(b.load(at(pl.offset + SLOT * (d + 1)), typ=I64, align=8,
                                       name=f"{p.name}.{'ns'[d // p.type.rank]}{d % p.type.rank}"))
            else:
                t = p.type
                v = b.load(at(pl.offset), typ=mem_type(t), align=8, name=p.name)
                if t.is_bool:
                    v = b.icmp_unsigned("!=", v, ir.Constant(I8, 0))
                args.append(v)
        kidx = self.debug.kernel_index.get(kf.name)
        if kidx is None:
            b.call(impl, args)
            b.ret(ir.Constant(I32, 0))
            return
        # debug mode: say which kernel runs (for the error message), report a failed check
        b.store(ir.Constant(I64, kidx), self.debug.current_kernel(), align=8)
        b.call(impl, args)
        b.ret(b.select(self.debug.failed(b), ir.Constant(I32, STATUS_CHECK_FAILED), ir.Constant(I32, 0)))

    def _emit_pyobj_wrapper(self, entry: ir.Function, layout: list[ParamLayout]) -> None:
        """`int32 <entry>_pyobj(uint8_t *args, int64 data_offset, int64 strides_offset)`: like
        `entry`, but each ndarray data slot holds the address of a numpy array object whose data
        pointer sits at `data_offset` inside it, and whose byte strides are the int64 array that
        the pointer at `strides_offset` points to (this wrapper fills the block's stride slots
        from it, in elements). The runtime uses this when it has verified that layout, because
        reading `id(a)` in Python is far cheaper than asking numpy for the pointer and strides."""
        fn = ir.Function(self.module, ir.FunctionType(I32, [PTR, I64, I64]), name=f"{entry.name}_pyobj")
        fn.linkage = "dso_local"
        fn_attrs(fn)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        src, off, soff = fn.args
        nslots = max(1, block_size(layout) // SLOT)
        copy = alloca(b, ir.ArrayType(I64, nslots), name="block")
        copy.align = 8
        for s in range(nslots):
            v = b.load(gep(b, src, [ir.Constant(I64, SLOT * s)], source_etype=I8), typ=I64, align=8)
            b.store(v, gep(b, copy, [ir.Constant(I64, SLOT * s)], source_etype=I8), align=8)
        for p in layout:
            if p.kind != "ndarray":
                continue
            slot = gep(b, copy, [ir.Constant(I64, p.offset)], source_etype=I8)
            obj = b.load(slot, typ=PTR, align=8)
            data = b.load(gep(b, obj, [off], source_etype=I8), typ=PTR, align=8)
            b.store(data, slot, align=8)
            byte_strides = b.load(gep(b, obj, [soff], source_etype=I8), typ=PTR, align=8)
            shift = ir.Constant(I64, SCALARS_BY_NAME[p.dtype].itemsize.bit_length() - 1)
            for d in range(p.ndim):
                bs = b.load(gep(b, byte_strides, [ir.Constant(I64, d)], source_etype=I64), typ=I64, align=8)
                # not `exact`: an extent-1 dimension may carry any stride (never used)
                b.store(b.ashr(bs, shift), gep(b, copy, [ir.Constant(I64, p.offset + SLOT * (1 + p.ndim + d))],
                                               source_etype=I8), align=8)
        b.ret(b.call(entry, [copy]))

    def add_graphs(self, graphs: Sequence[GraphIR]) -> None:
        for g in graphs:
            sym = self.unique(f"kiln_graph_{g.name}")
            fn = ir.Function(self.module, ir.FunctionType(I32, [PTR]), name=sym)
            fn.linkage = "dso_local"
            fn_attrs(fn)
            self.graph_symbols[g.name] = sym
            self._emit_graph(g, fn)
            self._emit_pyobj_wrapper(fn, layout_params(list(g.params)))

    def _emit_graph(self, g: GraphIR, fn: ir.Function) -> None:
        """The graph entry: ONE loop over a constant dispatch table (kiln.codegen.cpu_module
        `DispatchTable`), so the IR and LLVM's work grow with the distinct kernels, not with the
        dispatches. Per dispatch: fill one argument block from the table's slot moves (graph
        argument slot copies and baked constants' bit patterns), call the kernel's entry through
        a switch with one call site per distinct kernel, and return a non-zero status at once."""
        table = DispatchTable.build(g, self.kernel_irs)
        t_disp = self._table_global(f"{fn.name}.dispatch", _i32_bytes(table.dispatch_record))
        t_rec = self._table_global(f"{fn.name}.record", _i32_bytes(table.records_flat()))
        t_move = self._table_global(f"{fn.name}.move", _i32_bytes(table.moves_flat()))
        t_bits = self._table_global(f"{fn.name}.bits", struct.pack(f"<{len(table.const_bits)}Q", *table.const_bits))
        src = fn.args[0]
        entry = fn.append_basic_block("entry")
        head, moves, move, move_body, call = (fn.append_basic_block(n) for n in
                                              ("dispatch", "moves", "move", "move.body", "call"))
        after, fail, nxt, done = (fn.append_basic_block(n) for n in ("after", "fail", "next", "done"))
        b = ir.IRBuilder(entry)
        blk = alloca(b, ir.ArrayType(I64, table.max_slots), name="blk")
        blk.align = 8
        b.branch(head)

        def load_i32(t: ir.Value, index: ir.Value) -> ir.Value:
            return b.load(gep(b, t, [index], source_etype=I32), typ=I32, align=4)

        # for d in range(len(dispatches)): rec = dispatch_record[d]
        b.position_at_end(head)
        d = b.phi(I32, name="d")
        d.add_incoming(ir.Constant(I32, 0), entry)
        b.cbranch(b.icmp_signed("<", d, ir.Constant(I32, len(table.dispatch_record))), moves, done)
        b.position_at_end(moves)
        rec = b.mul(load_i32(t_disp, d), ir.Constant(I32, 3))
        kidx = load_i32(t_rec, rec)
        m0 = load_i32(t_rec, b.add(rec, ir.Constant(I32, 1)))
        m_end = b.add(m0, load_i32(t_rec, b.add(rec, ir.Constant(I32, 2))))
        b.branch(move)
        # for m in range(m0, m_end): blk[dst[m]] = src[slot[m]] if slot[m] >= 0 else bits[-1 - slot[m]]
        b.position_at_end(move)
        m = b.phi(I32, name="m")
        m.add_incoming(m0, moves)
        b.cbranch(b.icmp_signed("<", m, m_end), move_body, call)
        b.position_at_end(move_body)
        dst = load_i32(t_move, b.mul(m, ir.Constant(I32, 2)))
        slot = load_i32(t_move, b.add(b.mul(m, ir.Constant(I32, 2)), ir.Constant(I32, 1)))
        from_arg = b.icmp_signed(">=", slot, ir.Constant(I32, 0))
        arg_slot = b.select(from_arg, slot, ir.Constant(I32, 0))
        bits_slot = b.select(from_arg, ir.Constant(I32, 0), b.sub(ir.Constant(I32, -1), slot))
        v_arg = b.load(gep(b, src, [b.zext(arg_slot, I64)], source_etype=I64), typ=I64, align=8)
        v_bits = b.load(gep(b, t_bits, [b.zext(bits_slot, I64)], source_etype=I64), typ=I64, align=8)
        b.store(b.select(from_arg, v_arg, v_bits), gep(b, blk, [b.zext(dst, I64)], source_etype=I64), align=8)
        m.add_incoming(b.add(m, ir.Constant(I32, 1)), move_body)
        b.branch(move)
        # switch (kernel index): one call site per distinct kernel
        b.position_at_end(call)
        sw = b.switch(kidx, after)
        statuses: list[tuple[ir.Value, ir.Block]] = []
        for i, name in enumerate(table.kernels):
            case = fn.append_basic_block(f"k{i}")
            sw.add_case(ir.Constant(I32, i), case)
            cb = ir.IRBuilder(case)
            statuses.append((cb.call(self.kernel_entries[name], [blk]), case))
            cb.branch(after)
        b.position_at_end(after)
        st = b.phi(I32, name="st")
        st.add_incoming(ir.Constant(I32, 0), call)
        for v, case in statuses:
            st.add_incoming(v, case)
        b.cbranch(b.icmp_signed("!=", st, ir.Constant(I32, 0)), fail, nxt)
        ir.IRBuilder(fail).ret(st)
        b.position_at_end(nxt)
        d.add_incoming(b.add(d, ir.Constant(I32, 1)), nxt)
        b.branch(head)
        b.position_at_end(done)
        b.ret(ir.Constant(I32, 0))

    def _table_global(self, name: str, data: bytes) -> ir.GlobalVariable:
        """An internal constant byte string: printed as one c"..." literal, whatever its length
        (one ir.Constant per entry costs ~100x more in llvmlite's Python formatting)."""
        raw = bytearray(data or bytes(8))
        ty = ir.ArrayType(I8, len(raw))
        gv = ir.GlobalVariable(self.module, ty, name=self.unique(name))
        gv.linkage = "internal"
        gv.global_constant = True
        gv.align = 8
        gv.initializer = ir.Constant(ty, raw)
        gv.type = PTR
        return gv

    # -- the parallel-loop runtime helper ------------------------------------------------------
    def parallel_for_fn(self) -> ir.Function:
        """Internal `void kiln_parallel_for(ptr body, ptr ctx, i64 n, i64 weight)`: runs
        `body(ctx, lo, hi)` over [0, n) on the GOMP team, or inline when that is not worth it."""
        if self._parallel_for is None:
            self._parallel_for = self._emit_parallel_for(self._emit_gomp_trampoline())
        return self._parallel_for

    def _emit_gomp_trampoline(self) -> ir.Function:
        """`void tramp(ptr data)`: what each GOMP thread runs: its share of [0, n), rounded to
        multiples of 16 iterations."""
        m = self.module
        tramp = ir.Function(m, ir.FunctionType(VOID, [PTR]), name=self.unique("kiln_gomp_trampoline"))
        tramp.linkage = "internal"
        fn_attrs(tramp)
        b = ir.IRBuilder(tramp.append_basic_block("entry"))
        data = tramp.args[0]
        zero32 = ir.Constant(I32, 0)

        def field(i: int, ty: ir.Type) -> ir.Value:
            p = gep(b, data, [zero32, ir.Constant(I32, i)], inbounds=True, source_etype=_GOMP_DATA_TY)
            return b.load(p, typ=ty, align=8)

        body = field(0, PTR)
        ctx = field(1, PTR)
        n = field(2, I64)
        i32fn = ir.FunctionType(I32, [])
        f_tid = b.load(self.g_tnum, typ=PTR, align=8)
        f_nt = b.load(self.g_tcount, typ=PTR, align=8)
        f_tid = FnPointer(f_tid, i32fn)
        f_nt = FnPointer(f_nt, i32fn)
        tid = b.sext(b.call(f_tid, []), I64)
        nt = b.sext(b.call(f_nt, []), I64)
        nt = b.select(b.icmp_signed("<", nt, ir.Constant(I64, 1)), ir.Constant(I64, 1), nt)
        chunk = b.sdiv(b.sub(b.add(n, nt), ir.Constant(I64, 1)), nt)
        chunk = b.and_(b.add(chunk, ir.Constant(I64, 15)), ir.Constant(I64, -16))
        lo = b.mul(tid, chunk)
        with b.if_then(b.icmp_signed("<", lo, n)):
            hi = b.add(lo, chunk)
            hi = b.select(b.icmp_signed("<", hi, n), hi, n)
            b.call(FnPointer(body, _BODY_TY), [ctx, lo, hi])
        b.ret_void()
        return tramp

    def _emit_parallel_for(self, tramp: ir.Function) -> ir.Function:
        m = self.module
        zero32 = ir.Constant(I32, 0)
        # weight: the caller's estimate of one iteration's work in "simple iterations", so that a
        # loop over 4000 rows, each a serial loop over 4000 columns, is not run on one thread.
        pf = ir.Function(m, ir.FunctionType(VOID, [PTR, PTR, I64, I64]), name=self.unique("kiln_parallel_for"))
        pf.linkage = "internal"
        fn_attrs(pf)
        fnp, ctx, n, weight = pf.args
        b = ir.IRBuilder(pf.append_basic_block("entry"))
        serial = pf.append_basic_block("serial")
        par = pf.append_basic_block("parallel")
        check2 = pf.append_basic_block("check")
        g = b.load(self.g_gomp, typ=PTR, align=8)
        gt = b.load(self.g_tnum, typ=PTR, align=8)
        gn = b.load(self.g_tcount, typ=PTR, align=8)
        nthreads = b.load(self.g_nthreads, typ=I32, align=4)
        miniters = b.load(self.g_miniters, typ=I64, align=8)
        null = ir.Constant(PTR, None)
        nonull = b.and_(b.and_(b.icmp_unsigned("!=", g, null), b.icmp_unsigned("!=", gt, null)),
                        b.icmp_unsigned("!=", gn, null))
        b.cbranch(nonull, check2, serial)
        b.position_at_end(check2)
        ok = b.and_(b.icmp_signed(">", nthreads, ir.Constant(I32, 1)), b.icmp_signed(">=", b.mul(n, weight), miniters))
        b.cbranch(ok, par, serial)
        b.position_at_end(serial)
        with b.if_then(b.icmp_signed(">", n, ir.Constant(I64, 0))):
            b.call(FnPointer(fnp, _BODY_TY), [ctx, ir.Constant(I64, 0), n])
        b.ret_void()
        b.position_at_end(par)
        d = alloca(b, _GOMP_DATA_TY, name="data")
        for i, v in enumerate((fnp, ctx, n)):
            b.store(v, gep(b, d, [zero32, ir.Constant(I32, i)], inbounds=True, source_etype=_GOMP_DATA_TY), align=8)
        b.call(FnPointer(g, ir.FunctionType(VOID, [PTR, PTR, I32, I32])), [tramp, d, nthreads, zero32])
        b.ret_void()
        return pf


_FLOAT_DTYPES = {16: np.float16, 32: np.float32, 64: np.float64}


def _i32_bytes(values: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


def const_slot_bits(t: ScalarType, value: bool | float) -> int:
    """The 8-byte argument slot of a baked scalar constant, as an unsigned integer: the value's
    bit pattern zero-extended (what a kernel entry reads back with its own type)."""
    if t.is_bool:
        return int(bool(value))
    if t.is_int:
        return int(value) & ((1 << t.bits) - 1)
    raw = np.array(float(value), dtype=_FLOAT_DTYPES[t.bits]).tobytes()   # numpy rounds as LLVM does
    return int.from_bytes(raw, "little")


class DispatchTable:
    """A graph's dispatches as constant data. `dispatch_record[d]` is the index of dispatch d's
    record; a record is (kernel index, first move, move count), shared by every dispatch with the
    same kernel and bindings; a move is (destination slot in the kernel's block, source): source
    >= 0 is a slot of the graph's block, -1 - i is `const_bits[i]`. Sizes are O(N) only in
    `dispatch_record` (4 bytes per dispatch)."""

    def __init__(self) -> None:
        self.kernels: list[str] = []
        self.dispatch_record: list[int] = []
        self.records: list[tuple[int, int, int]] = []
        self.moves: list[tuple[int, int]] = []
        self.const_bits: list[int] = []
        self.max_slots = 1

    @classmethod
    def build(cls, g: GraphIR, kernel_irs: dict[str, N.FunctionIR]) -> DispatchTable:
        t = cls()
        glayout = {p.name: p for p in layout_params(list(g.params))}
        kernel_index: dict[str, int] = {}
        record_index: dict[tuple[str, tuple[ArgBinding | ConstBinding, ...]], int] = {}
        layouts: dict[str, list] = {}
        consts: dict[int, int] = {}
        for d in g.dispatches:
            key = (d.kernel, d.bindings)
            r = record_index.get(key)
            if r is None:
                kf = kernel_irs.get(d.kernel)
                if kf is None:
                    raise KilnError(f"graph {g.name!r} dispatches kernel {d.kernel!r}, which is not "
                                    "being compiled")
                if d.kernel not in layouts:
                    layouts[d.kernel] = layout_params([(p.name, p.type) for p in kf.params])
                    kernel_index[d.kernel] = len(t.kernels)
                    t.kernels.append(d.kernel)
                first = len(t.moves)
                t._add_moves(g, d.kernel, kf, layouts[d.kernel], d.bindings, glayout, consts)
                r = record_index[key] = len(t.records)
                t.records.append((kernel_index[d.kernel], first, len(t.moves) - first))
            t.dispatch_record.append(r)
        return t

    def _add_moves(self, g: GraphIR, kname: str, kf: N.FunctionIR, klayout: list,
                   bindings: tuple[ArgBinding | ConstBinding, ...], glayout: dict, consts: dict[int, int]) -> None:
        if len(bindings) != len(kf.params):
            raise KilnError(f"graph {g.name!r}: dispatch of {kname!r} has "
                            f"{len(bindings)} bindings for {len(kf.params)} parameters")
        self.max_slots = max(self.max_slots, block_size(klayout) // SLOT)
        for pl, bind in zip(klayout, bindings):
            if isinstance(bind, ArgBinding):
                gp = glayout.get(bind.name)
                if gp is None:
                    raise KilnError(f"graph {g.name!r} has no parameter {bind.name!r}")
                if gp.size != pl.size:
                    raise KilnError(f"graph {g.name!r}: parameter {bind.name!r} does not "
                                    f"match {kname}.{pl.name}")
                for s in range(pl.size // SLOT):
                    self.moves.append((pl.offset // SLOT + s, gp.offset // SLOT + s))
            else:
                bits = const_slot_bits(bind.type, bind.value)
                i = consts.get(bits)
                if i is None:
                    i = consts[bits] = len(self.const_bits)
                    self.const_bits.append(bits)
                self.moves.append((pl.offset // SLOT, -1 - i))

    def records_flat(self) -> list[int]:
        return [x for r in self.records for x in r]

    def moves_flat(self) -> list[int]:
        return [x for mv in self.moves for x in mv]
