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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from llvmlite import ir

from kiln.abi import SLOT, block_size, layout_params
from kiln.codegen.reductions import (
    PRIVATE_LIMIT,
    ReductionKey,
    array_reductions,
    find_reductions,
    reduction_key,
)
from kiln.errors import KernelError, KilnError
from kiln.ir import nodes as N
from kiln.ir.analysis import walk
from kiln.ir.builtins import BUILTINS, as_float
from kiln.ir.graph import ArgBinding, GraphIR
from kiln.types import INDEX, NdArrayType, ScalarType, f32, f64, i64

I1 = ir.IntType(1)
#: how many simple iterations one parallel iteration containing a loop or call is assumed to cost
HEAVY_ITERATION_WEIGHT = 256
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
HALF = ir.HalfType()
FLOAT = ir.FloatType()
DOUBLE = ir.DoubleType()
VOID = ir.VoidType()

_FLOATS = {16: HALF, 32: FLOAT, 64: DOUBLE}
_FSUFFIX = {16: "f16", 32: "f32", 64: "f64"}


def reg_type(t: ScalarType) -> ir.Type:
    if t.is_bool:
        return I1
    if t.is_float:
        return _FLOATS[t.bits]
    return ir.IntType(t.bits)


def mem_type(t: ScalarType) -> ir.Type:
    return I8 if t.is_bool else reg_type(t)


