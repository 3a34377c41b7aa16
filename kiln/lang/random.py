"""`kl.random(dtype)`: counter-based random numbers (Philox-4x32-10) written as scalar IR by the
front end, so that every target (CPU, CUDA, the reference interpreter) computes the same stream.

State. A kernel that draws random numbers gets a hidden last parameter `@rng` (kiln.abi
RNG_PARAM), a u32[4] array: [seed lo, seed hi, run lo, run hi]. The runtime passes it: direct
calls get the process-wide array of kiln.dispatch (`kl.seed(n)`), graphs and exported kernels
the array their loaded module owns (`compile(seed=...)`, `compiled.seed(n)`).

Each draw is one Philox-4x32-10 block:
- counter = (linear iteration index of the enclosing parallel loop, low word (0 outside any
  parallel loop); the number of draws made so far in this iteration (a local, 0 at the start of
  every iteration and of the kernel); run lo; run hi),
- key = (seed lo, seed hi XOR the iteration index's high word XOR (region << 24)), where region
  is 0 outside parallel loops and k + 1 in the kernel's k-th parallel loop,
so no two draws of one launch share a block (for iteration indices below 2**56), iterations are
independent of each other and of the order threads run them in, and a seed reproduces the
stream on every target.

Runs. The kernel adds 1 to the 64-bit run counter as its last statement (and before every
`return`), after its parallel loops: every launch, including two launches of one kernel in one
graph run, draws new numbers, with no work in the runtime. The kernel reads the state on entry
of each draw and writes it only there, after its loops.

Values: u32 from the block's first word (i32 is the same bits, smaller ints are truncated),
u64/i64 from the first two; f32 uses the top 24 bits (k * 2**-24, in [0, 1), never 1.0), f64 the
top 53 bits of the 64-bit value.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kiln.abi import RNG_PARAM
from kiln.ir import nodes as ir
from kiln.lang.inline import InlineRequired
from kiln.lang.values import LangError, Static, type_error
from kiln.types import DEFAULT_FLOAT, INDEX, NdArrayType, ScalarType, bool_, f16, f32, f64, u32, u64

if TYPE_CHECKING:
    from kiln.lang.stmts import StmtMixin

#: Philox-4x32 multipliers and Weyl key increments (Salmon et al., "Parallel random numbers: as
#: easy as 1, 2, 3", SC 2011)
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
PHILOX_ROUNDS = 10
RNG_TYPE = NdArrayType(u32, 1)


@dataclass
class RngUse:
    """Where a kernel draws random numbers: regions (None: outside parallel loops, k: parallel
    loop k) and how many draws were written (each result gets its own local)."""

    regions: set[int | None] = field(default_factory=set)
    draws: int = 0


def _prefix(region: int | None) -> str:
    return "rng." if region is None else f"rng.p{region}."


def random_dtype(c: StmtMixin, node: ast.Call, as_scalar_type: Callable[[object], ScalarType | None]) -> ScalarType:
    """The dtype of `kl.random()`, `kl.random(kl.i32)`, `kl.random(dtype=float)` (`as_scalar_type`:
    the front end's reading of a type object, kiln.lang.exprs)."""
    if any(k.arg != "dtype" for k in node.keywords) or len(node.args) + len(node.keywords) > 1:
        raise type_error("kl.random() takes one optional argument, the dtype: kl.random(kl.f32)")
    arg = node.args[0] if node.args else node.keywords[0].value if node.keywords else None
    if arg is None:
        return DEFAULT_FLOAT
    tv = c.visit(arg)
    t = as_scalar_type(tv.obj) if isinstance(tv, Static) else None
    if t is None or t in (bool_, f16):
        raise type_error("kl.random(dtype) needs an integer type, kl.f32 or kl.f64 (float: the default float)", arg)
    return t


def random_call(c: StmtMixin, node: ast.Call, as_scalar_type: Callable[[object], ScalarType | None]) -> ir.Expr:
    """One draw: its statements go to `c.pending`, the value is a fresh local."""
    if c.compiling_func:    # a func compiled as its own IR function has no iteration state
        raise InlineRequired(c.func_name)
    t = random_dtype(c, node, as_scalar_type)
    loc = c.loc(node)
    use: RngUse = c.rng
    region = c.region
    use.regions.add(region)
    p = _prefix(region)
    for name, lt in (("calls", u32), ("x0", u32), ("x1", u32), ("x2", u32), ("x3", u32), ("k0", u32),
                     ("k1", u32), ("p0", u64), ("p2", u64)):
        c.local_decls[p + name] = lt
    state = ir.ArrayRef(RNG_PARAM, RNG_TYPE, loc)

    def word(i: int) -> ir.Expr:
        return ir.Load(u32, loc, state, (ir.Const(INDEX, loc, i),))

    def var(name: str) -> ir.Var:
        return ir.Var(c.local_decls[p + name], loc, p + name)

    def k32(v: int) -> ir.Const:
        return ir.Const(u32, loc, v)

    def set_(name: str, e: ir.Expr) -> ir.Stmt:
        return ir.Assign(loc, p + name, e)

    it: ir.Expr = ir.Const(u64, loc, 0) if region is None else ir.Var(u64, loc, p + "iter")
    it_hi = ir.Cast(u32, loc, ir.Binary(u64, loc, ir.BinaryOp.SHR, it, ir.Const(u64, loc, 32)))
    tag = ir.Const(u32, loc, (0 if region is None else region + 1) << 24)   # the loop the draw is in
    out: list[ir.Stmt] = [
        set_("x0", ir.Cast(u32, loc, it)), set_("x1", var("calls")), set_("x2", word(2)), set_("x3", word(3)),
        set_("k0", word(0)),
        set_("k1", ir.Binary(u32, loc, ir.BinaryOp.BITXOR, ir.Binary(u32, loc, ir.BinaryOp.BITXOR, word(1), it_hi), tag)),
        set_("calls", ir.Binary(u32, loc, ir.BinaryOp.ADD, var("calls"), k32(1))),
    ]
    out += _philox_rounds(var, set_, k32, loc)
    r = f"{p}r{use.draws}"
    use.draws += 1
    c.local_decls[r] = t
    out.append(ir.Assign(loc, r, _convert(t, var, loc)))
    c.pending.extend(out)
    return ir.Var(t, loc, r)


def _philox_rounds(var: Any, set_: Any, k32: Any, loc: ir.Loc) -> list[ir.Stmt]:
    """Ten Philox-4x32 rounds on the locals x0..x3 with key k0, k1 (mul-hi via a u64 product)."""
    def mul(x: str, m: int) -> ir.Expr:
        return ir.Binary(u64, loc, ir.BinaryOp.MUL, ir.Cast(u64, loc, var(x)), ir.Const(u64, loc, m))

    def hi(p: str) -> ir.Expr:
        return ir.Cast(u32, loc, ir.Binary(u64, loc, ir.BinaryOp.SHR, var(p), ir.Const(u64, loc, 32)))

    def xor3(a: ir.Expr, b: str, k: str) -> ir.Expr:
        return ir.Binary(u32, loc, ir.BinaryOp.BITXOR, ir.Binary(u32, loc, ir.BinaryOp.BITXOR, a, var(b)), var(k))

    out: list[ir.Stmt] = []
    for r in range(PHILOX_ROUNDS):
        if r:
            out.append(set_("k0", ir.Binary(u32, loc, ir.BinaryOp.ADD, var("k0"), k32(PHILOX_W0))))
            out.append(set_("k1", ir.Binary(u32, loc, ir.BinaryOp.ADD, var("k1"), k32(PHILOX_W1))))
        out += [
            set_("p0", mul("x0", PHILOX_M0)),       # 64-bit products of words 0 and 2
            set_("p2", mul("x2", PHILOX_M1)),
            set_("x0", xor3(hi("p2"), "x1", "k0")),
            set_("x1", ir.Cast(u32, loc, var("p2"))),
            set_("x2", xor3(hi("p0"), "x3", "k1")),
            set_("x3", ir.Cast(u32, loc, var("p0"))),
        ]
    return out


def _convert(t: ScalarType, var: Any, loc: ir.Loc) -> ir.Expr:
    """The block's words as a value of type t (see the module doc)."""
    def shr(e: ir.Expr, n: int) -> ir.Expr:
        return ir.Binary(e.type, loc, ir.BinaryOp.SHR, e, ir.Const(e.type, loc, n))

    wide = ir.Binary(u64, loc, ir.BinaryOp.BITOR,
                     ir.Binary(u64, loc, ir.BinaryOp.SHL, ir.Cast(u64, loc, var("x1")), ir.Const(u64, loc, 32)),
                     ir.Cast(u64, loc, var("x0")))
    if t == f32:
        return ir.Binary(f32, loc, ir.BinaryOp.MUL, ir.Cast(f32, loc, shr(var("x0"), 8)), ir.Const(f32, loc, 2.0 ** -24))
    if t == f64:
        return ir.Binary(f64, loc, ir.BinaryOp.MUL, ir.Cast(f64, loc, shr(wide, 11)), ir.Const(f64, loc, 2.0 ** -53))
    if t.bits == 64:
        return wide if t == u64 else ir.Cast(t, loc, wide)
    return var("x0") if t == u32 else ir.Cast(t, loc, var("x0"))


def start_parallel_loop(c: StmtMixin, k: int, prs: tuple[ir.ParallelRange, ...],
                        body: tuple[ir.Stmt, ...]) -> tuple[ir.Stmt, ...]:
    """The body of parallel loop k with its iteration's draw state set first (when it draws)."""
    if k not in c.rng.regions:
        return body
    p = _prefix(k)
    loc = body[0].loc if body else ir.NO_LOC
    c.local_decls[p + "iter"] = u64
    linear: ir.Expr | None = None
    for d, r in enumerate(prs):
        start, stop, step = (_hoisted(c, f"{p}b{d}.{w}", e) for w, e in (("start", r.start), ("stop", r.stop),
                                                                          ("step", r.step)))
        idx: ir.Expr = ir.Binary(INDEX, loc, ir.BinaryOp.SUB, ir.Var(INDEX, loc, r.var), start)
        if not _is_one(step):
            idx = ir.Binary(INDEX, loc, ir.BinaryOp.FLOORDIV, idx, step)
        if linear is None:
            linear = idx
            continue
        span = ir.Binary(INDEX, loc, ir.BinaryOp.SUB, stop, start)
        if not _is_one(step):   # ceil(span / step) for either sign of step
            adj = ir.Select(INDEX, loc, ir.Compare(bool_, loc, ir.CompareOp.GT, step, ir.Const(INDEX, loc, 0)),
                            ir.Const(INDEX, loc, -1), ir.Const(INDEX, loc, 1))
            span = ir.Binary(INDEX, loc, ir.BinaryOp.FLOORDIV, ir.Binary(
                INDEX, loc, ir.BinaryOp.ADD, span, ir.Binary(INDEX, loc, ir.BinaryOp.ADD, step, adj)), step)
        linear = ir.Binary(INDEX, loc, ir.BinaryOp.ADD, ir.Binary(INDEX, loc, ir.BinaryOp.MUL, linear, span), idx)
    assert linear is not None
    c.local_decls[p + "calls"] = u32
    return (ir.Assign(loc, p + "iter", ir.Cast(u64, loc, linear)), ir.Assign(loc, p + "calls", ir.Const(u32, loc, 0)),
            *body)


def _is_one(e: ir.Expr) -> bool:
    return isinstance(e, ir.Const) and e.value == 1


def _hoisted(c: StmtMixin, name: str, e: ir.Expr) -> ir.Expr:
    """A loop bound usable inside the loop: constants, variables and shapes as they are, any other
    expression evaluated once before the loop into a kernel-level local."""
    if isinstance(e, ir.Const | ir.Var | ir.Shape):
        return e
    c.local_decls[name] = e.type
    c.pending.append(ir.Assign(e.loc, name, e))
    return ir.Var(e.type, e.loc, name)


def finish_kernel(c: StmtMixin, params: list[ir.Param], body: list[ir.Stmt], loc: ir.Loc) -> list[ir.Stmt]:
    """Add the hidden state parameter, the kernel-level draw counter and the run-counter update
    (at the end and before every return) to a kernel that draws random numbers."""
    if not c.rng.regions:
        return body
    if any(p.name == RNG_PARAM for p in params):
        raise LangError(f"a kernel parameter may not be named {RNG_PARAM!r}")
    params.append(ir.Param(RNG_PARAM, RNG_TYPE, loc))
    head: list[ir.Stmt] = []
    if None in c.rng.regions:
        head.append(ir.Assign(loc, "rng.calls", ir.Const(u32, loc, 0)))
    return head + _before_returns(body, _bump(loc)) + _bump(loc)


def _bump(loc: ir.Loc) -> list[ir.Stmt]:
    state = ir.ArrayRef(RNG_PARAM, RNG_TYPE, loc)
    lo_i, hi_i = (ir.Const(INDEX, loc, 2),), (ir.Const(INDEX, loc, 3),)
    one = ir.Const(u32, loc, 1)
    new_lo = ir.Binary(u32, loc, ir.BinaryOp.ADD, ir.Load(u32, loc, state, lo_i), one)
    carry = ir.Store(loc, state, hi_i, ir.Binary(u32, loc, ir.BinaryOp.ADD, ir.Load(u32, loc, state, hi_i), one))
    wrapped = ir.Compare(bool_, loc, ir.CompareOp.EQ, ir.Load(u32, loc, state, lo_i), ir.Const(u32, loc, 0))
    return [ir.Store(loc, state, lo_i, new_lo), ir.If(loc, wrapped, (carry,), ())]


def _before_returns(body: list[ir.Stmt] | tuple[ir.Stmt, ...], bump: list[ir.Stmt]) -> list[ir.Stmt]:
    out: list[ir.Stmt] = []
    for s in body:
        if isinstance(s, ir.Return):
            out += bump
        elif isinstance(s, ir.If):
            s = ir.If(s.loc, s.cond, tuple(_before_returns(s.then_body, bump)), tuple(_before_returns(s.else_body, bump)))
        elif isinstance(s, ir.While):
            s = ir.While(s.loc, s.cond, tuple(_before_returns(s.body, bump)))
        elif isinstance(s, ir.For):
            s = ir.For(s.loc, s.var, s.start, s.stop, s.step, tuple(_before_returns(s.body, bump)))
        out.append(s)
    return out
