"""End-to-end tests of the kernel language (docs/language.md): kernels are compiled, called
directly on random numpy data and compared with a numpy / plain-Python reference.

tests/test_frontend.py checks the typed IR; this file checks what the generated code computes.
Kernels are module-level and group several checks each, so the file compiles a few dozen
objects, not hundreds.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import kiln as kl

RNG = np.random.default_rng(20240611)
N = 1000

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
FLOAT_DTYPES = [np.float16, np.float32, np.float64]
ALL_DTYPES = [np.bool_, *INT_DTYPES, *FLOAT_DTYPES]


def rand(dtype, n=N, lo=None, hi=None, nonzero=False):
    """Random (never constant) data of `dtype`; ints cover the whole range unless lo/hi given."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        out = RNG.integers(0, 2, n).astype(np.bool_)
        out[:2] = [True, False]
        return out
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo = info.min if lo is None else lo
        hi = info.max if hi is None else hi
        out = RNG.integers(lo, hi, n, dtype=dt, endpoint=True)
        if nonzero:
            out[out == 0] = 1
        return out
    lo = -100.0 if lo is None else lo
    hi = 100.0 if hi is None else hi
    out = RNG.uniform(lo, hi, n).astype(dt)
    if nonzero:
        out[out == 0] = 1
    return out


