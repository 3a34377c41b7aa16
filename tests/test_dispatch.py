"""The direct-call dispatcher (kiln.dispatch): one home for the current device, compiled code
cached on the kernel object itself, the front end's Kernel left uncallable."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import kiln as kl
from kiln import config, dispatch
from kiln.lang import kernel as compile_only_kernel


def _make_kernel():
    @kl.kernel
    def fill(x: kl.ndarray(kl.f32, ndim=1), v: kl.f32):
        for i in range(x.shape[0]):
            x[i] = v
    return fill


def test_kl_kernel_is_a_direct_kernel_and_a_front_end_kernel() -> None:
    k = _make_kernel()
    assert isinstance(k, dispatch.DirectKernel) and isinstance(k, kl.Kernel)
    x = np.zeros(4, np.float32)
    k(x, 2.5)
    assert (x == 2.5).all()
    device = dispatch.current_device()
    assert k._fixed is not None and k._fixed.device == device          # fully annotated: one specialisation
    assert list(k._call_cache) == [(device, (kl.ndarray(kl.f32, ndim=1), kl.f32), kl.f32)]  # + default fp
    assert "_kiln_fixed" not in vars(k) and "_kiln_call_cache" not in vars(k)


def test_compiled_code_dies_with_the_kernel() -> None:
    k = _make_kernel()
    k(np.zeros(3, np.float32), 1.0)
    ref = weakref.ref(next(iter(k._call_cache.values())))
    del k
    gc.collect()
    assert ref() is None


def test_generic_kernels_compile_once_per_argument_types() -> None:
    @kl.kernel
    def double(x: kl.ndarray()):
        for i in range(x.shape[0]):
            x[i] = x[i] * 2

    a, b = np.ones(3, np.float32), np.ones(3, np.int64)
    double(a)
    double(b)
    double(a)
    assert (a == 4).all() and (b == 2).all()
    assert len(double._call_cache) == 2 and double._fixed is None


def test_set_device_is_the_one_place_of_the_device() -> None:
    before = dispatch.current_device()
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
        kl.set_device("tpu")
    assert dispatch.current_device() == before
    try:
        kl.set_device("cpu")
        assert dispatch.current_device() == "cpu"
    finally:
        kl.set_device(before)


def test_front_end_kernels_only_compile() -> None:
    @compile_only_kernel
    def noop(x: kl.ndarray(kl.f32, ndim=1)):
        for i in range(x.shape[0]):
            x[i] = 0.0

    assert noop.specialize((kl.ndarray(kl.f32, ndim=1),)).kernel.is_kernel
    with pytest.raises(TypeError, match="@kl.kernel"):
        noop(np.zeros(2, np.float32))


def test_argument_errors_unchanged() -> None:
    k = _make_kernel()
    with pytest.raises(kl.ArgumentError, match="missing argument 'v'"):
        dispatch.call_kernel(k, (np.zeros(2, np.float32),), {})
    with pytest.raises(kl.ArgumentError, match="expected dtype f32"):
        dispatch.call_kernel(k, (np.zeros(2, np.float64), 1.0), {})


def test_call_plan_takes_keywords_and_words_arity_errors() -> None:
    k = _make_kernel()
    x = np.zeros(3, np.float32)
    k(x, 1.0)                                          # compiles; the plan serves the next calls
    assert k._fixed is not None
    k(v=2.0, x=x)
    assert (x == 2.0).all()
    k(x, v=3.0)
    assert (x == 3.0).all()
    with pytest.raises(kl.ArgumentError, match="missing argument 'v'"):
        k(x)
    with pytest.raises(kl.ArgumentError, match="takes 2 arguments, got 3"):
        k(x, 1.0, 2.0)
    with pytest.raises(kl.ArgumentError, match="given twice"):
        k(x, x=x)
    with pytest.raises(kl.ArgumentError, match="expected dtype f32"):
        k(np.zeros(3, np.float64), 1.0)


def test_call_plan_of_many_parameters() -> None:
    @kl.kernel
    def mix(out: kl.ndarray(kl.f64, ndim=1), a: kl.f64, b: kl.i32, c: kl.f32, d: kl.i64):
        for i in range(out.shape[0]):
            out[i] = a + b * 10 + c * 100 + d * 1000 + i

    out = np.zeros(2)
    for _ in range(2):
        mix(out, 1.0, 2, 3.0, 4)
        np.testing.assert_array_equal(out, [4321.0, 4322.0])
    mix(out, 1.0, 2, 3.0, d=5)
    np.testing.assert_array_equal(out, [5321.0, 5322.0])


def test_fixed_kernel_follows_the_default_float_and_debug_switches() -> None:
    @kl.kernel
    def third(out: kl.ndarray(kl.f64, ndim=1), at: kl.i32):
        for i in range(out.shape[0]):
            out[at] = i / 3

    out = np.zeros(3)
    third(out, 2)
    assert out[2] == np.float64(np.float32(2) / np.float32(3))     # f32 arithmetic by default
    try:
        kl.init(default_fp=kl.f64)
        third(out, 2)
        assert out[2] == 2 / 3                                      # the same kernel, now f64
    finally:
        kl.init(default_fp=kl.f32)
    third(out, 1)
    assert out[1] == np.float64(np.float32(2) / np.float32(3))
    config.set_debug(True)
    try:
        with pytest.raises(kl.KernelIndexError):
            third(out, 5)                                          # checked in debug mode
    finally:
        config.set_debug(False)
    big = np.zeros(6)
    third(big[:3], 5)                                              # release again: unchecked
    assert big[5] == np.float64(np.float32(2) / np.float32(3))
    assert len(third._call_cache) == 3
    plan = third._fixed                                            # back on the fast path
    assert plan is not None and plan.config is config.current() and plan.fp is kl.default_fp


def test_fields_and_random_numbers_take_the_call_plan() -> None:
    plan_sums = kl.field(kl.f32, shape=4)

    @kl.kernel
    def add(x: kl.ndarray(kl.f32, ndim=1)):
        for i in range(x.shape[0]):
            plan_sums[i] += x[i]

    @kl.kernel
    def draw(out: kl.ndarray(kl.u32, ndim=1)):
        for i in range(out.shape[0]):
            out[i] = kl.random(kl.u32)

    x = np.arange(4, dtype=np.float32)
    for _ in range(3):
        add(x)
    assert add._fixed is not None and add._fixed.fields and not add._fixed.plain
    np.testing.assert_array_equal(plan_sums.to_numpy(), 3 * x)      # the field's own array, in place
    runs = [np.zeros(8, np.uint32) for _ in range(3)]
    kl.seed(11)
    draw(runs[0])
    draw(runs[1])
    kl.seed(11)
    draw(runs[2])
    assert draw._fixed is not None and draw._fixed.rng
    np.testing.assert_array_equal(runs[0], runs[2])                 # the process-wide state
    assert (runs[0] != runs[1]).mean() > 0.7
