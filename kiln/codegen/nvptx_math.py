"""kiln's own f64 math functions for the NVPTX target, written in LLVM IR: range reduction +
polynomials. The FALLBACK for when NVIDIA's libdevice is not found (kiln.codegen.libdevice, the
default path): f32 callers go through f64 and round, which is accurate but slow on GPUs whose f64
rate is 1/32-1/64 of f32. `MathBuilder` emits the body of one `double kiln_math_<name>(double[,
double])`; `GpuMathLibrary.math_fn` declares and caches those functions in a module. Accuracy:
docs/cuda.md, "Math functions" (tests/test_cuda.py checks it on the CPU through MCJIT)."""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from kiln.codegen.llvm_util import DOUBLE, I1, I64, fn_attrs
from kiln.codegen.module_base import ModuleEmitterBase

# ---------------------------------------------------------------------------------------------
# f64 math in LLVM IR (no libdevice): range reduction + polynomials, accurate to a few ulp for
# moderate arguments (sin/cos/tan use 3-part Cody-Waite reduction: accurate for |x| < ~1e9)
# ---------------------------------------------------------------------------------------------

_PI = 3.141592653589793
_SINCOS_MAX = 1e15
_PIO2 = 1.5707963267948966
_PIO4 = 0.7853981633974483


def _d(v: float) -> ir.Constant:
    return ir.Constant(DOUBLE, float(v))


