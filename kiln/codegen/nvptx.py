"""Typed kernel IR -> NVPTX (PTX text) through llvmlite, sharing the CPU's body lowering.

    build_ptx(kernels, arch="sm_80") -> PtxCode

Everything that is not specific to the GPU (expressions, statements, int/float semantics, f16,
funcs) comes from kiln.codegen.body_emitter: `NvptxBodyEmitter` adds only the parallel loop (a
grid-stride loop) and the math functions LLVM cannot lower on NVPTX (there is no libm): calls to
NVIDIA's libdevice (`__nv_sinf` for f32, `__nv_sin` for f64; `__nv_fast_sinf` with fast_math),
linked into the module before optimisation (kiln.codegen.libdevice), or, when libdevice is not
found, kiln's own f64 code (kiln.codegen.nvptx_math; `PtxCode.math` says which).

Kernel ABI on the GPU (docs/cuda.md): every PTX entry takes the kernel's packed argument block
(kiln.abi) as one `.param .u64` per 8-byte slot, in block order, so the runtime launches with
`kernelParams[k] = block + 8*k` (or packs the block once and points into it).

Launches. kiln.passes.plan_parallel splits each kernel into launches (`KernelIR.launch_plan`:
one grid-stride launch per parallel loop, single-thread launches for serial segments with side
effects, stripped serial prefixes re-executed by every thread) and plans each loop's reductions
(combined per block, one atomic per block) and coarsening (stencils: several rows per thread with
shared neighbour loads); this module emits one PTX entry per planned phase and refuses a kernel
the plan refused. docs/cuda.md, "Code generation", says what each plan becomes.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import llvmlite.binding as llvm
from llvmlite import ir

from kiln.abi import block_size, layout_params
from kiln.artifact.manifest import CudaLaunch
from kiln.codegen.body_emitter import KernelBodyEmitter
from kiln.codegen.libdevice import (
    LIBDEVICE_MATH,
    find_libdevice,
    libdevice_function,
    libdevice_turned_off,
    link_libdevice,
)
from kiln.codegen.llvm_pipeline import optimise_and_emit
from kiln.codegen.llvm_util import (
    DOUBLE,
    FLOAT,
    HALF,
    I1,
    I8,
    I32,
    I64,
    PTR,
    VOID,
    ArrayVal,
    alloca,
    fn_attrs,
    mem_type,
    reg_type,
)
from kiln.codegen.module_base import AbiParams, ModuleEmitterBase
from kiln.codegen.nvptx_atomics import float_minmax_atomic
from kiln.codegen.nvptx_counts import count_tuple, loop_count
from kiln.codegen.nvptx_math import GPU_MATH, GpuMathLibrary
from kiln.config import TUNING
from kiln.errors import KernelError, KilnError, TargetError
from kiln.ir import nodes as N
from kiln.ir.analysis import walk
from kiln.ir.ops import atomicrmw_name
from kiln.passes.plan_parallel import ReuseKey, assigned_locals, dim_offset, reuse_key, strip_side_effects
from kiln.types import INDEX, NdArrayType, ScalarType

TRIPLE = "nvptx64-nvidia-cuda"
DEFAULT_PTX_ARCH = "sm_80"
DEFAULT_PTX_FEATURES = "+ptx78"       # PTX ISA 7.8: CUDA 11.8+ drivers JIT it
DEFAULT_CUBIN_ARCHS = ("sm_80", "sm_90")
# tuning knobs (documented in kiln/config.py, TUNING_KNOBS); the runtime reads the block size
# from the manifest
BLOCK_SIZE = TUNING.cuda_block_size
UNROLL = TUNING.cuda_unroll
LOOP_WAVES_1D = TUNING.cuda_loop_waves_1d
LOOP_WAVES_COARSENED = TUNING.cuda_loop_waves_coarsened


@dataclass
class PtxCode:
    ptx: str
    arch: str
    launches: dict[str, list[CudaLaunch]] = field(default_factory=dict)   # kernel IR name -> launches
    llvm_ir: str = ""                                                 # optimised module text
    asm: str = ""                                                     # the PTX again, with want_asm
    #: where the math functions come from: "libdevice" or "builtin" (kiln.codegen.nvptx_math)
    math: str = "builtin"
    #: the libdevice functions the kernels call (inlined into the PTX), sorted
    libdevice_calls: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Emitters
# ---------------------------------------------------------------------------------------------

class NvptxModuleEmitter(ModuleEmitterBase):
    """The PTX module: one `ptx_kernel` entry per planned launch phase, funcs, GPU math.
    `libdevice`: math calls go to libdevice (linked in later by build_ptx) instead of kiln's own
    f64 code; `fast_math`: f32 math uses libdevice's fast approximate variants where there are."""

    def __init__(self, data_layout: str = "", triple: str = TRIPLE, *, libdevice: bool = False,
                 fast_math: bool = False) -> None:
        super().__init__(triple, data_layout)
        self.launches: dict[str, list[CudaLaunch]] = {}
        self.math = GpuMathLibrary(self)
        self.libdevice = libdevice
        self.fast_math = fast_math
        self.libdevice_calls: set[str] = set()

    def libdevice_fn(self, name: str, bits: int) -> ir.Function:
        """The declaration of libdevice's `name` on `bits`-bit floats, flagging the module for
        NVVMReflect the first time (denormals kept: `__CUDA_FTZ` is 0, as NVVM without -ftz)."""
        sym = libdevice_function(name, bits, self.fast_math)
        assert sym is not None, (name, bits)
        if not self.libdevice_calls:
            flag = self.module.add_metadata([ir.Constant(I32, 4), ir.MetaDataString(self.module, "nvvm-reflect-ftz"),
                                             ir.Constant(I32, 0)])
            self.module.add_named_metadata("llvm.module.flags").add(flag)
        self.libdevice_calls.add(sym)
        ty = FLOAT if bits == 32 else DOUBLE
        nargs = 2 if name in ("atan2", "pow") else 1
        fn = self.declare(sym, ty, [ty] * nargs)
        fn.attributes.add("nounwind")
        return fn

    def new_body_emitter(self, fir: N.FunctionIR, fn: ir.Function) -> NvptxBodyEmitter:
        return NvptxBodyEmitter(self, fir, fn)

    def add_kernels(self, kernels: Sequence[N.KernelIR]) -> None:
        for f, fn in self.declare_funcs(kernels):
            self.emit_body(f, fn)
        for k in kernels:
            kf = k.kernel
            if kf.name in self.kernel_irs:
                raise KilnError(f"kernel {kf.name!r} given twice")
            self.kernel_irs[kf.name] = kf
            plan = k.launch_plan
            if plan is None:
                raise KilnError(f"kernel {kf.name!r} has no launch plan (run kiln.passes.plan_parallel first)")
            if plan.cuda_refusal:
                loc = plan.refusal_loc
                raise KernelError(plan.cuda_refusal, filename=loc.filename, lineno=loc.line, col=loc.col)
            base = f"kiln_kernel_{kf.name}"
            launches = []
            for pi, ph in enumerate(plan.phases):
                sym = self.unique(base if len(plan.phases) == 1 else f"{base}__p{pi}")
                launches.append(self._emit_phase(k, ph, sym))
            self.launches[kf.name] = launches
            self.kernel_symbols[kf.name] = launches[0].entry
        self.debug.emit_table()     # debug mode: the CUDA runtime decodes failed checks with it
        self.prints.emit_table()    # print: the CUDA runtime formats the buffer with it

    def _emit_phase(self, k: N.KernelIR, ph: N.LaunchPhase, sym: str) -> CudaLaunch:
        """The PTX entry `sym` of one launch phase: the stripped prefix, then the phase's own
        statements, inlined into an entry that unpacks the argument slots."""
        kf = k.kernel
        impl = ir.Function(self.module, self.function_type(kf), name=self.unique(f"kiln_impl_{sym}"))
        impl.linkage = "internal"
        fn_attrs(impl, "alwaysinline")
        prefix = strip_side_effects([kf.body[i] for i in ph.prefix], k.display_name or kf.name)
        own = tuple(kf.body[i] for i in ph.stmts)
        sub_ir = N.FunctionIR(kf.name, kf.params, kf.ret, kf.locals, prefix + own, kf.loc, True)
        self.emit_body(sub_ir, impl)
        nslots = block_size(layout_params([(p.name, p.type) for p in kf.params])) // 8
        # the block's slots, then the block's device address (0: the slots hold the block)
        entry = ir.Function(self.module, ir.FunctionType(VOID, [I64] * (nslots + 1)), name=sym)
        entry.calling_convention = "ptx_kernel"
        fn_attrs(entry)
        self._emit_gpu_entry(kf, impl, entry)
        if ph.mode != "loop":
            return CudaLaunch(sym, ph.mode, None, 1, None, True)
        loop = own[0]
        assert isinstance(loop, N.ParallelFor) and loop.plan is not None
        # 1-D streaming loops run fastest with many waves of blocks (measured on H100: saxpy 90%
        # of copy bandwidth with one wave, 96% with 16); ndranges (stencils: neighbours reused
        # through L2) with one compact wave (71% vs 66%), and so do loops with reductions (one
        # atomic per warp: 16 waves = 16x the atomics, 88% -> 35%)
        waves = 1
        if len(loop.dims) == 1:
            waves = 1 if loop.plan.reductions else LOOP_WAVES_1D
        count = loop_count(k, loop, prefix)
        co = loop.plan.coarsen
        if co is None:
            return CudaLaunch(sym, ph.mode, count_tuple(count), waves, None, True)
        waves = LOOP_WAVES_COARSENED
        if count is not None:
            # one grid-stride step per `factor` iterations of the coarsened dim (step 1): the
            # runtime's range count over [start, stop, factor] is the number of groups
            count[co.dim] = [count[co.dim][0], count[co.dim][1], ["const", co.factor]]
        return CudaLaunch(sym, ph.mode, count_tuple(count), waves, (co.dim, co.factor), True)

    def _emit_gpu_entry(self, kf: N.FunctionIR, impl: ir.Function, entry: ir.Function) -> None:
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        slots = self._argument_slots(b, entry)
        layout = layout_params([(p.name, p.type) for p in kf.params])
        args: list[ir.Value] = []
        for pl, p in zip(layout, kf.params):
            s0 = pl.offset // 8
            if isinstance(p.type, NdArrayType):
                g = b.inttoptr(slots[s0], ir.PointerType(addrspace=1))
                args.append(b.addrspacecast(g, PTR))
                args += [slots[s0 + 1 + d] for d in range(2 * p.type.rank)]    # extents, strides
            else:
                t = p.type
                raw = slots[s0]
                if t.is_bool:
                    args.append(b.icmp_unsigned("!=", b.trunc(raw, I8), ir.Constant(I8, 0)))
                elif t.is_float:
                    ity = ir.IntType(t.bits)
                    v = b.trunc(raw, ity) if t.bits < 64 else raw
                    args.append(b.bitcast(v, reg_type(t)))
                else:
                    args.append(b.trunc(raw, reg_type(t)) if t.bits < 64 else raw)
        b.call(impl, args)
        b.ret_void()

    def _argument_slots(self, b: ir.IRBuilder, entry: ir.Function) -> list[ir.Value]:
        """The argument block's slots: the entry's parameters, or, when its last parameter (the
        block's device address) is not 0, the block read from device memory. A CUDA graph's
        nodes point into a device buffer that one copy per run refreshes, so arguments that
        change between replays need no node updates (kiln.runtime.cuda_graph). The address is
        the same for every thread: the branch is uniform, and the loads go through the
        read-only cache (the block does not change while a kernel runs)."""
        params = list(entry.args)
        slots, where = params[:-1], params[-1]
        if not slots:
            return []
        start = b.block
        from_memory = entry.append_basic_block("args.load")
        ready = entry.append_basic_block("args.ready")
        b.cbranch(b.icmp_unsigned("!=", where, ir.Constant(I64, 0)), from_memory, ready)
        b.position_at_end(from_memory)
        block = b.inttoptr(where, ir.PointerType(addrspace=1))
        invariant = self.module.add_metadata([])
        loaded = []
        for k in range(len(slots)):
            p = b.gep(block, [ir.Constant(I64, k)], inbounds=True, source_etype=I64)
            v = b.load(p, typ=I64, align=8)
            v.set_metadata("invariant.load", invariant)
            loaded.append(v)
        b.branch(ready)
        b.position_at_end(ready)
        out = []
        for k, (param, mem) in enumerate(zip(slots, loaded)):
            phi = b.phi(I64, f"slot{k}")
            phi.add_incoming(param, start)
            phi.add_incoming(mem, from_memory)
            out.append(phi)
        return out


