"""Debug mode (docs/debug.md): checked indices and divisors, the error record and its message,
overlapping arguments; and privatised histograms that never write outside their copy."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

import kiln as kl
from kiln import config
from kiln.driver import lower_kernel
from kiln.driver.pipeline import CompileOptions
from kiln.ir import nodes as N
from kiln.ir.printer import format_ir
from kiln.ir.verify import IRVerifyError, verify
from kiln.passes import insert_bounds_checks

F32_1 = kl.ndarray(kl.f32, ndim=1)
I32_1 = kl.ndarray(kl.i32, ndim=1)
I64_1 = kl.ndarray(kl.i64, ndim=1)
HERE = os.path.basename(__file__)


def _saxpy(a: kl.f32, x: F32_1, y: F32_1):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


def _hist(keys: I64_1, bins: I32_1):
    for i in range(keys.shape[0]):
        bins[keys[i]] += 1


def _line_of(fn, text: str) -> int:
    import inspect
    lines, start = inspect.getsourcelines(fn)
    return start + next(k for k, line in enumerate(lines) if text in line)


saxpy_debug = kl.kernel(debug=True)(_saxpy)
hist_debug = kl.kernel(debug=True)(_hist)
hist_release = kl.kernel(_hist)


@kl.kernel(debug=True)
def grid_div(x: kl.ndarray(kl.i32, ndim=2), d: kl.i32):
    for i, j in kl.ndrange(x.shape[0], x.shape[1]):
        x[i, j] = x[i, j] // d
        x[i, j + 1] = 7


@kl.func
def get(x: F32_1, i: kl.i64) -> kl.f32:
    return x[i]


@kl.kernel(debug=True)
def through_func(x: F32_1, out: F32_1, shift: kl.i64):
    for i in range(out.shape[0]):
        out[i] = get(x, i + shift)


def test_out_of_bounds_store_names_kernel_line_array_index_and_shape() -> None:
    x = np.ones(100, np.float32)
    y = np.zeros(50, np.float32)
    with pytest.raises(kl.KernelIndexError) as err:
        saxpy_debug(2.0, x, y)
    assert isinstance(err.value, IndexError) and isinstance(err.value, kl.KilnError)
    line = _line_of(_saxpy, "y[i] = a")
    assert str(err.value) == (f"kernel '_saxpy' at {HERE}:{line}: index 50 is out of bounds for array 'y' "
                              "of shape (50,)")
    # the record is cleared: the next, correct run works
    y = np.zeros(100, np.float32)
    saxpy_debug(2.0, x, y)
    np.testing.assert_array_equal(y, 2.0)


def test_two_dimensional_index_and_division_by_zero() -> None:
    with pytest.raises(kl.KernelZeroDivisionError, match=r"kernel 'grid_div' at .*: integer division or modulo by zero"):
        grid_div(np.ones((3, 4), np.int32), 0)
    with pytest.raises(ZeroDivisionError):
        grid_div(np.ones((3, 4), np.int32), 0)
    with pytest.raises(kl.KernelIndexError, match=r"index \(0, 4\) is out of bounds for array 'x' of shape \(3, 4\)"):
        grid_div(np.ones((3, 4), np.int32), 1)


def test_negative_index_and_index_inside_a_func() -> None:
    x = np.arange(10, dtype=np.float32)
    out = np.zeros(10, np.float32)
    through_func(x, out, 0)
    np.testing.assert_array_equal(out, x)
    with pytest.raises(kl.KernelIndexError, match=r"index -1 is out of bounds for array 'x' of shape \(10,\)"):
        through_func(x, out, -1)
    with pytest.raises(kl.KernelIndexError, match=r"index 10 is out of bounds for array 'x'"):
        through_func(x, out, 1)


def test_histogram_out_of_range_bin_raises_in_debug() -> None:
    bins = np.zeros(10, np.int32)
    with pytest.raises(kl.KernelIndexError, match=r"index 5000 is out of bounds for array 'bins' of shape \(10,\)"):
        hist_debug(np.array([1, 2, 5000], np.int64), bins)


def test_histogram_out_of_range_bins_go_to_the_shared_array_in_release() -> None:
    """Release: a privatised histogram's bin outside the array is the unprivatised loop's
    atomic on the real array (docs/language.md); never a write to the thread's stack. The bins
    are a view into a larger buffer, so the out-of-range updates land in memory we own."""
    big = np.zeros(6000, np.int32)
    bins = big[100:110]
    keys = np.array([3, 3, 15, 2000, 5000, -50, 9], np.int64)
    hist_release(keys, bins)
    assert bins.tolist() == [0, 0, 0, 2, 0, 0, 0, 0, 0, 1]
    assert big[115] == 1 and big[2100] == 1 and big[5100] == 1 and big[50] == 1
    assert big.sum() == len(keys)


def test_graph_stops_at_the_failing_dispatch() -> None:
    g = kl.GraphBuilder()
    a, x, y, z = kl.Arg("a", kl.f32), kl.Arg("x", F32_1), kl.Arg("y", F32_1), kl.Arg("z", F32_1)
    g.dispatch(kl.kernel(_saxpy), a, x, y)           # y shorter than x: fails
    g.dispatch(kl.kernel(_saxpy), a, x, z)           # must not run
    graph = g.compile(debug=True)
    z = np.zeros(100, np.float32)
    with pytest.raises(kl.KernelIndexError, match="array 'y' of shape \\(10,\\)"):
        graph.run({"a": 1.0, "x": np.ones(100, np.float32), "y": np.zeros(10, np.float32), "z": z})
    assert not z.any()


def test_saved_debug_module_reports_after_loading(tmp_path) -> None:
    m = kl.Module()
    m.add_kernel(kl.kernel(_hist), I64_1, I32_1, name="hist")
    path = tmp_path / "h.kiln"
    m.compile(debug=True).save(path)
    k = kl.load_module(path).kernels["hist"]
    with pytest.raises(kl.KernelIndexError, match="index 10 is out of bounds"):
        k(np.array([10], np.int64), np.zeros(10, np.int32))


def test_global_switch_and_plain_decorator() -> None:
    k = kl.kernel(_hist)                              # no arguments: still a decorator
    keys = np.array([0, 11], np.int64)
    config.set_debug(True)
    try:
        assert config.current().debug
        with pytest.raises(kl.KernelIndexError):
            k(keys, np.zeros(10, np.int32))
    finally:
        config.set_debug(False)
    assert config.Config.from_environ({"KILN_DEBUG": "1"}).debug is True
    big = np.zeros(20, np.int32)
    k(keys, big[:10])                                 # release again: unchecked
    assert big[11] == 1


def test_overlapping_arguments_are_refused_in_debug() -> None:
    x = np.ones(100, np.float32)
    with pytest.raises(kl.ArgumentError, match="'x' and 'y' are the same array"):
        saxpy_debug(2.0, x, x)
    with pytest.raises(kl.ArgumentError, match="overlapping arrays"):
        saxpy_debug(2.0, x[:50], x[10:60])
    saxpy_debug(2.0, x[:50], x[50:])                 # disjoint views are fine
    np.testing.assert_array_equal(x[50:], 3.0)


def test_run_holds_its_own_references() -> None:
    class Vanishing(dict):
        """A mapping whose values disappear once read: run() must work on its own copy."""

        def __getitem__(self, key):
            value = super().__getitem__(key)
            self.clear()
            return value

    m = kl.Module()
    m.add_kernel(kl.kernel(_saxpy), kl.f32, F32_1, F32_1, name="saxpy")
    k = m.compile().kernels["saxpy"]
    y = np.zeros(8, np.float32)
    k.run(Vanishing(a=2.0, x=np.ones(8, np.float32), y=y))
    np.testing.assert_array_equal(y, 2.0)


# -- the pass, the printer and the verifier -----------------------------------------------------
def _checked() -> N.KernelIR:
    kir = lower_kernel(kl.kernel(_hist), (I64_1, I32_1), CompileOptions(debug=True))
    return kir


def test_pass_numbers_every_access_and_drops_privatisation() -> None:
    kir = _checked()
    assert [(c.kind, c.array) for c in kir.checks] == [("index", "keys"), ("index", "bins")]
    loop = next(s for s in kir.kernel.body if isinstance(s, N.ParallelFor))
    assert loop.plan is not None and loop.plan.private_arrays == () and loop.plan.reductions == ()
    text = format_ir(kir)
    assert "bins[keys[i]!0]!1" in text and "# check !1: index bins at" in text
    assert insert_bounds_checks(kir) is kir          # idempotent
    release = lower_kernel(kl.kernel(_hist), (I64_1, I32_1))
    assert release.checks == () and "!" not in format_ir(release).split("# plan")[0].split("\n", 1)[1]


def test_verifier_rejects_bad_check_ids() -> None:
    kir = _checked()
    with pytest.raises(IRVerifyError, match="beyond the kernel's 1 sites"):
        verify(dataclasses.replace(kir, checks=kir.checks[:1]), lowered=True)
    swapped = (kir.checks[1], kir.checks[0])
    with pytest.raises(IRVerifyError, match="names a index site of 'bins'"):
        verify(dataclasses.replace(kir, checks=swapped), lowered=True)


# -- compiler limits ------------------------------------------------------------------------------
def test_static_unrolling_above_the_limit_is_a_kernel_error_at_the_loop() -> None:
    from kiln.lang.stmts import STATIC_UNROLL_LIMIT

    def flat(x: F32_1):
        for i in kl.static(range(100000)):
            x[0] += 1.0

    def nested(x: F32_1):
        for i in kl.static(range(100)):
            for j in kl.static(range(100)):
                x[0] += 1.0

    for fn, text in ((flat, "range(100000)"), (nested, "for j in")):
        with pytest.raises(kl.KernelError, match=f"more than {STATIC_UNROLL_LIMIT} iterations") as err:
            kl.kernel(fn)(np.zeros(1, np.float32))
        assert err.value.lineno == _line_of(fn, text)


def test_cuda_runtime_reads_the_device_record(monkeypatch) -> None:
    """Debug builds for CUDA carry the checks and the record in the PTX; the CUDA runtime reads
    the record after each launch and stops at the first failure (here the recording driver
    plays the GPU: the test writes the failure a GPU thread would have recorded)."""
    import ctypes
    import struct
    import warnings

    import fake_cuda_driver as fake

    from kiln.runtime import cuda

    fake.install(monkeypatch)
    g = kl.GraphBuilder()
    a, x, y, z = kl.Arg("a", kl.f32), kl.Arg("x", F32_1), kl.Arg("y", F32_1), kl.Arg("z", F32_1)
    g.dispatch(kl.kernel(_saxpy), a, x, y)
    g.dispatch(kl.kernel(_saxpy), a, x, z)
    m = kl.Module(targets=["cpu", "cuda"], cuda_archs=[])
    m.add_graph("main", g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = cuda.load_module(m.compile(debug=True))
    graph = cm.graphs["main"]
    args = {"a": 2.0, "x": np.ones(8, np.float32), "y": np.zeros(8, np.float32), "z": np.zeros(8, np.float32)}
    graph.run(args)                                   # nothing recorded: both launches, no error
    assert [e[0] for e in fake.LOG].count("launch") == 2
    dptr, _ = fake.GLOBALS["kiln_debug_record"]
    site = 2                                          # _saxpy's checks: x[i], y[i] (load), y[i] (store)
    ctypes.memmove(fake.MEM[dptr], struct.pack("<4q", 1, 0, site, 1) + struct.pack("<q", 9) + bytes(56)
                   + struct.pack("<q", 8), 13 * 8)
    fake.LOG.clear()
    with pytest.raises(kl.KernelIndexError, match=r"kernel '_saxpy' at .*: index 9 is out of bounds for array 'y' "
                                                   r"of shape \(8,\)"):
        graph.run(args)
    assert [e[0] for e in fake.LOG].count("launch") == 1          # the second dispatch never ran
    assert fake.MEM[dptr].raw[:8] == bytes(8)                    # the record was cleared
    with pytest.raises(kl.ArgumentError, match="same array"):
        graph.run({**args, "y": args["x"]})


def test_huge_unrolled_kernels_skip_the_quadratic_vectoriser(tmp_path) -> None:
    from kiln.codegen import VECTORIZE_STATEMENT_LIMIT, worth_vectorizing

    def small(x: F32_1):
        for i in range(x.shape[0]):
            x[i] = x[i] * 2.0

    src = ("import kiln as kl\n"
           "def big(x: kl.ndarray(kl.f32, ndim=1)):\n"
           "    for i in range(x.shape[0]):\n"
           f"        for j in kl.static(range({VECTORIZE_STATEMENT_LIMIT + 1})):\n"
           "            x[i] = x[i] * 1.5 + 1.0\n")
    path = tmp_path / "big_kernel.py"
    path.write_text(src)
    import importlib.util
    spec = importlib.util.spec_from_file_location("big_kernel", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert worth_vectorizing([lower_kernel(kl.kernel(small), (F32_1,))])
    big = lower_kernel(kl.kernel(mod.big), (F32_1,))
    assert not worth_vectorizing([big])
