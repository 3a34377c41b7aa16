"""The cuda target: NVPTX code generation, cubins, files with cpu+cuda targets, the GPU runtime.

Tests marked `cuda` need an NVIDIA GPU, its driver and cuda-bindings, and skip cleanly
otherwise. Everything else runs on any machine with llvmlite (PTX generation, GPU math accuracy
through MCJIT on the CPU, file round trips, CPU loading of cpu+cuda files, error messages).
Kernel tests are parametrized over targets: the same kernel, data and reference run on "cpu"
and on "cuda".
"""

from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest

import kiln as kl
from kiln.artifact.container import unpack
from kiln.errors import CudaError, KernelError

try:
    from kiln.codegen.nvptx import nvptx_available
    NVPTX_REASON = nvptx_available()
except ImportError as e:  # pragma: no cover - llvmlite missing
    NVPTX_REASON = str(e)

needs_nvptx = pytest.mark.skipif(NVPTX_REASON is not None, reason=f"no NVPTX target: {NVPTX_REASON}")


def _gpu_reason() -> str | None:
    from kiln.runtime.cuda import cuda_available
    return cuda_available()


@pytest.fixture(scope="session")
def gpu():
    why = _gpu_reason()
    if why:
        pytest.skip(f"no usable CUDA GPU: {why}")
    return True


TARGETS = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

A1F = kl.ndarray(kl.f32, ndim=1)
A1D = kl.ndarray(kl.f64, ndim=1)
A2F = kl.ndarray(kl.f32, ndim=2)
A1I = kl.ndarray(kl.i32, ndim=1)


def compiled_kernel(kernel, types, target, request=None):
    """Compile `kernel` for one target; return a runner `run(*args)` (numpy arrays in/out)."""
    if target == "cuda":
        if request is not None:
            request.getfixturevalue("gpu")
        m = kl.Module(targets=["cuda"])
        m.add_kernel(kernel, *types, name="k")
        k = m.compile().kernels["k"]
    else:
        m = kl.Module()
        m.add_kernel(kernel, *types, name="k")
        k = m.compile().kernels["k"]
    return k


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------

@kl.kernel
def saxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def stencil(u: kl.ndarray(kl.f32, ndim=2), v: kl.ndarray(kl.f32, ndim=2)):
    for i, j in kl.ndrange((1, u.shape[0] - 1), (1, u.shape[1] - 1)):
        v[i, j] = 0.25 * (u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1]) - u[i, j]


@kl.kernel
def ndrange3(o: kl.ndarray(kl.i64, ndim=3)):
    for i, j, k in kl.ndrange(o.shape[0], (0, o.shape[1], 2), (1, o.shape[2])):
        o[i, j, k] = i * 10000 + j * 100 + k


@kl.kernel
def total(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f64, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]
        kl.atomic_min(out[1], kl.f64(x[i]))
        kl.atomic_max(out[2], kl.f64(x[i]))


@kl.kernel
def reduce_mixed(x: kl.ndarray(kl.i32, ndim=1), o32: kl.ndarray(kl.i32, ndim=1), o64: kl.ndarray(kl.i64, ndim=1),
                 o16: kl.ndarray(kl.i16, ndim=1), of: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        o32[0] += x[i]
        kl.atomic_max(o32[1], x[i])
        kl.atomic_xor(o64[0], kl.i64(x[i]) * 12345)
        kl.atomic_min(o16[0], kl.i16(x[i] % 1000))
        of[0] -= kl.f32(x[i] % 7)


@kl.kernel
def histogram(x: kl.ndarray(kl.f32, ndim=1), bins: kl.ndarray(kl.i32, ndim=1)):
    for i in range(x.shape[0]):
        b = int(x[i] * bins.shape[0])
        if b >= 0 and b < bins.shape[0]:
            bins[b] += 1


@kl.kernel
def reset_then_sum(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f64, ndim=1)):
    n = x.shape[0]
    out[0] = 0.0
    for i in range(n):
        out[0] += x[i]
    out[1] = out[0] * 2.0


@kl.kernel
def serial_scan(x: kl.ndarray(kl.i64, ndim=1), o: kl.ndarray(kl.i64, ndim=1)):
    acc: kl.i64 = 0
    for i in kl.static(range(1)):
        pass
    k = 0
    while k < x.shape[0]:
        acc = acc + x[k]
        o[k] = acc
        k += 1


@kl.kernel
def int_ops(a: kl.ndarray(kl.i32, ndim=1), b: kl.ndarray(kl.i32, ndim=1), o: kl.ndarray(kl.i32, ndim=2)):
    for i in range(a.shape[0]):
        o[0, i] = a[i] // b[i]
        o[1, i] = a[i] % b[i]
        o[2, i] = a[i] << (b[i] & 7)
        o[3, i] = a[i] >> (b[i] & 7)
        o[4, i] = a[i] * 65537
        o[5, i] = abs(a[i])
        o[6, i] = min(a[i], b[i])
        o[7, i] = kl.cast(kl.f32(a[i]) * 1.5, kl.i32)


@kl.kernel
def half_ops(x: kl.ndarray(kl.f16, ndim=1), o: kl.ndarray(kl.f16, ndim=1)):
    for i in range(x.shape[0]):
        o[i] = x[i] * 2.0 + kl.sqrt(abs(x[i])) + kl.exp(x[i] * 0.1)