@dataclass
class _ReuseWindow:
    """Loads shared by the rows of a coarsened loop: (array, row + offset, other indices) -> the
    loaded value, valid while the rows are emitted as straight-line code (kiln.ir.Coarsening).
    With vector lanes (`col_var`), the last index `col_var + c` of lane `col` is keyed as the
    column `col + c`, so neighbouring lanes share their loads too."""

    arrays: frozenset[str]
    var: str
    assigned: set[str]
    col_var: str | None = None
    row: int = 0
    col: int = 0
    values: dict[tuple[object, ...], ir.Value] = field(default_factory=dict)

    def key(self, e: N.Load) -> tuple[object, ...] | None:
        if e.array.name not in self.arrays:
            return None
        k: ReuseKey | None = reuse_key(e, 0, self.var, self.assigned)
        if k is None:
            return None
        if self.col_var is None:
            return (e.array.name, self.row + k[0], k[1])
        c = dim_offset(e.indices[-1], self.col_var)
        uses_col = any(isinstance(n, N.Var) and n.name == self.col_var for n in walk(k[1][:-1]))
        if c is not None and not uses_col:
            return (e.array.name, self.row + k[0], k[1][:-1], self.col + c)
        return (e.array.name, self.row + k[0], k[1], "lane", self.col)


