"""Struct-for (`for i, j in x`, `kl.grouped`), `kl.static(kl.ndrange(...))`, list/tuple locals,
captured tuples, Python `pow`, the default float type and the float-into-int warning."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import kiln as kl
from kiln.errors import KernelError
from kiln.types import default_fp, set_default_fp

ROOT = Path(__file__).resolve().parents[1]
res = (6, 5)
weights = (0.25, 0.5, 0.25)


@kl.kernel
def index_sum(x: kl.ndarray(kl.f64, ndim=2)):
    for i, j in x:
        x[i, j] = i * 10 + j


@kl.kernel
def grouped_copy(src: kl.ndarray(kl.f32, ndim=2), dst: kl.ndarray(kl.f32, ndim=2)):
    for I in kl.grouped(src):
        dst[I] = src[I] * 2.0


@kl.kernel
def blur(src: kl.ndarray(kl.f32, ndim=2), dst: kl.ndarray(kl.f32, ndim=2)):
    for i, j in kl.ndrange((1, res[0] - 1), (1, res[1] - 1)):
        acc = 0.0
        for di, dj in kl.static(kl.ndrange((-1, 2), (-1, 2))):
            acc += weights[di + 1] * weights[dj + 1] * src[i + di, j + dj]
        dst[i, j] = acc


def test_struct_for_over_an_ndarray() -> None:
    x = np.zeros((3, 4))
    index_sum(x)
    np.testing.assert_array_equal(x, np.arange(3)[:, None] * 10 + np.arange(4)[None, :])


def test_grouped_index_over_an_ndarray_and_an_ndrange() -> None:
    src = np.arange(12, dtype=np.float32).reshape(3, 4)
    dst = np.zeros_like(src)
    grouped_copy(src, dst)
    np.testing.assert_array_equal(dst, 2 * src)

    @kl.kernel
    def corner(out: kl.ndarray(kl.i32, ndim=2)):
        for I in kl.grouped(kl.ndrange((1, 3), 2)):
            out[I] = I[0] * 10 + I[1]

    out = np.zeros((3, 2), np.int32)
    corner(out)
    np.testing.assert_array_equal(out, [[0, 0], [10, 11], [20, 21]])


def test_static_ndrange_unrolled_with_captured_tuples() -> None:
    rng = np.random.default_rng(0)
    src = rng.random(res, dtype=np.float32)
    dst = np.zeros_like(src)
    blur(src, dst)
    w = np.array(weights, np.float32)
    ref = np.zeros_like(src)
    for di in range(3):
        for dj in range(3):
            ref[1:-1, 1:-1] += w[di] * w[dj] * src[di:di + res[0] - 2, dj:dj + res[1] - 2]
    np.testing.assert_allclose(dst, ref, rtol=1e-6)


def test_struct_for_nested_inside_the_parallel_loop_is_serial() -> None:
    @kl.kernel
    def row_sums(x: kl.ndarray(kl.f32, ndim=2), out: kl.ndarray(kl.f32, ndim=1)):
        for r in range(1):
            for i, j in x:
                out[i] += x[i, j] + r

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = np.zeros(2, np.float32)
    row_sums(x, out)
    np.testing.assert_array_equal(out, x.sum(axis=1))


def test_list_locals_indexed_statically_and_pow() -> None:
    @kl.kernel
    def poly(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f32, ndim=1)):
        for i in x:
            v = x[i]
            w = [1.0, v, pow(v, 2)]
            acc = 0.0
            for k in kl.static(range(3)):
                acc += w[k] * (k + 1)
            out[i] = acc + pow(2, 3)

    x = np.linspace(-1, 1, 5).astype(np.float32)
    out = np.zeros_like(x)
    poly(x, out)
    np.testing.assert_allclose(out, 1 + 2 * x + 3 * x * x + 8, rtol=1e-6)


def test_struct_for_graph_saved_and_loaded_in_a_fresh_process(tmp_path: Path) -> None:
    g = kl.GraphBuilder()
    g.dispatch(blur, kl.Arg("src", kl.ndarray(kl.f32, ndim=2)), kl.Arg("dst", kl.ndarray(kl.f32, ndim=2)))
    path = tmp_path / "blur.kiln"
    g.compile().save(path)
    src = np.arange(30, dtype=np.float32).reshape(res)
    ref = np.zeros_like(src)
    blur(src, ref)
    np.save(tmp_path / "src.npy", src)
    code = ("import sys, numpy as np, kiln as kl; g = kl.load(sys.argv[1]); s = np.load(sys.argv[2]); "
            "d = np.zeros_like(s); g.run({'src': s, 'dst': d}); np.save(sys.argv[3], d)")
    subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "src.npy"), str(tmp_path / "d.npy")],
                   check=True, env={"PYTHONPATH": str(ROOT)})
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), ref)


# -- default float type ---------------------------------------------------------------------------
def _divide() -> kl.Kernel:
    @kl.kernel
    def divide(out: kl.ndarray(kl.f64, ndim=1)):
        for i in out:
            out[i] = i / 3 + (i + 0.1)

    return divide


def test_int_division_and_float_literals_give_the_default_float() -> None:
    out = np.zeros(4)
    _divide()(out)
    i = np.arange(4, dtype=np.float32)
    f32_ref = (i / np.float32(3) + (i + np.float32(0.1))).astype(np.float64)
    np.testing.assert_array_equal(out, f32_ref)          # f32 arithmetic, even for i64 indices
    assert default_fp() == kl.f32 and kl.default_fp == kl.f32
    try:
        kl.init(default_fp=kl.f64)
        assert kl.default_fp == kl.f64
        out64 = np.zeros(4)
        _divide()(out64)
        np.testing.assert_array_equal(out64, np.arange(4) / 3 + (np.arange(4) + 0.1))
    finally:
        set_default_fp(kl.f32)


def test_float_stored_into_an_int_local_warns_at_the_users_line() -> None:
    @kl.kernel
    def truncate(out: kl.ndarray(kl.i32, ndim=1)):
        for i in out:
            n = 0
            n = i * 0.75
            out[i] = n

    out = np.zeros(4, np.int32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        truncate(out)
    hits = [w for w in caught if issubclass(w.category, kl.KilnWarning)]
    assert len(hits) == 1
    assert hits[0].filename == __file__ and "float value is stored into the i64 variable 'n'" in str(hits[0].message)
    line = Path(__file__).read_text().splitlines()[hits[0].lineno - 1]
    assert line.strip() == "n = i * 0.75"
    np.testing.assert_array_equal(out, [0, 0, 1, 2])


def test_outer_local_assigned_in_the_parallel_loop_is_a_clear_error() -> None:
    @kl.kernel
    def racy(out: kl.ndarray(kl.f32, ndim=1)):
        s = 0.0
        for i in out:
            s = out[i]
            out[i] = s

    with pytest.raises(KernelError, match="cannot assign to 's' inside the parallel loop"):
        racy(np.zeros(2, np.float32))


def test_iterating_a_scalar_is_an_error() -> None:
    @kl.kernel
    def bad(n: kl.i32, out: kl.ndarray(kl.f32, ndim=1)):
        for i in n:
            out[i] = 0.0

    with pytest.raises(KernelError, match="cannot iterate over a scalar"):
        bad(1, np.zeros(2, np.float32))


def test_static_ndrange_with_one_grouped_variable_and_float_casts() -> None:
    @kl.kernel
    def stamp(out: kl.ndarray(kl.f32, ndim=2)):
        for r in range(1):
            for I in kl.static(kl.ndrange(2, 3)):
                out[I] = float(I[0] * 10 + I[1]) + r

    out = np.zeros((2, 3), np.float32)
    stamp(out)
    np.testing.assert_array_equal(out, [[0, 1, 2], [10, 11, 12]])
