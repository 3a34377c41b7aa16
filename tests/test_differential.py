"""The reference interpreter (kiln.interp) against compiled code.

Unit cases pin the language rules of docs/language.md on both; the hypothesis test generates
random well-typed kernels (tests/fuzz/kernelgen.py) and requires bit-identical results (a few ulp
for the transcendental builtins). Long runs: tests/fuzz/fuzz_diff.py --seed S --count N.
"""

from __future__ import annotations

import itertools
import math
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kiln as kl
from kiln import passes
from kiln.interp import run_kernel
from kiln.types import SCALARS_BY_NAME, NdArrayType

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz"))

from fuzz_diff import PASSED, _ulps, check_kernel, compare
from kernelgen import Draw, KernelGen


def _both(kernel, args: dict, types: tuple) -> tuple[dict, dict]:
    """(compiled results, interpreter results) of one kernel on copies of `args`."""
    compiled = {n: v.copy() if isinstance(v, np.ndarray) else v for n, v in args.items()}
    interp = {n: v.copy() if isinstance(v, np.ndarray) else v for n, v in args.items()}
    with np.errstate(all="ignore"):
        kernel(**compiled)
    run_kernel(passes.lower_aug_stores(kernel.specialize(types)), interp)
    return compiled, interp


def _arr(t: str) -> NdArrayType:
    return NdArrayType(SCALARS_BY_NAME[t], 1)


@kl.kernel
def int_rules(a: kl.ndarray(kl.i8, ndim=1), b: kl.ndarray(kl.i8, ndim=1), out: kl.ndarray(kl.i8, ndim=2)):
    for i in range(a.shape[0]):
        out[i, 0] = a[i] // b[i]
        out[i, 1] = a[i] % b[i]
        out[i, 2] = a[i] + b[i]
        out[i, 3] = a[i] * b[i]
        out[i, 4] = a[i] ** b[i]
        out[i, 5] = a[i] << b[i]
        out[i, 6] = a[i] >> b[i]
        out[i, 7] = kl.abs(a[i])


def test_integer_rules() -> None:
    a = np.array([-7, 7, -128, -128, 127, 5, 1, -1, 3, 2], np.int8)
    b = np.array([2, -2, -1, 0, 1, 9, -3, -3, 7, -1], np.int8)
    out = np.zeros((len(a), 8), np.int8)
    compiled, interp = _both(int_rules, {"a": a, "b": b, "out": out}, (_arr("i8"), _arr("i8"),
                                                                        NdArrayType(kl.i8, 2)))
    got = interp["out"]
    assert list(got[0, :2]) == [-4, 1] and list(got[1, :2]) == [-4, -1]     # Python // and %
    assert list(got[2, :2]) == [-128, 0]                 # INT_MIN // -1 wraps; % -1 is 0
    assert list(got[3, :2]) == [0, 0]                    # division by zero gives 0
    assert got[4, 2] == -128                             # 127 + 1 wraps
    assert list(got[6:10, 4]) == [1, -1, -117, 0]        # 1, (-1) ** odd, wraps, negative -> 0
    assert got[5, 5] == 0 and got[2, 7] == -128          # shift >= width; abs(INT_MIN) wraps
    np.testing.assert_array_equal(compiled["out"], got)


@kl.kernel
def float_rules(x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1),
                out: kl.ndarray(kl.f32, ndim=2), ints: kl.ndarray(kl.i16, ndim=1)):
    for i in range(x.shape[0]):
        out[i, 0] = x[i] // y[i]
        out[i, 1] = x[i] % y[i]
        out[i, 2] = x[i] / y[i]
        out[i, 3] = kl.min(x[i], y[i])
        out[i, 4] = kl.max(x[i], y[i])
        out[i, 5] = kl.round(x[i])
        out[i, 6] = kl.sqrt(x[i])
        ints[i] = kl.i16(x[i])


def test_float_rules() -> None:
    nan, inf = math.nan, math.inf
    x = np.array([-7.5, 7.5, 1.0, nan, 2.5, -1e9, inf, 0.0, 1.0], np.float32)
    y = np.array([2.0, -2.0, 0.1, 1.0, nan, 3.0, 1.0, 0.0, -0.0], np.float32)
    args = {"x": x, "y": y, "out": np.zeros((len(x), 7), np.float32), "ints": np.zeros(len(x), np.int16)}
    compiled, interp = _both(float_rules, args, (_arr("f32"), _arr("f32"), NdArrayType(kl.f32, 2),
                                                _arr("i16")))
    got = interp["out"]
    assert got[0, 0] == -4.0 and got[0, 1] == 0.5 and got[1, 1] == -0.5     # Python semantics
    assert got[3, 3] == 1.0 and got[4, 4] == 2.5                            # NaN gives the other
    assert got[4, 5] == 2.0                                                  # ties to even
    assert list(interp["ints"][3:7]) == [0, 2, -32768, 32767]               # NaN 0, saturate
    for k in range(got.shape[1]):
        assert compare(f"out[:, {k}]", compiled["out"][:, k], got[:, k]) is None
    np.testing.assert_array_equal(compiled["ints"], interp["ints"])


def test_ulp_distance() -> None:
    a = np.array([1.0, -0.0, np.nan, np.inf], np.float32)
    b = np.nextafter(a, np.float32(np.inf)).astype(np.float32)
    assert list(_ulps(a, b)[:2]) == [1, 1]
    assert _ulps(a[2:3], np.array([np.nan], np.float32))[0] == 0
    assert compare("out_f32", a[:2], b[:2]) is not None          # exact outputs: one ulp is a miss
    assert compare("tx_f32", a[:2], b[:2]) is None               # transcendental: within 4 ulp