@kl.kernel
def copy_any(x: kl.ndarray(), y: kl.ndarray()):
    for i in range(x.shape[0]):
        y[i] = x[i]


@kl.kernel
def bad_prologue(x: kl.ndarray(kl.f32, ndim=1)):
    s = x[0]
    for i in range(x.shape[0]):
        x[i] = x[i] + s


UNARY = {"sqrt": np.sqrt, "rsqrt": lambda v: 1 / np.sqrt(v), "exp": np.exp, "log": np.log, "sin": np.sin,
         "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
         "tanh": np.tanh, "floor": np.floor, "ceil": np.ceil, "round": np.round, "abs": np.abs}
BINARY = {"atan2": np.arctan2, "pow": np.power, "min": np.fmin, "max": np.fmax}


def _math_kernel(name: str, nargs: int):
    src = {1: f"o[i] = kl.{name}(x[i])" if name not in ("abs", "min", "max") else f"o[i] = {name}(x[i])",
           2: f"o[i] = kl.{name}(x[i], y[i])" if name not in ("min", "max") else f"o[i] = {name}(x[i], y[i])"}[nargs]
    args = "x: kl.ndarray(), y: kl.ndarray(), o: kl.ndarray()" if nargs == 2 else "x: kl.ndarray(), o: kl.ndarray()"
    ns: dict = {"kl": kl}
    code = f"def m_{name}({args}):\n    for i in range(x.shape[0]):\n        {src}\n"
    import linecache
    fname = f"<kiln-test-math-{name}-{nargs}>"
    linecache.cache[fname] = (len(code), None, code.splitlines(True), fname)
    exec(compile(code, fname, "exec"), ns)  # noqa: S102 - builds one test kernel per builtin
    return kl.kernel(ns[f"m_{name}"])


