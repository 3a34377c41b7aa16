"""`ModuleEmitter`: owns the llvmlite module and its global names: runtime globals, @kl.func
declarations, kernel implementations and their packed-argument entries and PyObject wrappers,
graph entries, the `kiln_parallel_for` runtime helper and integer power functions. Function
bodies are emitted by kiln.codegen.emit.FunctionEmitter."""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from kiln.abi import SLOT, block_size, layout_params
from kiln.codegen.llvm_util import (
    _FSUFFIX,
    I1,
    I8,
    I32,
    I64,
    PTR,
    VOID,
    _alloca,
    _Callee,
    _gep,
    c_ident,
    const_value,
    fn_attrs,
    mem_type,
    reg_type,
)
from kiln.errors import KilnError
from kiln.ir import nodes as N
from kiln.ir.graph import ArgBinding, GraphIR
from kiln.types import NdArrayType, ScalarType


class ModuleEmitter:
    """Owns the llvmlite module and its global names."""

    def __init__(self, triple: str = "", data_layout: str = "") -> None:
        self.module = ir.Module(name="kiln")
        if triple:
            self.module.triple = triple
        if data_layout:
            self.module.data_layout = data_layout
        self.used: set[str] = set()
        self.func_irs: dict[str, N.FunctionIR] = {}
        self.funcs: dict[str, ir.Function] = {}        # FunctionIR.name -> internal function
        self.kernel_irs: dict[str, N.FunctionIR] = {}
        self.kernel_entries: dict[str, ir.Function] = {}
        self.kernel_symbols: dict[str, str] = {}
        self.graph_symbols: dict[str, str] = {}
        self._parallel_for: ir.Function | None = None
        self._ipow: dict[str, ir.Function] = {}
        self._emit_runtime_globals()

    # -- names and declarations -----------------------------------------------------------
    def unique(self, base: str) -> str:
        base = c_ident(base)
        name, k = base, 1
        while name in self.used or name in self.module.globals:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def declare(self, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
        g = self.module.globals.get(name)
        if g is None:
            g = ir.Function(self.module, ir.FunctionType(ret, list(args)), name=name)
        return g

    def intrinsic(self, base: str, t: ScalarType, nargs: int = 1) -> ir.Function:
        ty = reg_type(t)
        return self.declare(f"{base}.{_FSUFFIX[t.bits]}", ty, [ty] * nargs)

    def _emit_runtime_globals(self) -> None:
        m = self.module

        def gv(name: str, ty: ir.Type, init: ir.Constant) -> ir.GlobalVariable:
            g = ir.GlobalVariable(m, ty, name)
            g.initializer = init
            g.storage_class = "dso_local"
            g.align = 8 if ty != I32 else 4
            g.type = PTR
            self.used.add(name)
            return g

        self.g_gomp = gv("kiln_rt_gomp_parallel", PTR, ir.Constant(PTR, None))
        self.g_tnum = gv("kiln_rt_omp_get_thread_num", PTR, ir.Constant(PTR, None))
        self.g_tcount = gv("kiln_rt_omp_get_num_threads", PTR, ir.Constant(PTR, None))
        self.g_nthreads = gv("kiln_rt_num_threads", I32, ir.Constant(I32, 1))
        self.g_miniters = gv("kiln_rt_min_parallel_iters", I64, ir.Constant(I64, 4096))

    # -- whole-program entry points -------------------------------------------------------
    def declare_funcs(self, kernels: Sequence[N.KernelIR]) -> list[tuple[N.FunctionIR, ir.Function]]:
        """Declare every @kl.func the kernels use (once each), so bodies may call any of them in
        any order; returns the (IR, LLVM function) pairs whose bodies still need emitting."""
        todo: list[tuple[N.FunctionIR, ir.Function]] = []
        for k in kernels:
            for f in k.funcs:
                if f.name in self.func_irs:
                    continue
                self.func_irs[f.name] = f
                fn = ir.Function(self.module, self._proto(f), name=self.unique(f"kiln_func_{f.name}"))
                fn.linkage = "internal"
                fn_attrs(fn)
                self.funcs[f.name] = fn
                todo.append((f, fn))
        return todo

    def add_kernels(self, kernels: Sequence[N.KernelIR]) -> None:
        todo = self.declare_funcs(kernels)
        for k in kernels:
            kf = k.kernel
            if kf.name in self.kernel_irs:
                raise KilnError(f"kernel {kf.name!r} given twice")
            self.kernel_irs[kf.name] = kf
            impl = ir.Function(self.module, self._proto(kf), name=self.unique(f"kiln_impl_{kf.name}"))
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
        from kiln.codegen.emit import FunctionEmitter  # emit imports this module

        for f, fn in todo:
            FunctionEmitter(self, f, fn).emit()

    def _proto(self, f: N.FunctionIR) -> ir.FunctionType:
        args: list[ir.Type] = []
        for p in f.params:
            if isinstance(p.type, NdArrayType):
                args += [PTR] + [I64] * p.type.ndim
            else:
                args.append(reg_type(p.type))
        ret = reg_type(f.ret) if (f.ret is not None and not f.is_kernel) else VOID
        return ir.FunctionType(ret, args)

    def _emit_entry(self, kf: N.FunctionIR, impl: ir.Function, entry: ir.Function) -> None:
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        block = entry.args[0]
        block.name = "args"
        layout = layout_params([(p.name, p.type) for p in kf.params])
        args: list[ir.Value] = []
        for pl, p in zip(layout, kf.params):
            def at(off: int) -> ir.Value:
                return _gep(b, block, [ir.Constant(I64, off)], inbounds=True, source_etype=I8)
            if isinstance(p.type, NdArrayType):
                args.append(b.load(at(pl.offset), typ=PTR, align=8, name=f"{p.name}.data"))
                for d in range(p.type.ndim):
                    args.append(b.load(at(pl.offset + SLOT * (d + 1)), typ=I64, align=8,
                                       name=f"{p.name}.n{d}"))
            else:
                t = p.type
                v = b.load(at(pl.offset), typ=mem_type(t), align=8, name=p.name)
                if t.is_bool:
                    v = b.icmp_unsigned("!=", v, ir.Constant(I8, 0))
                args.append(v)
        b.call(impl, args)
        b.ret(ir.Constant(I32, 0))

    def _emit_pyobj_wrapper(self, entry: ir.Function, layout: list) -> None:
        """`int32 <entry>_pyobj(uint8_t *args, int64 data_offset)`: like `entry`, but each ndarray
        data slot holds the address of a Python array object whose data pointer sits at
        `data_offset` inside it. The runtime uses this when it has verified that layout, because
        reading `id(a)` in Python is far cheaper than asking numpy for the pointer."""
        fn = ir.Function(self.module, ir.FunctionType(I32, [PTR, I64]), name=f"{entry.name}_pyobj")
        fn.linkage = "dso_local"
        fn_attrs(fn)
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        src, off = fn.args
        nslots = max(1, block_size(layout) // SLOT)
        copy = _alloca(b, ir.ArrayType(I64, nslots), name="block")
        copy.align = 8
        for s in range(nslots):
            v = b.load(_gep(b, src, [ir.Constant(I64, SLOT * s)], source_etype=I8), typ=I64, align=8)
            b.store(v, _gep(b, copy, [ir.Constant(I64, SLOT * s)], source_etype=I8), align=8)
        for p in layout:
            if p.kind != "ndarray":
                continue
            slot = _gep(b, copy, [ir.Constant(I64, p.offset)], source_etype=I8)
            obj = b.load(slot, typ=PTR, align=8)
            data = b.load(_gep(b, obj, [off], source_etype=I8), typ=PTR, align=8)
            b.store(data, slot, align=8)
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
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        src = fn.args[0]
        glayout = {p.name: p for p in layout_params(list(g.params))}
        for k, d in enumerate(g.dispatches):
            kf = self.kernel_irs.get(d.kernel)
            if kf is None:
                raise KilnError(f"graph {g.name!r} dispatches kernel {d.kernel!r}, which is not "
                                "being compiled")
            if len(d.bindings) != len(kf.params):
                raise KilnError(f"graph {g.name!r}: dispatch of {d.kernel!r} has "
                                f"{len(d.bindings)} bindings for {len(kf.params)} parameters")
            klayout = layout_params([(p.name, p.type) for p in kf.params])
            nslots = max(1, block_size(klayout) // SLOT)
            with b.goto_entry_block():
                blk = _alloca(b, ir.ArrayType(I64, nslots), name=f"blk{k}")
                blk.align = 8
            for pl, bind in zip(klayout, d.bindings):
                dst = _gep(b, blk, [ir.Constant(I64, pl.offset)], inbounds=True, source_etype=I8)
                if isinstance(bind, ArgBinding):
                    gp = glayout.get(bind.name)
                    if gp is None:
                        raise KilnError(f"graph {g.name!r} has no parameter {bind.name!r}")
                    if gp.size != pl.size:
                        raise KilnError(f"graph {g.name!r}: parameter {bind.name!r} does not "
                                        f"match {d.kernel}.{pl.name}")
                    for s in range(pl.size // SLOT):
                        sp = _gep(b, src, [ir.Constant(I64, gp.offset + SLOT * s)], inbounds=True,
                                   source_etype=I8)
                        v = b.load(sp, typ=I64, align=8)
                        dp = _gep(b, dst, [ir.Constant(I64, SLOT * s)], inbounds=True, source_etype=I8)
                        b.store(v, dp, align=8)
                else:
                    t = bind.type
                    b.store(ir.Constant(I64, 0), dst, align=8)
                    c = const_value(t, bind.value)
                    if t.is_bool:
                        c = ir.Constant(I8, int(bool(bind.value)))
                    b.store(c, dst, align=8)
            st = b.call(self.kernel_entries[d.kernel], [blk], name=f"st{k}")
            bad = b.icmp_signed("!=", st, ir.Constant(I32, 0))
            with b.if_then(bad, likely=False):
                b.ret(st)
        b.ret(ir.Constant(I32, 0))

    # -- helpers shared by functions ------------------------------------------------------
    def ipow(self, t: ScalarType) -> ir.Function:
        """Internal `T kiln_ipow_T(T base, T exp)` by repeated squaring."""
        fn = self._ipow.get(t.name)
        if fn is not None:
            return fn
        ty = reg_type(t)
        fn = ir.Function(self.module, ir.FunctionType(ty, [ty, ty]), name=self.unique(f"kiln_ipow_{t.name}"))
        fn.linkage = "internal"
        fn_attrs(fn)
        base, exp = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        one = ir.Constant(ty, 1)
        zero = ir.Constant(ty, 0)
        loop = fn.append_basic_block("loop")
        done = fn.append_basic_block("done")
        if t.is_signed:
            neg = fn.append_basic_block("neg")
            pos = fn.append_basic_block("pos")
            b.cbranch(b.icmp_signed("<", exp, zero), neg, pos)
            b.position_at_end(neg)
            is_one = b.icmp_signed("==", base, one)
            is_m1 = b.icmp_signed("==", base, ir.Constant(ty, -1))
            odd = b.trunc(exp, I1)
            m1 = b.select(odd, ir.Constant(ty, -1), one)
            b.ret(b.select(is_one, one, b.select(is_m1, m1, zero)))
            b.position_at_end(pos)
        pre = b.block
        b.branch(loop)
        b.position_at_end(loop)
        acc = b.phi(ty, "acc")
        bb = b.phi(ty, "b")
        e = b.phi(ty, "e")
        acc.add_incoming(one, pre)
        bb.add_incoming(base, pre)
        e.add_incoming(exp, pre)
        odd = b.trunc(e, I1)
        acc2 = b.select(odd, b.mul(acc, bb), acc)
        e2 = b.lshr(e, one)
        bb2 = b.mul(bb, bb)
        acc.add_incoming(acc2, loop)
        bb.add_incoming(bb2, loop)
        e.add_incoming(e2, loop)
        b.cbranch(b.icmp_unsigned("==", e2, zero), done, loop)
        b.position_at_end(done)
        b.ret(acc2)
        self._ipow[t.name] = fn
        return fn

    def parallel_for(self) -> ir.Function:
        """Internal `void kiln_parallel_for(ptr fn, ptr ctx, i64 n)` and its GOMP trampoline."""
        if self._parallel_for is not None:
            return self._parallel_for
        m = self.module
        body_ty = ir.FunctionType(VOID, [PTR, I64, I64])
        data_ty = ir.LiteralStructType([PTR, PTR, I64])
        # trampoline: void tramp(ptr data)
        tramp = ir.Function(m, ir.FunctionType(VOID, [PTR]), name=self.unique("kiln_gomp_trampoline"))
        tramp.linkage = "internal"
        fn_attrs(tramp)
        b = ir.IRBuilder(tramp.append_basic_block("entry"))
        data = tramp.args[0]
        zero32 = ir.Constant(I32, 0)

        def field(i: int, ty: ir.Type) -> ir.Value:
            p = _gep(b, data, [zero32, ir.Constant(I32, i)], inbounds=True, source_etype=data_ty)
            return b.load(p, typ=ty, align=8)

        body = field(0, PTR)
        ctx = field(1, PTR)
        n = field(2, I64)
        i32fn = ir.FunctionType(I32, [])
        f_tid = b.load(self.g_tnum, typ=PTR, align=8)
        f_nt = b.load(self.g_tcount, typ=PTR, align=8)
        f_tid = _Callee(f_tid, i32fn)
        f_nt = _Callee(f_nt, i32fn)
        tid = b.sext(b.call(f_tid, []), I64)
        nt = b.sext(b.call(f_nt, []), I64)
        nt = b.select(b.icmp_signed("<", nt, ir.Constant(I64, 1)), ir.Constant(I64, 1), nt)
        chunk = b.sdiv(b.sub(b.add(n, nt), ir.Constant(I64, 1)), nt)
        chunk = b.and_(b.add(chunk, ir.Constant(I64, 15)), ir.Constant(I64, -16))
        lo = b.mul(tid, chunk)
        with b.if_then(b.icmp_signed("<", lo, n)):
            hi = b.add(lo, chunk)
            hi = b.select(b.icmp_signed("<", hi, n), hi, n)
            b.call(_Callee(body, body_ty), [ctx, lo, hi])
        b.ret_void()

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
            b.call(_Callee(fnp, body_ty), [ctx, ir.Constant(I64, 0), n])
        b.ret_void()
        b.position_at_end(par)
        d = _alloca(b, data_ty, name="data")
        for i, v in enumerate((fnp, ctx, n)):
            b.store(v, _gep(b, d, [zero32, ir.Constant(I32, i)], inbounds=True, source_etype=data_ty), align=8)
        b.call(_Callee(g, ir.FunctionType(VOID, [PTR, PTR, I32, I32])), [tramp, d, nthreads, zero32])
        b.ret_void()
        self._parallel_for = pf
        return pf
