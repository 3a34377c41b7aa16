"""Inline funcs (Taichi's ti.func semantics, kiln/lang/inline.py): generic parameters specialised
per call site, tuple returns, pass-by-value parameters, Taichi's return rule, and the Python
conveniences that come with them (pow, conditional tuples)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln as kl
from kiln.errors import KernelError, KernelTypeError
from kiln.ir import nodes as ir
from kiln.ir.analysis import walk

F1 = kl.ndarray(kl.f32, ndim=1)
I1 = kl.ndarray(kl.i32, ndim=1)


@kl.func
def sqr(z):
    return z * z


@kl.func
def escape(zx, zy, cx, cy):
    # the julia iteration with a reassigned parameter and a tuple result
    n = 0
    while n < 50 and zx * zx + zy * zy < 4.0:
        zx, zy = zx * zx - zy * zy + cx, 2.0 * zx * zy + cy
        n += 1
    return n, zx


def _escape_ref(x: float, cx: float, cy: float) -> tuple[int, float]:
    zx, zy, n = np.float32(x), np.float32(0), 0
    while n < 50 and zx * zx + zy * zy < 4:
        zx, zy = zx * zx - zy * zy + np.float32(cx), np.float32(2) * zx * zy + np.float32(cy)
        n += 1
    return n, float(zx)


def test_generic_func_and_tuple_unpacking() -> None:
    @kl.kernel
    def k(x: F1, out: I1, last: F1):
        for i in range(x.shape[0]):
            n, z = escape(x[i], 0.0, 0.3, 0.5)
            out[i] = n
            last[i] = z

    x = np.linspace(-1.5, 1.5, 64).astype(np.float32)
    out, last = np.zeros(64, np.int32), np.zeros(64, np.float32)
    k(x, out, last)
    want = [_escape_ref(float(v), 0.3, 0.5) for v in x]
    np.testing.assert_array_equal(out, [n for n, _ in want])
    finite = np.isfinite(last)
    np.testing.assert_allclose(last[finite], np.array([z for _, z in want], np.float32)[finite], rtol=1e-4)
    assert escape.inlined and sqr.inlined


def test_specialised_per_call_site_types() -> None:
    @kl.kernel
    def k(x: F1, n: I1):
        for i in range(x.shape[0]):
            x[i] = sqr(x[i]) + sqr(0.5)     # f32 and a weak literal
            n[i] = sqr(n[i])                # i32 stays an integer

    x, n = np.arange(4, dtype=np.float32), np.arange(4, dtype=np.int32)
    k(x, n)
    np.testing.assert_array_equal(x, np.arange(4) ** 2 + 0.25)
    np.testing.assert_array_equal(n, np.arange(4) ** 2)
    assert n.dtype == np.int32


def test_parameters_are_passed_by_value() -> None:
    @kl.func
    def bump(v, arr, i):
        v = v + 1.0          # reassigns the parameter: the caller's variable is unchanged
        arr[i] = v
        return v

    @kl.kernel
    def k(x: F1, y: F1):
        for i in range(x.shape[0]):
            a = x[i]
            b = bump(a, y, i)
            x[i] = a * 10.0 + b

    x, y = np.arange(3, dtype=np.float32), np.zeros(3, np.float32)
    k(x, y)
    np.testing.assert_array_equal(y, [1, 2, 3])
    np.testing.assert_array_equal(x, [1, 12, 23])


def test_arguments_are_evaluated_once_at_the_call() -> None:
    @kl.func
    def twice(v):
        return v + v

    @kl.kernel
    def k(c: I1, out: I1):
        for i in range(1):
            out[0] = twice(kl.atomic_add(c[0], 1))

    c, out = np.zeros(1, np.int32), np.zeros(1, np.int32)
    k(c, out)
    assert c[0] == 1 and out[0] == 0


def test_void_func_static_params_and_nesting() -> None:
    @kl.func
    def store(arr, i, f, v):
        arr[i] = f(v)        # f is a compile-time object (a func) passed through

    @kl.func
    def outer(arr, i):
        store(arr, i, sqr, i + 1)

    @kl.kernel
    def k(x: F1):
        for i in range(x.shape[0]):
            outer(x, i)

    x = np.zeros(4, np.float32)
    k(x)
    np.testing.assert_array_equal(x, [1, 4, 9, 16])


def test_annotated_funcs_keep_their_ir_function_and_may_call_inline_ones() -> None:
    @kl.func
    def cube(v: kl.f32) -> kl.f32:
        return sqr(v) * v

    @kl.kernel
    def k(x: F1):
        for i in range(x.shape[0]):
            x[i] = cube(x[i])

    kir = k.specialize((kl.ndarray(kl.f32, 1),))
    assert [f.name for f in kir.funcs] and not cube.inlined
    x = np.arange(4, dtype=np.float32)
    k(x)
    np.testing.assert_array_equal(x, np.arange(4) ** 3)


def test_inline_call_in_a_while_condition_runs_before_every_test() -> None:
    @kl.func
    def below(v, limit):
        return v * v < limit

    @kl.kernel
    def k(out: I1):
        for i in range(out.shape[0]):
            n = 0
            while below(n, i * 10):
                n += 1
            out[i] = n

    out = np.zeros(6, np.int32)
    k(out)
    np.testing.assert_array_equal(out, [int(np.ceil(np.sqrt(i * 10))) for i in range(6)])


def test_return_in_static_branches_and_loops() -> None:
    @kl.func
    def pick(v, which):
        if kl.static(which == 0):
            return v
        for j in kl.static(range(3)):
            if kl.static(j == which):
                return v * j
        return -v

    @kl.kernel
    def k(x: F1):
        for i in range(1):
            x[0] = pick(x[0], 0)
            x[1] = pick(x[1], 2)
            x[2] = pick(x[2], 7)

    x = np.array([3, 3, 3], np.float32)
    k(x)
    np.testing.assert_array_equal(x, [3, 6, -3])


def test_return_inside_a_dynamic_if_is_refused_at_the_funcs_line() -> None:
    @kl.func
    def early(v):
        if v > 0:
            return v  # ERR
        return -v

    @kl.kernel
    def k(x: F1):
        for i in range(x.shape[0]):
            x[i] = early(x[i])

    with pytest.raises(KernelError, match="return inside a non-static if/while/for of func 'early'") as ei:
        k.specialize((kl.ndarray(kl.f32, 1),))
    assert ei.value.source_line.strip() == "return v  # ERR"


def test_recursion_is_refused_with_the_chain() -> None:
    @kl.func
    def ping(v):
        return pong(v)

    @kl.func
    def pong(v):
        return ping(v)

    @kl.kernel
    def k(x: F1):
        for i in range(x.shape[0]):
            x[i] = ping(x[i])

    with pytest.raises(KernelError, match=r"recursive call to func 'ping' is not supported \(ping -> pong -> ping\)"):
        k.specialize((kl.ndarray(kl.f32, 1),))


def test_call_errors() -> None:
    @kl.kernel
    def k1(x: F1):
        for i in range(x.shape[0]):
            x[i] = sqr(x[i], 2.0)

    with pytest.raises(KernelTypeError, match="func 'sqr' takes 1 argument"):
        k1.specialize((kl.ndarray(kl.f32, 1),))

    @kl.func
    def nothing(v):
        v = v + 1

    @kl.kernel
    def k2(x: F1):
        for i in range(x.shape[0]):
            x[i] = nothing(x[i])

    with pytest.raises(KernelError, match="returns no value"):
        k2.specialize((kl.ndarray(kl.f32, 1),))

    @kl.func
    def typed(v: kl.f32, w):
        return v + w

    @kl.kernel
    def k3(x: F1):
        for i in range(x.shape[0]):
            x[i] = typed(x, 1.0)

    with pytest.raises(KernelTypeError, match="argument 'v' of func 'typed' expects f32, got array 'x'"):
        k3.specialize((kl.ndarray(kl.f32, 1),))


def test_locals_of_two_expansions_do_not_clash() -> None:
    @kl.func
    def acc(v):
        s = v
        for _ in range(2):
            s = s + v
        return s

    @kl.kernel
    def k(x: F1, n: I1):
        for i in range(x.shape[0]):
            x[i] = acc(x[i]) + acc(1.5)
            n[i] = acc(n[i])

    x, n = np.ones(2, np.float32), np.full(2, 2, np.int32)
    k(x, n)
    np.testing.assert_array_equal(x, [7.5, 7.5])
    np.testing.assert_array_equal(n, [6, 6])
    kir = k.specialize((kl.ndarray(kl.f32, 1), kl.ndarray(kl.i32, 1)))
    names = dict(kir.kernel.locals)
    assert len([n for n in names if n.endswith(".s")]) == 3


def test_python_pow_min_max_and_conditional_tuples() -> None:
    @kl.kernel
    def k(x: F1, n: I1):
        for i in range(1):
            x[0] = pow(x[0], 0.5)
            n[0] = pow(n[0], 2)
            n[1] = max(n[1], 3, 9, 4)
            n[2] = min(n[2], -1, 5)
            a, b = (n[3], 7) if x[1] > 0 else (8, n[3])
            n[3] = a * 10 + b

    x, n = np.array([16, 1], np.float32), np.array([5, 0, 0, 2], np.int32)
    k(x, n)
    assert x[0] == 4 and n.tolist() == [25, 9, -1, 27]
    kir = k.specialize((kl.ndarray(kl.f32, 1), kl.ndarray(kl.i32, 1)))
    assert not any(isinstance(e, ir.Call) for e in walk(kir.kernel.body))


def test_return_annotations_convert_scalars_and_tuples() -> None:
    @kl.func
    def split(v) -> (kl.i32, kl.f32):
        return v, v * 0.5

    @kl.func
    def half(v) -> kl.f32:
        return v / 2

    @kl.kernel
    def k(x: F1, n: I1):
        for i in range(x.shape[0]):
            a, b = split(x[i])
            n[i] = a
            x[i] = b + half(4)

    x, n = np.array([3.7, -2.2], np.float32), np.zeros(2, np.int32)
    k(x, n)
    np.testing.assert_array_equal(n, [3, -2])
    np.testing.assert_allclose(x, [3.85, 0.9], rtol=1e-6)
    kir = k.specialize((kl.ndarray(kl.f32, 1), kl.ndarray(kl.i32, 1)))
    assert {t.name for n_, t in kir.kernel.locals if n_.startswith("split.")} >= {"i32", "f32"}