# ---------------------------------------------------------------------------------------------
# kernel tests over targets
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_saxpy(target, request):
    k = compiled_kernel(saxpy, (kl.f32, A1F, A1F), target, request)
    rng = np.random.default_rng(0)
    for n in (1, 1000, 1 << 20):
        x = rng.standard_normal(n).astype(np.float32)
        y = rng.standard_normal(n).astype(np.float32)
        ref = np.float32(2.5) * x + y
        k(2.5, x, y)
        np.testing.assert_allclose(y, ref, rtol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_stencil_ndrange(target, request):
    k = compiled_kernel(stencil, (A2F, A2F), target, request)
    rng = np.random.default_rng(1)
    u = rng.standard_normal((130, 257)).astype(np.float32)
    v = np.zeros_like(u)
    k(u, v)
    ref = np.zeros_like(u)
    ref[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:]) - u[1:-1, 1:-1]
    np.testing.assert_allclose(v, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", TARGETS)
def test_ndrange_3d_steps(target, request):
    k = compiled_kernel(ndrange3, (kl.ndarray(kl.i64, ndim=3),), target, request)
    o = np.full((5, 7, 9), -1, np.int64)
    k(o)
    ref = np.full((5, 7, 9), -1, np.int64)
    for i in range(5):
        for j in range(0, 7, 2):
            for kk in range(1, 9):
                ref[i, j, kk] = i * 10000 + j * 100 + kk
    np.testing.assert_array_equal(o, ref)


@pytest.mark.parametrize("target", TARGETS)
def test_atomics_reduction(target, request):
    k = compiled_kernel(total, (A1F, A1D), target, request)
    x = np.random.default_rng(2).standard_normal(100_003).astype(np.float32)
    out = np.array([0.0, np.inf, -np.inf])
    k(x, out)
    np.testing.assert_allclose(out[0], x.astype(np.float64).sum(), rtol=1e-9, atol=1e-9)
    assert out[1] == x.min() and out[2] == x.max()


@pytest.mark.parametrize("target", TARGETS)
def test_privatised_reductions_of_every_width(target, request):
    k = compiled_kernel(reduce_mixed, (A1I, A1I, kl.ndarray(kl.i64, ndim=1), kl.ndarray(kl.i16, ndim=1), A1F),
                        target, request)
    for n in (1, 37, 100_000):
        x = np.random.default_rng(n).integers(-10**6, 10**6, n).astype(np.int32)
        o32 = np.array([5, -(2**31)], np.int32)
        o64 = np.array([7], np.int64)
        o16 = np.array([30000], np.int16)
        of = np.array([1.0], np.float32)
        k(x, o32, o64, o16, of)
        xor = 7
        for v in (x.astype(np.int64) * 12345).tolist():
            xor ^= v
        assert o32.tolist() == [int(np.int32(5 + x.astype(np.int64).sum())), int(x.max())]
        assert o64.tolist() == [xor] and o16.tolist() == [int((x % 1000).min())]
        assert of[0] == np.float32(1.0 - float((x % 7).sum()))


@pytest.mark.parametrize("target", TARGETS)
def test_histogram(target, request):
    k = compiled_kernel(histogram, (A1F, A1I), target, request)
    x = np.random.default_rng(3).random(200_000).astype(np.float32)
    bins = np.zeros(64, np.int32)
    k(x, bins)
    ref = np.bincount(np.minimum((x * 64).astype(np.int64), 63), minlength=64)
    np.testing.assert_array_equal(bins, ref)


@pytest.mark.parametrize("target", TARGETS)
def test_serial_segments_around_the_loop(target, request):
    k = compiled_kernel(reset_then_sum, (A1F, A1D), target, request)
    x = np.arange(1000, dtype=np.float32)
    out = np.array([123.0, 0.0])
    k(x, out)
    assert out.tolist() == [499500.0, 999000.0]


@pytest.mark.parametrize("target", TARGETS)
def test_serial_kernel(target, request):
    k = compiled_kernel(serial_scan, (kl.ndarray(kl.i64, ndim=1), kl.ndarray(kl.i64, ndim=1)), target, request)
    x = np.arange(10, dtype=np.int64)
    o = np.zeros(10, np.int64)
    k(x, o)
    np.testing.assert_array_equal(o, np.cumsum(x))


@pytest.mark.parametrize("target", TARGETS)
def test_int_semantics(target, request):
    k = compiled_kernel(int_ops, (A1I, A1I, kl.ndarray(kl.i32, ndim=2)), target, request)
    a = np.array([7, -7, 7, -7, 0, -(2**31), 2**31 - 1, 5, 100], np.int32)
    b = np.array([2, 2, -2, -2, 0, -1, 3, 0, 7], np.int32)
    o = np.zeros((8, len(a)), np.int32)
    k(a, b, o)
    with np.errstate(all="ignore"):
        fd = np.where(b == 0, 0, np.floor_divide(a, np.where(b == 0, 1, b)))
        fd = np.where((a == -(2**31)) & (b == -1), a, fd)
        md = np.where(b == 0, 0, np.mod(a, np.where(b == 0, 1, b)))
        md = np.where(b == -1, 0, md)
        sh = (b & 7).astype(np.int64)
        ref = [fd, md, (a.astype(np.int64) << sh).astype(np.int32), a >> (b & 7), (a.astype(np.int64) * 65537).astype(np.int32),
               np.abs(a), np.minimum(a, b), (a.astype(np.float32) * np.float32(1.5)).astype(np.int64).clip(-(2**31), 2**31 - 1)]
    for row, r in enumerate(ref):
        np.testing.assert_array_equal(o[row], np.asarray(r).astype(np.int32), err_msg=f"row {row}")


@pytest.mark.parametrize("target", TARGETS)
def test_f16(target, request):
    k = compiled_kernel(half_ops, (kl.ndarray(kl.f16, ndim=1), kl.ndarray(kl.f16, ndim=1)), target, request)
    x = np.linspace(-3, 3, 101).astype(np.float16)
    o = np.zeros_like(x)
    k(x, o)
    xf = x.astype(np.float32)
    ref = (xf * 2 + np.sqrt(np.abs(xf)) + np.exp(xf * np.float32(0.1))).astype(np.float16)
    np.testing.assert_allclose(o.astype(np.float32), ref.astype(np.float32), rtol=2e-3, atol=2e-3)


DTYPES = [kl.bool_, kl.i8, kl.i16, kl.i32, kl.i64, kl.u8, kl.u16, kl.u32, kl.u64, kl.f16, kl.f32, kl.f64]


@pytest.mark.parametrize("target", TARGETS)
def test_every_dtype_load_store(target, request):
    rng = np.random.default_rng(4)
    for dt in DTYPES:
        t = kl.ndarray(dt, ndim=1)
        k = compiled_kernel(copy_any, (t, t), target, request)
        npdt = dt.np_dtype
        if npdt.kind == "b":
            x = rng.random(333) > 0.5
        elif npdt.kind in "iu":
            info = np.iinfo(npdt)
            x = rng.integers(info.min, info.max, 333, dtype=npdt, endpoint=True)
        else:
            x = rng.standard_normal(333).astype(npdt)
        y = np.zeros_like(x)
        k(x, y)
        np.testing.assert_array_equal(y, x, err_msg=dt.name)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dt", [kl.f32, kl.f64])
def test_math_builtins(target, dt, request):
    rng = np.random.default_rng(5)
    x = rng.uniform(-0.99, 0.99, 257).astype(dt.np_dtype)
    x[:4] = [np.nan, np.inf, -np.inf, 2.5]
    y = rng.uniform(0.1, 3, 257).astype(dt.np_dtype)
    y[5:7] = np.nan
    rtol = 2e-6 if dt is kl.f32 else 1e-13
    t = kl.ndarray(dt, ndim=1)
    with np.errstate(all="ignore"):
        for n, ref in UNARY.items():
            k = compiled_kernel(_math_kernel(n, 1), (t, t), target, request)
            o = np.zeros_like(x)
            k(x, o)
            np.testing.assert_allclose(o, ref(x), rtol=rtol, atol=1e-30, err_msg=n)
        for n, ref in BINARY.items():
            k = compiled_kernel(_math_kernel(n, 2), (t, t, t), target, request)
            o = np.zeros_like(x)
            k(x, y, o)
            np.testing.assert_allclose(o, ref(x, y), rtol=rtol, atol=1e-30, err_msg=n)


# ---------------------------------------------------------------------------------------------
# no GPU needed: PTX, math accuracy, files, errors
# ---------------------------------------------------------------------------------------------

def _ptx(*kernels_types):
    from kiln.codegen.nvptx import build_ptx
    from kiln.driver import lower_kernel
    return build_ptx([lower_kernel(k, t) for k, t in kernels_types])


@needs_nvptx
def test_ptx_text():
    pc = _ptx((saxpy, (kl.f32, A1F, A1F)), (total, (A1F, A1D)), (histogram, (A1F, A1I)),
              (reset_then_sum, (A1F, A1D)))
    ptx = pc.ptx
    assert ".target sm_80" in ptx and ".address_size 64" in ptx
    assert ".visible .entry kiln_kernel_saxpy__f32_f32a1_f32a1(" in ptx
    assert "atom.global.add.f64" in ptx          # float atomics are native
    assert "atom.global.add.u32" in ptx or "red.global.add.u32" in ptx or "atom.global.add.s32" in ptx
    assert "ld.global" in ptx and "st.global" in ptx
    assert "%nctaid.x" in ptx                    # grid-stride loop
    assert "call" not in ptx.split(".entry kiln_kernel_saxpy")[1].split("}")[0]
    launches = {k: [ln.to_json() for ln in v] for k, v in pc.launches.items()}
    assert [ln["mode"] for ln in launches["reset_then_sum__f32a1_f64a1"]] == ["single", "loop", "single"]
    assert launches["saxpy__f32_f32a1_f32a1"] == [{"entry": "kiln_kernel_saxpy__f32_f32a1_f32a1", "mode": "loop",
                                                  "count": [[["const", 0], ["shape", "x", 0], ["const", 4]]],
                                                  "waves": 16, "block_ptr": True}]


@needs_nvptx
def test_ptx_math_has_no_external_calls():
    pc = _ptx(*[(_math_kernel(n, 1), (A1D, A1D)) for n in UNARY] + [(_math_kernel(n, 2), (A1F, A1F, A1F)) for n in BINARY])
    assert ".extern" not in pc.ptx          # no libm / libdevice on the GPU


@needs_nvptx
def test_prologue_reading_written_array_is_refused():
    with pytest.raises(KernelError, match="cannot be compiled for the cuda target.*reads array 'x'"):
        _ptx((bad_prologue, (A1F,)))


@needs_nvptx
def test_gpu_math_accuracy_on_cpu():
    """The GPU math code (kiln.codegen.nvptx) compiled for the CPU through MCJIT, against numpy."""
    import llvmlite.binding as llvm

    from kiln.codegen.nvptx import GPU_MATH, host_math_ir
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    mod = llvm.parse_assembly(host_math_ir())
    mod.verify()
    eng = llvm.create_mcjit_compiler(mod, llvm.Target.from_default_triple().create_target_machine())
    eng.finalize_object()
    rng = np.random.default_rng(6)
    xs = np.concatenate([rng.uniform(-0.99, 0.99, 300), rng.uniform(-50, 50, 300), rng.uniform(-1e4, 1e4, 100),
                         np.exp(rng.uniform(-700, 700, 200)),
                         [0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 2.5, 1e-310, 709.7, -745.0, 1e6]])
    ys = rng.uniform(0.1, 3, len(xs))
    ys[:20] = rng.uniform(-30, 30, 20)
    refs = {"exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin,
            "acos": np.arccos, "atan": np.arctan, "tanh": np.tanh, "atan2": np.arctan2, "pow": np.power}
    with np.errstate(all="ignore"):
        for n in GPU_MATH:
            two = n in ("atan2", "pow")
            f = ctypes.CFUNCTYPE(ctypes.c_double, *([ctypes.c_double] * (2 if two else 1)))(
                eng.get_function_address(f"kiln_test_{n}"))
            out = np.array([f(a, b) if two else f(a) for a, b in zip(xs, ys)])
            ref = refs[n](xs, ys) if two else refs[n](xs)
            if n in ("sin", "cos", "tan"):        # no Payne-Hanek reduction: NaN past 1e15 (docs/cuda.md)
                ref = np.where(np.abs(xs) > 1e15, np.nan, ref)
            rtol = 1e-13 if n == "pow" else 2e-15
            np.testing.assert_allclose(out, ref, rtol=rtol, atol=1e-300, err_msg=n)


def test_launch_count_expressions():
    from kiln.runtime.cuda import eval_host_expr
    e = ["-", ["shape", "u", 0], ["const", 1]]
    assert eval_host_expr(e, {}, {"u": (10, 3)}) == 9
    assert eval_host_expr(["max", ["arg", "n"], ["//", ["arg", "n"], ["const", 0]]], {"n": 5}, {}) == 5


def test_pick_image():
    from kiln.runtime.cuda import pick_image
    cubins = {"sm_80": "cuda.sm_80.cubin", "sm_90": "cuda.sm_90.cubin"}
    assert pick_image((9, 0), cubins, "cuda.ptx", "sm_80") == ("cubin sm_90", "cuda.sm_90.cubin")
    assert pick_image((8, 6), cubins, "cuda.ptx", "sm_80") == ("cubin sm_80", "cuda.sm_80.cubin")
    assert pick_image((10, 0), cubins, "cuda.ptx", "sm_80")[1] == "cuda.ptx"
    with pytest.raises(CudaError, match="no code in this file runs on this GPU"):
        pick_image((7, 5), cubins, "cuda.ptx", "sm_80")
    with pytest.raises(CudaError, match="sm_100"):
        pick_image((10, 0), cubins, None, "sm_80")


def _graph():
    x = kl.Arg("x", A1F, shape=("n",))
    y = kl.Arg("y", A1F, shape=("n",))
    g = kl.GraphBuilder()
    g.dispatch(saxpy, kl.Arg("a", kl.f32), x, y)
    g.dispatch(total, y, kl.Arg("out", A1D, shape=(3,)))
    return g


@needs_nvptx
def test_file_with_cpu_and_cuda_targets(tmp_path):
    from kiln.codegen.cuda_link import nvjitlink_available
    g = _graph()
    cg = g.compile(targets=["cpu", "cuda"])
    path = tmp_path / "both.kiln"
    cg.save(path)
    data = path.read_bytes()
    c = unpack(data)
    targets = {t["name"]: t for t in c.manifest["targets"]}
    assert set(targets) == {"cpu", "cuda"}
    assert targets["cuda"]["arch"] == "nvptx64" and targets["cuda"]["cpu"] == "sm_80"
    cu = c.manifest["cuda"]
    assert cu["block_size"] == 256 and cu["ptx"] == "cuda.ptx"
    assert bytes(c.blobs["cuda.ptx"]).startswith(b"//")
    if nvjitlink_available() is None:
        assert sorted(cu["cubins"]) == ["sm_80", "sm_90"]
        for arch in ("sm_80", "sm_90"):
            assert bytes(c.blobs[f"cuda.{arch}.cubin"])[:4] == b"\x7fELF"
    else:
        assert cu["cubins"] == {} and "cubins_missing" in cu
    for k in c.manifest["kernels"].values():
        assert set(k["entries"]) == {"cpu", "cuda"}
    # the CPU loader picks the cpu target and runs it
    step = kl.load(path)
    xs = np.ones(1000, np.float32)
    ys = np.zeros(1000, np.float32)
    acc = np.array([0.0, np.inf, -np.inf])
    step.run({"a": 2.0, "x": xs, "y": ys, "out": acc})
    assert acc.tolist() == [2000.0, 2.0, 2.0]
    # the CUDA side opens without touching the driver
    from kiln.runtime import cuda
    m = cuda.load_module(path)
    assert set(m.graphs) == {"main"} and m.target.kind == "cuda"
    assert json.loads(json.dumps(c.manifest))["format_version"] == [2, 0]


@needs_nvptx
def test_cuda_only_module_and_no_cuda_target_error(tmp_path):
    m = kl.Module(targets=["cuda"], cuda_archs=[])
    m.add_graph("main", _graph())
    cm = m.compile()
    data = cm.to_bytes()
    c = unpack(data)
    assert [t["kind"] for t in c.manifest["targets"]] == ["cuda"]
    assert c.manifest["cuda"]["cubins_missing"]
    with pytest.raises(kl.ArtifactError, match="no CPU code"):
        kl.load_bytes(data)
    from kiln.runtime import cuda
    cpu_only = _graph().compile()
    with pytest.raises(CudaError, match="no cuda target"):
        cuda.load_module(cpu_only)


def test_unknown_target_is_refused():
    m = kl.Module(targets=["cpu", "rocm"])
    m.add_graph("main", _graph())
    with pytest.raises(kl.TargetError, match="rocm"):
        m.compile()


@needs_nvptx
def test_running_cuda_without_gpu_is_a_clear_error():
    if _gpu_reason() is None:
        pytest.skip("this machine has a usable GPU")
    from kiln.runtime import cuda
    m = cuda.load_module(_graph().compile(targets=["cpu", "cuda"]))
    with pytest.raises(CudaError, match="cuda|CUDA|GPU|driver"):
        m.graphs["main"].run({"a": 1.0, "x": np.ones(3, np.float32), "y": np.ones(3, np.float32),
                              "out": np.zeros(3)})


# ---------------------------------------------------------------------------------------------
# GPU runtime: device arrays, streams, CUDA graphs
# ---------------------------------------------------------------------------------------------

@pytest.mark.cuda
def test_graph_runs_with_device_arrays_and_replays(gpu, tmp_path):
    torch = pytest.importorskip("torch")
    from kiln.runtime import cuda
    path = tmp_path / "g.kiln"
    _graph().compile(targets=["cpu", "cuda"]).save(path)
    m = cuda.load_module(path)
    assert m.image_kind().startswith("cubin")
    g = m.graphs["main"]
    n = 1 << 16
    x = torch.rand(n, device="cuda")
    y = torch.zeros(n, device="cuda")
    out = torch.tensor([0.0, float("inf"), float("-inf")], dtype=torch.float64, device="cuda")
    for a in (1.0, 2.0, 2.0, 3.0):                  # scalar-only changes update the graph in place
        y.zero_()
        out.copy_(torch.tensor([0.0, float("inf"), float("-inf")], dtype=torch.float64))
        g.run({"a": a, "x": x, "y": y, "out": out})
        torch.cuda.synchronize()
        torch.testing.assert_close(y, a * x)
        assert abs(out[0].item() - (a * x).double().sum().item()) < 1e-3
    assert len(g._graphs) == 1
    y2 = torch.zeros(n, device="cuda")                 # new pointer: the same graph, new argument blocks
    g.run({"a": 1.0, "x": x, "y": y2, "out": out})
    torch.cuda.synchronize()
    torch.testing.assert_close(y2, x)
    assert len(g._graphs) == 1
    x3, y3 = torch.rand(2 * n, device="cuda"), torch.zeros(2 * n, device="cuda")   # new grid sizes: a second graph
    g.run({"a": 1.0, "x": x3, "y": y3, "out": out})
    torch.cuda.synchronize()
    torch.testing.assert_close(y3, x3)
    assert len(g._graphs) == 2
    # plain launches, on a caller stream
    s = torch.cuda.Stream()
    y3 = torch.zeros(n, device="cuda")
    with torch.cuda.stream(s):
        g.run({"a": 4.0, "x": x, "y": y3, "out": out}, stream=s, use_graph=False)
    s.synchronize()
    torch.testing.assert_close(y3, 4 * x)


@pytest.mark.cuda
def test_dlpack_and_cupy_arrays(gpu):
    cp = pytest.importorskip("cupy")
    from kiln.runtime import cuda
    m = kl.Module(targets=["cuda"])
    m.add_kernel(saxpy, name="saxpy")
    k = m.compile().kernels["saxpy"]
    x = cp.arange(1000, dtype=cp.float32)
    y = cp.ones(1000, dtype=cp.float32)
    k(2.0, x, y)
    cp.cuda.runtime.deviceSynchronize()
    np.testing.assert_allclose(cp.asnumpy(y), 2 * np.arange(1000, dtype=np.float32) + 1)

    class DLOnly:                       # a DLPack-only object (no __cuda_array_interface__)
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, stream=None):
            return self.a.__dlpack__()

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    y2 = cp.zeros(1000, dtype=cp.float32)
    assert cuda.device_array(DLOnly(y2))[0] == y2.data.ptr
    k(1.0, DLOnly(x), DLOnly(y2))
    cp.cuda.runtime.deviceSynchronize()
    np.testing.assert_allclose(cp.asnumpy(y2), np.arange(1000, dtype=np.float32))
    with pytest.raises(kl.ArgumentError, match="dtype"):
        k(1.0, x, cp.zeros(1000, dtype=cp.float64))
    y2[:] = 0                           # strided device views run in place (kiln.abi strides)
    k(1.0, x[::2], y2[::2])
    cp.cuda.runtime.deviceSynchronize()
    expect = np.zeros(1000, np.float32)
    expect[::2] = np.arange(1000, dtype=np.float32)[::2]
    np.testing.assert_allclose(cp.asnumpy(y2), expect)


