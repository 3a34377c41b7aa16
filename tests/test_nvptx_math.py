"""CUDA math functions in the PTX (no GPU needed): libdevice linked in and called for f32/f64/f16,
fast-math variants only when asked, and kiln's own f64 code as the fallback when libdevice is
not found. Accuracy on a GPU: bench/gpu_math_ulp.py (docs/cuda.md, "Math functions"); accuracy
of the fallback on the CPU: tests/test_cuda.py::test_gpu_math_accuracy_on_cpu."""

from __future__ import annotations

import re
import warnings

import pytest

import kiln as kl
from kiln.errors import TargetError

try:
    from kiln.codegen.nvptx import nvptx_available
    NVPTX_REASON = nvptx_available()
except ImportError as e:  # pragma: no cover - llvmlite missing
    NVPTX_REASON = str(e)

needs_nvptx = pytest.mark.skipif(NVPTX_REASON is not None, reason=f"no NVPTX target: {NVPTX_REASON}")


def _libdevice_path() -> str | None:
    if NVPTX_REASON is not None:
        return None
    from kiln.codegen.libdevice import find_libdevice
    try:
        return find_libdevice()
    except TargetError:
        return None


LIBDEVICE = _libdevice_path()
needs_libdevice = pytest.mark.skipif(
    LIBDEVICE is None, reason="libdevice.10.bc not found: pip install nvidia-nvvm, or set KILN_LIBDEVICE=path")

# every math builtin that is not a plain LLVM intrinsic on NVPTX, with its libdevice base name
MATH_BUILTINS = ("sin", "cos", "tan", "exp", "log", "asin", "acos", "atan", "tanh", "atan2", "pow")


@kl.kernel
def all_math(x: kl.ndarray(ndim=1), y: kl.ndarray(ndim=1), o: kl.ndarray(ndim=2)):
    for i in range(x.shape[0]):
        a = x[i]
        b = y[i]
        o[0, i] = kl.sin(a)
        o[1, i] = kl.cos(a)
        o[2, i] = kl.tan(a)
        o[3, i] = kl.exp(a)
        o[4, i] = kl.log(a)
        o[5, i] = kl.asin(a)
        o[6, i] = kl.acos(a)
        o[7, i] = kl.atan(a)
        o[8, i] = kl.tanh(a)
        o[9, i] = kl.atan2(a, b)
        o[10, i] = kl.pow(a, b)


def _ptx_of(dtype, **kw):
    from kiln.codegen.nvptx import build_ptx
    from kiln.driver import lower_kernel
    a1, a2 = kl.ndarray(dtype, ndim=1), kl.ndarray(dtype, ndim=2)
    return build_ptx([lower_kernel(all_math, (a1, a1, a2))], **kw)


def _check_self_contained(ptx: str) -> None:
    """PTX that ptxas accepts without other modules: an entry, no external functions, no
    libdevice/NVVM symbols left (everything inlined, NVVMReflect folded)."""
    assert ".visible .entry " in ptx
    assert ".extern" not in ptx
    assert "__nvvm_reflect" not in ptx
    assert "__nv_" not in ptx
    assert ptx.count("{") == ptx.count("}")


@needs_nvptx
@needs_libdevice
@pytest.mark.parametrize("dtype,suffix", [(kl.f32, "f"), (kl.f64, ""), (kl.f16, "f")])
def test_math_builtins_call_libdevice(dtype, suffix):
    pc = _ptx_of(dtype)
    assert pc.math == "libdevice"
    assert set(pc.libdevice_calls) == {f"__nv_{n}{suffix}" for n in MATH_BUILTINS}
    _check_self_contained(pc.ptx)
    assert "kiln_math_" not in pc.llvm_ir          # no fallback code next to libdevice
    if dtype is kl.f32:
        # f32 math stays f32 (the fallback computes everything in f64): libdevice's sinf uses
        # f64 only in its rare huge-argument reduction, not in its polynomials
        assert re.search(r"fma\.rn\.f32", pc.ptx)