@dataclass
class _VectorLanes:
    """The lanes of a vectorised loop's full group being emitted (kiln.ir.Vectorization): lane
    `lane` runs `var = v0 + lane` with v0 a multiple of `width`, and `align` holds the alignment
    in bytes the runtime checked for each planned array's data pointer and strides, so an
    access `a[..., var + c]` is aligned to the largest power of two dividing its byte offset."""

    var: str
    width: int
    align: dict[str, int]
    lane: int = 0

    def access_align(self, ref: N.ArrayRef, indices: tuple[N.Expr, ...], itemsize: int) -> int:
        checked = self.align.get(ref.name)
        c = dim_offset(indices[-1], self.var) if checked is not None and indices else None
        if checked is None or c is None:
            return itemsize
        pos = (self.lane + c) % self.width
        elems = self.width if pos == 0 else pos & -pos        # lowest set bit: a power of two
        return min(checked, itemsize * elems)


def vector_alignment(width: int, itemsize: int) -> int:
    """Bytes a vectorised array's data pointer and outer strides must be aligned to: a full
    group of `width` elements, at most 16 bytes (the widest PTX load of 32-bit lanes)."""
    return min(width * itemsize, 16)


class NvptxBodyEmitter(KernelBodyEmitter):
    """Kernel and func bodies for NVPTX: a grid-stride parallel loop and GPU math."""

    me: NvptxModuleEmitter
    #: the sliding window of a coarsened loop's full group (None elsewhere)
    window: _ReuseWindow | None = None
    #: the lanes of a vectorised loop's full group (None elsewhere)
    lanes: _VectorLanes | None = None
    #: inside a lazily evaluated operand (`and`, `or`, `a if c else b`): its loads do not
    #: dominate the code after it, so they are not shared
    lazy_depth: int = 0

    def e_Load(self, e: N.Load) -> ir.Value:
        w = self.window
        key = w.key(e) if w is not None and self.lazy_depth == 0 else None
        if key is not None and key in w.values:     # type: ignore[union-attr]
            v = w.values[key]                       # type: ignore[union-attr]
        else:
            p, a = self.element_ptr(e.array, e.indices, e.check)
            t = a.dtype
            v = self.from_mem(self.b.load(p, typ=mem_type(t), align=self.access_align(e.array, e.indices, t)), t,
                              self.b)
            if key is not None:
                w.values[key] = v                   # type: ignore[union-attr]
        return self.convert(v, e.array.type.dtype, e.type)   # type: ignore[arg-type]

    def access_align(self, ref: N.ArrayRef, indices: tuple[N.Expr, ...], t: ScalarType) -> int:
        """The alignment an access may claim: the element size, or more in a vector group."""
        return t.itemsize if self.lanes is None else self.lanes.access_align(ref, indices, t.itemsize)

    def _lazy_phi(self, cond: ir.Value, then_fn, else_fn, ty: ir.Type) -> ir.Value:  # type: ignore[no-untyped-def]
        self.lazy_depth += 1
        try:
            return super()._lazy_phi(cond, then_fn, else_fn, ty)
        finally:
            self.lazy_depth -= 1

    # math: exp/log/sin/... have no NVPTX lowering without libdevice (or kiln's own code)
    def float_intrinsic(self, base: str, t: ScalarType, args: list[ir.Value]) -> ir.Value:
        short = base.removeprefix("llvm.")
        if short == "pow" and isinstance(args[1], ir.Constant):
            # The exact rewrites LLVM applies to llvm.pow on the CPU (x**2 -> x*x, ...), so that
            # both targets give bit-identical results for them.
            b = self.b
            x, n = args[0], args[1].constant
            if n == 2.0:
                return b.fmul(x, x)
            if n == 1.0:
                return x
            if n == 0.0:
                return ir.Constant(x.type, 1.0)
            if n == -1.0:
                return b.fdiv(ir.Constant(x.type, 1.0), x)
        if (self.me.libdevice and short in LIBDEVICE_MATH) or short in GPU_MATH:
            return self._gpu_math(short, t, args)
        return super().float_intrinsic(base, t, args)

    def libm(self, name: str, t: ScalarType, args: list[ir.Value]) -> ir.Value:
        if (self.me.libdevice and name in LIBDEVICE_MATH) or name in GPU_MATH:
            return self._gpu_math(name, t, args)
        raise KilnError(f"codegen: math function {name!r} has no NVPTX lowering")

    def _gpu_math(self, name: str, t: ScalarType, args: list[ir.Value]) -> ir.Value:
        b = self.b
        if self.me.libdevice:
            # f16 computes in f32 (libdevice has no f16 math), like the CPU target
            if t.bits == 16:
                r = b.call(self.me.libdevice_fn(name, 32), [b.fpext(a, FLOAT) for a in args])
                return b.fptrunc(r, HALF)
            return b.call(self.me.libdevice_fn(name, t.bits), args)
        if t.bits != 64:
            args = [b.fpext(a, DOUBLE) for a in args]
        r = b.call(self.me.math.math_fn(name), args)
        if t.bits == 32:
            return b.fptrunc(r, FLOAT)
        if t.bits == 16:
            return b.fptrunc(b.fptrunc(r, FLOAT), HALF)
        return r

    # -- the parallel loop: grid-stride over the flattened iteration space ---------------------
    def emit_parallel_loop(self, s: N.ParallelFor, plan: N.ParallelPlan) -> None:
        dims = self.parallel_dims(s)
        # reductions (as planned on the loop): each thread accumulates privately over its whole
        # grid-stride loop, then shuffle trees and shared memory combine the block's partials and
        # ONE atomic per block adds them (_flush_reductions_block)
        self.start_reductions(plan)
        if plan.vector is None:
            self._plain_loop(s, plan, dims)
        else:
            # the vector loop when every planned array is aligned (a uniform branch), else the
            # plain one: views at odd offsets and strided views stay correct, only slower
            b, fn = self.b, self.fn
            vec_bb, plain_bb, done = (fn.append_basic_block(f"vec.{n}") for n in ("aligned", "plain", "done"))
            b.cbranch(self._vector_aligned(plan.vector), vec_bb, plain_bb)
            b.position_at_end(vec_bb)
            self._vector_loop(s, plan, dims)
            self.b.branch(done)
            self.b.position_at_end(plain_bb)
            self._plain_loop(s, plan, dims)
            self.b.branch(done)
            self.b.position_at_end(done)
        self._flush_reductions_block()

    def _plain_loop(self, s: N.ParallelFor, plan: N.ParallelPlan, dims: list) -> None:
        """The loop without vector access: coarsened, or a grid-stride loop (lock step first)."""
        b = self.b
        counts = [c for _, _, c in dims]
        if plan.coarsen is not None:
            assert not plan.reductions and plan.lockstep, "plan_parallel coarsens only plain straight-line loops"
            self._coarsened_loop(s, plan.coarsen, dims)
            return
        total = counts[0]
        for c in counts[1:]:
            total = b.mul(total, c)
        gtid, stride, digits, sdig = self._grid_position(counts)
        flat, ds = gtid, digits
        if plan.lockstep and UNROLL > 1:
            flat, ds = self._lockstep_loop(s, dims, counts, total, stride, sdig, gtid, digits)
        self._one_at_a_time_loop(s, dims, counts, total, stride, sdig, flat, ds)

    def _vector_aligned(self, vec: N.Vectorization) -> ir.Value:
        """Whether every array of `vec` has a unit last stride and its data pointer and other
        strides aligned to a vector group (kiln.codegen.nvptx.vector_alignment)."""
        b = self.b
        ok = ir.Constant(I1, 1)
        for name in vec.arrays:
            a = self.arrays[name]
            need = vector_alignment(vec.width, a.dtype.itemsize)
            addr = b.ptrtoint(a.ptr, I64)
            ok = b.and_(ok, b.icmp_unsigned("==", b.and_(addr, ir.Constant(I64, need - 1)), ir.Constant(I64, 0)))
            ok = b.and_(ok, b.icmp_unsigned("==", a.strides[-1], ir.Constant(I64, 1)))
            per = ir.Constant(I64, max(need // a.dtype.itemsize, 1) - 1)
            for st in a.strides[:-1]:
                ok = b.and_(ok, b.icmp_unsigned("==", b.and_(st, per), ir.Constant(I64, 0)))
        return ok

    def _vector_loop(self, s: N.ParallelFor, plan: N.ParallelPlan, dims: list) -> None:
        """The grid-stride loop over groups of `vec.width` consecutive iterations of the last
        dimension whose variable starts at a multiple of the width (times `coarsen.factor` rows
        of dim 0 when the loop is also coarsened), one group per step. A full group runs as
        straight-line code in lock step, with the planned arrays' last stride known to be 1 and
        their accesses' alignment stated, so LLVM's load/store vectorizer merges neighbouring
        lanes into vector accesses; a group at either end of a row runs element by element."""
        vec = plan.vector
        assert vec is not None
        co = plan.coarsen
        b, fn = self.b, self.fn
        W, R = vec.width, (co.factor if co is not None else 1)
        last = len(dims) - 1
        counts = [c for _, _, c in dims]
        # trip t of the last dim has var = start + t; lanes start where var % W == 0
        start = self.dim_value(s, last, dims[last], ir.Constant(I64, 0))
        lead = b.and_(start, ir.Constant(I64, W - 1))       # two's complement: negative starts too
        gcounts = list(counts)
        if co is not None:
            gcounts[co.dim] = b.udiv(b.add(counts[co.dim], ir.Constant(I64, R - 1)), ir.Constant(I64, R))
        groups = b.udiv(b.add(b.add(counts[last], lead), ir.Constant(I64, W - 1)), ir.Constant(I64, W))
        gcounts[last] = b.select(b.icmp_signed("<=", counts[last], ir.Constant(I64, 0)), ir.Constant(I64, 0), groups)
        total = gcounts[0]
        for c in gcounts[1:]:
            total = b.mul(total, c)
        gtid, stride, digits, sdig = self._grid_position(gcounts)
        head, body_bb, full_bb, part_bb, latch, end = (
            fn.append_basic_block(f"vl.{n}") for n in ("head", "body", "full", "part", "latch", "end"))
        f, dphis = self._loop_head(head, b.block, gtid, digits, total, body_bb, end)
        b.position_at_end(body_bb)
        t0 = b.sub(b.mul(dphis[last], ir.Constant(I64, W)), lead)       # trip of lane 0 (< 0: before start)
        full = b.and_(b.icmp_signed(">=", t0, ir.Constant(I64, 0)),
                      b.icmp_signed("<=", b.add(t0, ir.Constant(I64, W)), counts[last]))
        r0 = dphis[0]
        if co is not None:
            r0 = b.mul(dphis[co.dim], ir.Constant(I64, R))
            full = b.and_(full, b.icmp_unsigned("<=", b.add(r0, ir.Constant(I64, R)), counts[co.dim]))
        b.cbranch(full, full_bb, part_bb)

        def position(r: int | ir.Value, k: int | ir.Value) -> list[ir.Value]:
            idx = list(dphis)
            if co is not None:
                idx[co.dim] = b.add(r0, r if isinstance(r, ir.Value) else ir.Constant(I64, r))
            idx[last] = b.add(t0, k if isinstance(k, ir.Value) else ir.Constant(I64, k))
            return idx

        # a full group: lanes (and rows) in lock step, vector accesses
        b.position_at_end(full_bb)
        base_vars, base_arrays = self.vars, self.arrays
        lanes = [(r, k) for r in range(R) for k in range(W)]
        copies = self._var_copies(s, dims, [position(r, k) for r, k in lanes])
        self.arrays = dict(base_arrays)
        for name in vec.arrays:         # checked: a unit last stride, so neighbours are adjacent
            a = base_arrays[name]
            self.arrays[name] = ArrayVal(a.ptr, a.extents, a.type, [*a.strides[:-1], ir.Constant(I64, 1)])
        self.lanes = _VectorLanes(s.dims[last].var, W, {n: vector_alignment(W, base_arrays[n].dtype.itemsize)
                                                        for n in vec.arrays})
        if co is not None:
            self.window = _ReuseWindow(frozenset(co.reuse), s.dims[co.dim].var, assigned_locals(s.body),
                                       col_var=s.dims[last].var)
        self.in_parallel = True
        self._emit_lockstep(s.body, copies, lanes)
        self.window, self.lanes = None, None
        self.vars, self.arrays = base_vars, base_arrays
        self.b.branch(latch)
        # a group at the start or end of a row (or the last rows): element by element
        b.position_at_end(part_bb)
        ehead, ebody, erun, enext = (fn.append_basic_block(f"vl.{n}") for n in ("elem", "elembody", "run", "next"))
        b.branch(ehead)
        b.position_at_end(ehead)
        e = b.phi(I64, "elem")
        e.add_incoming(ir.Constant(I64, 0), part_bb)
        b.cbranch(b.icmp_unsigned("<", e, ir.Constant(I64, R * W)), ebody, latch)
        b.position_at_end(ebody)
        idx = position(b.udiv(e, ir.Constant(I64, W)), b.urem(e, ir.Constant(I64, W)))
        inside = b.and_(b.icmp_signed(">=", idx[last], ir.Constant(I64, 0)),
                        b.icmp_signed("<", idx[last], counts[last]))
        if co is not None:
            inside = b.and_(inside, b.icmp_unsigned("<", idx[co.dim], counts[co.dim]))
        b.cbranch(inside, erun, enext)
        b.position_at_end(erun)
        self._set_dim_vars(s, dims, self.vars, idx)
        self.stmts(s.body)
        self.in_parallel = False
        if not self.b.block.is_terminated:
            self.b.branch(enext)
        b.position_at_end(enext)
        e.add_incoming(b.add(e, ir.Constant(I64, 1)), enext)
        b.branch(ehead)
        b.position_at_end(latch)
        f.add_incoming(b.add(f, stride), latch)
        for k, v in enumerate(self._advance(list(dphis), sdig, gcounts)):
            dphis[k].add_incoming(v, latch)
        b.branch(head)
        b.position_at_end(end)

    def _sreg(self, name: str) -> ir.Value:
        f = self.me.declare(f"llvm.nvvm.read.ptx.sreg.{name}", I32, [])
        return self.b.zext(self.b.call(f, []), I64)

    def _grid_position(self, counts: list[ir.Value]) -> tuple[ir.Value, ir.Value, list[ir.Value], list[ir.Value]]:
        """(global thread id, grid stride, mixed-radix digits of the thread id and of the stride
        over `counts`): one division per thread, not per iteration; each iteration then advances
        the digits by the stride's digits with a carry (`_advance`)."""
        b = self.b
        ntid = self._sreg("ntid.x")
        gtid = b.add(b.mul(self._sreg("ctaid.x"), ntid), self._sreg("tid.x"))
        stride = b.mul(self._sreg("nctaid.x"), ntid)
        digits: list[ir.Value] = []
        sdig: list[ir.Value] = []
        g, st = gtid, stride
        for k in range(len(counts) - 1, -1, -1):
            cnt = counts[k]
            if k > 0:
                safe = b.select(b.icmp_unsigned("==", cnt, ir.Constant(I64, 0)), ir.Constant(I64, 1), cnt)
                digits.append(b.urem(g, safe))
                sdig.append(b.urem(st, safe))
                g = b.udiv(g, safe)
                st = b.udiv(st, safe)
            else:
                digits.append(g)
                sdig.append(st)
        digits.reverse()
        sdig.reverse()
        return gtid, stride, digits, sdig

    def _advance(self, ds: list[ir.Value], sdig: list[ir.Value], counts: list[ir.Value]) -> list[ir.Value]:
        """The digits of (flat index + stride): add the stride's digits with carries."""
        b = self.b
        nv = len(counts)
        carry = ir.Constant(I64, 0)
        new: list[ir.Value] = [ir.Constant(I64, 0)] * nv
        for k in range(nv - 1, 0, -1):
            v = b.add(b.add(ds[k], sdig[k]), carry)
            over = b.icmp_unsigned(">=", v, counts[k])
            new[k] = b.select(over, b.sub(v, counts[k]), v)
            carry = b.zext(over, I64)
        new[0] = b.add(b.add(ds[0], sdig[0]), carry)
        return new

    def _set_dim_vars(self, s: N.ParallelFor, dims: list, vars_: dict, idx: list[ir.Value]) -> None:
        for k in range(len(s.dims)):
            slot, t = vars_[s.dims[k].var]
            self.b.store(self.convert(self.dim_value(s, k, dims[k], idx[k]), INDEX, t), slot)

    def _loop_head(self, head: ir.Block, pre: ir.Block, flat_in: ir.Value, ds_in: list[ir.Value],
                   limit: ir.Value, body_bb: ir.Block, exit_bb: ir.Block) -> tuple[ir.PhiInstr, list[ir.PhiInstr]]:
        """Branch from `pre` into loop head `head` with phis for the flat index and the digits,
        which continues to `body_bb` while flat < limit."""
        b = self.b
        name = head.name.split(".")[0]
        b.branch(head)
        b.position_at_end(head)
        f = b.phi(I64, "flat4" if name == "gs4" else "flat")
        f.add_incoming(flat_in, pre)
        dphis = []
        for k, d in enumerate(ds_in):
            p = b.phi(I64, f"d4_{k}" if name == "gs4" else f"d{k}")
            p.add_incoming(d, pre)
            dphis.append(p)
        b.cbranch(b.icmp_signed("<", f, limit), body_bb, exit_bb)
        return f, dphis

    def _lockstep_loop(self, s: N.ParallelFor, dims: list, counts: list[ir.Value], total: ir.Value,
                       stride: ir.Value, sdig: list[ir.Value], gtid: ir.Value,
                       digits: list[ir.Value]) -> tuple[ir.Value, list[ir.Value]]:
        """Main loop: UNROLL iterations (flat, flat + stride, ...) in lock step, statement by
        statement: every copy's loads of a statement are issued before any copy's store (legal:
        different iterations of a parallel loop never depend on each other), which keeps several
        independent memory requests in flight per thread. Returns where the remainder starts."""
        b = self.b
        fn = self.fn
        lim = b.sub(total, b.mul(stride, ir.Constant(I64, UNROLL - 1)))
        pre = b.block
        head = fn.append_basic_block("gs4.head")
        body_bb = fn.append_basic_block("gs4.body")
        exit_bb = fn.append_basic_block("gs4.exit")
        f, dphis = self._loop_head(head, pre, gtid, digits, lim, body_bb, exit_bb)
        b.position_at_end(body_bb)
        ds: list[ir.Value] = list(dphis)
        positions = [ds]
        for _ in range(UNROLL - 1):
            ds = self._advance(ds, sdig, counts)
            positions.append(ds)
        base_vars = self.vars
        self.in_parallel = True
        self._emit_lockstep(s.body, self._var_copies(s, dims, positions))
        self.in_parallel = False
        self.vars = base_vars
        ds = self._advance(ds, sdig, counts)
        latch_bb = self.b.block
        f.add_incoming(self.b.add(f, self.b.mul(stride, ir.Constant(I64, UNROLL))), latch_bb)
        for k in range(len(counts)):
            dphis[k].add_incoming(ds[k], latch_bb)
        self.b.branch(head)
        b.position_at_end(exit_bb)
        return f, list(dphis)

    def _var_copies(self, s: N.ParallelFor, dims: list, positions: list[list[ir.Value]]) -> list[dict]:
        """One set of variables per iteration run in lock step: the loop's private locals get
        their own slots per copy, the dim vars are set to each iteration's position."""
        private = _private_vars(s)
        copies = []
        for c, idx in enumerate(positions):
            cv = dict(self.vars)
            for name in private:
                if name in self.vars:
                    slot = alloca(self.ab, mem_type(self.vars[name][1]), name=f"{name}.u{c}")
                    cv[name] = (slot, self.vars[name][1])
            self._set_dim_vars(s, dims, cv, list(idx))
            copies.append(cv)
        return copies

    def _coarsened_loop(self, s: N.ParallelFor, co: N.Coarsening, dims: list) -> None:
        """The grid-stride loop over groups of `co.factor` consecutive rows of dim 0 (one group
        per step): a full group runs its rows in lock step as straight-line code in which the
        loads of `co.reuse` arrays are shared between rows (each element loaded once: the sliding
        window), the partial group at the end of the dim runs row by row."""
        assert co.dim == 0
        b = self.b
        fn = self.fn
        counts = [c for _, _, c in dims]
        kc = ir.Constant(I64, co.factor)
        gcounts = [b.udiv(b.add(counts[0], ir.Constant(I64, co.factor - 1)), kc), *counts[1:]]
        total = gcounts[0]
        for c in gcounts[1:]:
            total = b.mul(total, c)
        gtid, stride, digits, sdig = self._grid_position(gcounts)
        head, body_bb, full_bb, part_bb, latch, end = (
            fn.append_basic_block(f"cs.{n}") for n in ("head", "body", "full", "part", "latch", "end"))
        f, dphis = self._loop_head(head, b.block, gtid, digits, total, body_bb, end)
        b.position_at_end(body_bb)
        i0 = b.mul(dphis[0], kc)
        b.cbranch(b.icmp_unsigned("<=", b.add(i0, kc), counts[0]), full_bb, part_bb)
        # a full group: rows in lock step, neighbour loads shared
        b.position_at_end(full_bb)
        base_vars = self.vars
        rows = [[b.add(i0, ir.Constant(I64, r)), *dphis[1:]] for r in range(co.factor)]
        copies = self._var_copies(s, dims, rows)
        self.window = _ReuseWindow(frozenset(co.reuse), s.dims[0].var, assigned_locals(s.body))
        self.in_parallel = True
        self._emit_lockstep(s.body, copies)
        self.window = None
        self.vars = base_vars
        b.branch(latch)
        # the partial group at the end of dim 0: row by row, nothing shared
        b.position_at_end(part_bb)
        rhead = fn.append_basic_block("cs.row")
        rbody = fn.append_basic_block("cs.rowbody")
        b.branch(rhead)
        b.position_at_end(rhead)
        r = b.phi(I64, "row")
        r.add_incoming(ir.Constant(I64, 0), part_bb)
        i = b.add(i0, r)
        b.cbranch(b.icmp_unsigned("<", i, counts[0]), rbody, latch)
        b.position_at_end(rbody)
        self._set_dim_vars(s, dims, self.vars, [i, *dphis[1:]])
        self.stmts(s.body)
        self.in_parallel = False
        r.add_incoming(b.add(r, ir.Constant(I64, 1)), b.block)
        b.branch(rhead)
        b.position_at_end(latch)
        f.add_incoming(b.add(f, stride), latch)
        for k, v in enumerate(self._advance(list(dphis), sdig, gcounts)):
            dphis[k].add_incoming(v, latch)
        b.branch(head)
        b.position_at_end(end)

    def _one_at_a_time_loop(self, s: N.ParallelFor, dims: list, counts: list[ir.Value], total: ir.Value,
                            stride: ir.Value, sdig: list[ir.Value], flat: ir.Value,
                            ds_in: list[ir.Value]) -> None:
        """The remainder after the lock-step loop (or the whole loop): one iteration at a time."""
        b = self.b
        fn = self.fn
        pre = b.block
        head = fn.append_basic_block("gs.head")
        body_bb = fn.append_basic_block("gs.body")
        latch = fn.append_basic_block("gs.latch")
        end = fn.append_basic_block("gs.end")
        f, dphis = self._loop_head(head, pre, flat, ds_in, total, body_bb, end)
        b.position_at_end(body_bb)
        self._set_dim_vars(s, dims, self.vars, list(dphis))
        self.in_parallel = True
        self.stmts(s.body)
        self.in_parallel = False
        if not self.b.block.is_terminated:
            self.b.branch(latch)
        b.position_at_end(latch)
        f.add_incoming(b.add(f, stride), latch)
        for k, v in enumerate(self._advance(list(dphis), sdig, counts)):
            dphis[k].add_incoming(v, latch)
        b.branch(head)
        b.position_at_end(end)

    def _shfl_down(self, v: ir.Value, delta: int) -> ir.Value:
        """`v` from lane (lane + delta) of the warp (any scalar type, through i32 shuffles)."""
        b = self.b
        shfl = self.me.declare("llvm.nvvm.shfl.sync.down.i32", I32, [I32, I32, I32, I32])
        mask, d, c = ir.Constant(I32, -1), ir.Constant(I32, delta), ir.Constant(I32, 0x1F)
        ty = v.type
        bits = ty.width if isinstance(ty, ir.IntType) else {HALF: 16, FLOAT: 32, DOUBLE: 64}[ty]
        iv = v if isinstance(ty, ir.IntType) else b.bitcast(v, ir.IntType(bits))
        if bits == 64:
            lo = b.call(shfl, [mask, b.trunc(iv, I32), d, c])
            hi = b.call(shfl, [mask, b.trunc(b.lshr(iv, ir.Constant(I64, 32)), I32), d, c])
            r = b.or_(b.zext(lo, I64), b.shl(b.zext(hi, I64), ir.Constant(I64, 32)))
        elif bits == 32:
            r = b.call(shfl, [mask, iv, d, c])
        else:
            r = b.trunc(b.call(shfl, [mask, b.zext(iv, I32), d, c]), ir.IntType(bits))
        return r if isinstance(ty, ir.IntType) else b.bitcast(r, ty)

    def _warp_combine(self, val: ir.Value, op: N.AtomicOp, t: ScalarType) -> ir.Value:
        """`val` combined over the 32 lanes of the warp (the result is in lane 0)."""
        b = self.b
        for delta in (16, 8, 4, 2, 1):
            other = self._shfl_down(val, delta)
            if op in (N.AtomicOp.ADD, N.AtomicOp.SUB):
                val = b.fadd(val, other) if t.is_float else b.add(val, other)
            else:
                val = self.rmw_op(op, val, other, t)
        return val

    def _block_scratch(self, ty: ir.Type, name: str) -> ir.Value:
        """A shared-memory array of one `ty` per warp of the block (32 warps at most)."""
        arr = ir.ArrayType(ty, 32)
        g = ir.GlobalVariable(self.me.module, arr, self.me.unique(f"kiln_smem_{name}"), addrspace=3)
        g.linkage = "internal"
        g.initializer = ir.Constant(arr, ir.Undefined)
        g.align = 8
        return g

    def _flush_reductions_block(self) -> None:
        """The planned reductions' per-thread partials, combined over the BLOCK: a shuffle tree
        per warp, the warps' results through shared memory, a shuffle tree in warp 0, and ONE
        atomic per block (per warp issued 8x the atomics to one address, all at the end of the
        loop, where they queue: measured ~5% of the sum's time on an H100)."""
        fn = self.fn
        if not self.reductions:
            return
        tid = self.b.call(self.me.declare("llvm.nvvm.read.ptx.sreg.tid.x", I32, []), [])
        ntid = self.b.call(self.me.declare("llvm.nvvm.read.ptx.sreg.ntid.x", I32, []), [])
        barrier_or = self.me.declare("llvm.nvvm.barrier0.or", I32, [I32])
        for key, (acc, touched) in self.reductions.items():
            b = self.b
            name, op, indices = key
            t = self.arrays[name].dtype
            ty = reg_type(t)
            val = self._warp_combine(b.load(acc, typ=ty), op, t)
            lane = b.and_(tid, ir.Constant(I32, 31))
            warp = b.lshr(tid, ir.Constant(I32, 5))
            scratch = self._block_scratch(ty, name)
            sp = ir.PointerType(addrspace=3)
            slot = b.gep(scratch, [ir.Constant(I32, 0), warp], inbounds=True, source_etype=scratch.value_type)
            slot.type = sp
            write, written = fn.append_basic_block("red.smem"), fn.append_basic_block("red.sync")
            b.cbranch(b.icmp_unsigned("==", lane, ir.Constant(I32, 0)), write, written)
            b.position_at_end(write)
            b.store(val, slot)
            b.branch(written)
            b.position_at_end(written)
            # the barrier that publishes the warps' partials also ORs the touched flags
            anyt = b.call(barrier_or, [b.zext(b.load(touched, typ=I1), I32)])
            nwarps = b.lshr(b.add(ntid, ir.Constant(I32, 31)), ir.Constant(I32, 5))
            mine = b.gep(scratch, [ir.Constant(I32, 0), lane], inbounds=True, source_etype=scratch.value_type)
            mine.type = sp
            w0, done = fn.append_basic_block("red.warp0"), fn.append_basic_block("red.done")
            b.cbranch(b.icmp_unsigned("==", warp, ir.Constant(I32, 0)), w0, done)
            b.position_at_end(w0)
            part = b.select(b.icmp_unsigned("<", lane, nwarps), b.load(mine, typ=ty), self.identity(op, t))
            total = self._warp_combine(part, op, t)
            do = fn.append_basic_block("red.flush")
            leader = b.and_(b.icmp_unsigned("==", lane, ir.Constant(I32, 0)),
                            b.icmp_unsigned("!=", anyt, ir.Constant(I32, 0)))
            b.cbranch(leader, do, done)
            b.position_at_end(do)
            p, _a = self.element_ptr(N.ArrayRef(name, self.arrays[name].type, N.NO_LOC), indices)
            if t.is_float and t.bits in (32, 64) and op in (N.AtomicOp.MIN, N.AtomicOp.MAX):
                float_minmax_atomic(b, op is N.AtomicOp.MAX, p, total)
            else:
                b.atomic_rmw(atomicrmw_name(op, t), p, total, "monotonic")
            b.branch(done)
            b.position_at_end(done)
        self.reductions = {}

    def _emit_lockstep(self, body: Sequence[N.Stmt], copies: list[dict],
                       lanes: Sequence[tuple[int, int]] | None = None) -> None:
        """`body` once per copy of the variables, statement by statement; a store's value and
        address are computed for every copy before any copy stores. `lanes`: each copy's (row,
        lane) in a coarsened or vectorised group (default: copy c is row c, lane 0)."""
        where = list(lanes) if lanes is not None else [(c, 0) for c in range(len(copies))]
        for st in body:
            if isinstance(st, N.Store):
                pending = []
                for c, cv in enumerate(copies):
                    self._enter_copy(cv, *where[c])
                    p, a = self.element_ptr(st.array, st.indices)
                    v = self.convert(self.expr(st.value), st.value.type, a.dtype)
                    pending.append((p, a, v, self.access_align(st.array, st.indices, a.dtype)))
                for p, a, v, align in pending:
                    self.b.store(self.to_mem(v, a.dtype, self.b), p, align=align)
            else:
                for c, cv in enumerate(copies):
                    self._enter_copy(cv, *where[c])
                    self.stmt(st)

    def _enter_copy(self, variables: dict, row: int, lane: int) -> None:
        self.vars = variables
        if self.window is not None:
            self.window.row, self.window.col = row, lane
        if self.lanes is not None:
            self.lanes.lane = lane


def _private_vars(s: N.ParallelFor) -> set[str]:
    names = {d.var for d in s.dims}
    for n in walk(s.body):
        if isinstance(n, N.Assign):
            names.add(n.name)
        elif isinstance(n, N.For):
            names.add(n.var)
    return names


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

_nvptx_ready = False


def nvptx_available() -> str | None:
    """None if llvmlite can generate NVPTX here, else the reason it cannot."""
    global _nvptx_ready
    try:
        if not _nvptx_ready:
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
            _nvptx_ready = True
        llvm.Target.from_triple(TRIPLE)
    except Exception as e:  # noqa: BLE001 - any failure means "not available"
        return f"llvmlite has no NVPTX target: {e}"
    return None


def create_nvptx_machine(arch: str = DEFAULT_PTX_ARCH, features: str = DEFAULT_PTX_FEATURES, opt: int = 3):
    why = nvptx_available()
    if why:
        raise TargetError(f"cannot build the cuda target: {why}")

    return llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=arch, features=features, opt=opt)


_warned_builtin_math = False


def _warn_builtin_math() -> None:
    global _warned_builtin_math
    if not _warned_builtin_math:
        _warned_builtin_math = True
        warnings.warn("kiln: libdevice.10.bc was not found, so CUDA math functions use kiln's own f64 code "
                      "(slow for f32 on most GPUs): pip install nvidia-nvvm (part of 'kiln-aot[cuda]') or set "
                      "KILN_LIBDEVICE=/path/to/libdevice.10.bc (docs/cuda.md, 'Math functions')", stacklevel=3)


def build_ptx(kernels: Sequence[N.KernelIR], arch: str = DEFAULT_PTX_ARCH,
              features: str = DEFAULT_PTX_FEATURES, opt_level: int = 3, want_asm: bool = False,
              fast_math: bool = False, libdevice: str | bool = True, abi: AbiParams | None = None) -> PtxCode:
    """Compile planned kernels to one PTX module (`.target arch`), with its launches. The PTX is
    the assembly; `want_asm` also copies it into `PtxCode.asm` (for stage dumps).

    Math functions call libdevice, found by kiln.codegen.libdevice.find_libdevice (`libdevice`
    True), at the path given (a str), or not at all (False: kiln's own f64 code, which is also
    the fallback, with one warning, when libdevice is not found). `fast_math`: f32 sin, cos,
    tan, exp, log, pow, log2, log10, tanh use libdevice's fast approximate variants
    (docs/cuda.md gives their error)."""
    tm = create_nvptx_machine(arch, features, opt_level)
    path = find_libdevice() if libdevice is True else (libdevice or None)
    me = NvptxModuleEmitter(str(tm.target_data), libdevice=path is not None, fast_math=fast_math)
    me.add_kernels(kernels)
    if abi is not None:                 # kiln.runtime.abi_digest: binds the manifest to this PTX
        me.add_abi_descriptors(abi)
    if path is None and me.math.used and libdevice is True and not libdevice_turned_off():
        _warn_builtin_math()
    link = None
    if me.libdevice_calls:
        assert path is not None
        link = functools.partial(link_libdevice, path=path)
        # NVVMReflect (which folds libdevice's configuration queries) runs in the optimisation
        # pipeline: never skip it when libdevice is linked
        opt_level = max(opt_level, 1)
    out = optimise_and_emit(str(me.module), tm, opt_level=opt_level, vectorize=False, emit_object=False,
                            who="kiln.codegen.nvptx", link=link)
    return PtxCode(out.asm, arch, dict(me.launches), out.llvm_ir, out.asm if want_asm else "",
                   "libdevice" if path is not None else "builtin", tuple(sorted(me.libdevice_calls)))


def host_math_ir(names: Sequence[str] = GPU_MATH) -> str:
    """LLVM IR (host triple left empty) exporting `double kiln_test_<name>(double[, double])` for each
    GPU math function, so tests can check the GPU math code's accuracy on a CPU through MCJIT."""
    me = NvptxModuleEmitter(triple="")
    for n in names:
        fn = me.math.math_fn(n)
        w = ir.Function(me.module, fn.function_type, name=f"kiln_test_{n}")
        fn_attrs(w)
        b = ir.IRBuilder(w.append_basic_block("entry"))
        b.ret(b.call(fn, list(w.args)))
    return str(me.module)


__all__ = ["BLOCK_SIZE", "DEFAULT_CUBIN_ARCHS", "DEFAULT_PTX_ARCH", "DEFAULT_PTX_FEATURES", "GPU_MATH",
           "NvptxBodyEmitter", "NvptxModuleEmitter", "PtxCode", "build_ptx", "create_nvptx_machine",
           "host_math_ir", "nvptx_available"]