@pytest.mark.cuda
def test_vector_access_on_device_views_of_every_alignment(gpu):
    """Loops planned with vector access (kiln.ir.Vectorization) take their vector path only for
    aligned arrays: device views 1-3 elements off a 16-byte boundary, strided views and
    misaligned rows must give the same results (and no misaligned-address fault)."""
    cp = pytest.importorskip("cupy")
    m = kl.Module(targets=["cuda"])
    m.add_kernel(saxpy, name="saxpy")
    m.add_kernel(total, name="total")
    m.add_kernel(stencil, name="stencil")
    ks = m.compile().kernels
    rng = np.random.default_rng(11)
    for off in range(4):
        for n in (1, 5, 1027):
            xh = rng.standard_normal(n + 8).astype(np.float32)
            yh = rng.standard_normal(n + 8).astype(np.float32)
            x, y = cp.asarray(xh)[off:off + n], cp.asarray(yh)[3 - off:3 - off + n]
            ks["saxpy"](1.5, x, y)
            np.testing.assert_allclose(cp.asnumpy(y), np.float32(1.5) * xh[off:off + n] + yh[3 - off:3 - off + n],
                                       rtol=1e-6)
            out = cp.asarray(np.array([0.0, np.inf, -np.inf]))
            ks["total"](x, out)
            o = cp.asnumpy(out)
            np.testing.assert_allclose(o[0], xh[off:off + n].astype(np.float64).sum(), rtol=1e-6, atol=1e-6)
            assert o[1] == xh[off:off + n].min() and o[2] == xh[off:off + n].max()
    xs = cp.asarray(rng.standard_normal(2000).astype(np.float32))
    ys = cp.zeros(2000, cp.float32)
    ks["saxpy"](2.0, xs[::2], ys[::2])
    np.testing.assert_allclose(cp.asnumpy(ys)[::2], 2 * cp.asnumpy(xs)[::2], rtol=1e-6)
    for cols in (slice(0, 258), slice(1, 258), slice(2, 259)):       # rows aligned or not
        uh = rng.standard_normal((131, 262)).astype(np.float32)
        u, v = cp.asarray(uh)[:, cols], cp.zeros((131, 262), cp.float32)[:, cols]
        ks["stencil"](u, v)
        ref = np.zeros_like(uh[:, cols])
        w = uh[:, cols]
        ref[1:-1, 1:-1] = 0.25 * (w[:-2, 1:-1] + w[2:, 1:-1] + w[1:-1, :-2] + w[1:-1, 2:]) - w[1:-1, 1:-1]
        np.testing.assert_allclose(cp.asnumpy(v), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_hundred_kernel_graph(gpu):
    torch = pytest.importorskip("torch")
    from kiln.runtime import cuda
    g = kl.GraphBuilder()
    xa = kl.Arg("x", A1F)
    for i in range(100):
        g.dispatch(saxpy, 1.0 if i % 2 else kl.Arg("a", kl.f32), xa, kl.Arg("y", A1F))
    m = cuda.load_module(g.compile(targets=["cpu", "cuda"]))
    x = torch.ones(256, device="cuda")
    y = torch.zeros(256, device="cuda")
    m.graphs["main"].run({"a": 0.5, "x": x, "y": y})
    torch.cuda.synchronize()
    assert float(y[0]) == 50 * 1.0 + 50 * 0.5


@needs_nvptx
def test_missing_nvjitlink_gives_ptx_only_file_and_a_warning(monkeypatch):
    from kiln.codegen import cuda_link
    monkeypatch.setattr(cuda_link, "nvjitlink_available", lambda: "nvJitLink is not usable: (test)")
    with pytest.warns(UserWarning, match="PTX only"):
        _graph().compile(targets=["cpu", "cuda"])
    m = kl.Module(targets=["cuda"])
    m.add_graph("main", _graph())
    with pytest.warns(UserWarning, match="PTX only"):
        cm = m.compile()
    c = unpack(cm.to_bytes())
    assert c.manifest["cuda"]["cubins"] == {} and "(test)" in c.manifest["cuda"]["cubins_missing"]
    assert [t["blobs"] for t in c.manifest["targets"]] == [["cuda.ptx"]]


@needs_nvptx
def test_set_device_for_direct_calls() -> None:
    @kl.kernel
    def add_one(x: kl.ndarray(kl.f32, ndim=1)):
        for i in range(x.shape[0]):
            x[i] += 1.0

    x = np.zeros(8, np.float32)
    add_one(x)
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
        kl.set_device("tpu")
    kl.set_device("cuda")
    try:
        # argument checks come first, the same with or without a GPU
        with pytest.raises(kl.ArgumentError, match="expected dtype f32, got float64"):
            add_one(np.zeros(8))
        if _gpu_reason() is None:
            add_one(x)
            assert (x == 2.0).all()
        else:
            with pytest.raises(kl.CudaError):
                add_one(x)
            assert (x == 1.0).all()
    finally:
        kl.set_device("cpu")
    add_one(x)          # back on the CPU, with the kernel compiled for it earlier
    assert x[0] in (2.0, 3.0)


# ---------------------------------------------------------------------------------------------
# One argument checker for both runtimes, one Runnable protocol (no GPU needed)
# ---------------------------------------------------------------------------------------------

class _FakeDeviceArray:
    """Looks like a GPU array to kiln (it only reads __cuda_array_interface__ before a run)."""

    def __init__(self, shape, typestr="<f4", strides=None):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (4096, False),
                                         "strides": strides, "version": 3}


