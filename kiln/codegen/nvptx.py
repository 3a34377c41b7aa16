"""Typed kernel IR -> NVPTX (PTX text) through llvmlite, sharing the CPU's body lowering.

    build_ptx(kernels, arch="sm_80") -> PtxCode

Kernel and func bodies come from kiln.codegen.nvptx_body (`NvptxBodyEmitter`: the GPU's
parallel loops and math). Math functions LLVM cannot lower on NVPTX (there is no libm) call
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
from kiln.codegen.libdevice import (
    find_libdevice,
    libdevice_function,
    libdevice_turned_off,
    link_libdevice,
)
from kiln.codegen.llvm_pipeline import optimise_and_emit
from kiln.codegen.llvm_util import (
    DOUBLE,
    FLOAT,
    I8,
    I32,
    I64,
    PTR,
    VOID,
    fn_attrs,
    reg_type,
)
from kiln.codegen.module_base import AbiParams, ModuleEmitterBase
from kiln.codegen.nvptx_body import NvptxBodyEmitter
from kiln.codegen.nvptx_counts import count_tuple, loop_count
from kiln.codegen.nvptx_math import GPU_MATH, GpuMathLibrary
from kiln.config import TUNING
from kiln.errors import KernelError, KilnError, TargetError
from kiln.ir import nodes as N
from kiln.passes.plan_parallel import strip_side_effects
from kiln.types import NdArrayType

TRIPLE = "nvptx64-nvidia-cuda"
DEFAULT_PTX_ARCH = "sm_80"
DEFAULT_PTX_FEATURES = "+ptx78"       # PTX ISA 7.8: CUDA 11.8+ drivers JIT it
DEFAULT_CUBIN_ARCHS = ("sm_80", "sm_90")
# tuning knobs (documented in kiln/config.py, TUNING_KNOBS); the runtime reads the block size
# from the manifest
BLOCK_SIZE = TUNING.cuda_block_size
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
        co, vec = loop.plan.coarsen, loop.plan.vector
        if co is not None:
            waves = LOOP_WAVES_COARSENED
        if count is not None:
            # one grid-stride step per group (`factor` rows of the coarsened dim times `width`
            # lanes of the last one, both of step 1): the runtime's range count over
            # [start, stop, factor] is the number of groups (the vector lanes' first group may
            # start before `start`: one group more at most, any grid size is correct)
            if co is not None:
                count[co.dim] = [count[co.dim][0], count[co.dim][1], ["const", co.factor]]
            if vec is not None:
                count[-1] = [count[-1][0], count[-1][1], ["const", vec.width]]
        return CudaLaunch(sym, ph.mode, count_tuple(count), waves, None if co is None else (co.dim, co.factor), True)

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
           "NvptxModuleEmitter", "PtxCode", "build_ptx", "create_nvptx_machine",
           "host_math_ir", "nvptx_available"]