def wrap(v: int, dtype) -> int:
    """Python int -> the value it has in `dtype` (two's complement wrap; bool: != 0)."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return bool(v)
    bits = dt.itemsize * 8
    v &= (1 << bits) - 1
    if dt.kind == "i" and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


def pyfloordiv(a: int, b: int) -> int:
    return 0 if b == 0 else a // b


def pymod(a: int, b: int) -> int:
    return 0 if b == 0 else a % b


def pyipow(a: int, e: int) -> int:
    if e < 0:
        return 1 if a == 1 else (1 if e % 2 == 0 else -1) if a == -1 else 0
    return a ** e


def assert_same(got, want, *, rtol=0.0, atol=0.0, what=""):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if rtol == 0 and atol == 0:
        ok = (got == want) | (np.isnan(got) & np.isnan(want)) if got.dtype.kind == "f" else got == want
        bad = np.flatnonzero(~np.asarray(ok))
        assert bad.size == 0, f"{what}: {bad.size} mismatches, first at {bad[:5]}: " \
                              f"got {got.ravel()[bad[:5]]} want {want.ravel()[bad[:5]]}"
    else:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


# =============================================================================================
# Every scalar dtype: load, store, arithmetic, comparisons (one generic kernel, specialised per
# dtype)
# =============================================================================================

@kl.kernel
def k_arith(a: kl.ndarray(ndim=1), b: kl.ndarray(ndim=1), o: kl.ndarray(ndim=2),
            c: kl.ndarray(kl.bool_, ndim=2), d: kl.ndarray(kl.f64, ndim=1)):
    for i in range(a.shape[0]):
        x = a[i]
        y = b[i]
        o[0, i] = x + y
        o[1, i] = x - y
        o[2, i] = x * y
        o[3, i] = x // y
        o[4, i] = x % y
        o[5, i] = kl.max(x, y)
        o[6, i] = kl.min(x, y)
        o[7, i] = -x
        o[8, i] = abs(x)
        o[9, i] = x                     # plain load/store round trip
        c[0, i] = x < y
        c[1, i] = x <= y
        c[2, i] = x > y
        c[3, i] = x >= y
        c[4, i] = x == y
        c[5, i] = x != y
        d[i] = x / y


def _run_arith(dtype, a, b):
    n = a.shape[0]
    o = np.zeros((10, n), dtype)
    c = np.zeros((6, n), np.bool_)
    d = np.zeros(n, np.float64)
    k_arith(a, b, o, c, d)
    return o, c, d


@pytest.mark.parametrize("dtype", INT_DTYPES + [np.bool_], ids=lambda d: np.dtype(d).name)
def test_int_and_bool_arithmetic(dtype):
    a = rand(dtype)
    b = rand(dtype)
    if np.dtype(dtype) != np.bool_:
        # small divisors (incl. 0 and, for signed types, -1) exercise // and % edge cases
        b[::3] = rand(dtype, b[::3].size, lo=-3 if np.dtype(dtype).kind == "i" else 0, hi=3)
        b[7] = 0
        a[8] = np.iinfo(dtype).min
        b[8] = -1 if np.dtype(dtype).kind == "i" else 1
    o, c, d = _run_arith(dtype, a, b)
    A, B = [int(v) for v in a], [int(v) for v in b]
    refs = [
        [x + y for x, y in zip(A, B)],
        [x - y for x, y in zip(A, B)],
        [x * y for x, y in zip(A, B)],
        [pyfloordiv(x, y) for x, y in zip(A, B)],
        [pymod(x, y) for x, y in zip(A, B)],
        [max(x, y) for x, y in zip(A, B)],
        [min(x, y) for x, y in zip(A, B)],
        [-x for x in A],
        [abs(x) for x in A],
        A,
    ]
    for k, ref in enumerate(refs):
        assert_same(o[k], np.array([wrap(v, dtype) for v in ref], dtype), what=f"op {k}")
    assert_same(c, np.array([a < b, a <= b, a > b, a >= b, a == b, a != b]), what="compare")
    # `/` on ints: the default float (f32), whatever the int's width (Taichi's rule)
    ft = np.float32
    with np.errstate(divide="ignore", invalid="ignore"):
        want_d = (a.astype(ft) / b.astype(ft)).astype(np.float64)
    assert_same(d, want_d, what="true division")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_float_arithmetic(dtype):
    a = rand(dtype)
    b = rand(dtype, nonzero=True)
    b[:5] = [0.0, -0.0, 3.0, -3.0, np.inf]
    a[:5] = [5.0, -5.0, -7.0, 7.0, 2.5]
    a[5], b[5] = np.nan, 1.0
    o, c, d = _run_arith(dtype, a, b)
    with np.errstate(all="ignore"):
        refs = [a + b, a - b, a * b, a // b, a % b, None, None, -a, np.abs(a), a]
        for k, ref in enumerate(refs):
            if ref is not None:
                assert_same(o[k], ref.astype(dtype), what=f"op {k}")
        # min/max: a NaN operand gives the other one
        assert_same(o[5], np.fmax(a, b), what="max")
        assert_same(o[6], np.fmin(a, b), what="min")
        assert_same(c, np.array([a < b, a <= b, a > b, a >= b, a == b, a != b]), what="compare")
        # f16 arithmetic happens in f32: a / b is an f32 value, not rounded to f16
        ft = np.float32 if dtype == np.float16 else dtype
        assert_same(d, (a.astype(ft) / b.astype(ft)).astype(np.float64), what="true division")
    assert o[3, 2] == -3 and o[4, 2] == 2       # -7 // 3, -7 % 3 (Python floor semantics)
    assert o[3, 3] == -3 and o[4, 3] == -2      # 7 // -3, 7 % -3


# =============================================================================================
# ** , shifts, bitwise operators (ints), per dtype
# =============================================================================================

@kl.kernel
def k_intops(a: kl.ndarray(ndim=1), b: kl.ndarray(ndim=1), e: kl.ndarray(ndim=1), s: kl.ndarray(kl.u8, ndim=1),
             o: kl.ndarray(ndim=2)):
    for i in range(a.shape[0]):
        o[0, i] = a[i] & b[i]
        o[1, i] = a[i] | b[i]
        o[2, i] = a[i] ^ b[i]
        o[3, i] = ~a[i]
        o[4, i] = a[i] << s[i]
        o[5, i] = a[i] >> s[i]
        o[6, i] = a[i] ** e[i]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_int_bitwise_shift_pow(dtype):
    dt = np.dtype(dtype)
    bits = dt.itemsize * 8
    a, b = rand(dtype), rand(dtype)
    a[:4] = [1, 0, 2, 3]
    if dt.kind == "i":
        a[4:6] = [-1, -2]
    e = rand(dtype, lo=-2 if dt.kind == "i" else 0, hi=9)
    e[:6] = [-1, 5, 0, 4, -3, 3] if dt.kind == "i" else [1, 5, 0, 4, 3, 3]
    s = rand(np.uint8, lo=0, hi=bits + 3)      # includes shifts >= the bit width
    o = np.zeros((7, N), dtype)
    k_intops(a, b, e, s, o)
    A, B, E, S = ([int(v) for v in arr] for arr in (a, b, e, s))
    mask = (1 << bits) - 1
    refs = [
        [x & y for x, y in zip(A, B)],
        [x | y for x, y in zip(A, B)],
        [x ^ y for x, y in zip(A, B)],
        [~x for x in A],
        [0 if n >= bits else x << n for x, n in zip(A, S)],
        [(x >> min(n, bits)) if dt.kind == "i" else (0 if n >= bits else (x & mask) >> n) for x, n in zip(A, S)],
        [pyipow(x, y) for x, y in zip(A, E)],
    ]
    for k, ref in enumerate(refs):
        assert_same(o[k], np.array([wrap(v, dtype) for v in ref], dtype), what=f"op {k}")


@kl.kernel
def k_boolops(a: kl.ndarray(kl.bool_, ndim=1), b: kl.ndarray(kl.bool_, ndim=1), o: kl.ndarray(kl.bool_, ndim=2),
              n: kl.ndarray(kl.i64, ndim=2)):
    for i in range(a.shape[0]):
        o[0, i] = a[i] & b[i]
        o[1, i] = a[i] | b[i]
        o[2, i] = a[i] ^ b[i]
        o[3, i] = ~a[i]
        o[4, i] = not a[i]
        n[0, i] = a[i] + b[i]          # bool arithmetic is i64
        n[1, i] = -a[i]
        n[2, i] = a[i] + 1
        n[3, i] = True + True


def test_bool_ops():
    a, b = rand(np.bool_), rand(np.bool_)
    o = np.zeros((5, N), np.bool_)
    n = np.zeros((4, N), np.int64)
    k_boolops(a, b, o, n)
    assert_same(o, np.array([a & b, a | b, a ^ b, ~a, ~a]))
    ai, bi = a.astype(np.int64), b.astype(np.int64)
    assert_same(n, np.array([ai + bi, -ai, ai + 1, np.full(N, 2)]))


@kl.kernel
def k_floatpow(a: kl.ndarray(ndim=1), b: kl.ndarray(ndim=1), e: kl.ndarray(kl.i32, ndim=1), o: kl.ndarray(ndim=2)):
    for i in range(a.shape[0]):
        o[0, i] = a[i] ** b[i]
        o[1, i] = a[i] ** e[i]          # float ** int -> float pow
        o[2, i] = a[i] ** 2
        o[3, i] = kl.pow(a[i], b[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_pow(dtype):
    a = rand(dtype, lo=0.1, hi=4.0)
    b = rand(dtype, lo=-3.0, hi=3.0)
    e = rand(np.int32, lo=-4, hi=6)
    o = np.zeros((4, N), dtype)
    k_floatpow(a, b, e, o)
    # On the GPU, f64 pow is kiln's own code (no libdevice), documented to within 6e-14 (docs/cuda.md)
    f64_rtol = 1e-13 if os.environ.get("KILN_DEVICE") == "cuda" else 1e-14
    rtol = 1e-6 if dtype == np.float32 else f64_rtol
    np.testing.assert_allclose(o[0], a ** b, rtol=rtol)
    np.testing.assert_allclose(o[1], a ** e.astype(dtype), rtol=rtol)
    assert_same(o[2], a * a)
    np.testing.assert_allclose(o[3], a ** b, rtol=rtol)


# =============================================================================================
# Casts: kl.cast, kl.f32(v), np.float32(v), int(), float(), bool(), and implicit store casts
# =============================================================================================

@kl.kernel
def k_casts(a: kl.ndarray(ndim=1), ob: kl.ndarray(kl.bool_, ndim=1), o8: kl.ndarray(kl.i8, ndim=1),
            o16: kl.ndarray(kl.i16, ndim=1), o32: kl.ndarray(kl.i32, ndim=1), o64: kl.ndarray(kl.i64, ndim=1),
            u8_: kl.ndarray(kl.u8, ndim=1), u16_: kl.ndarray(kl.u16, ndim=1), u32_: kl.ndarray(kl.u32, ndim=1),
            u64_: kl.ndarray(kl.u64, ndim=1), h: kl.ndarray(kl.f16, ndim=1), f: kl.ndarray(kl.f32, ndim=1),
            d: kl.ndarray(kl.f64, ndim=1), via: kl.ndarray(ndim=2)):
    for i in range(a.shape[0]):
        ob[i] = kl.cast(a[i], kl.bool_)
        o8[i] = kl.cast(a[i], kl.i8)
        o16[i] = kl.i16(a[i])
        o32[i] = np.int32(a[i])
        o64[i] = int(a[i])
        u8_[i] = kl.cast(a[i], kl.u8)
        u16_[i] = kl.u16(a[i])
        u32_[i] = np.uint32(a[i])
        u64_[i] = kl.cast(a[i], kl.u64)
        h[i] = kl.f16(a[i])
        f[i] = float(a[i])
        d[i] = kl.f64(a[i])
        # implicit conversions on store, and bool()
        via[0, i] = bool(a[i])
        via[1, i] = kl.cast(kl.cast(a[i], kl.f64), kl.f32)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_casts(dtype):
    dt = np.dtype(dtype)
    # values representable in every target type, so numpy's astype is the reference
    if dt == np.bool_:
        a = rand(dtype)
    elif dt.kind == "f":
        a = rand(dtype, lo=0.0, hi=120.0)
        a[:4] = [0.0, 0.5, 1.75, 127.9]
    else:
        a = rand(dtype, lo=0, hi=127)
    outs = [np.zeros(N, t) for t in ALL_DTYPES]
    via = np.zeros((2, N), dtype)
    k_casts(a, *outs, via)
    for t, got in zip(ALL_DTYPES, outs):
        assert_same(got, a.astype(t), what=f"{dt.name} -> {np.dtype(t).name}")
    assert_same(via[0], (a != 0).astype(dtype), what="bool()")
    assert_same(via[1], a.astype(np.float64).astype(np.float32).astype(dtype), what="f64 -> f32")


@kl.kernel
def k_float_to_int(a: kl.ndarray(kl.f64, ndim=1), o: kl.ndarray(kl.i32, ndim=2), u: kl.ndarray(kl.u8, ndim=1),
                   h: kl.ndarray(kl.f16, ndim=1)):
    for i in range(a.shape[0]):
        o[0, i] = int(a[i])
        o[1, i] = kl.i32(a[i])
        o[2, i] = a[i]                  # implicit conversion on store truncates too
        u[i] = kl.u8(a[i])
        h[i] = a[i]                     # f64 -> f16 correctly rounded


def test_float_to_int_truncates_and_saturates():
    a = rand(np.float64, lo=-1e3, hi=1e3)
    a[:8] = [-2.7, 2.7, -0.5, np.nan, 1e20, -1e20, np.inf, -np.inf]
    o = np.zeros((3, N), np.int32)
    u = np.zeros(N, np.uint8)
    h = np.zeros(N, np.float16)
    k_float_to_int(a, o, u, h)

    def sat(v, t):
        info = np.iinfo(t)
        return 0 if math.isnan(v) else info.max if v >= info.max else info.min if v <= info.min else math.trunc(v)

    # int(v) is i64 (saturating there), then the store into i32 wraps
    assert_same(o[0], np.array([wrap(sat(v, np.int64), np.int32) for v in a], np.int32), what="int()")
    for k in (1, 2):
        assert_same(o[k], np.array([sat(v, np.int32) for v in a], np.int32), what=f"f64 -> i32 #{k}")
    want_u = [0 if math.isnan(v) else 255 if v >= 255 else 0 if v <= 0 else math.trunc(v) for v in a]
    assert_same(u, np.array(want_u, np.uint8), what="f64 -> u8 saturates")
    with np.errstate(over="ignore"):
        assert_same(h, a.astype(np.float16), what="f64 -> f16")


# =============================================================================================
# Promotion, weak literals, locals with inferred types
# =============================================================================================

NP_TWO = np.float64(2.0)     # numpy scalar global: typed (f64), not weak
PY_ONE = 1                   # Python int global: weak literal


@kl.kernel
def k_promote(i8: kl.ndarray(kl.i8, ndim=1), u8: kl.ndarray(kl.u8, ndim=1), i32: kl.ndarray(kl.i32, ndim=1),
              u32: kl.ndarray(kl.u32, ndim=1), i64: kl.ndarray(kl.i64, ndim=1), u64: kl.ndarray(kl.u64, ndim=1),
              f16: kl.ndarray(kl.f16, ndim=1), f32: kl.ndarray(kl.f32, ndim=1), f64: kl.ndarray(kl.f64, ndim=1),
              b: kl.ndarray(kl.bool_, ndim=1), oi: kl.ndarray(kl.i64, ndim=1), of: kl.ndarray(kl.f64, ndim=1)):
    oi[0] = i8[0] + u8[0]           # i16: 100 + 200 = 300, no wrap
    oi[1] = i8[0] + 100             # weak literal: i8, wraps
    oi[2] = i32[0] + u32[0]         # i64
    oi[3] = u64[0] + i64[0]         # i64 (wraps)
    oi[4] = b[0] + 1                # i64
    oi[5] = i8[0] + PY_ONE * 28     # weak global: i8 wraps (100 + 28 = -128)
    oi[6] = i8[0] * i8[1]           # i8 * i8 wraps
    of[0] = i32[1] + f32[0]         # f32 (numpy: f64)
    of[1] = i32[1] * 0.5            # f32: 16777217 -> 16777216 before * 0.5
    of[2] = f16[0] * 2.0            # f32: 65504 * 2 does not overflow f16
    of[3] = f32[1] * NP_TWO         # numpy global is typed: f64
    of[4] = i32[1] / i32[2]         # f32
    of[5] = i64[1] / i64[2]         # f64
    of[6] = f32[1] * 0.1            # f32 arithmetic (0.1 is a weak literal)
    for j in range(i64[1], i64[1] + 1):
        of[7] = j * 0.5             # loop index i64 -> f64
        of[8] = j / 2
    s = 0.0                          # f32 forever
    s = s + f64[0]                   # rounds to f32
    of[9] = s
    t: kl.f64 = 0
    t = t + f64[0]
    of[10] = t
    u = kl.f64(0)
    u += f64[0]
    of[11] = u
    h = f16[1]                       # a local from f16 is f32
    h = h + f32[2]
    of[12] = h
    q = i8[0]                        # i8 local: later assignments convert (wrap)
    q = q + 100                      # stays i8: 100 + 100 wraps
    oi[7] = q
    oi[8] = 7 // 2 + 2 ** 3          # literal-only arithmetic folded by Python
    of[13] = 7 / 2 + 2 ** -1


def test_promotion_and_locals():
    big = 16777217
    args = {
        "i8": np.array([100, 3], np.int8), "u8": np.array([200, 1], np.uint8),
        "i32": np.array([2**31 - 1, big, 1], np.int32), "u32": np.array([2**32 - 1], np.uint32),
        "i64": np.array([5, 2**53 + 1, 1], np.int64), "u64": np.array([2**64 - 1], np.uint64),
        "f16": np.array([65504, 0.1], np.float16), "f32": np.array([0.0, 3.0, 1e-3], np.float32),
        "f64": np.array([1.0 + 2.0**-40], np.float64), "b": np.array([True]),
        "oi": np.zeros(9, np.int64), "of": np.zeros(14, np.float64)}
    k_promote(*args.values())
    oi, of = args["oi"], args["of"]
    assert list(oi) == [300, wrap(200, np.int8), 2**31 - 1 + 2**32 - 1, 4, 2, -128, wrap(300, np.int8),
                        wrap(200, np.int8), 11]
    assert of[0] == float(np.float32(big))
    assert of[1] == 8388608.0
    assert of[2] == 131008.0
    assert of[3] == 6.0
    assert of[4] == float(np.float32(big))
    assert of[5] == float(2**53 + 1)            # 2**53 + 1 -> f64 2**53 (+ 0 error) / 1
    assert of[6] == float(np.float32(3.0) * np.float32(0.1))
    assert of[7] == (2**53 + 1) * 0.5 and of[8] == float(2**53 + 1) / 2
    assert of[9] == 1.0 and of[10] == 1.0 + 2.0**-40 and of[11] == 1.0 + 2.0**-40
    assert of[12] == float(np.float32(np.float16(0.1)) + np.float32(1e-3))
    assert of[13] == 4.0


# =============================================================================================
# Control flow: // % on negatives, and/or/not short-circuit, ternary, if/elif/else, while,
# serial for with steps, break/continue, chains
# =============================================================================================

@kl.kernel
def k_control(x: kl.ndarray(kl.i64, ndim=1), y: kl.ndarray(kl.f64, ndim=1), o: kl.ndarray(kl.i64, ndim=2)):
    for i in range(x.shape[0]):
        v = x[i]
        # short-circuit guards an out-of-range index (x has no element -1 or n)
        o[0, i] = 1 if i + 1 < x.shape[0] and x[i + 1] > v else 0
        o[1, i] = 1 if i == 0 or x[i - 1] < v else 0
        o[2, i] = not (v > 0)
        o[3, i] = -3 < v < 3
        o[4, i] = 0 <= v % 7 != 3
        if v < -50:
            o[5, i] = -1
        elif v < 0:
            o[5, i] = 0
        elif v == 0:
            o[5, i] = 100
        else:
            o[5, i] = 1
        # while with break/continue: sum of odd numbers below |v| % 20, stopping above 30
        n = abs(v) % 20
        s = 0
        k = 0
        while k < n:
            k += 1
            if k % 2 == 0:
                continue
            s += k
            if s > 30:
                break
        o[6, i] = s
        # nested serial for loops, negative step, break/continue
        acc = 0
        for a in range(v % 5, 10, 3):
            for b in range(5, v % 4 - 3, -2):
                if b == 1:
                    continue
                if a * b > 40:
                    break
                acc += a * b
        o[7, i] = acc
        o[8, i] = v // 3 + (v % -4) * 1000
        o[9, i] = y[i] // 1.5 if y[i] > 0 else y[i] % -1.25 * 8


def _control_ref(x, y):
    n = len(x)
    out = np.zeros((10, n), np.int64)
    for i, v in enumerate(map(int, x)):
        out[0, i] = 1 if i + 1 < n and x[i + 1] > v else 0
        out[1, i] = 1 if i == 0 or x[i - 1] < v else 0
        out[2, i] = not (v > 0)
        out[3, i] = -3 < v < 3
        out[4, i] = 0 <= v % 7 != 3
        out[5, i] = -1 if v < -50 else 0 if v < 0 else 100 if v == 0 else 1
        nn, s, k = abs(v) % 20, 0, 0
        while k < nn:
            k += 1
            if k % 2 == 0:
                continue
            s += k
            if s > 30:
                break
        out[6, i] = s
        acc = 0
        for a in range(v % 5, 10, 3):
            for b in range(5, v % 4 - 3, -2):
                if b == 1:
                    continue
                if a * b > 40:
                    break
                acc += a * b
        out[7, i] = acc
        out[8, i] = v // 3 + (v % -4) * 1000
        yv = float(y[i])
        out[9, i] = math.trunc(yv // 1.5 if yv > 0 else yv % -1.25 * 8)
    return out


def test_control_flow():
    x = rand(np.int64, lo=-100, hi=100)
    x[:3] = [0, -7, 7]
    y = rand(np.float64)
    o = np.zeros((10, N), np.int64)
    k_control(x, y, o)
    assert_same(o, _control_ref(x, y))
    assert o[8, 1] == -7 // 3 + (-7 % -4) * 1000 == -3 - 3000


@kl.kernel
def k_divzero(a: kl.ndarray(ndim=1), b: kl.ndarray(ndim=1), o: kl.ndarray(ndim=2)):
    for i in range(a.shape[0]):
        o[0, i] = a[i] // b[i]
        o[1, i] = a[i] % b[i]
        o[2, i] = a[i] // 0
        o[3, i] = a[i] % 0


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint64], ids=lambda d: np.dtype(d).name)
def test_integer_division_by_zero_is_zero(dtype):
    a = rand(dtype, nonzero=True)
    b = np.zeros(N, dtype)
    o = np.full((4, N), 99, dtype)
    k_divzero(a, b, o)
    assert not o.any()


# =============================================================================================
# kl.static, globals and closures captured at compile time, @kl.func
# =============================================================================================

SCALE = 3
OFFSETS = (1, 10, 100)
USE_SQUARE = True


@kl.func
def sq(v: kl.f64) -> kl.f64:
    return v * v


@kl.func
def sign_class(v: kl.f64) -> kl.i32:
    if v < 0:
        return -1
    elif v == 0:
        return 0
    else:
        return 1


@kl.func
def weighted(x: kl.ndarray(kl.f64, ndim=1), i: kl.i64, w: kl.f64) -> kl.f64:
    return sq(x[i]) * w + sign_class(x[i])          # nested func calls


@kl.func
def store_twice(o: kl.ndarray(ndim=2), i: kl.i64, v: kl.f64):
    o[3, i] = v
    o[4, i] += v                                     # accumulation in a func (atomic there)


@kl.func
def first_negative(x: kl.ndarray(kl.f64, ndim=1)) -> kl.i64:
    for k in range(x.shape[0]):
        if x[k] < 0:
            return k                                 # return from inside a loop
    return -1


def make_kernel(factor):
    bias = 0.25

    @kl.kernel
    def k(x: kl.ndarray(kl.f64, ndim=1), o: kl.ndarray(kl.f64, ndim=2), first: kl.ndarray(kl.i64, ndim=1)):
        first[0] = first_negative(x)
        for i in range(x.shape[0]):
            if kl.static(USE_SQUARE):
                o[0, i] = sq(x[i]) * SCALE
            else:
                o[0, i] = undefined_name_never_compiled  # noqa: F821 - the branch is not compiled
            acc: kl.f64 = 0.0
            for j in kl.static(range(3)):
                acc += x[i] * 10 ** j               # j is a compile-time constant
            for c in kl.static(OFFSETS):
                acc += c
            o[1, i] = acc
            o[2, i] = weighted(x, i, factor) + bias
            store_twice(o, i, x[i] * factor)
            if SCALE > 2:                             # constant condition: resolved at compile time
                o[5, i] = 1.0
            else:
                o[5, i] = undefined_name_never_compiled  # noqa: F821

    return k


k_static_fast = make_kernel(2.0)
k_static_slow = make_kernel(-1.5)


def test_static_globals_closures_funcs():
    x = rand(np.float64, lo=1.0, hi=50.0)
    x[17] = -3.0
    x[20] = -4.0
    for k, factor in ((k_static_fast, 2.0), (k_static_slow, -1.5)):
        o = np.zeros((6, N))
        o[4] = 1.0
        first = np.zeros(1, np.int64)
        k(x, o, first)
        assert first[0] == 17
        assert_same(o[0], x * x * 3)
        np.testing.assert_allclose(o[1], x * 111 + 111, rtol=1e-15)
        np.testing.assert_allclose(o[2], x * x * factor + np.sign(x) + 0.25, rtol=1e-15)
        assert_same(o[3], x * factor)
        assert_same(o[4], 1.0 + x * factor)
        assert_same(o[5], np.ones(N))


@kl.kernel
def k_local_f32(x: kl.ndarray(kl.f64, ndim=1), o: kl.ndarray(kl.f64, ndim=1)):
    for i in range(x.shape[0]):
        acc = 0.0                                     # f32 local: each += rounds to f32
        for j in kl.static(range(3)):
            acc += x[i] * 10 ** j               # j is a compile-time constant
        o[i] = acc


def test_local_inferred_f32_rounds():
    x = rand(np.float64, lo=1.0, hi=50.0)
    o = np.zeros(N)
    k_local_f32(x, o)
    want = np.zeros(N, np.float32)
    for c in OFFSETS:
        want = (want.astype(np.float64) + x * c).astype(np.float32)
    assert_same(o, want.astype(np.float64))


def test_globals_read_when_specialised():
    global SCALE
    k = make_kernel(1.0)
    x = rand(np.float64, n=8, lo=1, hi=2)
    o, first = np.zeros((6, 8)), np.zeros(1, np.int64)
    old = SCALE
    try:
        SCALE = 5
        k(x, o, first)
    finally:
        SCALE = old
    assert_same(o[0], x * x * 5)
    assert first[0] == -1


# =============================================================================================
# Every math builtin against numpy
# =============================================================================================

@kl.kernel
def k_math(x: kl.ndarray(ndim=1), y: kl.ndarray(ndim=1), p: kl.ndarray(ndim=1), u: kl.ndarray(ndim=1),
           o: kl.ndarray(ndim=2), bo: kl.ndarray(kl.bool_, ndim=2)):
    for i in range(x.shape[0]):
        o[0, i] = kl.abs(x[i])
        o[1, i] = kl.min(x[i], y[i])
        o[2, i] = kl.max(x[i], y[i])
        o[3, i] = kl.sqrt(p[i])
        o[4, i] = kl.rsqrt(p[i])
        o[5, i] = kl.exp(u[i])
        o[6, i] = kl.log(p[i])
        o[7, i] = kl.sin(x[i])
        o[8, i] = kl.cos(x[i])
        o[9, i] = kl.tan(u[i])
        o[10, i] = kl.asin(u[i] * 0.25)
        o[11, i] = kl.acos(u[i] * 0.25)
        o[12, i] = kl.atan(x[i])
        o[13, i] = kl.atan2(x[i], y[i])
        o[14, i] = kl.tanh(u[i])
        o[15, i] = kl.floor(x[i])
        o[16, i] = kl.ceil(x[i])
        o[17, i] = kl.round(x[i])
        o[18, i] = kl.pow(p[i], u[i])
        o[19, i] = math.sqrt(p[i]) + math.pi        # Python's math functions and constants
        o[20, i] = max(x[i], y[i], u[i])             # Python's min/max with 3 arguments
        o[21, i] = min(x[i], y[i], u[i])
        o[22, i] = math.fabs(y[i]) + abs(x[i])
        bo[0, i] = kl.isnan(x[i])
        bo[1, i] = kl.isinf(x[i])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_math_builtins(dtype):
    x = rand(dtype, lo=-10, hi=10)
    y = rand(dtype, lo=-10, hi=10)
    p = rand(dtype, lo=0.01, hi=20)
    u = rand(dtype, lo=-3.9, hi=3.9)
    x[:6] = [2.5, -2.5, 0.5, 1.5, -0.5, 3.0]       # round half to even
    x[6:9] = [np.nan, np.inf, -np.inf]
    y[6], y[9], x[9] = 1.0, np.nan, 4.0
    o = np.zeros((23, N), dtype)
    bo = np.zeros((2, N), np.bool_)
    k_math(x, y, p, u, o, bo)
    # f16 is computed in f32 and rounded back on store
    ct = np.float32 if dtype == np.float16 else dtype
    X, Y, P, U = (v.astype(ct) for v in (x, y, p, u))
    exact = 0.0
    trans = {np.float16: 1e-3, np.float32: 1e-5, np.float64: 1e-13}[dtype]
    rounded = {np.float16: 0.0, np.float32: 1e-6, np.float64: 1e-15}[dtype]   # correctly rounded ops
    with np.errstate(all="ignore"):
        checks = [
            (0, np.abs(X), exact), (1, np.fmin(X, Y), exact), (2, np.fmax(X, Y), exact),
            (3, np.sqrt(P), rounded), (4, 1 / np.sqrt(P), rounded), (5, np.exp(U), trans), (6, np.log(P), trans),
            (7, np.sin(X), trans), (8, np.cos(X), trans), (9, np.tan(U), trans),
            (10, np.arcsin(U * ct(0.25)), trans), (11, np.arccos(U * ct(0.25)), trans),
            (12, np.arctan(X), trans), (13, np.arctan2(X, Y), trans), (14, np.tanh(U), trans),
            (15, np.floor(X), exact), (16, np.ceil(X), exact), (17, np.round(X), exact),
            (18, np.power(P, U), trans), (19, np.sqrt(P) + ct(math.pi), rounded),
            (20, np.fmax(np.fmax(X, Y), U), exact), (21, np.fmin(np.fmin(X, Y), U), exact),
            (22, np.abs(Y) + np.abs(X), exact),
        ]
        for k, want, rtol in checks:
            want = want.astype(dtype)
            got = o[k]
            if rtol == 0:
                assert_same(got, want, what=f"builtin #{k}")
            else:
                fin = np.isfinite(want)
                assert_same(np.isnan(got), np.isnan(want), what=f"builtin #{k} nan")
                np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=rtol * 1e-3, err_msg=f"#{k}")
    assert list(o[17, :6]) == [2.0, -2.0, 0.0, 2.0, -0.0, 3.0]
    assert_same(bo, np.array([np.isnan(x), np.isinf(x)]))


@kl.kernel
def k_math_int(a: kl.ndarray(ndim=1), o: kl.ndarray(kl.f64, ndim=2)):
    for i in range(a.shape[0]):
        o[0, i] = kl.sqrt(a[i])         # int -> the default float (f32), whatever its width
        o[1, i] = kl.abs(a[i])
        o[2, i] = kl.floor(a[i])
        o[3, i] = kl.isnan(a[i])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_math_builtins_on_ints(dtype):
    a = rand(dtype, lo=-2**20, hi=2**30)
    o = np.zeros((4, N))
    k_math_int(a, o)
    ft = np.float32
    with np.errstate(invalid="ignore"):
        assert_same(o[0], np.sqrt(a.astype(ft)).astype(np.float64))
    assert_same(o[1], np.abs(a).astype(np.float64))
    assert_same(o[2], a.astype(ft).astype(np.float64))
    assert not o[3].any()


# =============================================================================================
# Atomics: old values (serial), final values (parallel, many collisions), reductions
# =============================================================================================

@kl.kernel
def k_atomic_serial(x: kl.ndarray(kl.i32, ndim=1), v: kl.ndarray(kl.i32, ndim=1), old: kl.ndarray(kl.i32, ndim=2)):
    for k in range(v.shape[0]):
        old[0, k] = kl.atomic_add(x[0], v[k])
        old[1, k] = kl.atomic_sub(x[1], v[k])
        old[2, k] = kl.atomic_min(x[2], v[k])
        old[3, k] = kl.atomic_max(x[3], v[k])
        old[4, k] = kl.atomic_and(x[4], v[k])
        old[5, k] = kl.atomic_or(x[5], v[k])
        old[6, k] = kl.atomic_xor(x[6], v[k])


def test_atomics_return_old_values():
    # one-element work per parallel iteration, so serial order is not guaranteed: check the
    # multiset of old values and the final value, which hold for any order
    v = rand(np.int32, n=64, lo=-1000, hi=1000)
    init = np.array([5, 7, 3, -3, -1, 0, 12345], np.int32)
    x = init.copy()
    old = np.zeros((7, 64), np.int32)
    k_atomic_serial(x, v, old)
    assert x[0] == init[0] + v.sum() and x[1] == init[1] - v.sum()
    assert x[2] == min(init[2], v.min()) and x[3] == max(init[3], v.max())
    assert x[4] == np.bitwise_and.reduce(np.append(v, init[4]))
    assert x[5] == np.bitwise_or.reduce(np.append(v, init[5]))
    assert x[6] == np.bitwise_xor.reduce(np.append(v, init[6]))
    # add/sub: old values are the running values in some order: each is init +- a subset sum;
    # min/max: each old value is >= / <= the final one and the initial one appears
    assert init[0] in old[0] and init[1] in old[1] and init[2] in old[2] and init[3] in old[3]
    assert (old[2] >= x[2]).all() and (old[3] <= x[3]).all()
    # add/sub form one chain init -> ... -> final in some order: as multisets,
    # {old} + {final} == {old + v} + {init}
    assert sorted([*old[0].tolist(), int(x[0])]) == sorted([*(old[0] + v).tolist(), int(init[0])])
    assert sorted([*old[1].tolist(), int(x[1])]) == sorted([*(old[1] - v).tolist(), int(init[1])])
    if os.environ.get("KILN_DEVICE") == "cuda":
        return      # on the GPU every iteration runs in parallel: there is no serial order to check
    # serial order (64 < the parallel threshold, so this runs on one thread in order)
    kl.set_num_threads(1)
    try:
        x = init.copy()
        k_atomic_serial(x, v, old)
    finally:
        kl.set_num_threads(2)
    run = np.concatenate([[0], np.cumsum(v)[:-1]]).astype(np.int32)
    assert_same(old[0], init[0] + run)
    assert_same(old[1], init[1] - run)
    assert_same(old[2], np.minimum.accumulate(np.concatenate([[init[2]], v[:-1]])))
    assert_same(old[3], np.maximum.accumulate(np.concatenate([[init[3]], v[:-1]])))
    assert_same(old[4], np.bitwise_and.accumulate(np.concatenate([[init[4]], v[:-1]])))
    assert_same(old[5], np.bitwise_or.accumulate(np.concatenate([[init[5]], v[:-1]])))
    assert_same(old[6], np.bitwise_xor.accumulate(np.concatenate([[init[6]], v[:-1]])))


@kl.kernel
def k_hist(keys: kl.ndarray(kl.i64, ndim=1), w: kl.ndarray(kl.f64, ndim=1), h1: kl.ndarray(kl.i32, ndim=1),
           h2: kl.ndarray(kl.i64, ndim=1), hw: kl.ndarray(kl.f64, ndim=1), mn: kl.ndarray(kl.i64, ndim=1),
           mx: kl.ndarray(kl.i64, ndim=1), bits: kl.ndarray(kl.u32, ndim=2)):
    for i in range(keys.shape[0]):
        k = keys[i] % 64
        h1[k] += 1
        kl.atomic_add(h2[k], 1)
        kl.atomic_sub(h2[k], 2)
        hw[k] += w[i]
        kl.atomic_min(mn[k], keys[i])
        kl.atomic_max(mx[k], keys[i])
        bits[0, k] |= kl.u32(1) << (i % 32)
        kl.atomic_and(bits[1, k], ~(kl.u32(1) << (keys[i] % 32)))
        kl.atomic_xor(bits[2, k], keys[i])
        bits[3, k] ^= keys[i]


def test_parallel_histogram_atomics():
    n = 100_000
    keys = RNG.integers(0, 1 << 20, n)
    w = RNG.uniform(0, 1, n)
    h1 = np.zeros(64, np.int32)
    h2 = np.zeros(64, np.int64)
    hw = np.zeros(64)
    mn = np.full(64, 1 << 40)
    mx = np.full(64, -1)
    bits = np.zeros((4, 64), np.uint32)
    bits[1] = 0xFFFFFFFF
    kl.set_num_threads(2)
    k_hist(keys, w, h1, h2, hw, mn, mx, bits)
    b = keys % 64
    counts = np.bincount(b, minlength=64)
    assert_same(h1, counts.astype(np.int32))
    assert_same(h2, -counts)
    np.testing.assert_allclose(hw, np.bincount(b, weights=w, minlength=64), rtol=1e-12)
    for j in range(64):
        kj = keys[b == j]
        assert mn[j] == kj.min() and mx[j] == kj.max()
        idx = np.flatnonzero(b == j)
        assert bits[0, j] == np.bitwise_or.reduce(np.uint32(1) << (idx % 32).astype(np.uint32))
        assert bits[1, j] == np.uint32(0xFFFFFFFF) & ~np.bitwise_or.reduce(
            np.uint32(1) << (kj % 32).astype(np.uint32))
        assert bits[2, j] == bits[3, j] == np.bitwise_xor.reduce(kj).astype(np.uint32)


@kl.kernel
def k_total(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f64, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]                   # atomic f64 add of an f32 value
        kl.atomic_add(out[1], x[i] * x[i])
        out[2] -= 1


def test_reduction_with_threads():
    x = RNG.uniform(-1, 1, 1_000_000).astype(np.float32)
    for threads in (1, 2):
        kl.set_num_threads(threads)
        out = np.zeros(3)
        k_total(x, out)
        np.testing.assert_allclose(out[0], x.astype(np.float64).sum(), rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(out[1], (x.astype(np.float64) ** 2).sum(), rtol=1e-9)
        assert out[2] == -1_000_000
    kl.set_num_threads(2)


# =============================================================================================
# Parallel ndrange (1..4 dims, (start, stop) pairs, empty ranges), ndim up to 8, several
# parallel loops, code before/after, thread count independence
# =============================================================================================

@kl.kernel
def k_ndrange(a1: kl.ndarray(kl.i64, ndim=1), a2: kl.ndarray(kl.i64, ndim=2), a3: kl.ndarray(kl.i64, ndim=3),
              a4: kl.ndarray(kl.i64, ndim=4), lo: kl.i64, hi: kl.i64, cnt: kl.ndarray(kl.i64, ndim=1)):
    cnt[0] = 100                                  # before the loops: runs once
    for i in kl.ndrange((lo, hi)):
        a1[i] = i * 2 + 1
    for i, j in kl.ndrange(a2.shape[0], (1, a2.shape[1])):
        a2[i, j] = i * 100 + j
    for i, j, k in kl.ndrange((1, a3.shape[0]), a3.shape[1], (a3.shape[2] - 2, a3.shape[2])):
        a3[i, j, k] = i * 10000 + j * 100 + k
    for i, j, k, m in kl.ndrange(a4.shape[0], a4.shape[1], a4.shape[2], a4.shape[3]):
        a4[i, j, k, m] = a4[i, j, k, m] * 3 + cnt[0]  # reads the value written before the loops
    for i, j in kl.ndrange((hi, lo), 5):          # empty: hi > lo
        cnt[1] += 1
    for i in range(hi, lo):                       # empty
        cnt[1] += 1
    for i in range(a1.shape[0]):                  # runs after the loops above: sees their writes
        cnt[2] += a1[i]
    cnt[3] = cnt[0] + 1                           # after the loops: runs once


def test_parallel_ndrange():
    a1 = np.zeros(50, np.int64)
    a2 = np.zeros((7, 9), np.int64)
    a3 = np.zeros((4, 5, 6), np.int64)
    a4 = rand(np.int64, n=3 * 4 * 5 * 70, lo=-1000, hi=1000).reshape(3, 4, 5, 70)
    a4_0 = a4.copy()
    cnt = np.zeros(4, np.int64)
    k_ndrange(a1, a2, a3, a4, 5, 40, cnt)
    w1 = np.zeros(50, np.int64)
    w1[5:40] = np.arange(5, 40) * 2 + 1
    assert_same(a1, w1)
    w2 = np.zeros((7, 9), np.int64)
    w2[:, 1:] = (np.arange(7)[:, None] * 100 + np.arange(9)[None, :])[:, 1:]
    assert_same(a2, w2)
    i, j, k = np.indices((4, 5, 6))
    assert_same(a3, np.where((i >= 1) & (k >= 4), i * 10000 + j * 100 + k, 0))
    assert_same(a4, a4_0 * 3 + 100)
    assert list(cnt) == [100, 0, int(w1.sum()), 101]


@kl.kernel
def k_ndim(x: kl.ndarray(kl.f64), o: kl.ndarray(kl.f64, ndim=1), s: kl.ndarray(kl.i64, ndim=1)):
    if kl.static(x.ndim == 8):
        for a, b, c, d, e, f, g, h in kl.ndrange(x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4],
                                                 x.shape[5], x.shape[6], x.shape[7]):
            o[0] += x[a, b, c, d, e, f, g, h] * (a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h)
    elif kl.static(x.ndim == 5):
        for a, b, c, d, e in kl.ndrange(x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]):
            o[0] += x[a, b, c, d, e] * (a + 2 * b + 3 * c + 4 * d + 5 * e)
    for k in kl.static(range(x.ndim)):
        s[k] = x.shape[k]
    s[7] = x.shape[-1]


@pytest.mark.parametrize("shape", [(2, 3, 1, 2, 3, 2, 1, 4), (3, 1, 4, 2, 5)])
def test_high_ndim_and_shapes(shape):
    x = rand(np.float64, n=int(np.prod(shape)), lo=-1, hi=1).reshape(shape)
    o = np.zeros(1)
    s = np.zeros(8, np.int64)
    k_ndim(x, o, s)
    idx = np.indices(shape)
    weight = sum((d + 1) * idx[d] for d in range(len(shape)))
    np.testing.assert_allclose(o[0], (x * weight).sum(), rtol=1e-12)
    assert list(s[:len(shape)]) == list(shape) and s[7] == shape[-1]


@kl.kernel
def k_stencil(x: kl.ndarray(kl.f32, ndim=2), y: kl.ndarray(kl.f32, ndim=2), m: kl.ndarray(kl.f32, ndim=1)):
    for i, j in kl.ndrange((1, x.shape[0] - 1), (1, x.shape[1] - 1)):
        v = x[i, j] * 0.5 + (x[i - 1, j] + x[i + 1, j] + x[i, j - 1] + x[i, j + 1]) * 0.125
        y[i, j] = kl.sqrt(kl.abs(v)) if v > 0 else kl.sin(v)
        kl.atomic_max(m[0], v)          # order independent


def test_threads_do_not_change_results():
    x = rand(np.float32, n=300 * 200, lo=-1, hi=1).reshape(300, 200)
    outs = []
    for threads in (1, 2, 1, 2):
        kl.set_num_threads(threads)
        assert kl.get_num_threads() == threads
        y = np.zeros_like(x)
        m = np.full(1, -np.inf, np.float32)
        k_stencil(x, y, m)
        outs.append((y, m))
    kl.set_num_threads(2)
    for y, m in outs[1:]:
        assert_same(y, outs[0][0])
        assert_same(m, outs[0][1])
    v = x[1:-1, 1:-1] * np.float32(0.5) + (x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:]) * np.float32(0.125)
    np.testing.assert_allclose(outs[0][0][1:-1, 1:-1], np.where(v > 0, np.sqrt(np.abs(v)), np.sin(v)), rtol=1e-6)
    assert outs[0][1][0] == v.max()


# =============================================================================================
# Direct-call argument errors: raised before any code runs, arrays untouched
# =============================================================================================

@kl.kernel
def k_args(a: kl.i8, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=2), f: kl.f32):
    for i in range(x.shape[0]):
        x[i] = a + f
    y[0, 0] = 1.0


def test_direct_call_argument_errors():
    x = rand(np.float32, n=10)
    y = rand(np.float32, n=12).reshape(3, 4)
    x0, y0 = x.copy(), y.copy()
    k_args(1, x, y, 2.0)           # compile once, and check it really runs
    assert_same(x, np.full(10, 3.0, np.float32))
    x[:] = x0
    y[:] = y0

    def fails(exc, text, *args, **kwargs):
        with pytest.raises(exc) as ei:
            k_args(*args, **kwargs)
        assert text in str(ei.value), str(ei.value)
        assert_same(x, x0)
        assert_same(y, y0)
        return ei.value

    assert issubclass(kl.ArgumentError, TypeError) and issubclass(kl.ArgumentValueError, ValueError)
    fails(kl.ArgumentError, "expected dtype f32, got float64", 1, x.astype(np.float64), y, 2.0)
    fails(kl.ArgumentError, "expected a 1-D array, got 2-D", 1, y, y, 2.0)
    fails(kl.ArgumentError, "expected a numpy.ndarray", 1, [1.0, 2.0], y, 2.0)
    e = fails(kl.ArgumentValueError, "make elements share memory", 1, x, np.lib.stride_tricks.as_strided(
        y, (3, 4), (4, 4)), 2.0)          # written, and its elements overlap
    assert "'y'" in str(e)
    if os.environ.get("KILN_DEVICE", "cpu") == "cpu":   # on a GPU numpy arrays are staged: any alignment
        fails(kl.ArgumentValueError, "not aligned", 1, np.frombuffer(bytes(41), np.float32, 10, 1), y, 2.0)
    ro = x.copy()
    ro.flags.writeable = False
    e = fails(kl.ArgumentValueError, "read-only", 1, ro, y, 2.0)
    assert "'x'" in str(e)
    fails(kl.ArgumentError, "missing argument 'f'", 1, x, y)
    fails(kl.ArgumentError, "missing arguments 'y', 'f'", 1, x)
    fails(kl.ArgumentError, "takes 4 arguments, got 5", 1, x, y, 2.0, 3.0)
    fails(kl.ArgumentError, "has no parameter 'z'", 1, x, y, 2.0, z=1)
    fails(kl.ArgumentError, "argument 'a' given twice", 1, x, y, 2.0, a=1)
    fails(kl.ArgumentValueError, "128 is out of range for i8", 128, x, y, 2.0)
    fails(kl.ArgumentValueError, "-129 is out of range for i8", -129, x, y, 2.0)
    fails(kl.ArgumentValueError, "out of range for f32", 1, x, y, 1e300)
    fails(kl.ArgumentError, "expected an integer for i8", 1.5, x, y, 2.0)
    fails(kl.ArgumentError, "expected a number for f32", 1, x, y, "2")
    # keyword arguments are fine
    k_args(a=2, x=x, y=y, f=0.5)
    assert_same(x, np.full(10, 2.5, np.float32))