#: math functions computed by kiln's own code on NVPTX (in f64, rounded to the argument type)
GPU_MATH = ("exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "tanh", "pow")


class GpuMathLibrary:
    """The `kiln_math_<name>` functions of one module, emitted on first use."""

    def __init__(self, me: ModuleEmitterBase) -> None:
        self.me = me
        self._fns: dict[str, ir.Function] = {}

    @property
    def used(self) -> bool:
        """Whether any function was emitted (so the module computes math with this fallback)."""
        return bool(self._fns)

    def math_fn(self, name: str) -> ir.Function:
        fn = self._fns.get(name)
        if fn is None:
            nargs = 2 if name in ("atan2", "pow") else 1
            fn = ir.Function(self.me.module, ir.FunctionType(DOUBLE, [DOUBLE] * nargs),
                             name=self.me.unique(f"kiln_math_{name}"))
            fn.linkage = "internal"
            fn_attrs(fn)
            self._fns[name] = fn
            MathBuilder(self, fn).build(name)
        return fn


class MathBuilder:
    """Emits the body of one f64 math function."""

    def __init__(self, lib: GpuMathLibrary, fn: ir.Function) -> None:
        self.lib = lib
        self.me = lib.me
        self.fn = fn
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))

    # small helpers
    def call(self, name: str, *args: ir.Value) -> ir.Value:
        return self.b.call(self.lib.math_fn(name), list(args))

    def intr(self, name: str, *args: ir.Value) -> ir.Value:
        f = self.me.declare(f"llvm.{name}.f64", DOUBLE, [DOUBLE] * len(args))
        return self.b.call(f, list(args))

    def horner(self, x: ir.Value, coeffs: Sequence[float]) -> ir.Value:
        """c0 + c1 x + c2 x^2 + ... (coefficients lowest first), with fma."""
        b = self.b
        acc = _d(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.intr("fma", acc, x, _d(c))
        del b
        return acc

    def sel(self, cond: ir.Value, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.select(cond, a, c)

    def lt(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.fcmp_ordered("<", a, c)

    def gt(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.fcmp_ordered(">", a, c)

    def eq(self, a: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.fcmp_ordered("==", a, c)

    def signbit(self, x: ir.Value) -> ir.Value:
        return self.b.icmp_signed("<", self.b.bitcast(x, I64), ir.Constant(I64, 0))

    def pow2i(self, k: ir.Value) -> ir.Value:
        """2.0 ** k for an i64 k in the normal range."""
        b = self.b
        bits = b.shl(b.add(k, ir.Constant(I64, 1023)), ir.Constant(I64, 52))
        return b.bitcast(bits, DOUBLE)

    def build(self, name: str) -> None:
        getattr(self, "m_" + name)(*self.fn.args)

    # exp ----------------------------------------------------------------------------------
    def m_exp(self, x: ir.Value) -> None:
        b = self.b
        xc = self.sel(self.gt(x, _d(710.0)), _d(710.0), self.sel(self.lt(x, _d(-746.0)), _d(-746.0), x))
        kf = self.intr("roundeven", b.fmul(xc, _d(1.4426950408889634)))
        k = b.call(self.me.declare("llvm.fptosi.sat.i64.f64", I64, [DOUBLE]), [kf])
        r = self.intr("fma", kf, _d(-6.93147180369123816490e-01), xc)
        r = self.intr("fma", kf, _d(-1.90821492927058770002e-10), r)
        coeffs = [1.0]
        fact = 1.0
        for i in range(1, 15):
            fact *= i
            coeffs.append(1.0 / fact)
        p = self.horner(r, coeffs)
        k1 = b.ashr(k, ir.Constant(I64, 1))
        k2 = b.sub(k, k1)
        res = b.fmul(b.fmul(p, self.pow2i(k1)), self.pow2i(k2))
        res = self.sel(self.gt(x, _d(709.782712893384)), _d(float("inf")), res)
        res = self.sel(self.lt(x, _d(-745.1332191019412)), _d(0.0), res)
        b.ret(res)

    def expm1_small(self, x: ir.Value) -> ir.Value:
        """expm1 for |x| <= 0.5 by its Taylor series."""
        coeffs = [0.0, 1.0]
        fact = 1.0
        for i in range(2, 20):
            fact *= i
            coeffs.append(1.0 / fact)
        return self.horner(x, coeffs)

    # log ----------------------------------------------------------------------------------
    def m_log(self, x: ir.Value) -> None:
        b = self.b
        sub = self.lt(x, _d(2.2250738585072014e-308))
        xs = self.sel(sub, b.fmul(x, _d(18014398509481984.0)), x)       # * 2**54
        eadj = self.sel(sub, _d(-54.0), _d(0.0))
        bits = b.bitcast(xs, I64)
        e = b.sub(b.and_(b.lshr(bits, ir.Constant(I64, 52)), ir.Constant(I64, 0x7FF)), ir.Constant(I64, 1023))
        mbits = b.or_(b.and_(bits, ir.Constant(I64, (1 << 52) - 1)), ir.Constant(I64, 1023 << 52))
        m = b.bitcast(mbits, DOUBLE)
        big = self.gt(m, _d(1.4142135623730951))
        m = self.sel(big, b.fmul(m, _d(0.5)), m)
        ef = b.fadd(b.sitofp(e, DOUBLE), eadj)
        ef = self.sel(big, b.fadd(ef, _d(1.0)), ef)
        f = b.fsub(m, _d(1.0))
        s = b.fdiv(f, b.fadd(f, _d(2.0)))
        z = b.fmul(s, s)
        poly = self.horner(z, [1.0 / (2 * k + 1) for k in range(1, 13)])   # 1/3 + z/5 + ...
        # log(m) = 2s + 2s*z*poly ; f = 2s + s*f  -> use f - s*(f - z*poly*2)? keep simple & accurate:
        hfsq = b.fmul(_d(0.5), b.fmul(f, f))
        # fdlibm form: log(m) = f - (hfsq - s*(hfsq + R)), R = z*(2*poly)
        R = b.fmul(z, b.fmul(_d(2.0), poly))
        logm = b.fsub(f, b.fsub(hfsq, b.fmul(s, b.fadd(hfsq, R))))
        res = b.fadd(b.fmul(ef, _d(6.93147180369123816490e-01)),
                     b.fadd(logm, b.fmul(ef, _d(1.90821492927058770002e-10))))
        res = self.sel(self.eq(x, _d(float("inf"))), x, res)
        res = self.sel(self.eq(x, _d(0.0)), _d(float("-inf")), res)
        res = self.sel(self.lt(x, _d(0.0)), _d(float("nan")), res)
        res = self.sel(b.fcmp_unordered("uno", x, x), x, res)
        b.ret(res)

    # sin / cos / tan ----------------------------------------------------------------------
    def reduce(self, x: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(r, q): x = q*pi/2 + r, |r| <= pi/4, q an i64 (its low 2 bits select the quadrant)."""
        b = self.b
        kf = self.intr("roundeven", b.fmul(x, _d(0.6366197723675814)))
        r = self.intr("fma", kf, _d(-1.57079632673412561417e+00), x)
        r = self.intr("fma", kf, _d(-6.07710050630396597660e-11), r)
        r = self.intr("fma", kf, _d(-2.02226624871116645580e-21), r)
        q = b.call(self.me.declare("llvm.fptosi.sat.i64.f64", I64, [DOUBLE]), [kf])
        return r, q

    def sin_poly(self, r: ir.Value) -> ir.Value:
        z = self.b.fmul(r, r)
        coeffs = []
        fact = 1.0
        for i in range(1, 24, 2):
            if i > 1:
                fact *= (i - 1) * i
            coeffs.append((-1) ** (i // 2) / fact)
        return self.b.fmul(r, self.horner(z, coeffs))

    def cos_poly(self, r: ir.Value) -> ir.Value:
        z = self.b.fmul(r, r)
        coeffs = [1.0]
        fact = 1.0
        for i in range(2, 24, 2):
            fact *= (i - 1) * i
            coeffs.append((-1) ** (i // 2) / fact)
        return self.horner(z, coeffs)

    def _sincos(self, x: ir.Value, which: str) -> None:
        b = self.b
        r, q = self.reduce(x)
        s = self.sin_poly(r)
        c = self.cos_poly(r)
        q3 = b.and_(q, ir.Constant(I64, 3))
        odd = b.trunc(q, I1)
        if which == "tan":
            res = self.sel(odd, b.fdiv(b.fneg(c), s), b.fdiv(s, c))
        else:
            if which == "cos":
                q3 = b.and_(b.add(q3, ir.Constant(I64, 1)), ir.Constant(I64, 3))
                odd = b.trunc(q3, I1)
            base = self.sel(odd, c, s)
            neg = b.icmp_unsigned(">=", q3, ir.Constant(I64, 2))
            res = self.sel(neg, b.fneg(base), base)
        # no Payne-Hanek reduction: refuse (NaN) rather than return garbage for huge arguments
        res = self.sel(self.gt(self.intr("fabs", x), _d(_SINCOS_MAX)), _d(float("nan")), res)
        b.ret(res)

    def m_sin(self, x: ir.Value) -> None:
        self._sincos(x, "sin")

    def m_cos(self, x: ir.Value) -> None:
        self._sincos(x, "cos")

    def m_tan(self, x: ir.Value) -> None:
        self._sincos(x, "tan")

    # atan family --------------------------------------------------------------------------
    def m_atan(self, x: ir.Value) -> None:
        b = self.b
        a = self.intr("fabs", x)
        inv = self.gt(a, _d(1.0))
        t = self.sel(inv, b.fdiv(_d(1.0), a), a)
        mid = self.gt(t, _d(0.41421356237309503))
        u = self.sel(mid, b.fdiv(b.fsub(t, _d(1.0)), b.fadd(t, _d(1.0))), t)
        z = b.fmul(u, u)
        poly = self.horner(z, [(-1) ** k / (2 * k + 1) for k in range(26)])
        r = b.fmul(u, poly)
        r = self.sel(mid, b.fadd(_d(_PIO4), r), r)
        r = self.sel(inv, b.fsub(_d(_PIO2), r), r)
        b.ret(self.intr("copysign", r, x))

    def m_atan2(self, y: ir.Value, x: ir.Value) -> None:
        b = self.b
        ax = self.intr("fabs", x)
        ay = self.intr("fabs", y)
        xneg = self.signbit(x)
        a = self.call("atan", b.fdiv(ay, ax))
        base = self.sel(xneg, b.fsub(_d(_PI), a), a)
        inf = _d(float("inf"))
        both_inf = b.and_(self.eq(ax, inf), self.eq(ay, inf))
        base = self.sel(both_inf, self.sel(xneg, _d(3 * _PIO4), _d(_PIO4)), base)
        both_zero = b.and_(self.eq(ax, _d(0.0)), self.eq(ay, _d(0.0)))
        base = self.sel(both_zero, self.sel(xneg, _d(_PI), _d(0.0)), base)
        res = self.intr("copysign", base, y)
        nan = b.or_(b.fcmp_unordered("uno", x, x), b.fcmp_unordered("uno", y, y))
        b.ret(self.sel(nan, b.fadd(x, y), res))

    def m_asin(self, x: ir.Value) -> None:
        b = self.b
        d = self.intr("sqrt", b.fmul(b.fsub(_d(1.0), x), b.fadd(_d(1.0), x)))
        b.ret(self.call("atan", b.fdiv(x, d)))

    def m_acos(self, x: ir.Value) -> None:
        b = self.b
        q = self.intr("sqrt", b.fdiv(b.fsub(_d(1.0), x), b.fadd(_d(1.0), x)))
        b.ret(b.fmul(_d(2.0), self.call("atan", q)))

    def m_tanh(self, x: ir.Value) -> None:
        b = self.b
        a = self.intr("fabs", x)
        m = self.expm1_small(b.fmul(_d(2.0), self.sel(self.lt(a, _d(0.25)), a, _d(0.0))))
        small = b.fdiv(m, b.fadd(m, _d(2.0)))
        e = self.call("exp", b.fmul(_d(2.0), self.sel(self.gt(a, _d(22.0)), _d(22.0), a)))
        large = b.fsub(_d(1.0), b.fdiv(_d(2.0), b.fadd(e, _d(1.0))))
        r = self.sel(self.lt(a, _d(0.25)), small, large)
        r = self.sel(self.gt(a, _d(22.0)), _d(1.0), r)
        r = self.intr("copysign", r, x)
        b.ret(self.sel(b.fcmp_unordered("uno", x, x), x, r))

    def m_pow(self, x: ir.Value, y: ir.Value) -> None:
        b = self.b
        ax = self.intr("fabs", x)
        r = self.call("exp", b.fmul(y, self.call("log", ax)))
        # sign and domain for negative x (and -0.0)
        yint = self.eq(self.intr("floor", y), y)
        half = b.fmul(y, _d(0.5))
        yodd = b.and_(yint, b.fcmp_unordered("!=", self.intr("floor", half), half))
        xneg = self.signbit(x)
        r = self.sel(b.and_(xneg, yodd), b.fneg(r), r)
        yinf = self.eq(self.intr("fabs", y), _d(float("inf")))
        bad = b.and_(b.and_(xneg, b.not_(yint)), b.and_(self.lt(x, _d(0.0)), self.gt(x, _d(float("-inf")))))
        r = self.sel(b.and_(bad, b.not_(yinf)), _d(float("nan")), r)
        r = self.sel(self.eq(ax, _d(1.0)), self.sel(b.or_(yinf, b.not_(xneg)), _d(1.0), r), r)
        r = self.sel(self.eq(y, _d(0.0)), _d(1.0), r)
        b.ret(r)
