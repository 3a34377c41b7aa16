"""NVPTX kernel and func bodies: the GPU's parallel loops and math (kiln.codegen.nvptx builds the
module and its entries around them).

Everything that is not specific to the GPU (expressions, statements, int/float semantics, f16,
funcs) comes from kiln.codegen.body_emitter. `NvptxBodyEmitter` adds the parallel loop as the
plan on it says (kiln.passes.plan_parallel, docs/cuda.md "Code generation"):
- a grid-stride loop over the flattened iteration space, UNROLL iterations in lock step first;
- coarsened stencils: several rows per thread with their shared loads in a register window;
- vector access: 4 consecutive innermost iterations per thread whose accesses LLVM merges into
  16-byte loads and stores, behind a per-launch alignment check;
- planned reductions combined per block (shuffle trees, shared memory, one atomic per block);
and the math functions LLVM cannot lower on NVPTX: libdevice calls, or kiln's own f64 code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llvmlite import ir

from kiln.codegen.body_emitter import KernelBodyEmitter
from kiln.codegen.libdevice import LIBDEVICE_MATH
from kiln.codegen.llvm_util import (
    DOUBLE,
    FLOAT,
    HALF,
    I1,
    I32,
    I64,
    ArrayVal,
    alloca,
    mem_type,
    reg_type,
)
from kiln.codegen.nvptx_atomics import float_minmax_atomic
from kiln.codegen.nvptx_math import GPU_MATH
from kiln.config import TUNING
from kiln.errors import KilnError
from kiln.ir import nodes as N
from kiln.ir.analysis import walk
from kiln.ir.ops import atomicrmw_name
from kiln.passes.plan_parallel import ReuseKey, assigned_locals, dim_offset, reuse_key
from kiln.types import INDEX, ScalarType

if TYPE_CHECKING:
    from kiln.codegen.nvptx import NvptxModuleEmitter

#: iterations a thread runs in lock step in the plain grid-stride loop (kiln.config)
UNROLL = TUNING.cuda_unroll


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
        w = self.window if self.lazy_depth == 0 else None
        key = w.key(e) if w is not None else None
        t = self.array(e.array).dtype
        if w is not None and key is not None and key in w.values:
            return self.convert(w.values[key], t, e.type)
        p, _a = self.element_ptr(e.array, e.indices, e.check)
        v = self.from_mem(self.b.load(p, typ=mem_type(t), align=self.access_align(e.array, e.indices, t)), t, self.b)
        if w is not None and key is not None:
            w.values[key] = v
        return self.convert(v, t, e.type)

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
            # plain one: views at odd offsets and strided views stay correct, only slower. The
            # fallback is not unrolled (a fifth copy of the body per loop for inputs that are
            # rare: on an H200 CUDA compile time went up 60% with it)
            b, fn = self.b, self.fn
            vec_bb, plain_bb, done = (fn.append_basic_block(f"vec.{n}") for n in ("aligned", "plain", "done"))
            b.cbranch(self._vector_aligned(plan.vector), vec_bb, plain_bb)
            b.position_at_end(vec_bb)
            self._group_loop(s, dims, plan.coarsen, plan.vector)
            self.b.branch(done)
            self.b.position_at_end(plain_bb)
            self._plain_loop(s, plan, dims, unroll=False)
            self.b.branch(done)
            self.b.position_at_end(done)
        self._flush_reductions_block()

    def _plain_loop(self, s: N.ParallelFor, plan: N.ParallelPlan, dims: list, unroll: bool = True) -> None:
        """The loop without vector access: coarsened, or a grid-stride loop (with `unroll`, UNROLL
        iterations in lock step first)."""
        counts = [c for _, _, c in dims]
        if plan.coarsen is not None:
            assert not plan.reductions and plan.lockstep, "plan_parallel coarsens only plain straight-line loops"
            self._group_loop(s, dims, plan.coarsen, None)
            return
        total = self._product(counts)
        gtid, stride, digits, sdig = self._grid_position(counts)
        flat, ds = gtid, digits
        if unroll and plan.lockstep and UNROLL > 1:
            flat, ds = self._lockstep_loop(s, dims, counts, total, stride, sdig, gtid, digits)
        self._one_at_a_time_loop(s, dims, counts, total, stride, sdig, flat, ds)

    def _vector_aligned(self, vec: N.Vectorization) -> ir.Value:
        """Whether every array of `vec` has a unit last stride and its data pointer and other
        strides aligned to a vector group (`vector_alignment`)."""
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

    def _group_loop(self, s: N.ParallelFor, dims: list, co: N.Coarsening | None,
                    vec: N.Vectorization | None) -> None:
        """The grid-stride loop over groups, one group per step: `co.factor` consecutive rows of
        dim 0 (a coarsened stencil) times `vec.width` consecutive iterations of the last
        dimension whose variable starts at a multiple of the width (vector access), either
        factor 1 when not planned. A full group runs as straight-line code in lock step
        (`_full_group`); a group at the end of dim 0 or either end of a row runs element by
        element (`_partial_group`)."""
        assert co is None or co.dim == 0
        b, fn = self.b, self.fn
        W, R = (vec.width if vec is not None else 1), (co.factor if co is not None else 1)
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
        total = self._product(gcounts)
        gtid, stride, digits, sdig = self._grid_position(gcounts)
        head, body_bb, full_bb, part_bb, latch, end = (
            fn.append_basic_block(f"vl.{n}") for n in ("head", "body", "full", "part", "latch", "end"))
        f, dphis = self._loop_head(head, b.block, gtid, digits, total, body_bb, end)
        b.position_at_end(body_bb)
        t0 = b.sub(b.mul(dphis[last], ir.Constant(I64, W)), lead)       # trip of lane 0 (< 0: before start)
        full: ir.Value = ir.Constant(I1, 1)
        if W > 1:
            full = b.and_(b.icmp_signed(">=", t0, ir.Constant(I64, 0)),
                          b.icmp_signed("<=", b.add(t0, ir.Constant(I64, W)), counts[last]))
        r0 = None
        if co is not None:
            r0 = b.mul(dphis[co.dim], ir.Constant(I64, R))
            full = b.and_(full, b.icmp_unsigned("<=", b.add(r0, ir.Constant(I64, R)), counts[co.dim]))
        b.cbranch(full, full_bb, part_bb)

        def position(r: ir.Value, k: ir.Value) -> list[ir.Value]:
            """The trip of every dim for row `r` and lane `k` of this step's group."""
            idx = list(dphis)
            if co is not None:
                idx[co.dim] = b.add(r0, r)
            idx[last] = b.add(t0, k)
            return idx

        b.position_at_end(full_bb)
        self._full_group(s, dims, co, vec, position)
        self.b.branch(latch)
        b.position_at_end(part_bb)
        self._partial_group(s, dims, R, W, position, counts, co)
        self.b.branch(latch)
        self._close_grid_loop(latch, head, end, f, dphis, stride, sdig, gcounts)

    def _full_group(self, s: N.ParallelFor, dims: list, co: N.Coarsening | None, vec: N.Vectorization | None,
                    position: Callable[[ir.Value, ir.Value], list[ir.Value]]) -> None:
        """Every row and lane of a group as straight-line code in lock step: the rows share the
        loads of `co.reuse` arrays (the register window, each element loaded once), and the
        lanes' accesses of `vec.arrays`, whose last stride is known to be 1 on this path, state
        their alignment so that LLVM's load/store vectorizer merges them into vector accesses."""
        last = len(dims) - 1
        W, R = (vec.width if vec is not None else 1), (co.factor if co is not None else 1)
        base_vars, base_arrays = self.vars, self.arrays
        lanes = [(r, k) for r in range(R) for k in range(W)]
        copies = self._var_copies(s, dims, [position(ir.Constant(I64, r), ir.Constant(I64, k)) for r, k in lanes])
        if vec is not None:
            self.arrays = dict(base_arrays)
            for name in vec.arrays:     # checked: a unit last stride, so neighbours are adjacent
                a = base_arrays[name]
                self.arrays[name] = ArrayVal(a.ptr, a.extents, a.type, [*a.strides[:-1], ir.Constant(I64, 1)])
            self.lanes = _VectorLanes(s.dims[last].var, W, {n: vector_alignment(W, base_arrays[n].dtype.itemsize)
                                                            for n in vec.arrays})
        if co is not None:
            self.window = _ReuseWindow(frozenset(co.reuse), s.dims[co.dim].var, assigned_locals(s.body),
                                       col_var=s.dims[last].var if vec is not None else None)
        self.in_parallel = True
        self._emit_lockstep(s.body, copies, lanes)
        self.in_parallel = False
        self.window, self.lanes = None, None
        self.vars, self.arrays = base_vars, base_arrays

    def _partial_group(self, s: N.ParallelFor, dims: list, R: int, W: int,
                       position: Callable[[ir.Value, ir.Value], list[ir.Value]], counts: list[ir.Value],
                       co: N.Coarsening | None) -> None:
        """The R x W elements of a group one by one, each run only when inside the loop."""
        b, fn = self.b, self.fn
        last = len(dims) - 1
        pre = b.block
        ehead, ebody, erun, enext, edone = (
            fn.append_basic_block(f"vl.{n}") for n in ("elem", "elembody", "run", "next", "elemdone"))
        b.branch(ehead)
        b.position_at_end(ehead)
        e = b.phi(I64, "elem")
        e.add_incoming(ir.Constant(I64, 0), pre)
        b.cbranch(b.icmp_unsigned("<", e, ir.Constant(I64, R * W)), ebody, edone)
        b.position_at_end(ebody)
        idx = position(b.udiv(e, ir.Constant(I64, W)), b.urem(e, ir.Constant(I64, W)))
        inside = b.and_(b.icmp_signed(">=", idx[last], ir.Constant(I64, 0)),
                        b.icmp_signed("<", idx[last], counts[last]))
        if co is not None:
            inside = b.and_(inside, b.icmp_unsigned("<", idx[co.dim], counts[co.dim]))
        b.cbranch(inside, erun, enext)
        b.position_at_end(erun)
        self._set_dim_vars(s, dims, self.vars, idx)
        self.in_parallel = True
        self.stmts(s.body)
        self.in_parallel = False
        if not self.b.block.is_terminated:
            self.b.branch(enext)
        b.position_at_end(enext)
        e.add_incoming(b.add(e, ir.Constant(I64, 1)), enext)
        b.branch(ehead)
        b.position_at_end(edone)

    def _product(self, values: list[ir.Value]) -> ir.Value:
        out = values[0]
        for v in values[1:]:
            out = self.b.mul(out, v)
        return out

    def _close_grid_loop(self, latch: ir.Block, head: ir.Block, end: ir.Block, f: ir.PhiInstr,
                         dphis: list[ir.PhiInstr], stride: ir.Value, sdig: list[ir.Value],
                         counts: list[ir.Value]) -> None:
        """From `latch`: advance the flat index and its digits by the grid stride, back to
        `head`; continue after the loop at `end`."""
        b = self.b
        b.position_at_end(latch)
        f.add_incoming(b.add(f, stride), latch)
        for k, v in enumerate(self._advance(list(dphis), sdig, counts)):
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
        self._close_grid_loop(latch, head, end, f, dphis, stride, sdig, counts)

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


__all__ = ["UNROLL", "NvptxBodyEmitter", "vector_alignment"]