def _cpu_and_cuda_graph():
    m = kl.Module(targets=["cpu", "cuda"], cuda_archs=[])
    m.add_graph("main", _graph())
    cpu = m.compile()
    from kiln.runtime import cuda
    return cpu.graphs["main"], cuda.load_module(cpu).graphs["main"]


def _good_args(**over):
    args = {"a": 1.0, "x": np.ones(4, np.float32), "y": np.ones(4, np.float32), "out": np.zeros(3)}
    args.update(over)
    return args


ro = np.ones(4, np.float32)
ro.flags.writeable = False
SAME_ERRORS = [
    _good_args(x=np.ones(4, np.float64)),
    _good_args(x=np.ones((4, 1), np.float32)),
    _good_args(y=np.lib.stride_tricks.as_strided(np.ones(4, np.float32), (4,), (0,))),   # written, aliased
    _good_args(y=ro),
    _good_args(y=np.ones(5, np.float32)),
    _good_args(out=np.zeros(4)),
    _good_args(a="2"),
    _good_args(a=1e300),
    {"a": 1.0, "x": np.ones(4, np.float32)},
    _good_args(z=1),
    [1, 2],
]


@needs_nvptx
@pytest.mark.parametrize("args", SAME_ERRORS)
def test_cuda_argument_checks_are_the_cpu_checks(args):
    """Numpy arguments: the CUDA runtime raises exactly what the CPU runtime raises, before
    touching any GPU (the checks are one ArgBinder)."""
    cpu, gpu = _cpu_and_cuda_graph()
    with pytest.raises(kl.KilnError) as cpu_err:
        cpu.run(args)
    with pytest.raises(type(cpu_err.value)) as gpu_err:
        gpu._check_args(args)
    assert str(gpu_err.value) == str(cpu_err.value)


