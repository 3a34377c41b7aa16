"""Plan how each parallel loop and each kernel runs, as data on the IR that codegen obeys.

    plan_parallel(kir) -> kir with `ParallelFor.plan` and `KernelIR.launch_plan` set

Privatised reductions. `out[0] += x[i]` inside a parallel loop is an atomic on ONE element from
every iteration: with several threads that address bounces between cores and the loop runs at
atomic speed, not memory speed. Such an atomic can instead accumulate into a private variable per
chunk of iterations (per thread on the GPU), and the chunk adds its partial result with one atomic
at the end (Taichi and OpenMP do the same). An atomic qualifies (`ScalarReduction`) when its value
is unused, its op is associative and commutative, its indices do not change within the loop
(constants, shapes, and variables the body never assigns), and the array is touched in the loop
by nothing but such atomics (no loads, stores, or calls passing it). Float sums are then added in
a different order than the serial loop would, which is also true of the atomic version with more
than one thread.

Privatised arrays. Atomics whose index DOES vary (a histogram: `bins[keys[i]] += 1`) are handled
per array instead (`PrivateArray`): when every use of an array in the loop is such a
statement-level atomic with one privatisable op (ADD and SUB may mix: both accumulate a signed
delta), each CPU chunk can scatter into a private copy of the array with plain load-op-store and
then merge the copy into the real array with one atomic per element that changed. The CPU code
generator does that only when the array is small (a run-time check) and keeps the atomic loop for
larger arrays. Arrays that are scalar reductions keep the cheaper scalar path.

Stencils (`Coarsening`, GPU only). A 2-D/3-D loop whose body reads an array it never writes at
several offsets along the slowest dimension (`u[i - 1, j] + u[i + 1, j]`) is planned coarsened:
each GPU thread runs COARSEN_FACTOR consecutive rows of one column and loads each element of
such arrays once for all of them (a sliding window in registers), instead of every row loading
its neighbours again (kiln.codegen.nvptx). The CPU target ignores it.

Vector access (`Vectorization`, GPU only). A straight-line loop whose last dimension has step 1
and whose body indexes arrays with that dimension's variable last (`x[i]`, `u[i, j + 1]`) is
planned so that each GPU thread runs VECTOR_WIDTH (8 with reductions) consecutive iterations of
that dimension, from a multiple of the width: their accesses are adjacent, and LLVM merges them
into 16-byte loads and stores when the runtime finds the arrays aligned. The CPU target ignores
it (LLVM's loop vectorizer does the same there).

GPU launches (`LaunchPlan`). A kernel body is split at its top-level parallel loops:
- no parallel loop: ONE launch of one thread running the whole body ("single");
- otherwise one launch per parallel loop ("loop"), plus one single-thread launch per top-level
  serial segment that has side effects (stores, atomics, calls that take arrays), in source order.
  Serial code that comes before a launch's own phase is re-executed by every thread of that launch
  with its side effects stripped (so locals have their values); it must not read arrays the kernel
  writes, because on the GPU those reads would race with the loop's writes. A kernel that breaks
  this gets a `cuda_refusal` instead of phases (the CPU target does not care).

Run after lower_aug_stores and fold_constants (the plans compare folded index expressions), as
the last pass: `LaunchPhase` names statements by their index in the kernel body, so a pass that
later adds, drops or reorders statements of a planned kernel must run plan_parallel again
(renaming funcs, as kiln.passes.rename does, keeps plans valid). kiln.ir.verify checks that the
plans name existing arrays and statements.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from kiln.config import TUNING
from kiln.errors import KernelError
from kiln.ir import nodes as ir
from kiln.ir.analysis import array_access, walk, without_locs
from kiln.types import ScalarType

PRIVATIZABLE = frozenset({ir.AtomicOp.ADD, ir.AtomicOp.SUB, ir.AtomicOp.MIN, ir.AtomicOp.MAX,
                          ir.AtomicOp.AND, ir.AtomicOp.OR, ir.AtomicOp.XOR})

ReductionKey = tuple[str, ir.AtomicOp, tuple[ir.Expr, ...]]


def reduction_key(e: ir.AtomicRMW) -> ReductionKey:
    """What identifies a reduction: array, op and index trees without source locations."""
    return (e.array.name, e.op, tuple(without_locs(i) for i in e.indices))


# ---------------------------------------------------------------------------------------------
# Reductions and private arrays of one loop
# ---------------------------------------------------------------------------------------------

def assigned_locals(body: tuple[ir.Stmt, ...]) -> set[str]:
    names: set[str] = set()
    for n in walk(body):
        if isinstance(n, ir.Assign):
            names.add(n.name)
        elif isinstance(n, ir.For):
            names.add(n.var)
    return names


def _invariant(e: ir.Expr, assigned: set[str]) -> bool:
    for n in walk(e):
        if isinstance(n, ir.Var) and n.name in assigned:
            return False
        if isinstance(n, (ir.Load, ir.AtomicRMW, ir.Call)):
            return False
    return True


def _statement_atomics(loop: ir.ParallelFor) -> list[ir.AtomicRMW]:
    return [n.value for n in walk(loop.body)
            if isinstance(n, ir.ExprStmt) and isinstance(n.value, ir.AtomicRMW)]


def _other_uses(loop: ir.ParallelFor) -> set[str]:
    """Arrays used in the loop by anything but a statement-level atomic: loads, stores, atomics
    whose value is used, and calls that receive the array. Any such use disqualifies an array."""
    out: set[str] = set()
    for n in walk(loop.body):
        if isinstance(n, (ir.Load, ir.Store, ir.AugStore)):
            out.add(n.array.name)
        elif isinstance(n, ir.Call):
            out.update(a.name for a in n.args if isinstance(a, ir.ArrayRef))
    stmt_atomics = {id(a) for a in _statement_atomics(loop)}
    for n in walk(loop.body):
        if isinstance(n, ir.AtomicRMW) and id(n) not in stmt_atomics:
            out.add(n.array.name)
    return out


def find_reductions(loop: ir.ParallelFor) -> list[ReductionKey]:
    """The privatisable atomics of `loop`, one key per (array, op, indices), in body order."""
    assigned = assigned_locals(loop.body) | {d.var for d in loop.dims}
    candidates: dict[str, list[ReductionKey]] = {}
    disqualified: set[str] = set()
    for a in _statement_atomics(loop):
        dtype = a.array.type.dtype
        ok = (a.op in PRIVATIZABLE and dtype is not None and dtype.bits >= 8 and dtype.name != "f16"
              and all(_invariant(i, assigned) for i in a.indices))
        if ok:
            key = reduction_key(a)
            if key not in candidates.setdefault(a.array.name, []):
                candidates[a.array.name].append(key)
        else:
            disqualified.add(a.array.name)
    disqualified |= _other_uses(loop)
    return [key for name, keys in candidates.items() if name not in disqualified for key in keys]


def _private_dtype_ok(dtype: ScalarType | None) -> bool:
    # ints of 8..64 bits, f32, f64 (no bool, no f16), like the scalar reductions
    if dtype is None or dtype.is_bool:
        return False
    if dtype.is_float:
        return dtype.bits in (32, 64)
    return dtype.is_int and dtype.bits >= 8


def _array_plan(loop: ir.ParallelFor, scalar: set[str]) -> tuple[dict[str, ir.AtomicOp], dict[str, str]]:
    """(privatised arrays with their merge op, other atomically updated arrays with the reason
    they stay shared), both in body order."""
    ops: dict[str, set[ir.AtomicOp]] = {}
    reasons: dict[str, str] = {name: "used by loads, stores, calls or atomics whose value is used"
                               for name in _other_uses(loop)}
    for a in _statement_atomics(loop):
        ops.setdefault(a.array.name, set()).add(a.op)
        if a.op not in PRIVATIZABLE or not _private_dtype_ok(a.array.type.dtype):
            reasons.setdefault(a.array.name, "op or dtype that cannot be privatised")
    private: dict[str, ir.AtomicOp] = {}
    shared: dict[str, str] = {}
    for name, used in ops.items():
        if name in scalar:
            continue
        if name in reasons:
            shared[name] = reasons[name]
        elif used <= {ir.AtomicOp.ADD, ir.AtomicOp.SUB}:
            private[name] = ir.AtomicOp.ADD      # the copy holds the net delta
        elif len(used) == 1:
            private[name] = next(iter(used))
        else:
            shared[name] = "updated with several different ops"
    for n in walk(loop.body):
        if isinstance(n, ir.AtomicRMW) and n.array.name not in private and n.array.name not in scalar:
            shared.setdefault(n.array.name, reasons.get(n.array.name, "op or dtype that cannot be privatised"))
    return private, shared


def array_reductions(loop: ir.ParallelFor) -> dict[str, ir.AtomicOp]:
    """Arrays of `loop` that a chunk may scatter into a private copy of, each with the op that
    merges the copy into the real array (ADD for ADD/SUB, else the one op its atomics use)."""
    return _array_plan(loop, {key[0] for key in find_reductions(loop)})[0]


def find_array_reductions(loop: ir.ParallelFor) -> list[str]:
    """Names of the arrays of `loop` that can be privatised per chunk as whole arrays."""
    return list(array_reductions(loop))


def _lockstep_ok(loop: ir.ParallelFor, reductions: set[ReductionKey]) -> bool:
    """Straight-line bodies of assignments, stores and planned reductions (which become register
    accumulations), without other atomics or calls."""
    for st in loop.body:
        if isinstance(st, ir.ExprStmt) and isinstance(st.value, ir.AtomicRMW) \
                and reduction_key(st.value) in reductions:
            parts: Sequence[object] = (st.value.value, *st.value.indices)
        elif isinstance(st, (ir.Assign, ir.Store)):
            parts = (st,)
        else:
            return False
        if any(isinstance(n, (ir.AtomicRMW, ir.Call)) for n in walk(tuple(parts))):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Stencils: thread coarsening with register reuse along the slowest dimension (GPU)
# ---------------------------------------------------------------------------------------------

#: iterations of the coarsened dimension one GPU thread runs (kiln.config; bench/gpu_bench.py
#: probes other values on the 5-point stencil by setting this attribute; < 2 turns it off)
COARSEN_FACTOR = TUNING.cuda_coarsen_factor

ReuseKey = tuple[int, tuple[ir.Expr, ...]]


def steps_by_one(d: ir.ParallelRange, assigned: set[str]) -> bool:
    """Whether consecutive iterations of dimension `d` see consecutive values of its variable:
    a constant step of 1 and a body (which assigns `assigned`) that never reassigns it. The
    GPU's groups of rows and lanes rely on it (a reassigned variable would move a row of the
    register window, or a lane away from the alignment it claims)."""
    return isinstance(d.step, ir.Const) and d.step.value == 1 and d.var not in assigned


def dim_offset(e: ir.Expr, var: str) -> int | None:
    """c when `e` is `var`, `var + c` or `var - c` (c an int constant), else None."""
    if isinstance(e, ir.Var) and e.name == var:
        return 0
    if isinstance(e, ir.Binary) and e.op in (ir.BinaryOp.ADD, ir.BinaryOp.SUB):
        lhs, rhs = e.lhs, e.rhs
        if isinstance(lhs, ir.Var) and lhs.name == var and isinstance(rhs, ir.Const) and isinstance(rhs.value, int) \
                and not isinstance(rhs.value, bool):
            return rhs.value if e.op is ir.BinaryOp.ADD else -rhs.value
        if e.op is ir.BinaryOp.ADD and isinstance(rhs, ir.Var) and rhs.name == var and isinstance(lhs, ir.Const) \
                and isinstance(lhs.value, int) and not isinstance(lhs.value, bool):
            return lhs.value
    return None


def reuse_key(load: ir.Load, dim: int, var: str, assigned: set[str]) -> ReuseKey | None:
    """(offset along `dim`, the other indices without locations) of a load whose index `dim` is
    `var + offset` and whose other indices are the same for every iteration of `var` (they use
    neither `var` nor locals the body assigns): two loads with keys (c, k) and (c', k) read the
    same element when the iteration with `var = v` and the one with `var = v + c - c'` run."""
    if dim >= len(load.indices):
        return None
    off = dim_offset(load.indices[dim], var)
    if off is None:
        return None
    others = tuple(ix for d, ix in enumerate(load.indices) if d != dim)
    for n in walk(others):
        if isinstance(n, ir.Var) and (n.name == var or n.name in assigned):
            return None
        if isinstance(n, (ir.Load, ir.AtomicRMW, ir.Call)):
            return None
    return off, tuple(without_locs(ix) for ix in others)


def _written_in(loop: ir.ParallelFor) -> set[str]:
    out: set[str] = set()
    for n in walk(loop.body):
        if isinstance(n, (ir.Store, ir.AugStore, ir.AtomicRMW)):
            out.add(n.array.name)
        elif isinstance(n, ir.Call):
            out.update(a.name for a in n.args if isinstance(a, ir.ArrayRef))
    return out


def plan_coarsening(loop: ir.ParallelFor, lockstep: bool, reductions: bool) -> ir.Coarsening | None:
    """Coarsen a 2-D/3-D loop along its slowest dimension (0, step 1) when its straight-line body
    (`lockstep`, no reductions) reads some array the loop never writes at two or more offsets
    along that dimension with the other indices equal (`u[i - 1, j]` and `u[i + 1, j]`): then
    consecutive iterations share those loads, and one thread running `COARSEN_FACTOR`
    consecutive rows loads each element once."""
    if len(loop.dims) < 2 or not lockstep or reductions or COARSEN_FACTOR < 2:
        return None
    d0 = loop.dims[0]
    assigned = assigned_locals(loop.body)
    if not steps_by_one(d0, assigned):
        return None
    written = _written_in(loop)
    offsets: dict[tuple[str, tuple[ir.Expr, ...]], set[int]] = {}
    for n in walk(loop.body):
        if isinstance(n, ir.Load) and n.array.name not in written:
            key = reuse_key(n, 0, d0.var, assigned)
            if key is not None:
                offsets.setdefault((n.array.name, key[1]), set()).add(key[0])
    reuse = tuple(dict.fromkeys(name for (name, _), offs in offsets.items() if len(offs) >= 2))
    if not reuse:
        return None
    return ir.Coarsening(0, COARSEN_FACTOR, reuse)


# ---------------------------------------------------------------------------------------------
# Vector access along the innermost dimension (GPU)
# ---------------------------------------------------------------------------------------------

#: consecutive innermost iterations one GPU thread runs so that their accesses merge into vector
#: loads and stores (kiln.config; < 2 turns it off). 4 x f32 = one 16-byte access: on an H200 a
#: scalar copy kernel reaches 71% of torch's copy, a float4 one 96% (bench/stencil_probe.py).
#: Loops with planned reductions run one wave of blocks and store nothing, so their threads
#: keep two 16-byte loads in flight (H200, 2^26 f32: sum 97% -> 101% of copy, 4 sums 93% ->
#: 95%; saxpy and the stencil lose 10 points at 8)
VECTOR_WIDTH = TUNING.cuda_vector_width
VECTOR_WIDTH_REDUCTIONS = TUNING.cuda_vector_width_reductions


def plan_vector(loop: ir.ParallelFor, lockstep: bool, reductions: bool) -> ir.Vectorization | None:
    """Vector access for a straight-line loop (`lockstep`) whose last dimension has step 1 and
    whose body loads or stores some array of scalars with the last index `var + c` (`x[i]`,
    `u[i, j - 1]`): consecutive iterations of that dimension touch consecutive elements. Every
    access of such an array may then be merged with its neighbours' when the runtime finds the
    array aligned (kiln.codegen.nvptx_body checks the data pointer and strides)."""
    width = VECTOR_WIDTH_REDUCTIONS if reductions else VECTOR_WIDTH
    if not lockstep or width < 2 or width & (width - 1):
        return None             # (off, or not a power of two: lanes start at multiples of it)
    last = loop.dims[-1]
    if not steps_by_one(last, assigned_locals(loop.body)):
        return None
    names: dict[str, None] = {}
    for n in walk(loop.body):
        if isinstance(n, (ir.Load, ir.Store)) and not n.array.type.element_shape \
                and isinstance(n.array.type.dtype, ScalarType) and n.indices \
                and dim_offset(n.indices[-1], last.var) is not None:
            names[n.array.name] = None
    return ir.Vectorization(width, tuple(names)) if names else None


def plan_loop(loop: ir.ParallelFor) -> ir.ParallelPlan:
    """The plan of one parallel loop (see the module docstring)."""
    keys = find_reductions(loop)
    private, shared = _array_plan(loop, {key[0] for key in keys})
    lockstep = _lockstep_ok(loop, set(keys))
    return ir.ParallelPlan(
        reductions=tuple(ir.ScalarReduction(name, op, idx) for name, op, idx in keys),
        private_arrays=tuple(ir.PrivateArray(name, op) for name, op in private.items()),
        shared_atomics=tuple(ir.SharedAtomicArray(name, why) for name, why in shared.items()),
        heavy_iterations=any(isinstance(n, (ir.For, ir.While, ir.Call)) for n in walk(loop.body)),
        lockstep=lockstep,
        coarsen=plan_coarsening(loop, lockstep, bool(keys)),
        vector=plan_vector(loop, lockstep, bool(keys)),
    )


# ---------------------------------------------------------------------------------------------
# GPU launch phases
# ---------------------------------------------------------------------------------------------

def has_effects(s: ir.Stmt) -> bool:
    """Whether `s` writes memory: stores, atomics, calls that take arrays, prints (the print
    buffer: once, not once per GPU thread)."""
    for n in walk(s):
        if isinstance(n, (ir.Store, ir.AugStore, ir.AtomicRMW, ir.Print)):
            return True
        if isinstance(n, ir.Call) and any(isinstance(a, ir.ArrayRef) for a in n.args):
            return True
    return False


def cuda_refusal(kname: str, loc: ir.Loc, what: str) -> KernelError:
    return KernelError(f"kernel {kname!r} cannot be compiled for the cuda target: {what} (see docs/cuda.md, "
                       "'Serial code around parallel loops')", filename=loc.filename, lineno=loc.line, col=loc.col)


def _check_pure_expr(e: ir.Expr, kname: str) -> None:
    for n in walk(e):
        if isinstance(n, ir.AtomicRMW) or (isinstance(n, ir.Call) and any(isinstance(a, ir.ArrayRef) for a in n.args)):
            raise cuda_refusal(kname, e.loc, "an atomic or a call taking arrays inside a condition of serial "
                               "code outside the parallel loop")


def strip_side_effects(body: Sequence[ir.Stmt], kname: str) -> tuple[ir.Stmt, ...]:
    """`body` without its side effects (stores/atomics/array calls), for re-execution by every
    GPU thread; KernelError (a cuda refusal) where an effect cannot be separated."""
    out: list[ir.Stmt] = []
    for s in body:
        if isinstance(s, (ir.Store, ir.AugStore)):
            continue
        if isinstance(s, ir.ExprStmt | ir.Print) and has_effects(s):
            continue
        if isinstance(s, ir.If):
            out.append(ir.If(s.loc, s.cond, strip_side_effects(s.then_body, kname),
                             strip_side_effects(s.else_body, kname)))
            _check_pure_expr(s.cond, kname)
        elif isinstance(s, ir.While):
            _check_pure_expr(s.cond, kname)
            out.append(ir.While(s.loc, s.cond, strip_side_effects(s.body, kname)))
        elif isinstance(s, ir.For):
            for e in (s.start, s.stop, s.step):
                _check_pure_expr(e, kname)
            out.append(ir.For(s.loc, s.var, s.start, s.stop, s.step, strip_side_effects(s.body, kname)))
        else:
            if has_effects(s):
                raise cuda_refusal(kname, s.loc, "an atomic or a call taking arrays inside an expression "
                                   "of serial code outside the parallel loop")
            out.append(s)
    return tuple(out)


def _segments(body: tuple[ir.Stmt, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """The body as ("loop", (index,)) per parallel loop and ("serial", indices) per run between."""
    segs: list[tuple[str, tuple[int, ...]]] = []
    cur: list[int] = []
    for k, s in enumerate(body):
        if isinstance(s, ir.ParallelFor):
            if cur:
                segs.append(("serial", tuple(cur)))
                cur = []
            segs.append(("loop", (k,)))
        else:
            cur.append(k)
    if cur:
        segs.append(("serial", tuple(cur)))
    return segs


def _check_prefix(stripped: tuple[ir.Stmt, ...], written: set[str], kname: str) -> None:
    for n in walk(stripped):
        if isinstance(n, ir.Load) and n.array.name in written:
            raise cuda_refusal(kname, n.loc, f"serial code outside the parallel loop reads array {n.array.name!r}, "
                               "which the kernel writes")
        if isinstance(n, ir.Call) and any(isinstance(a, ir.ArrayRef) and a.name in written for a in n.args):
            raise cuda_refusal(kname, n.loc, "serial code outside the parallel loop calls a func with an array "
                               "the kernel writes")


def plan_launches(kir: ir.KernelIR) -> ir.LaunchPlan:
    """The kernel's GPU launches (see the module docstring)."""
    body = kir.kernel.body
    if not any(isinstance(s, ir.ParallelFor) for s in body):
        return ir.LaunchPlan((ir.LaunchPhase("single", tuple(range(len(body)))),))
    kname = kir.display_name or kir.kernel.name
    # Writes after the last parallel loop come after every re-executed prefix (the trailing
    # serial segment is nobody's prefix): only earlier writes can race with prefix reads. This
    # lets kl.random's state (kiln.lang.random) be read before a loop and advanced at the end.
    last_loop = max(k for k, s in enumerate(body) if isinstance(s, ir.ParallelFor))
    early = dataclasses.replace(kir, kernel=dataclasses.replace(kir.kernel, body=body[:last_loop + 1]))
    written = {n for n, m in array_access(early).items() if m in ("write", "readwrite")}
    phases: list[ir.LaunchPhase] = []
    prefix: list[int] = []
    try:
        for kind, idx in _segments(body):
            stmts = tuple(body[k] for k in idx)
            if kind == "loop":
                phases.append(ir.LaunchPhase("loop", idx, tuple(prefix)))
                continue
            if any(has_effects(s) for s in stmts):
                phases.append(ir.LaunchPhase("single", idx, tuple(prefix)))
            if idx[0] < last_loop:      # a prefix of later phases
                _check_prefix(strip_side_effects(stmts, kname), written, kname)
            prefix.extend(idx)
    except KernelError as e:
        loc = ir.Loc(e.filename or ir.NO_LOC.filename, e.lineno or 0, e.col or 0)
        return ir.LaunchPlan((), e.msg, loc)
    return ir.LaunchPlan(tuple(phases))


# ---------------------------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------------------------

def plan_parallel(kir: ir.KernelIR) -> ir.KernelIR:
    """`kir` with a ParallelPlan on every parallel loop and the kernel's LaunchPlan."""
    body = tuple(dataclasses.replace(s, plan=plan_loop(s)) if isinstance(s, ir.ParallelFor) else s
                 for s in kir.kernel.body)
    kir = dataclasses.replace(kir, kernel=dataclasses.replace(kir.kernel, body=body))
    return dataclasses.replace(kir, launch_plan=plan_launches(kir))