def c_ident(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s or "_"


def _err(msg: str, loc: N.Loc | None = None) -> KernelError:
    if loc is None:
        return KernelError(msg)
    return KernelError(msg, filename=loc.filename, lineno=loc.line, col=loc.col)


def const_value(t: ScalarType, value: bool | float) -> ir.Constant:
    ty = reg_type(t)
    if t.is_bool:
        return ir.Constant(I1, int(bool(value)))
    if t.is_int:
        v = int(value) & ((1 << t.bits) - 1)
        if v >= 1 << (t.bits - 1):
            v -= 1 << t.bits
        return ir.Constant(ty, v)
    return ir.Constant(ty, float(value))


def _gep(b: ir.IRBuilder, ptr: ir.Value, indices: list, inbounds: bool = True,
         source_etype: ir.Type | None = None, name: str = "") -> ir.Value:
    g = b.gep(ptr, indices, inbounds=inbounds, source_etype=source_etype, name=name)
    g.type = PTR       # opaque pointers throughout
    return g


def _alloca(b: ir.IRBuilder, ty: ir.Type, name: str = "") -> ir.Value:
    a = b.alloca(ty, name=name)
    a.type = PTR
    return a


class _Callee:
    """A function pointer value made callable for llvmlite's IRBuilder.call."""

    def __init__(self, v: ir.Value, fnty: ir.FunctionType) -> None:
        self.v = v
        self.type = v.type
        self.function_type = fnty

    def get_reference(self) -> str:
        return self.v.get_reference()


def fn_attrs(fn: ir.Function, *extra: str) -> ir.Function:
    fn.attributes.add("nounwind")
    for a in extra:
        fn.attributes.add(a)
    return fn


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


class _ArrayVal:
    def __init__(self, ptr: ir.Value, extents: list[ir.Value], t: NdArrayType) -> None:
        self.ptr = ptr
        self.extents = extents
        self.type = t

    @property
    def dtype(self) -> ScalarType:
        assert self.type.dtype is not None
        return self.type.dtype


class FunctionEmitter:
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

    # -- parallel loops ---------------------------------------------------------------------
    def parallel_for(self, s: N.ParallelFor) -> None:
        b = self.b
        me = self.me
        dims = []
        for d in s.dims:
            start = self.convert(self.expr(d.start), d.start.type, INDEX)
            stop = self.convert(self.expr(d.stop), d.stop.type, INDEX)
            step = self.convert(self.expr(d.step), d.step.type, INDEX)
            dims.append((start, step, self.trip_count(start, stop, step, INDEX, d.step)))
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
            if t.is_float:
                llop = {"add": "fadd", "sub": "fsub", "min": "fmin", "max": "fmax"}[op.value]
            elif op.value in ("min", "max"):
                llop = ("" if t.kind == "i" else "u") + op.value
            else:
                llop = self._ATOMIC_INT[op.value]
            b.atomic_rmw(llop, p, val, "monotonic")
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
        if t.is_float:
            llop = {"add": "fadd", "min": "fmin", "max": "fmax"}[op.value]
        elif op.value in ("min", "max"):
            llop = ("" if t.kind == "i" else "u") + op.value
        else:
            llop = self._ATOMIC_INT[op.value]

        def merge(k: ir.Value) -> None:
            v = b.load(_gep(b, buf, [k], source_etype=ty), typ=ty, align=t.itemsize)
            changed = (b.fcmp_unordered("!=", v, ident) if t.is_float
                       else b.icmp_unsigned("!=", v, ident))
            with b.if_then(changed):
                b.atomic_rmw(llop, _gep(b, a.ptr, [k], source_etype=ty), v, "monotonic")

        self._index_loop(count, "priv.merge", merge)

    # -- expressions ------------------------------------------------------------------------
    def expr(self, e: N.Expr) -> ir.Value:
        m = getattr(self, "e_" + type(e).__name__, None)
        if m is None:
            raise _err(f"codegen: unsupported expression {type(e).__name__}", e.loc)
        return m(e)

    def e_Const(self, e: N.Const) -> ir.Value:
        return const_value(e.type, e.value)

    def e_Var(self, e: N.Var) -> ir.Value:
        slot, t = self.var_slot(e.name, e.loc)
        v = self.from_mem(self.b.load(slot, typ=mem_type(t)), t, self.b)
        return self.convert(v, t, e.type)

    def e_Shape(self, e: N.Shape) -> ir.Value:
        return self.convert(self.array(e.array).extents[e.dim], INDEX, e.type)

    def e_Load(self, e: N.Load) -> ir.Value:
        p, a = self.element_ptr(e.array, e.indices)
        t = a.dtype
        v = self.from_mem(self.b.load(p, typ=mem_type(t), align=t.itemsize), t, self.b)
        return self.convert(v, t, e.type)

    def e_Unary(self, e: N.Unary) -> ir.Value:
        b = self.b
        v = self.expr(e.operand)
        t = e.type
        v = self.convert(v, e.operand.type, t) if e.op is not N.UnaryOp.NOT else v
        if e.op is N.UnaryOp.NEG:
            if t.is_float:
                return b.fneg(v)
            return b.sub(ir.Constant(v.type, 0), v)
        if e.op is N.UnaryOp.NOT:
            if not e.operand.type.is_bool:
                v = self.convert(v, e.operand.type, ScalarType("bool", "b", 1))
            return b.xor(v, ir.Constant(I1, 1))
        # INVERT
        if t.is_float:
            raise _err("codegen: ~ on a float", e.loc)
        return b.xor(v, ir.Constant(v.type, -1 if not t.is_bool else 1))

    def e_Binary(self, e: N.Binary) -> ir.Value:
        t = e.type
        lhs = self.convert(self.expr(e.lhs), e.lhs.type, t)
        rv = self.expr(e.rhs)
        if e.op in (N.BinaryOp.SHL, N.BinaryOp.SHR):
            return self.shift(e.op, lhs, t, rv, e.rhs.type)
        rhs = self.convert(rv, e.rhs.type, t)
        return self.binop(e.op, lhs, rhs, t, e.loc)

    def binop(self, op: N.BinaryOp, a: ir.Value, c: ir.Value, t: ScalarType, loc: N.Loc) -> ir.Value:
        b = self.b
        B = N.BinaryOp
        if t.is_float:
            if op is B.ADD:
                return b.fadd(a, c)
            if op is B.SUB:
                return b.fsub(a, c)
            if op is B.MUL:
                return b.fmul(a, c)
            if op is B.DIV:
                return b.fdiv(a, c)
            if op in (B.FLOORDIV, B.MOD):
                return self.float_divmod(a, c, t)[0 if op is B.FLOORDIV else 1]
            if op is B.POW:
                return self.float_intrinsic("llvm.pow", t, [a, c])
            raise _err(f"codegen: {op.value} on floats", loc)
        if op is B.ADD:
            return b.add(a, c)
        if op is B.SUB:
            return b.sub(a, c)
        if op is B.MUL:
            return b.mul(a, c)
        if op is B.BITAND:
            return b.and_(a, c)
        if op is B.BITOR:
            return b.or_(a, c)
        if op is B.BITXOR:
            return b.xor(a, c)
        if op in (B.FLOORDIV, B.MOD):
            return self.int_divmod(a, c, t)[0 if op is B.FLOORDIV else 1]
        if op is B.DIV:
            ft = as_float(t)
            return b.fdiv(self.convert(a, t, ft), self.convert(c, t, ft))
        if op is B.POW:
            if t.is_bool:
                return b.or_(a, b.xor(c, ir.Constant(I1, 1)))
            return b.call(self.me.ipow(t), [a, c])
        raise _err(f"codegen: unsupported operator {op.value}", loc)

    def int_divmod(self, a: ir.Value, c: ir.Value, t: ScalarType) -> tuple[ir.Value, ir.Value]:
        b = self.b
        ty = a.type
        zero = ir.Constant(ty, 0)
        one = ir.Constant(ty, 1)
        is0 = b.icmp_unsigned("==", c, zero)
        if t.kind != "i":
            d = b.select(is0, one, c)
            return b.select(is0, zero, b.udiv(a, d)), b.urem(a, d)
        ism1 = b.icmp_signed("==", c, ir.Constant(ty, -1))
        d = b.select(b.or_(is0, ism1), one, c)
        q = b.sdiv(a, d)
        r = b.srem(a, d)
        fix = b.and_(b.icmp_signed("!=", r, zero), b.icmp_signed("<", b.xor(r, c), zero))
        q = b.select(fix, b.sub(q, one), q)
        r = b.select(fix, b.add(r, c), r)
        q = b.select(ism1, b.sub(zero, a), q)
        q = b.select(is0, zero, q)
        return q, r

    def float_divmod(self, a: ir.Value, c: ir.Value, t: ScalarType) -> tuple[ir.Value, ir.Value]:
        """numpy's npy_divmod: (floordiv, mod)."""
        b = self.b
        if t.bits == 16:
            fa, fc = b.fpext(a, FLOAT), b.fpext(c, FLOAT)
            q, r = self.float_divmod(fa, fc, f32)
            return b.fptrunc(q, HALF), b.fptrunc(r, HALF)
        ty = a.type
        zero = ir.Constant(ty, 0.0)
        one = ir.Constant(ty, 1.0)
        mod = b.frem(a, c)
        div = b.fdiv(b.fsub(a, mod), c)
        nz = b.fcmp_unordered("!=", mod, zero)   # mod != 0 (NaN counts as nonzero)
        sign_diff = b.xor(b.fcmp_ordered("<", c, zero), b.fcmp_ordered("<", mod, zero))
        adj = b.and_(nz, sign_diff)
        mod_adj = b.select(adj, b.fadd(mod, c), mod)
        div_adj = b.select(adj, b.fsub(div, one), div)
        copysign = self.me.declare(f"llvm.copysign.{_FSUFFIX[t.bits]}", ty, [ty, ty])
        mod_f = b.select(nz, mod_adj, b.call(copysign, [zero, c]))
        floor = self.me.intrinsic("llvm.floor", t)
        fl = b.call(floor, [div_adj])
        fl = b.select(b.fcmp_ordered(">", b.fsub(div_adj, fl), ir.Constant(ty, 0.5)), b.fadd(fl, one), fl)
        dnz = b.fcmp_unordered("!=", div_adj, zero)
        q = b.select(dnz, fl, b.call(copysign, [zero, b.fdiv(a, c)]))
        # b == 0: numpy gives a / b for the quotient and fmod (NaN) for the remainder
        cz = b.fcmp_ordered("==", c, zero)
        q = b.select(cz, b.fdiv(a, c), q)
        mod_f = b.select(cz, mod, mod_f)
        return q, mod_f

    def shift(self, op: N.BinaryOp, a: ir.Value, t: ScalarType, n: ir.Value, nt: ScalarType) -> ir.Value:
        b = self.b
        n64 = self.int_to_i64(n, nt) if not nt.is_bool else b.zext(n, I64)
        if t.is_bool:
            return b.select(b.icmp_unsigned("==", n64, ir.Constant(I64, 0)), a, ir.Constant(I1, 0))
        bits = t.bits
        big = b.icmp_unsigned(">=", n64, ir.Constant(I64, bits))
        amt = b.and_(n64, ir.Constant(I64, bits - 1))
        amt = b.trunc(amt, a.type) if bits < 64 else amt
        if op is N.BinaryOp.SHL:
            return b.select(big, ir.Constant(a.type, 0), b.shl(a, amt))
        if t.kind == "i":
            sign = b.ashr(a, ir.Constant(a.type, bits - 1))
            return b.select(big, sign, b.ashr(a, amt))
        return b.select(big, ir.Constant(a.type, 0), b.lshr(a, amt))

    def e_Compare(self, e: N.Compare) -> ir.Value:
        t = e.lhs.type
        a = self.expr(e.lhs)
        c = self.convert(self.expr(e.rhs), e.rhs.type, t)
        b = self.b
        op = e.op.value
        if t.is_float:
            if e.op is N.CompareOp.NE:
                return b.fcmp_unordered("!=", a, c)
            return b.fcmp_ordered(op, a, c)
        if t.kind == "i":
            return b.icmp_signed(op, a, c)
        return b.icmp_unsigned(op, a, c)

    def _lazy_phi(self, cond: ir.Value, then_fn, else_fn, ty: ir.Type) -> ir.Value:
        b = self.b
        tb = self.fn.append_basic_block("sel.t")
        fb = self.fn.append_basic_block("sel.f")
        end = self.fn.append_basic_block("sel.end")
        b.cbranch(cond, tb, fb)
        b.position_at_end(tb)
        tv = then_fn()
        tend = b.block
        b.branch(end)
        b.position_at_end(fb)
        fv = else_fn()
        fend = b.block
        b.branch(end)
        b.position_at_end(end)
        phi = b.phi(ty)
        phi.add_incoming(tv, tend)
        phi.add_incoming(fv, fend)
        return phi

    def _as_bool(self, e: N.Expr) -> ir.Value:
        return self.convert(self.expr(e), e.type, ScalarType("bool", "b", 1))

    def e_Logical(self, e: N.Logical) -> ir.Value:
        lhs = self._as_bool(e.lhs)
        if e.op is N.LogicalOp.AND:
            return self._lazy_phi(lhs, lambda: self._as_bool(e.rhs), lambda: ir.Constant(I1, 0), I1)
        return self._lazy_phi(lhs, lambda: ir.Constant(I1, 1), lambda: self._as_bool(e.rhs), I1)

    def e_Select(self, e: N.Select) -> ir.Value:
        c = self._as_bool(e.cond)
        t = e.type
        return self._lazy_phi(c, lambda: self.convert(self.expr(e.if_true), e.if_true.type, t),
                              lambda: self.convert(self.expr(e.if_false), e.if_false.type, t),
                              reg_type(t))

    def e_Cast(self, e: N.Cast) -> ir.Value:
        return self.convert(self.expr(e.value), e.value.type, e.type)

    def e_Call(self, e: N.Call) -> ir.Value:
        fn = self.me.funcs.get(e.func)
        f = self.me.func_irs.get(e.func)
        if fn is None or f is None:
            raise _err(f"codegen: call of unknown func {e.func!r}", e.loc)
        if len(e.args) != len(f.params):
            raise _err(f"codegen: {e.func} takes {len(f.params)} arguments", e.loc)
        args: list[ir.Value] = []
        for a, p in zip(e.args, f.params):
            if isinstance(a, N.ArrayRef):
                av = self.array(a)
                args += [av.ptr, *av.extents]
            else:
                assert isinstance(p.type, ScalarType)
                args.append(self.convert(self.expr(a), a.type, p.type))
        r = self.b.call(fn, args)
        if f.ret is None:
            return ir.Constant(reg_type(e.type), None)
        return self.convert(r, f.ret, e.type)

    # -- atomics ----------------------------------------------------------------------------
    _ATOMIC_INT: ClassVar[dict[str, str]] = {"add": "add", "sub": "sub", "and": "and", "or": "or",
                                             "xor": "xor"}

    def atomic(self, op: N.AtomicOp, ref: N.ArrayRef, indices: tuple[N.Expr, ...], value: N.Expr,
               loc: N.Loc) -> ir.Value:
        p, a = self.element_ptr(ref, indices)
        t = a.dtype
        v = self.to_mem(self.convert(self.expr(value), value.type, t), t, self.b)
        name = op.value
        if t.is_float:
            llop = {"add": "fadd", "sub": "fsub", "min": "fmin", "max": "fmax"}.get(name)
        elif name in ("min", "max"):
            llop = ("" if t.kind == "i" else "u") + name
        else:
            llop = self._ATOMIC_INT.get(name)
        if llop is None:
            raise _err(f"codegen: atomic {name} on {t.name}", loc)
        old = self.b.atomic_rmw(llop, p, v, "monotonic")
        return self.from_mem(old, t, self.b)

    def rmw_op(self, op: N.AtomicOp, old: ir.Value, v: ir.Value, t: ScalarType) -> ir.Value:
        name = op.value
        if name in ("min", "max"):
            return self.minmax(name, old, v, t)
        bop = {"add": N.BinaryOp.ADD, "sub": N.BinaryOp.SUB, "and": N.BinaryOp.BITAND,
               "or": N.BinaryOp.BITOR, "xor": N.BinaryOp.BITXOR}[name]
        return self.binop(bop, old, v, t, N.NO_LOC)

    def e_AtomicRMW(self, e: N.AtomicRMW) -> ir.Value:
        old = self.atomic(e.op, e.array, e.indices, e.value, e.loc)
        return self.convert(old, e.array.type.dtype, e.type)  # type: ignore[arg-type]

    # -- builtins ---------------------------------------------------------------------------
    def minmax(self, name: str, a: ir.Value, c: ir.Value, t: ScalarType) -> ir.Value:
        b = self.b
        if t.is_float:
            return b.call(self.me.intrinsic(f"llvm.{name}num", t, 2), [a, c])
        if t.is_bool:
            return b.and_(a, c) if name == "min" else b.or_(a, c)
        pre = ("s" if t.kind == "i" else "u") + name
        ty = reg_type(t)
        return b.call(self.me.declare(f"llvm.{pre}.i{t.bits}", ty, [ty, ty]), [a, c])

    def float_intrinsic(self, base: str, t: ScalarType, args: list[ir.Value]) -> ir.Value:
        b = self.b
        if t.bits == 16:
            r = self.float_intrinsic(base, f32, [b.fpext(a, FLOAT) for a in args])
            return b.fptrunc(r, HALF)
        return b.call(self.me.intrinsic(base, t, len(args)), args)

    def libm(self, name: str, t: ScalarType, args: list[ir.Value]) -> ir.Value:
        b = self.b
        if t.bits == 16:
            return b.fptrunc(self.libm(name, f32, [b.fpext(a, FLOAT) for a in args]), HALF)
        ty = reg_type(t)
        sym = name + ("f" if t.bits == 32 else "")
        fn = self.me.declare(sym, ty, [ty] * len(args))
        fn.attributes.add("nounwind")
        return b.call(fn, args)

    def e_BuiltinCall(self, e: N.BuiltinCall) -> ir.Value:
        bi = BUILTINS.get(e.name)
        if bi is None:
            raise _err(f"codegen: unknown builtin {e.name!r}", e.loc)
        b = self.b
        kind, key = bi.lowering
        if bi.arg_cast == "float":
            at = as_float(e.args[0].type)
        else:
            at = e.type
        args = [self.convert(self.expr(a), a.type, at) for a in e.args]
        if len(args) != bi.arity:
            raise _err(f"codegen: {e.name} takes {bi.arity} arguments", e.loc)
        if kind == "intrinsic":
            if not at.is_float:
                raise _err(f"codegen: {e.name} needs float arguments", e.loc)
            r = self.float_intrinsic(key, at, args)
        elif kind == "libm":
            r = self.libm(key, at, args)
        elif key == "abs":
            x = args[0]
            if at.is_float:
                r = self.float_intrinsic("llvm.fabs", at, [x])
            elif at.kind == "i":
                r = b.call(self.me.declare(f"llvm.abs.i{at.bits}", x.type, [x.type, I1]),
                           [x, ir.Constant(I1, 0)])
            else:
                r = x
        elif key in ("min", "max"):
            r = self.minmax(key, args[0], args[1], at)
        elif key == "rsqrt":
            s = self.float_intrinsic("llvm.sqrt", at, args)
            r = b.fdiv(ir.Constant(s.type, 1.0), s)
        elif key == "isnan":
            r = b.fcmp_unordered("uno", args[0], args[0])
            return r
        elif key == "isinf":
            fa = self.float_intrinsic("llvm.fabs", at, args)
            return b.fcmp_ordered("==", fa, ir.Constant(fa.type, float("inf")))
        else:
            raise _err(f"codegen: no lowering for builtin {e.name!r}", e.loc)
        return self.convert(r, at, e.type)

    # -- conversions ------------------------------------------------------------------------
    def convert(self, v: ir.Value, src: ScalarType, dst: ScalarType, b: ir.IRBuilder | None = None) -> ir.Value:
        b = b or self.b
        if src == dst or (src.kind == dst.kind and src.bits == dst.bits):
            return v
        if dst.is_bool:
            if src.is_float:
                return b.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0))
            return b.icmp_unsigned("!=", v, ir.Constant(v.type, 0))
        dty = reg_type(dst)
        if src.is_bool:
            if dst.is_float:
                return b.uitofp(v, dty)
            return b.zext(v, dty)
        if src.is_int and dst.is_int:
            if src.bits > dst.bits:
                return b.trunc(v, dty)
            if src.bits == dst.bits:
                return v
            return b.sext(v, dty) if src.kind == "i" else b.zext(v, dty)
        if src.is_int and dst.is_float:
            if dst.bits == 16:
                mid = f32 if src.bits <= 16 else f64
                return self.convert(self.convert(v, src, mid, b), mid, dst, b)
            return b.sitofp(v, dty) if src.kind == "i" else b.uitofp(v, dty)
        if src.is_float and dst.is_int:
            if src.bits == 16:
                v = b.fpext(v, FLOAT)
                src = f32
            sat = "fptosi" if dst.kind == "i" else "fptoui"
            fn = self.me.declare(f"llvm.{sat}.sat.i{dst.bits}.{_FSUFFIX[src.bits]}", dty, [v.type])
            return b.call(fn, [v])
        # float -> float
        if src.bits < dst.bits:
            return b.fpext(v, dty)
        if src.bits == 64 and dst.bits == 16:
            return b.fptrunc(self.f64_to_f32_round_odd(v, b), HALF)
        return b.fptrunc(v, dty)

    @staticmethod
    def f64_to_f32_round_odd(v: ir.Value, b: ir.IRBuilder) -> ir.Value:
        t = b.fptrunc(v, FLOAT)
        back = b.fpext(t, DOUBLE)
        exact = b.fcmp_unordered("==", back, v)   # exact or NaN
        tb = b.bitcast(t, I32)
        fabs_back = b.call(_declare_fabs64(b), [back])
        fabs_v = b.call(_declare_fabs64(b), [v])
        over = b.fcmp_ordered(">", fabs_back, fabs_v)
        tz = b.select(over, b.sub(tb, ir.Constant(I32, 1)), tb)
        odd = b.or_(tz, ir.Constant(I32, 1))
        return b.bitcast(b.select(exact, tb, odd), FLOAT)


def _declare_fabs64(b: ir.IRBuilder) -> ir.Function:
    m = b.module
    g = m.globals.get("llvm.fabs.f64")
    if g is None:
        g = ir.Function(m, ir.FunctionType(DOUBLE, [DOUBLE]), name="llvm.fabs.f64")
    return g
