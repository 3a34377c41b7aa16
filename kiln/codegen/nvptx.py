"""Typed kernel IR -> NVPTX (PTX text) through llvmlite, reusing the CPU emitter's lowering.

    build_ptx(kernels, arch="sm_80") -> PtxCode

Everything that is not specific to the GPU (expressions, statements, int/float semantics, f16,
funcs) is inherited from kiln.codegen.emit: `NvptxFunctionEmitter` overrides only the parallel
loop, the math functions LLVM cannot lower on NVPTX (there is no libm/libdevice) and nothing else.
Those math functions are implemented in f64 LLVM IR in kiln.codegen.nvptx_math.

Kernel ABI on the GPU (docs/cuda.md): every PTX entry takes the kernel's packed argument block
(kiln.abi) as one `.param .u64` per 8-byte slot, in block order, so the runtime launches with
`kernelParams[k] = block + 8*k` (or packs the block once and points into it).

Launch plan. A kernel body is split at its top-level parallel loops:
- no parallel loop: ONE launch of one thread running the whole body ("single");
- otherwise one launch per parallel loop ("loop": a 1-D grid-stride loop over the flattened
  iteration space), plus one single-thread launch per top-level serial segment that has side
  effects (stores, atomics, calls that take arrays), in source order. Serial code that comes
  before a launch's own phase is re-executed by every thread of that launch with its side effects
  stripped (so locals have their values); it must not read arrays the kernel writes (checked:
  KernelError otherwise), because on the GPU those reads would race with the loop's writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llvmlite import ir

from kiln.abi import block_size, layout_params
from kiln.codegen.emit import (
    DOUBLE,
    FLOAT,
    HALF,
    I1,
    I8,
    I32,
    I64,
    PTR,
    VOID,
    FunctionEmitter,
    ModuleEmitter,
    _alloca,
    _err,
    const_value,
    fn_attrs,
    mem_type,
    reg_type,
)
from kiln.codegen.llvm_util import atomicrmw_op
from kiln.codegen.nvptx_math import _MathBuilder
from kiln.errors import KernelError, KilnError, TargetError
from kiln.ir import nodes as N
from kiln.ir.analysis import array_access, walk
from kiln.types import INDEX, NdArrayType, ScalarType, f32, f64

TRIPLE = "nvptx64-nvidia-cuda"
DEFAULT_PTX_ARCH = "sm_80"
DEFAULT_PTX_FEATURES = "+ptx78"       # PTX ISA 7.8: CUDA 11.8+ drivers JIT it
DEFAULT_CUBIN_ARCHS = ("sm_80", "sm_90")
BLOCK_SIZE = 256

#: math functions computed by kiln's own code on NVPTX (in f64, rounded to the argument type)
GPU_MATH = ("exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "tanh", "pow")


@dataclass
class Launch:
    """One GPU launch of a kernel: its PTX entry name and how to size its grid."""

    entry: str
    mode: str                               # "loop" (grid-stride) or "single" (1 thread)
    count: list[Any] | None = None          # per dim [start, stop, step] host expressions
    waves: int = 1                          # grid cap, in full waves of resident blocks

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"entry": self.entry, "mode": self.mode}
        if self.count is not None:
            d["count"] = self.count
        if self.waves != 1:
            d["waves"] = self.waves
        return d


@dataclass
class PtxCode:
    ptx: str
    arch: str
    launches: dict[str, list[Launch]] = field(default_factory=dict)   # kernel IR name -> launches
    llvm_ir: str = ""


# ---------------------------------------------------------------------------------------------
# Host-evaluable loop bounds (so the runtime can size the grid; correctness never depends on it)
# ---------------------------------------------------------------------------------------------

def _host_expr(e: N.Expr, params: dict[str, Any], assigned: set[str]) -> Any:
    """A JSON expression tree for `e` over kernel params, or None if it needs device state
    (evaluated by kiln.runtime.cuda.eval_host_expr)."""
    if isinstance(e, N.Const):
        return ["const", e.value]
    if isinstance(e, N.Shape):
        return ["shape", e.array.name, e.dim] if e.array.name in params else None
    if isinstance(e, N.Var):
        if e.name in params and e.name not in assigned and isinstance(params[e.name], ScalarType):
            return ["arg", e.name]
        return None
    if isinstance(e, N.Cast):
        inner = _host_expr(e.value, params, assigned)
        if inner is None or not e.type.is_int:
            return None
        return ["int", inner]
    if isinstance(e, N.Binary) and e.op.value in ("+", "-", "*", "//", "%") and e.type.is_int:
        a = _host_expr(e.lhs, params, assigned)
        b = _host_expr(e.rhs, params, assigned)
        return None if a is None or b is None else [e.op.value, a, b]
    if isinstance(e, N.BuiltinCall) and e.name in ("min", "max") and e.type.is_int:
        args = [_host_expr(a, params, assigned) for a in e.args]
        return None if any(a is None for a in args) else [e.name, *args]
    return None


# ---------------------------------------------------------------------------------------------
# Splitting a kernel into launches
# ---------------------------------------------------------------------------------------------

def _has_effects(s: N.Stmt) -> bool:
    for n in walk(s):
        if isinstance(n, (N.Store, N.AugStore, N.AtomicRMW)):
            return True
        if isinstance(n, N.Call) and any(isinstance(a, N.ArrayRef) for a in n.args):
            return True
    return False


def _strip(body: Sequence[N.Stmt], kname: str) -> tuple[N.Stmt, ...]:
    """`body` without its side effects (stores/atomics/array calls), for re-execution."""
    out: list[N.Stmt] = []
    for s in body:
        if isinstance(s, (N.Store, N.AugStore)):
            continue
        if isinstance(s, N.ExprStmt) and _has_effects(s):
            continue
        if isinstance(s, N.If):
            out.append(N.If(s.loc, s.cond, _strip(s.then_body, kname), _strip(s.else_body, kname)))
            _check_pure_expr(s.cond, kname)
        elif isinstance(s, N.While):
            _check_pure_expr(s.cond, kname)
            out.append(N.While(s.loc, s.cond, _strip(s.body, kname)))
        elif isinstance(s, N.For):
            for e in (s.start, s.stop, s.step):
                _check_pure_expr(e, kname)
            out.append(N.For(s.loc, s.var, s.start, s.stop, s.step, _strip(s.body, kname)))
        else:
            if _has_effects(s):
                raise _cuda_refusal(kname, s.loc, "an atomic or a call taking arrays inside an expression "
                                    "of serial code outside the parallel loop")
            out.append(s)
    return tuple(out)


def _check_pure_expr(e: N.Expr, kname: str) -> None:
    for n in walk(e):
        if isinstance(n, N.AtomicRMW) or (isinstance(n, N.Call) and any(isinstance(a, N.ArrayRef) for a in n.args)):
            raise _cuda_refusal(kname, e.loc, "an atomic or a call taking arrays inside a condition of serial "
                                "code outside the parallel loop")


def _cuda_refusal(kname: str, loc: N.Loc, what: str) -> KernelError:
    return KernelError(f"kernel {kname!r} cannot be compiled for the cuda target: {what} (see docs/cuda.md, "
                       "'Serial code around parallel loops')", filename=loc.filename, lineno=loc.line, col=loc.col)


@dataclass
class _Phase:
    mode: str                      # "loop" | "single"
    prefix: tuple[N.Stmt, ...]     # stripped serial code re-executed first
    own: tuple[N.Stmt, ...]        # the phase's own statements (a ParallelFor or a serial segment)


def plan_phases(kir: N.KernelIR) -> list[_Phase]:
    kf = kir.kernel
    body = kf.body
    if not any(isinstance(s, N.ParallelFor) for s in body):
        return [_Phase("single", (), tuple(body))]
    # segments: serial runs between parallel loops
    segs: list[tuple[str, tuple[N.Stmt, ...]]] = []
    cur: list[N.Stmt] = []
    for s in body:
        if isinstance(s, N.ParallelFor):
            if cur:
                segs.append(("serial", tuple(cur)))
                cur = []
            segs.append(("loop", (s,)))
        else:
            cur.append(s)
    if cur:
        segs.append(("serial", tuple(cur)))
    access = array_access(kir)
    written = {n for n, m in access.items() if m in ("write", "readwrite")}
    phases: list[_Phase] = []
    prefix: list[N.Stmt] = []
    for kind, stmts in segs:
        if kind == "loop":
            phases.append(_Phase("loop", tuple(prefix), stmts))
        elif any(_has_effects(s) for s in stmts):
            phases.append(_Phase("single", tuple(prefix), stmts))
        if kind == "serial":
            stripped = _strip(stmts, kir.display_name or kf.name)
            for n in walk(stripped):
                if isinstance(n, N.Load) and n.array.name in written:
                    raise _cuda_refusal(kir.display_name or kf.name, n.loc,
                                        f"serial code outside the parallel loop reads array {n.array.name!r}, "
                                        "which the kernel writes")
                if isinstance(n, N.Call) and any(isinstance(a, N.ArrayRef) and a.name in written for a in n.args):
                    raise _cuda_refusal(kir.display_name or kf.name, n.loc,
                                        "serial code outside the parallel loop calls a func with an array "
                                        "the kernel writes")
            prefix.extend(stripped)
    return phases


def _loop_count(kir: N.KernelIR, phase: _Phase) -> list[Any] | None:
    pf = phase.own[0]
    assert isinstance(pf, N.ParallelFor)
    params = {p.name: p.type for p in kir.kernel.params}
    assigned = {n.name for n in walk(phase.prefix) if isinstance(n, N.Assign)}
    assigned |= {n.var for n in walk(phase.prefix) if isinstance(n, N.For)}
    dims = []
    for d in pf.dims:
        t = [_host_expr(e, params, assigned) for e in (d.start, d.stop, d.step)]
        if any(x is None for x in t):
            return None
        dims.append(t)
    return dims


# ---------------------------------------------------------------------------------------------
# Emitters
# ---------------------------------------------------------------------------------------------

class NvptxModuleEmitter(ModuleEmitter):
    def __init__(self, data_layout: str = "") -> None:
        super().__init__(TRIPLE, data_layout)
        self.launches: dict[str, list[Launch]] = {}
        self._math: dict[str, ir.Function] = {}

    def _emit_runtime_globals(self) -> None:   # no host thread pool on the GPU
        pass

    def add_kernels(self, kernels: Sequence[N.KernelIR]) -> None:
        todo = self.declare_funcs(kernels)
        for f, fn in todo:
            NvptxFunctionEmitter(self, f, fn).emit()
        for k in kernels:
            kf = k.kernel
            if kf.name in self.kernel_irs:
                raise KilnError(f"kernel {kf.name!r} given twice")
            self.kernel_irs[kf.name] = kf
            phases = plan_phases(k)
            launches = []
            base = f"kiln_kernel_{kf.name}"
            for pi, ph in enumerate(phases):
                sym = self.unique(base if len(phases) == 1 else f"{base}__p{pi}")
                impl = ir.Function(self.module, self._proto(kf), name=self.unique(f"kiln_impl_{sym}"))
                impl.linkage = "internal"
                fn_attrs(impl, "alwaysinline")
                body = ph.prefix + ph.own
                sub_ir = N.FunctionIR(kf.name, kf.params, kf.ret, kf.locals, body, kf.loc, True)
                fe = NvptxFunctionEmitter(self, sub_ir, impl)
                fe.emit()
                entry = ir.Function(self.module, ir.FunctionType(
                    VOID, [I64] * (block_size(layout_params([(p.name, p.type) for p in kf.params])) // 8)),
                    name=sym)
                entry.calling_convention = "ptx_kernel"
                fn_attrs(entry)
                self._emit_gpu_entry(kf, impl, entry)
                count = _loop_count(k, ph) if ph.mode == "loop" else None
                # 1-D streaming loops run fastest with many waves of blocks (measured on H100:
                # saxpy 90% of copy bandwidth with one wave, 96% with 16); ndranges (stencils:
                # neighbours reused through L2) with one compact wave (71% vs 66%), and so do
                # loops with reductions (one atomic per warp: 16 waves = 16x the atomics, 88% -> 35%)
                waves = 1
                if ph.mode == "loop" and len(ph.own[0].dims) == 1:
                    from kiln.codegen.reductions import find_reductions
                    waves = 1 if find_reductions(ph.own[0]) else LOOP_WAVES_1D
                launches.append(Launch(sym, ph.mode, count, waves))
            self.launches[kf.name] = launches
            self.kernel_symbols[kf.name] = launches[0].entry

    def _emit_gpu_entry(self, kf: N.FunctionIR, impl: ir.Function, entry: ir.Function) -> None:
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        slots = list(entry.args)
        layout = layout_params([(p.name, p.type) for p in kf.params])
        args: list[ir.Value] = []
        for pl, p in zip(layout, kf.params):
            s0 = pl.offset // 8
            if isinstance(p.type, NdArrayType):
                g = b.inttoptr(slots[s0], ir.PointerType(addrspace=1))
                args.append(b.addrspacecast(g, PTR))
                args += [slots[s0 + 1 + d] for d in range(p.type.ndim)]
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

    # -- math library (f64; f32/f16 go through it and round) ---------------------------------
    def math_fn(self, name: str) -> ir.Function:
        fn = self._math.get(name)
        if fn is None:
            nargs = 2 if name in ("atan2", "pow") else 1
            fn = ir.Function(self.module, ir.FunctionType(DOUBLE, [DOUBLE] * nargs),
                             name=self.unique(f"kiln_math_{name}"))
            fn.linkage = "internal"
            fn_attrs(fn)
            self._math[name] = fn
            _MathBuilder(self, fn).build(name)
        return fn


class NvptxFunctionEmitter(FunctionEmitter):
    me: NvptxModuleEmitter

    # math: exp/log/sin/... have no NVPTX lowering without libdevice
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
        if short in GPU_MATH:
            return self._gpu_math(short, t, args)
        return super().float_intrinsic(base, t, args)

    def libm(self, name: str, t: ScalarType, args: list[ir.Value]) -> ir.Value:
        if name in GPU_MATH:
            return self._gpu_math(name, t, args)
        raise KilnError(f"codegen: math function {name!r} has no NVPTX lowering")

    def _gpu_math(self, name: str, t: ScalarType, args: list[ir.Value]) -> ir.Value:
        b = self.b
        if t.bits != 64:
            args = [b.fpext(a, DOUBLE) for a in args]
        r = b.call(self.me.math_fn(name), args)
        if t.bits == 32:
            return b.fptrunc(r, FLOAT)
        if t.bits == 16:
            return b.fptrunc(b.fptrunc(r, FLOAT), HALF)
        return r

    # the parallel loop: grid-stride over the flattened iteration space
    def parallel_for(self, s: N.ParallelFor) -> None:
        b = self.b
        fn = self.fn
        dims = self.parallel_dims(s)
        nd = len(dims)
        counts = [c for _, _, c in dims]
        # the virtual iteration space the threads walk: the dims themselves, or with the last two
        # dims cut into TILE_ROWS x TILE_COLS tiles (a block then covers several rows, so vertical
        # neighbours come from L1 instead of L2)
        tiled = TILE_2D and nd >= 2
        if tiled:
            cr, cc = counts[-2], counts[-1]
            ntr = b.udiv(b.add(cr, ir.Constant(I64, TILE_ROWS - 1)), ir.Constant(I64, TILE_ROWS))
            ntc = b.udiv(b.add(cc, ir.Constant(I64, TILE_COLS - 1)), ir.Constant(I64, TILE_COLS))
            vcounts = counts[:-2] + [ntr, ntc, ir.Constant(I64, TILE_ROWS), ir.Constant(I64, TILE_COLS)]
        else:
            vcounts = counts
        nv = len(vcounts)
        total = vcounts[0]
        for c in vcounts[1:]:
            total = b.mul(total, c)

        def sreg(name: str) -> ir.Value:
            f = self.me.declare(f"llvm.nvvm.read.ptx.sreg.{name}", I32, [])
            return b.zext(b.call(f, []), I64)

        ntid = sreg("ntid.x")
        gtid = b.add(b.mul(sreg("ctaid.x"), ntid), sreg("tid.x"))
        stride = b.mul(sreg("nctaid.x"), ntid)
        # mixed-radix digits of the flat index and of the stride (one division per thread, not
        # per iteration): digit[k] advances by sdig[k] with a carry each iteration
        digits: list[ir.Value] = []
        sdig: list[ir.Value] = []
        g, st = gtid, stride
        for k in range(nv - 1, -1, -1):
            cnt = vcounts[k]
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

        def advance(b: ir.IRBuilder, ds: list[ir.Value]) -> list[ir.Value]:
            """The digits of (flat index + stride): add the stride's digits with carries."""
            carry = ir.Constant(I64, 0)
            new: list[ir.Value] = [ir.Constant(I64, 0)] * nv
            for k in range(nv - 1, 0, -1):
                v = b.add(b.add(ds[k], sdig[k]), carry)
                over = b.icmp_unsigned(">=", v, vcounts[k])
                new[k] = b.select(over, b.sub(v, vcounts[k]), v)
                carry = b.zext(over, I64)
            new[0] = b.add(b.add(ds[0], sdig[0]), carry)
            return new

        def indices(b: ir.IRBuilder, ds: list[ir.Value], clamp: bool) -> tuple[list[ir.Value], ir.Value | None]:
            """(per-dim iteration numbers, validity) of virtual digits `ds`; with `clamp`, an
            invalid (tile padding) position is moved onto a valid one so its loads stay in bounds."""
            if not tiled:
                return list(ds), None
            row = b.add(b.mul(ds[-4], ir.Constant(I64, TILE_ROWS)), ds[-2])
            col = b.add(b.mul(ds[-3], ir.Constant(I64, TILE_COLS)), ds[-1])
            rv = b.icmp_unsigned("<", row, cr)
            cv = b.icmp_unsigned("<", col, cc)
            if clamp:
                row = b.select(rv, row, b.sub(cr, ir.Constant(I64, 1)))
                col = b.select(cv, col, b.sub(cc, ir.Constant(I64, 1)))
            return list(ds[:-4]) + [row, col], b.and_(rv, cv)

        def set_dim_vars(vars_: dict, idx: list[ir.Value]) -> None:
            for k in range(nd):
                slot, t = vars_[s.dims[k].var]
                self.b.store(self.convert(self._dim_value(s, k, dims[k], idx[k]), INDEX, t), slot)

        # reductions (`out[0] += x[i]` with loop-invariant indices, kiln.codegen.reductions):
        # each thread accumulates privately over its whole grid-stride loop, then a warp
        # shuffle tree combines the 32 partials and lane 0 issues ONE atomic per warp
        self.start_reductions(s)
        f_in, d_in = gtid, digits
        unroll = UNROLL if _lockstep_ok(s) else 1
        if unroll > 1:
            # main loop: `unroll` iterations (flat, flat + stride, ...) in lock step, statement by
            # statement: every copy's loads of a statement are issued before any copy's store
            # (legal: different iterations of a parallel loop never depend on each other), which
            # keeps several independent memory requests in flight per thread
            lim = b.sub(total, b.mul(stride, ir.Constant(I64, unroll - 1)))
            pre = b.block
            head = fn.append_basic_block("gs4.head")
            body_bb = fn.append_basic_block("gs4.body")
            exit_bb = fn.append_basic_block("gs4.exit")
            b.branch(head)
            b.position_at_end(head)
            f = b.phi(I64, "flat4")
            f.add_incoming(gtid, pre)
            dphis = []
            for k in range(nv):
                p = b.phi(I64, f"d4_{k}")
                p.add_incoming(digits[k], pre)
                dphis.append(p)
            b.cbranch(b.icmp_signed("<", f, lim), body_bb, exit_bb)
            b.position_at_end(body_bb)
            copies = []
            valids: list[ir.Value | None] = []
            ds: list[ir.Value] = list(dphis)
            base_vars = self.vars
            private = _private_vars(s)
            for c in range(unroll):
                if c:
                    ds = advance(b, ds)
                cv = dict(base_vars)
                for name in private:
                    if name in base_vars:
                        slot = _alloca(self.ab, mem_type(base_vars[name][1]), name=f"{name}.u{c}")
                        cv[name] = (slot, base_vars[name][1])
                idx, valid = indices(b, ds, clamp=True)
                set_dim_vars(cv, idx)
                copies.append(cv)
                valids.append(valid)
            self.in_parallel = True
            self._emit_lockstep(s.body, copies, valids)
            self.in_parallel = False
            self.vars = base_vars
            ds = advance(self.b, ds)
            latch_bb = self.b.block
            f.add_incoming(self.b.add(f, self.b.mul(stride, ir.Constant(I64, unroll))), latch_bb)
            for k in range(nv):
                dphis[k].add_incoming(ds[k], latch_bb)
            self.b.branch(head)
            b.position_at_end(exit_bb)
            f_in, d_in = f, dphis
        # remainder (or the whole loop): one iteration at a time
        pre = b.block
        head = fn.append_basic_block("gs.head")
        body_bb = fn.append_basic_block("gs.body")
        latch = fn.append_basic_block("gs.latch")
        end = fn.append_basic_block("gs.end")
        b.branch(head)
        b.position_at_end(head)
        f = b.phi(I64, "flat")
        f.add_incoming(f_in, pre)
        dphis = []
        for k in range(nv):
            p = b.phi(I64, f"d{k}")
            p.add_incoming(d_in[k], pre)
            dphis.append(p)
        b.cbranch(b.icmp_signed("<", f, total), body_bb, end)
        b.position_at_end(body_bb)
        idx, valid = indices(b, list(dphis), clamp=False)
        if valid is not None:
            run_bb = fn.append_basic_block("gs.valid")
            b.cbranch(valid, run_bb, latch)
            b.position_at_end(run_bb)
        set_dim_vars(self.vars, idx)
        self.in_parallel = True
        self.stmts(s.body)
        self.in_parallel = False
        if not self.b.block.is_terminated:
            self.b.branch(latch)
        b.position_at_end(latch)
        f.add_incoming(b.add(f, stride), latch)
        for k, v in enumerate(advance(b, list(dphis))):
            dphis[k].add_incoming(v, latch)
        b.branch(head)
        b.position_at_end(end)
        self._flush_reductions_warp()

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

    def _flush_reductions_warp(self) -> None:
        fn = self.fn
        for key, (acc, touched) in self.reductions.items():
            b = self.b
            name, op, indices = key
            t = self.arrays[name].dtype
            val = b.load(acc, typ=reg_type(t))
            for delta in (16, 8, 4, 2, 1):
                other = self._shfl_down(val, delta)
                if op in (N.AtomicOp.ADD, N.AtomicOp.SUB):
                    val = b.fadd(val, other) if t.is_float else b.add(val, other)
                else:
                    val = self.rmw_op(op, val, other, t)
            vote = self.me.declare("llvm.nvvm.vote.any.sync", I1, [I32, I1])
            anyt = b.call(vote, [ir.Constant(I32, -1), b.load(touched, typ=I1)])
            tid = b.call(self.me.declare("llvm.nvvm.read.ptx.sreg.tid.x", I32, []), [])
            lane0 = b.icmp_unsigned("==", b.and_(tid, ir.Constant(I32, 31)), ir.Constant(I32, 0))
            do = fn.append_basic_block("red.flush")
            done = fn.append_basic_block("red.done")
            b.cbranch(b.and_(anyt, lane0), do, done)
            b.position_at_end(do)
            p, _a = self.element_ptr(N.ArrayRef(name, self.arrays[name].type, N.NO_LOC), indices)
            b.atomic_rmw(atomicrmw_op(op.value, t), p, val, "monotonic")
            b.branch(done)
            b.position_at_end(done)
        self.reductions = {}

    def _emit_lockstep(self, body: Sequence[N.Stmt], copies: list[dict], valids: list[ir.Value | None]) -> None:
        for st in body:
            if isinstance(st, N.Store):
                pending = []
                for cv in copies:
                    self.vars = cv
                    p, a = self.element_ptr(st.array, st.indices)
                    v = self.convert(self.expr(st.value), st.value.type, a.dtype)
                    pending.append((p, a, v))
                for (p, a, v), valid in zip(pending, valids):
                    if valid is None:
                        self.b.store(self.to_mem(v, a.dtype, self.b), p, align=a.dtype.itemsize)
                    else:
                        with self.b.if_then(valid):
                            self.b.store(self.to_mem(v, a.dtype, self.b), p, align=a.dtype.itemsize)
            else:
                for cv in copies:
                    self.vars = cv
                    self.stmt(st)


