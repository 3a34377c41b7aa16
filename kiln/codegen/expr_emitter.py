"""`ExprEmitter`: the state of a function body being emitted, array access, and expressions:
arithmetic (binop, divmod, shifts), comparisons, short-circuit logic, select, casts, calls,
atomics, math builtins and scalar conversions, with the semantics listed in
kiln.codegen.body_emitter."""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from kiln.codegen.llvm_util import (
    DOUBLE,
    FLOAT,
    FLOAT_SUFFIX,
    HALF,
    I1,
    I8,
    I32,
    I64,
    ArrayVal,
    alloca,
    codegen_error,
    const_value,
    declare_fabs64,
    gep,
    mem_type,
    reg_type,
)
from kiln.codegen.module_base import ModuleEmitterBase
from kiln.ir import nodes as N
from kiln.ir.builtins import BUILTINS, as_float
from kiln.ir.ops import ATOMIC_AS_BINARY, PLAIN_BINARY, atomicrmw_name
from kiln.passes.plan_parallel import ReductionKey
from kiln.types import INDEX, MAX_NDIM, ScalarType, f32, f64, i64


class ExprEmitter:
    """Lowers expressions into one LLVM function; declares the state every body emitter holds.

    kiln.codegen.body_emitter.KernelBodyEmitter adds statements on top of it, and each target
    (kiln.codegen.cpu_body, kiln.codegen.nvptx) adds its parallel loop."""

    def __init__(self, me: ModuleEmitterBase, fir: N.FunctionIR, fn: ir.Function) -> None:
        self.me = me
        self.fir = fir
        self.fn = fn
        self.ab = ir.IRBuilder(fn.append_basic_block("entry"))    # allocas
        self.b = ir.IRBuilder(fn.append_basic_block("body"))
        self.vars: dict[str, tuple[ir.Value, ScalarType]] = {}
        self.arrays: dict[str, ArrayVal] = {}
        self.loops: list[tuple[ir.Block, ir.Block]] = []
        #: emitting the iterations of a parallel loop (where `return` is refused)
        self.in_parallel = False
        #: privatised reductions of the parallel body being emitted (as planned on the loop):
        #: key -> (accumulator, touched)
        self.reductions: dict[ReductionKey, tuple[ir.Value, ir.Value]] = {}
        #: arrays that the chunk loop being emitted scatters into a private copy (self.arrays
        #: then points at the copy): their atomics become plain load-op-store
        self.private: set[str] = set()
        #: debug mode: where this function's check ids start in the module's site table (None:
        #: the function has no checks)
        self.check_base: int | None = me.debug.base.get(fir.name)

    def new_var(self, name: str, t: ScalarType, init: ir.Value | None = None) -> None:
        slot = alloca(self.ab, mem_type(t), name=name)
        slot.align = max(1, t.itemsize)
        self.ab.store(init if init is not None else ir.Constant(mem_type(t), None), slot)
        self.vars[name] = (slot, t)

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
            raise codegen_error(f"codegen: unknown variable {name!r}", loc) from None

    def array(self, ref: N.ArrayRef) -> ArrayVal:
        try:
            return self.arrays[ref.name]
        except KeyError:
            raise codegen_error(f"codegen: unknown array {ref.name!r}", ref.loc) from None

    def index64(self, e: N.Expr) -> ir.Value:
        v = self.expr(e)
        return self.int_to_i64(v, e.type)

    def int_to_i64(self, v: ir.Value, t: ScalarType) -> ir.Value:
        if t.bits == 64 and not t.is_bool:
            return v
        if t.is_float:
            return self.convert(v, t, i64)
        return self.b.sext(v, I64) if t.kind == "i" else self.b.zext(v, I64)

    def flat_index(self, ref: N.ArrayRef, indices: tuple[N.Expr, ...], check: int = -1) -> tuple[ir.Value, ArrayVal]:
        """The element offset of `ref[indices]` from its data pointer (sum of index * stride, so
        any strides work; LLVM's loop vectorizer versions loops on a unit innermost stride); with
        a debug check id (>= 0), every index is first checked against its extent (a failure
        leaves the function)."""
        a = self.array(ref)
        if len(indices) != len(a.extents):
            raise codegen_error(f"codegen: {ref.name} needs {len(a.extents)} indices", ref.loc)
        values = [self.index64(ix) for ix in indices]
        if check >= 0 and self.check_base is not None:
            b = self.b
            ok = b.icmp_unsigned("<", values[0], a.extents[0])     # unsigned: negatives fail too
            for v, e in zip(values[1:], a.extents[1:]):
                ok = b.and_(ok, b.icmp_unsigned("<", v, e))
            self.guard(ok, check, values, a.extents)
        return self.offset(values, a.strides), a

    def index_values(self, ref: N.ArrayRef, indices: tuple[N.Expr, ...]) -> list[ir.Value]:
        """The i64 values of `ref[indices]`'s indices (evaluated once, unchecked)."""
        if len(indices) != len(self.array(ref).extents):
            raise codegen_error(f"codegen: {ref.name} needs {len(self.array(ref).extents)} indices", ref.loc)
        return [self.index64(ix) for ix in indices]

    def offset(self, values: list[ir.Value], strides: list[ir.Value]) -> ir.Value:
        """sum(index * stride): an element's offset from the data pointer, in elements."""
        flat = self.b.mul(values[0], strides[0], flags=("nsw",))
        for v, st in zip(values[1:], strides[1:]):
            flat = self.b.add(flat, self.b.mul(v, st, flags=("nsw",)), flags=("nsw",))
        return flat

    def element_ptr(self, ref: N.ArrayRef, indices: tuple[N.Expr, ...], check: int = -1) -> tuple[ir.Value, ArrayVal]:
        flat, a = self.flat_index(ref, indices, check)
        p = gep(self.b, a.ptr, [flat], inbounds=True, source_etype=mem_type(a.dtype))
        return p, a

    # -- debug mode ---------------------------------------------------------------------------
    def guard(self, ok: ir.Value, check: int, values: list[ir.Value], extents: list[ir.Value]) -> None:
        """Continue when `ok`; else record check `check` (with the index values and extents) in
        the module's error record and leave the function (kiln.codegen.debug_checks)."""
        assert self.check_base is not None
        b = self.b
        fail = self.fn.append_basic_block("check.fail")
        cont = self.fn.append_basic_block("check.ok")
        b.cbranch(ok, cont, fail)
        b.position_at_end(fail)
        pad = [ir.Constant(I64, 0)] * (MAX_NDIM - len(values))
        b.call(self.me.debug.fail_fn(), [ir.Constant(I64, self.check_base + check), ir.Constant(I64, len(values)),
                                         *values, *pad, *extents, *pad])
        self.leave()
        b.position_at_end(cont)

    def leave(self) -> None:
        """Return from the function being emitted (a zero value where it returns one)."""
        rt = self.fn.function_type.return_type
        if isinstance(rt, ir.VoidType):
            self.b.ret_void()
        else:
            self.b.ret(ir.Constant(rt, None))

    def leave_if_failed(self) -> None:
        """Debug mode, after a call that may have failed a check: leave the function too."""
        if self.check_base is None:
            return
        b = self.b
        stop = self.fn.append_basic_block("check.stop")
        cont = self.fn.append_basic_block("check.cont")
        b.cbranch(self.me.debug.failed(b), stop, cont)
        b.position_at_end(stop)
        self.leave()
        b.position_at_end(cont)

    # -- expressions ------------------------------------------------------------------------
    def expr(self, e: N.Expr) -> ir.Value:
        m = getattr(self, "e_" + type(e).__name__, None)
        if m is None:
            raise codegen_error(f"codegen: unsupported expression {type(e).__name__}", e.loc)
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
        p, a = self.element_ptr(e.array, e.indices, e.check)
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
            raise codegen_error("codegen: ~ on a float", e.loc)
        return b.xor(v, ir.Constant(v.type, -1 if not t.is_bool else 1))

    def e_Binary(self, e: N.Binary) -> ir.Value:
        t = e.type
        lhs = self.convert(self.expr(e.lhs), e.lhs.type, t)
        rv = self.expr(e.rhs)
        if e.op in (N.BinaryOp.SHL, N.BinaryOp.SHR):
            return self.shift(e.op, lhs, t, rv, e.rhs.type)
        rhs = self.convert(rv, e.rhs.type, t)
        if e.check >= 0 and self.check_base is not None:      # debug: integer // or % by zero
            self.guard(self.b.icmp_unsigned("!=", rhs, ir.Constant(rhs.type, 0)), e.check, [], [])
        return self.binop(e.op, lhs, rhs, t, e.loc)

    def binop(self, op: N.BinaryOp, a: ir.Value, c: ir.Value, t: ScalarType, loc: N.Loc) -> ir.Value:
        b = self.b
        B = N.BinaryOp
        plain = PLAIN_BINARY.get(op)
        if t.is_float:
            if plain is not None and plain.float_insn is not None:
                return getattr(b, plain.float_insn)(a, c)
            if op is B.DIV:
                return b.fdiv(a, c)
            if op in (B.FLOORDIV, B.MOD):
                return self.float_divmod(a, c, t)[0 if op is B.FLOORDIV else 1]
            if op is B.POW:
                return self.float_intrinsic("llvm.pow", t, [a, c])
            raise codegen_error(f"codegen: {op.value} on floats", loc)
        if plain is not None and plain.int_insn is not None:
            return getattr(b, plain.int_insn)(a, c)
        if op in (B.FLOORDIV, B.MOD):
            return self.int_divmod(a, c, t)[0 if op is B.FLOORDIV else 1]
        if op is B.DIV:
            ft = as_float(t)
            return b.fdiv(self.convert(a, t, ft), self.convert(c, t, ft))
        if op is B.POW:
            if t.is_bool:
                return b.or_(a, b.xor(c, ir.Constant(I1, 1)))
            return b.call(self.me.ipow(t), [a, c])
        raise codegen_error(f"codegen: unsupported operator {op.value}", loc)

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
        copysign = self.me.declare(f"llvm.copysign.{FLOAT_SUFFIX[t.bits]}", ty, [ty, ty])
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

    def _lazy_phi(self, cond: ir.Value, then_fn: Callable[[], ir.Value], else_fn: Callable[[], ir.Value],
                  ty: ir.Type) -> ir.Value:
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
            raise codegen_error(f"codegen: call of unknown func {e.func!r}", e.loc)
        if len(e.args) != len(f.params):
            raise codegen_error(f"codegen: {e.func} takes {len(f.params)} arguments", e.loc)
        args: list[ir.Value] = []
        for a, p in zip(e.args, f.params):
            if isinstance(a, N.ArrayRef):
                av = self.array(a)
                args += [av.ptr, *av.extents, *av.strides]
            else:
                assert isinstance(p.type, ScalarType)
                args.append(self.convert(self.expr(a), a.type, p.type))
        r = self.b.call(fn, args)
        self.leave_if_failed()
        if f.ret is None:
            return ir.Constant(reg_type(e.type), None)
        return self.convert(r, f.ret, e.type)

    # -- atomics ----------------------------------------------------------------------------
    def atomic(self, op: N.AtomicOp, ref: N.ArrayRef, indices: tuple[N.Expr, ...], value: N.Expr,
               loc: N.Loc, check: int = -1) -> ir.Value:
        p, a = self.element_ptr(ref, indices, check)
        t = a.dtype
        v = self.to_mem(self.convert(self.expr(value), value.type, t), t, self.b)
        llop = atomicrmw_name(op, t)
        if llop is None:
            raise codegen_error(f"codegen: atomic {op.value} on {t.name}", loc)
        old = self.b.atomic_rmw(llop, p, v, "monotonic")
        return self.from_mem(old, t, self.b)

    def rmw_op(self, op: N.AtomicOp, old: ir.Value, v: ir.Value, t: ScalarType) -> ir.Value:
        if op in (N.AtomicOp.MIN, N.AtomicOp.MAX):
            return self.minmax(op.value, old, v, t)
        return self.binop(ATOMIC_AS_BINARY[op], old, v, t, N.NO_LOC)

    def e_AtomicRMW(self, e: N.AtomicRMW) -> ir.Value:
        old = self.atomic(e.op, e.array, e.indices, e.value, e.loc, e.check)
        return self.convert(old, e.array.type.dtype, e.type)  # type: ignore[arg-type]

    # -- builtins ---------------------------------------------------------------------------
    def minmax(self, name: str, a: ir.Value, c: ir.Value, t: ScalarType) -> ir.Value:
        b = self.b
        if t.is_float:
            # minnum/maxnum may return either zero of +0.0 and -0.0; the language orders -0.0
            # below +0.0 (docs/language.md): equal operands combine their bits, OR for min (a
            # -0.0 wins) and AND for max (+0.0 wins); equal non-zero values have equal bits
            r = b.call(self.me.intrinsic(f"llvm.{name}num", t, 2), [a, c])
            bits = ir.IntType(t.bits)
            ai, ci = b.bitcast(a, bits), b.bitcast(c, bits)
            both = b.or_(ai, ci) if name == "min" else b.and_(ai, ci)
            return b.select(b.fcmp_ordered("==", a, c), b.bitcast(both, a.type), r)
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
            raise codegen_error(f"codegen: unknown builtin {e.name!r}", e.loc)
        b = self.b
        kind, key = bi.lowering
        if bi.arg_cast == "float":
            at = as_float(e.args[0].type)
        else:
            at = e.type
        args = [self.convert(self.expr(a), a.type, at) for a in e.args]
        if len(args) != bi.arity:
            raise codegen_error(f"codegen: {e.name} takes {bi.arity} arguments", e.loc)
        if kind == "intrinsic":
            if not at.is_float:
                raise codegen_error(f"codegen: {e.name} needs float arguments", e.loc)
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
            raise codegen_error(f"codegen: no lowering for builtin {e.name!r}", e.loc)
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
            fn = self.me.declare(f"llvm.{sat}.sat.i{dst.bits}.{FLOAT_SUFFIX[src.bits]}", dty, [v.type])
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
        fabs_back = b.call(declare_fabs64(b), [back])
        fabs_v = b.call(declare_fabs64(b), [v])
        over = b.fcmp_ordered(">", fabs_back, fabs_v)
        tz = b.select(over, b.sub(tb, ir.Constant(I32, 1)), tb)
        odd = b.or_(tz, ir.Constant(I32, 1))
        return b.bitcast(b.select(exact, tb, odd), FLOAT)

