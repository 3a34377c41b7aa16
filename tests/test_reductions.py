"""Privatised reductions: which atomics qualify, and that results stay right with threads."""

from __future__ import annotations

import numpy as np
import pytest

import kiln as kl
from kiln.codegen import build_object, named_target
from kiln.codegen.cpu_body import PRIVATE_LIMIT
from kiln.driver import lower_kernel
from kiln.ir import nodes as N
from kiln.passes.plan_parallel import find_array_reductions, find_reductions

F32_1 = kl.ndarray(kl.f32, ndim=1)
F64_1 = kl.ndarray(kl.f64, ndim=1)
I32_1 = kl.ndarray(kl.i32, ndim=1)


@kl.kernel
def stats(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f64, ndim=1), ext: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]
        out[1] -= x[i] * 2.0
        kl.atomic_min(ext[0], x[i])
        kl.atomic_max(ext[1], x[i])


@kl.kernel
def total(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f64, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]


@kl.kernel
def hist(keys: kl.ndarray(kl.i32, ndim=1), bins: kl.ndarray(kl.i32, ndim=1)):
    for i in range(keys.shape[0]):
        bins[keys[i]] += 1


@kl.kernel
def mixed(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f64, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]
        if i == 0:
            out[1] = out[0]          # the array is also read and stored: must stay atomic


@kl.kernel
def bits(k: kl.ndarray(kl.i32, ndim=1), out: kl.ndarray(kl.i32, ndim=1), slot: kl.i32):
    for i in range(k.shape[0]):
        kl.atomic_or(out[slot], k[i])
        kl.atomic_and(out[slot + 1], k[i])
        kl.atomic_xor(out[slot + 2], k[i])


def _loop(kir) -> N.ParallelFor:
    return next(s for s in kir.kernel.body if isinstance(s, N.ParallelFor))


def test_which_atomics_qualify() -> None:
    assert len(find_reductions(_loop(lower_kernel(stats, (F32_1, F64_1, F32_1))))) == 4
    assert find_reductions(_loop(lower_kernel(hist, (I32_1, I32_1)))) == []
    assert find_reductions(_loop(lower_kernel(mixed, (F32_1, F64_1)))) == []
    assert len(find_reductions(_loop(lower_kernel(bits, (I32_1, I32_1, kl.i32))))) == 3


def test_privatised_sum_vectorises() -> None:
    obj = build_object([lower_kernel(total, (F32_1, F64_1))], [], named_target("host"))
    body = obj.llvm_ir
    assert "fadd reassoc" in body and "x double>" in body     # a vectorised f64 reduction


def test_results_with_threads() -> None:
    rng = np.random.default_rng(5)
    x = (rng.random(300_001, dtype=np.float32) - 0.3).astype(np.float32)
    for n in (1, 2):
        kl.set_num_threads(n)
        try:
            out = np.array([1.0, 2.0])
            ext = np.array([np.inf, -np.inf], np.float32)
            stats(x, out, ext)
            np.testing.assert_allclose(out, [1.0 + x.astype(np.float64).sum(),
                                             2.0 - 2 * x.astype(np.float64).sum()], rtol=1e-9)
            assert ext[0] == x.min() and ext[1] == x.max()
            k = rng.integers(0, 1 << 20, 100_003).astype(np.int32)
            o = np.array([0, 0, -1, 0, 0], np.int32)
            bits(k, o, 1)
            assert o[1] == np.bitwise_or.reduce(k) and o[2] == np.bitwise_and.reduce(k)
            assert o[3] == np.bitwise_xor.reduce(k) and o[0] == 0 and o[4] == 0
            keys = rng.integers(0, 64, 200_000).astype(np.int32)
            b = np.zeros(64, np.int32)
            hist(keys, b)
            np.testing.assert_array_equal(b, np.bincount(keys, minlength=64))
        finally:
            kl.set_num_threads(2)
    empty = np.zeros(0, np.float32)
    out = np.array([3.0, 4.0])
    stats(empty, out, np.zeros(2, np.float32))
    assert out.tolist() == [3.0, 4.0]