UNROLL = 4
LOOP_WAVES_1D = 16
#: cut the last two dims of an ndrange into tiles (see parallel_for); a module switch so the
#: benchmark can compare
TILE_2D = False
TILE_ROWS = 4
TILE_COLS = 64


def _lockstep_ok(s: N.ParallelFor) -> bool:
    """Straight-line bodies of assignments, stores and privatised reductions (which become
    register accumulations), without other atomics or calls."""
    from kiln.codegen.reductions import find_reductions, reduction_key

    reductions = set(find_reductions(s))
    for st in s.body:
        if isinstance(st, N.ExprStmt) and isinstance(st.value, N.AtomicRMW) \
                and reduction_key(st.value) in reductions:
            parts: Sequence[object] = (st.value.value, *st.value.indices)
        elif isinstance(st, (N.Assign, N.Store)):
            parts = (st,)
        else:
            return False
        for n in walk(tuple(parts)):
            if isinstance(n, (N.AtomicRMW, N.Call)):
                return False
    return True


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
        import llvmlite.binding as llvm

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
    import llvmlite.binding as llvm

    return llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=arch, features=features, opt=opt)


def emit_nvptx_ir(kernels: Sequence[N.KernelIR], arch: str = DEFAULT_PTX_ARCH) -> NvptxModuleEmitter:
    tm = create_nvptx_machine(arch)
    me = NvptxModuleEmitter(str(tm.target_data))
    me.add_kernels(kernels)
    return me