@needs_nvptx
@needs_libdevice
def test_fast_math_only_when_asked():
    fast = _ptx_of(kl.f32, fast_math=True)
    assert "__nv_fast_sinf" in fast.libdevice_calls and "__nv_fast_powf" in fast.libdevice_calls
    assert "__nv_asinf" in fast.libdevice_calls      # no fast variant: the accurate one
    assert "sin.approx.f32" in fast.ptx
    _check_self_contained(fast.ptx)
    accurate = _ptx_of(kl.f32)
    assert not any("fast" in c for c in accurate.libdevice_calls)
    assert "sin.approx" not in accurate.ptx
    f64 = _ptx_of(kl.f64, fast_math=True)
    assert not any("fast" in c for c in f64.libdevice_calls)     # f64 has no fast variants


@needs_nvptx
@needs_libdevice
def test_libdevice_path_given_explicitly():
    pc = _ptx_of(kl.f32, libdevice=LIBDEVICE)
    assert pc.math == "libdevice" and "__nv_expf" in pc.libdevice_calls
    _check_self_contained(pc.ptx)


@needs_nvptx
def test_kernels_without_math_do_not_link_libdevice():
    from kiln.codegen.nvptx import build_ptx
    from kiln.driver import lower_kernel

    @kl.kernel
    def plain(x: kl.ndarray(kl.f32, ndim=1)):
        for i in range(x.shape[0]):
            x[i] = kl.sqrt(x[i]) + kl.floor(x[i])

    pc = build_ptx([lower_kernel(plain, (kl.ndarray(kl.f32, ndim=1),))])
    assert pc.libdevice_calls == ()
    assert "sqrt.rn.f32" in pc.ptx


@needs_nvptx
@pytest.mark.parametrize("dtype", [kl.f32, kl.f64])
def test_fallback_math_gives_self_contained_ptx(dtype):
    pc = _ptx_of(dtype, libdevice=False)
    assert pc.math == "builtin" and pc.libdevice_calls == ()
    _check_self_contained(pc.ptx)
    assert "fma.rn.f64" in pc.ptx                  # kiln's own code computes in f64


@needs_nvptx
def test_fallback_warns_once_when_libdevice_is_missing(monkeypatch):
    from kiln.codegen import nvptx
    monkeypatch.setattr(nvptx, "find_libdevice", lambda: None)
    monkeypatch.setattr(nvptx, "_warned_builtin_math", False)
    with pytest.warns(UserWarning, match="libdevice.10.bc was not found"):
        pc = _ptx_of(kl.f32)
    assert pc.math == "builtin"
    _check_self_contained(pc.ptx)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _ptx_of(kl.f32)                            # once per process


@needs_nvptx
def test_libdevice_env_override(tmp_path):
    from kiln import config
    from kiln.codegen.libdevice import find_libdevice
    with config.configured(libdevice="builtin"):       # KILN_LIBDEVICE=builtin
        assert find_libdevice() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")             # turned off on purpose: no warning
            assert _ptx_of(kl.f32).math == "builtin"
    with config.configured(libdevice=str(tmp_path / "missing.bc")), \
            pytest.raises(TargetError, match="KILN_LIBDEVICE"):
        find_libdevice()
    bad = tmp_path / "libdevice.10.bc"
    bad.write_bytes(b"not bitcode")
    with config.configured(libdevice=str(bad)):
        assert find_libdevice() == str(bad)
        with pytest.raises(TargetError, match="not readable LLVM bitcode"):
            _ptx_of(kl.f32)
    if LIBDEVICE is not None:
        with config.configured(libdevice=LIBDEVICE):
            assert find_libdevice() == LIBDEVICE


def test_libdevice_function_names():
    from kiln.codegen.libdevice import libdevice_function
    assert libdevice_function("sin", 32) == "__nv_sinf"
    assert libdevice_function("sin", 64) == "__nv_sin"
    assert libdevice_function("sin", 32, fast_math=True) == "__nv_fast_sinf"
    assert libdevice_function("sin", 64, fast_math=True) == "__nv_sin"
    assert libdevice_function("atan2", 32, fast_math=True) == "__nv_atan2f"
    assert libdevice_function("sqrt", 32) is None      # a native instruction, not libdevice
    assert libdevice_function("sin", 16) is None