# -- privatised arrays (histograms): atomics with varying indices into a small array -----------

@kl.kernel
def scatter_add(k: kl.ndarray(kl.i32, ndim=1), w: kl.ndarray(ndim=1), out: kl.ndarray(ndim=1)):
    for i in range(k.shape[0]):
        out[k[i]] += w[i]


@kl.kernel
def scatter_minmax(k: kl.ndarray(kl.i32, ndim=1), w: kl.ndarray(ndim=1), lo: kl.ndarray(ndim=1),
                   hi: kl.ndarray(ndim=1)):
    for i in range(k.shape[0]):
        kl.atomic_min(lo[k[i]], w[i])
        kl.atomic_max(hi[k[i]], w[i])


@kl.kernel
def scatter_or(k: kl.ndarray(kl.i32, ndim=1), w: kl.ndarray(ndim=1), out: kl.ndarray(ndim=1)):
    for i in range(k.shape[0]):
        kl.atomic_or(out[k[i]], w[i])


@kl.kernel
def add_sub(k: kl.ndarray(kl.i32, ndim=1), out: kl.ndarray(kl.i64, ndim=1), tot: kl.ndarray(kl.i64, ndim=1)):
    for i in range(k.shape[0]):
        out[k[i]] += 3
        out[(k[i] * 7 + 1) % out.shape[0]] -= 1
        tot[0] += 1                  # invariant index: stays a scalar reduction
        tot[k[i] % 2 + 1] += 1       # tot mixes both kinds of index: privatised as an array


@kl.kernel
def hist_reads(keys: kl.ndarray(kl.i32, ndim=1), bins: kl.ndarray(kl.i32, ndim=1)):
    for i in range(keys.shape[0]):
        if bins[0] >= 0:             # also loaded in the loop: must stay atomic
            bins[keys[i]] += 1


@kl.kernel
def min_and_max(k: kl.ndarray(kl.i32, ndim=1), w: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f32, ndim=1)):
    for i in range(k.shape[0]):
        kl.atomic_min(out[k[i]], w[i])   # two ops with different identities: stays atomic
        kl.atomic_max(out[k[i] + 1], w[i])


@kl.kernel
def hist2d(a: kl.ndarray(kl.i32, ndim=2), h: kl.ndarray(kl.i32, ndim=2)):
    for i, j in kl.ndrange(a.shape[0], a.shape[1]):
        h[a[i, j], j % h.shape[1]] += 1


@kl.kernel
def hist_rows(a: kl.ndarray(kl.i32, ndim=2), h: kl.ndarray(kl.i64, ndim=1)):
    for i in range(a.shape[0]):      # few parallel iterations, each a serial loop of atomics
        for j in range(a.shape[1]):
            h[a[i, j]] += 1


def _threads(n: int):
    class _Ctx:
        def __enter__(self) -> None:
            kl.set_num_threads(n)

        def __exit__(self, *exc: object) -> None:
            kl.set_num_threads(2)
    return _Ctx()


def test_which_arrays_qualify() -> None:
    assert find_array_reductions(_loop(lower_kernel(hist, (I32_1, I32_1)))) == ["bins"]
    assert find_array_reductions(_loop(lower_kernel(hist_reads, (I32_1, I32_1)))) == []
    assert find_array_reductions(_loop(lower_kernel(min_and_max, (I32_1, F32_1, F32_1)))) == []
    # invariant-index atomics keep the cheaper scalar path
    assert find_array_reductions(_loop(lower_kernel(stats, (F32_1, F64_1, F32_1)))) == []
    i64_1 = kl.ndarray(kl.i64, ndim=1)
    loop = _loop(lower_kernel(add_sub, (I32_1, i64_1, i64_1)))
    assert find_array_reductions(loop) == ["out", "tot"]
    assert find_reductions(loop) == []
    loop = _loop(lower_kernel(scatter_minmax, (I32_1, F64_1, F64_1, F64_1)))
    assert find_array_reductions(loop) == ["lo", "hi"]
    bool_1 = kl.ndarray(kl.bool_, ndim=1)   # no bool or f16 copies
    assert find_array_reductions(_loop(lower_kernel(scatter_or, (I32_1, bool_1, bool_1)))) == []