@needs_nvptx
@pytest.mark.parametrize("array,exc,msg", [
    (_FakeDeviceArray((4,), "<f8"), kl.ArgumentError, "argument 'x': expected dtype f32, got f64 (kiln never converts"),
    (_FakeDeviceArray((4, 1)), kl.ArgumentError, "argument 'x': expected a 1-D array, got 2-D with shape (4, 1)"),
    (_FakeDeviceArray((4,), "<f4", (6,)), kl.ArgumentValueError, "argument 'x': device array strides (6,) are not whole"),
    (_FakeDeviceArray((5,)), kl.ArgumentValueError, "dimension 0 is 5 but shape symbol 'n' is 4"),
    (object(), kl.ArgumentError, "expected a numpy.ndarray or a CUDA device array"),
])
def test_device_array_checks(array, exc, msg):
    _, gpu = _cpu_and_cuda_graph()
    args = _good_args(x=array)
    if msg.startswith("dimension"):
        args = _good_args(x=np.ones(4, np.float32), y=array)
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        gpu._check_args(args)
    values, keep, uploads = gpu._check_args(_good_args(x=_FakeDeviceArray((4,))))
    assert len(keep) == 1
    assert values[1:4] == [4096, 4, 1] and [name for _, name in uploads] == ["y", "out"]   # data, extent, stride
    values, _, _ = gpu._check_args(_good_args(x=_FakeDeviceArray((4,), "<f4", (-8,))))   # any strides run
    assert values[1:4] == [4096, 4, -2]
    with pytest.raises(kl.ArgumentValueError, match="argument 'y': .*strides \\(0,\\) make elements share memory"):
        gpu._check_args(_good_args(x=_FakeDeviceArray((4,)), y=_FakeDeviceArray((4,), "<f4", (0,))))