_EXAMPLE = itertools.count()


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_kernels_match_interpreter(data, tmp_path) -> None:
    gen = KernelGen(Draw(lambda lo, hi: data.draw(st.integers(lo, hi))))
    outcome, detail = check_kernel(gen, str(tmp_path), f"h{next(_EXAMPLE)}")   # a fresh module each
    assert outcome in PASSED, detail


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_debug_kernels_match_interpreter(data, tmp_path) -> None:
    """Debug mode: indices that sometimes fall past the end and divisions by zero raise the same
    KernelIndexError / KernelZeroDivisionError (same message) compiled and interpreted, after
    the same writes."""
    gen = KernelGen(Draw(lambda lo, hi: data.draw(st.integers(lo, hi))), wild_indices=True)
    outcome, detail = check_kernel(gen, str(tmp_path), f"d{next(_EXAMPLE)}", debug=True)
    assert outcome in PASSED, detail


@kl.func
def _fetch(x: kl.ndarray(kl.f32, ndim=2), i: kl.i64, j: kl.i64) -> kl.f32:
    return x[i, j]


@kl.kernel
def checked(x: kl.ndarray(kl.f32, ndim=2), k: kl.ndarray(kl.i32, ndim=1), out: kl.ndarray(kl.f32, ndim=1)):
    for i in range(out.shape[0]):
        out[i] = _fetch(x, kl.i64(i), kl.i64(k[i])) + kl.f32(k[i] // (k[i] - 1))


_INDEX_ERROR = ("KernelIndexError: kernel 'checked' at test_differential.py:{fetch}: index (1, 2) is out "
                "of bounds for array 'x' of shape (3, 2)")
_DIVIDE_ERROR = "KernelZeroDivisionError: kernel 'checked' at test_differential.py:{div}: integer division or modulo by zero"


@pytest.mark.parametrize("k, error", [([0, 2, 1], _INDEX_ERROR), ([0, 1, 0], _DIVIDE_ERROR), ([0, 0, 0], "")])
def test_interpreter_raises_what_debug_code_raises(k: list[int], error: str) -> None:
    from fuzz_diff import _outcome

    from kiln import config
    lines = {"fetch": _fetch.py_func.__code__.co_firstlineno + 2,       # the decorator line first
             "div": checked.py_func.__code__.co_firstlineno + 3}
    types = (NdArrayType(kl.f32, 2), _arr("i32"), _arr("f32"))
    args = {"x": np.arange(6, dtype=np.float32).reshape(3, 2), "k": np.array(k, np.int32),
            "out": np.zeros(3, np.float32)}
    interp = {n: v.copy() for n, v in args.items()}
    kir = passes.insert_bounds_checks(passes.lower_aug_stores(checked.specialize(types)))
    assert _outcome(lambda: run_kernel(kir, interp)) == error.format(**lines)
    with config.configured(debug=True):
        assert _outcome(lambda: checked(**args)) == error.format(**lines)
    np.testing.assert_array_equal(args["out"][:1], interp["out"][:1])   # written before the failure


@kl.kernel
def signed_zero_min(x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1),
                    out: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        out[0] = kl.min(x[i], y[i])
        out[1] = kl.min(x[i], kl.f32(-0.0))
        out[2] = kl.max(x[i], y[i])
        out[3] = kl.max(x[i], kl.f32(-0.0))


@pytest.mark.parametrize("x, y", [(0.0, -0.0), (-0.0, 0.0), (0.0, 0.0), (-0.0, -0.0)])
def test_min_max_of_signed_zeros(x: float, y: float) -> None:
    """-0.0 < +0.0 for kl.min/kl.max (docs/language.md), for runtime and constant operands, in
    compiled code and in the interpreter."""
    args = {"x": np.array([x], np.float32), "y": np.array([y], np.float32), "out": np.zeros(4, np.float32)}
    compiled, interp = _both(signed_zero_min, args, (_arr("f32"),) * 3)
    neg_x, neg_y = math.copysign(1, x) < 0, math.copysign(1, y) < 0
    want = [neg_x or neg_y, True, neg_x and neg_y, neg_x]
    assert list(np.signbit(interp["out"])) == want
    assert list(np.signbit(compiled["out"])) == want


@kl.kernel
def f16_literal(out: kl.ndarray(kl.f32, ndim=1), x: kl.ndarray(kl.f32, ndim=1)):
    for i in range(out.shape[0]):
        out[i] = kl.f32(kl.f16(0.001)) + x[i]


@kl.kernel
def f32_literal(out: kl.ndarray(kl.f64, ndim=1), x: kl.ndarray(kl.f64, ndim=1)):
    for i in range(out.shape[0]):
        out[i] = kl.f64(kl.f32(0.001)) + x[i]


def test_f32_literal_is_rounded_to_f32() -> None:
    out = np.zeros(1, np.float64)
    f32_literal(out, np.zeros(1, np.float64))
    assert out[0] == float(np.float32(0.001))


def test_f16_literal_is_rounded_to_f16() -> None:
    out = np.zeros(1, np.float32)
    f16_literal(out, np.zeros(1, np.float32))
    assert out[0] == np.float32(np.float16(0.001))