def test_private_version_in_llvm_ir() -> None:
    body = build_object([lower_kernel(hist, (I32_1, I32_1))], [], named_target("host")).llvm_ir
    assert f"alloca [{PRIVATE_LIMIT} x i32]" in body          # the private copy
    assert "llvm.memset" in body                              # cleared to the identity (0)
    assert "atomicrmw add" in body                            # merge and the atomic fallback


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_histogram_results(threads: int) -> None:
    rng = np.random.default_rng(7)
    with _threads(threads):
        for nbins, n in ((256, 300_001), (PRIVATE_LIMIT, 50_000), (PRIVATE_LIMIT + 1, 50_000),
                         (1360, 4100), (5, 0), (0, 0)):
            keys = rng.integers(0, max(nbins, 1), n).astype(np.int32)
            b = np.full(nbins, 7, np.int32)
            hist(keys, b)
            np.testing.assert_array_equal(b, 7 + np.bincount(keys, minlength=nbins))
        keys = rng.integers(0, 100, 200_000).astype(np.int32)
        out = np.arange(100, dtype=np.int64)
        tot = np.zeros(3, np.int64)
        add_sub(keys, out, tot)
        ref = np.arange(100, dtype=np.int64)
        np.add.at(ref, keys, 3)
        np.add.at(ref, (keys.astype(np.int64) * 7 + 1) % 100, -1)
        np.testing.assert_array_equal(out, ref)
        assert tot.tolist() == [len(keys), int((keys % 2 == 0).sum()), int((keys % 2 == 1).sum())]
        a = rng.integers(0, 6, (300, 301)).astype(np.int32)
        h = np.zeros((6, 8), np.int32)
        hist2d(a, h)
        ref2 = np.zeros((6, 8), np.int32)
        np.add.at(ref2, (a, np.broadcast_to(np.arange(301) % 8, a.shape)), 1)
        np.testing.assert_array_equal(h, ref2)
        a = rng.integers(0, 500, (20, 10_000)).astype(np.int32)
        h1 = np.zeros(500, np.int64)
        hist_rows(a, h1)
        np.testing.assert_array_equal(h1, np.bincount(a.ravel(), minlength=500))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint32, np.float32, np.float64])
def test_scatter_ops(threads: int, dtype: type) -> None:
    rng = np.random.default_rng(11)
    n, nbins = 120_001, 300
    k = rng.integers(0, nbins, n).astype(np.int32)
    if np.dtype(dtype).kind == "f":
        w = (rng.standard_normal(n) * 10).astype(dtype)
        init = (rng.standard_normal(nbins) * 10).astype(dtype)
    else:
        info = np.iinfo(dtype)
        w = rng.integers(max(info.min, -1000), min(info.max, 1000), n).astype(dtype)
        init = rng.integers(max(info.min, -1000), min(info.max, 1000), nbins).astype(dtype)
    with _threads(threads):
        out = init.copy()
        scatter_add(k, w, out)
        ref = init.copy()
        np.add.at(ref, k, w)
        if np.dtype(dtype).kind == "f":
            np.testing.assert_allclose(out, ref, rtol=1e-4 if dtype == np.float32 else 1e-12,
                                       atol=1e-3 if dtype == np.float32 else 1e-9)
        else:
            np.testing.assert_array_equal(out, ref)           # wraps like numpy for int8
        lo, hi = init.copy(), init.copy()
        lo[::7] = w.max()                                     # some bins no key lowers/raises
        hi[::7] = w.min()
        rlo, rhi = lo.copy(), hi.copy()
        scatter_minmax(k, w, lo, hi)
        np.minimum.at(rlo, k, w)
        np.maximum.at(rhi, k, w)
        np.testing.assert_array_equal(lo, rlo)
        np.testing.assert_array_equal(hi, rhi)
        if np.dtype(dtype).kind != "f":
            o = init.copy()
            scatter_or(k, w, o)
            ro = init.copy()
            np.bitwise_or.at(ro, k, w)
            np.testing.assert_array_equal(o, ro)