@needs_nvptx
def test_every_loaded_graph_and_kernel_is_a_runnable(tmp_path):
    from kiln.runtime.runnable import ArgSpec, Runnable
    cpu, gpu = _cpu_and_cuda_graph()
    cpu.save(tmp_path / "g.kiln")
    loaded = kl.load(tmp_path / "g.kiln")
    m = kl.Module(targets=["cpu", "cuda"], cuda_archs=[])
    m.add_kernel(saxpy, kl.f32, A1F, A1F, name="saxpy")
    cm = m.compile()
    from kiln.runtime import cuda
    for r in (cpu, gpu, loaded, cm.kernels["saxpy"], cuda.load_module(cm).kernels["saxpy"]):
        assert isinstance(r, Runnable), r
        assert [a.name for a in r.args] == [p.layout.name for p in r.params]
        assert all(isinstance(a, ArgSpec) for a in r.args)
    assert gpu.name == cpu.name == "main" and repr(gpu.args) == repr(cpu.args)


@needs_nvptx
def test_runtime_plumbing_against_a_recording_driver(monkeypatch):
    """The CUDA runtime's calls into the driver, checked on a machine without a GPU: numpy
    arrays are staged in and only written ones copied back, argument blocks hold the checked
    values, grids are sized from the launch counts, a CUDA graph is built once and updated in
    place when only a scalar changes, device arrays are used in place on the caller's stream."""
    import struct

    import fake_cuda_driver as fake

    from kiln.runtime import cuda

    fake.install(monkeypatch)
    g = _graph()
    m = kl.Module(targets=["cpu", "cuda"], cuda_archs=[])
    m.add_graph("main", g)
    m.add_kernel(saxpy, name="saxpy")
    cm = cuda.load_module(m.compile())
    graph = cm.graphs["main"]
    xs, ys, out = np.ones(1000, np.float32), np.arange(1000, dtype=np.float32), np.zeros(3)
    graph.run({"a": 2.0, "x": xs, "y": ys, "out": out})
    log = fake.LOG
    # the staged arrays, then the launches' argument blocks in one copy (kiln.runtime.cuda_graph)
    assert log[0][0] == "load" and [e[1] for e in log if e[0] == "htod"] == [4000, 4000, 24, 112]
    nodes = [e for e in log if e[0] == "node"]
    # saxpy then total, each over 1000 elements in groups of 4 (vector access: 250 groups, one
    # block of 256), chained in dispatch order
    assert [(n[1].split("__")[0], n[2], n[3], n[4]) for n in nodes] == [
        ("kiln_kernel_saxpy", 1, 256, 0), ("kiln_kernel_total", 1, 256, 1)]
    *zeros, where = fake.slots(nodes[0][6], 8)      # saxpy: 7 slots (kiln.abi), then its block's address
    assert zeros == [bytes(8)] * 7
    kb = fake.device_bytes(int.from_bytes(where, "little"), 40)
    assert struct.unpack("<f", kb[:4])[0] == 2.0 and kb[16:24] == struct.pack("<q", 1000)   # a, x's extent
    assert [e[1] for e in log if e[0] == "dtoh"] == [4000, 24] and log[-1] == ("sync", 0)   # y and out, not x
    fake.LOG.clear()
    graph.run({"a": 3.0, "x": xs, "y": ys, "out": out})             # only the scalar changed
    assert [e[0] for e in log if e[0] in ("node", "setparams", "graphlaunch")] == ["graphlaunch"]
    assert struct.unpack("<f", fake.device_bytes(int.from_bytes(where, "little"), 4))[0] == 3.0
    fake.LOG.clear()

    class DeviceArray:
        def __init__(self, n):
            self.__cuda_array_interface__ = {"shape": (n,), "typestr": "<f4", "data": (0xABC000, False),
                                             "strides": None, "version": 3}

    cm.kernels["saxpy"](2.0, DeviceArray(20000), y=DeviceArray(20000), stream=7)
    (launch,) = log
    # ceil(20000 / 4 / 256) (groups of 4 elements: vector access), under the wave cap
    assert launch[0] == "launch" and launch[2] == 20 and launch[4] == 7
    assert bytes.fromhex(launch[5])[8:16] == struct.pack("<Q", 0xABC000)   # the device pointer, in place
    with pytest.raises(kl.ArgumentError, match="missing argument 'y'"):
        cm.kernels["saxpy"](2.0, DeviceArray(5))