def build_ptx(kernels: Sequence[N.KernelIR], arch: str = DEFAULT_PTX_ARCH,
              features: str = DEFAULT_PTX_FEATURES, opt_level: int = 3) -> PtxCode:
    """Compile kernels to one PTX module (`.target arch`), with its launch plan."""
    import llvmlite.binding as llvm

    tm = create_nvptx_machine(arch, features, opt_level)
    me = NvptxModuleEmitter(str(tm.target_data))
    me.add_kernels(kernels)
    text = str(me.module)
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as e:
        raise KilnError(f"kiln.codegen.nvptx produced invalid LLVM IR: {e}") from e
    mod.triple = TRIPLE
    mod.data_layout = str(tm.target_data)
    if opt_level > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=min(3, opt_level))
        pto.loop_unrolling = True
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
    ptx = tm.emit_assembly(mod)
    return PtxCode(ptx, arch, dict(me.launches), str(mod))


def host_math_ir(names: Sequence[str] = GPU_MATH) -> str:
    """LLVM IR (host triple left empty) exporting `double kiln_test_<name>(double[, double])` for each
    GPU math function, so tests can check the GPU math code's accuracy on a CPU through MCJIT."""
    me = NvptxModuleEmitter.__new__(NvptxModuleEmitter)
    ModuleEmitter.__init__(me, "", "")
    me.launches = {}
    me._math = {}
    for n in names:
        fn = me.math_fn(n)
        w = ir.Function(me.module, fn.function_type, name=f"kiln_test_{n}")
        fn_attrs(w)
        b = ir.IRBuilder(w.append_basic_block("entry"))
        b.ret(b.call(fn, list(w.args)))
    return str(me.module)


__all__ = ["BLOCK_SIZE", "DEFAULT_CUBIN_ARCHS", "GPU_MATH", "Launch", "PtxCode", "build_ptx",
           "emit_nvptx_ir", "host_math_ir", "nvptx_available"]

# silence "imported but unused" for names kept for subclasses/tests
_unused = (_alloca, _err, const_value, mem_type, f32, f64)
