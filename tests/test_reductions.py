"""Privatised reductions: which atomics qualify, and that results stay right with threads."""

from __future__ import annotations

import numpy as np

import kiln as kl
from kiln.codegen import build_object, named_target
from kiln.codegen.reductions import find_reductions
from kiln.compiler import lower_kernel
from kiln.ir import nodes as N

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
