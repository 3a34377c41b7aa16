"""Vectors and matrices in kernels (issue 13): front-end values expanded into scalar IR, ndarrays
of them (element dims last), whole-element atomics, element-shape checks at dispatch and run,
PTX generation, and a golden IR text. Every result is checked against numpy."""


import linecache
import os
from pathlib import Path

import numpy as np
import pytest

import kiln as kl
from kiln.driver import lower_kernel
from kiln.ir.printer import format_ir

GOLDEN = Path(__file__).resolve().parent / "golden"
RNG = np.random.default_rng(13)

V2 = kl.ndarray(kl.vec2, ndim=1)
V3 = kl.ndarray(kl.vec3, ndim=1)
M2 = kl.ndarray(kl.mat2, ndim=1)
M3 = kl.ndarray(kl.mat3, ndim=1)
F1 = kl.ndarray(kl.f32, ndim=1)


def rand(*shape: int, dtype: type = np.float32) -> np.ndarray:
    return RNG.random(shape).astype(dtype)


# --------------------------------------------------------------------------------- types
def test_types_and_python_scope_values() -> None:
    assert kl.vec3 == kl.types.vector(3, kl.f32) and hash(kl.vec3) == hash(kl.types.vector(3, kl.f32))
    assert kl.ivec2.dtype == kl.i32 and kl.uvec4.dtype == kl.u32 and kl.mat3.shape == (3, 3)
    assert kl.math.vec2 is kl.vec2 and kl.math.mat2 is kl.mat2
    assert repr(kl.vec2) == "kl.vec2" and repr(kl.types.matrix(2, 3, kl.f64)) == "kl.types.matrix(2, 3, kl.f64)"
    t = kl.ndarray(kl.vec2, ndim=1)
    assert (t.ndim, t.outer_ndim, t.element_shape) == (2, 1, (2,))
    assert repr(t) == "kl.ndarray(kl.vec2, ndim=1)"
    np.testing.assert_array_equal(kl.vec3(1, 2, 3), np.float32([1, 2, 3]))
    np.testing.assert_array_equal(kl.mat2(0), np.zeros((2, 2), np.float32))
    np.testing.assert_array_equal(kl.Matrix.identity(kl.f32, 2), np.eye(2))
    with pytest.raises(ValueError, match="1..4"):
        kl.types.vector(5, kl.f32)
    with pytest.raises(ValueError, match="1..4"):
        kl.types.matrix(2, 0, kl.f32)


# --------------------------------------------------------------------------- arithmetic
@kl.kernel
def arith(x: V3, y: V3, out: kl.ndarray(kl.f32, ndim=2), s: kl.f32):
    for i in range(x.shape[0]):
        a = x[i]
        b = y[i]
        r = (a + b) * s - a / (b + 1.0) + 2 * a ** 2 - (-b) // 0.25 + a % 0.3
        out[i, 0] = r.x
        out[i, 1] = r.g
        out[i, 2] = r[2]
        c = a * 0.5 + 1
        out[i, 3] = c.sum() + kl.max(a, b).max() + kl.min(a, 0.2).min()
        out[i, 4] = kl.sqrt(a).dot(kl.exp(b)) + kl.sin(a).norm() + kl.abs(-a).norm_sqr()
        out[i, 5] = kl.floor(a * 4.0).sum()


def test_elementwise_and_broadcasting() -> None:
    x, y = rand(16, 3), rand(16, 3)
    out = np.zeros((16, 6), np.float32)
    arith(x, y, out, 1.5)
    r = (x + y) * 1.5 - x / (y + 1) + 2 * x ** 2 - (-y) // 0.25 + x % np.float32(0.3)
    np.testing.assert_allclose(out[:, :3], r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[:, 3], (x * 0.5 + 1).sum(1) + np.maximum(x, y).max(1) + np.minimum(x, 0.2).min(1),
                               rtol=1e-5)
    np.testing.assert_allclose(out[:, 4], (np.sqrt(x) * np.exp(y)).sum(1) + np.linalg.norm(np.sin(x), axis=1)
                               + (x * x).sum(1), rtol=1e-5)
    np.testing.assert_allclose(out[:, 5], np.floor(x * 4).sum(1))


@kl.kernel
def int_vectors(a: kl.ndarray(kl.ivec2, ndim=1), out: kl.ndarray(kl.ivec2, ndim=1), f: kl.ndarray(kl.vec2, ndim=1)):
    for i in range(a.shape[0]):
        res = kl.Vector([7, 5])
        v = (a[i] + kl.Vector(res)) % kl.Vector(res)
        out[i] = v * 2 - v // 3
        f[i] = v - 0.5  # int vector with a float literal: f32
        w = kl.ivec2(1)
        w += kl.ivec2(v.y, v.x)
        if (v > 2).all() or (v == 0).any():
            out[i] = w


def test_int_vectors_promote_and_compare() -> None:
    a = RNG.integers(-20, 20, (32, 2)).astype(np.int32)
    out = np.zeros_like(a)
    f = np.zeros((32, 2), np.float32)
    int_vectors(a, out, f)
    v = (a + [7, 5]) % np.int32([7, 5])
    want = v * 2 - v // 3
    sel = (v > 2).all(1) | (v == 0).any(1)
    want[sel] = (1 + v[:, ::-1])[sel]
    np.testing.assert_array_equal(out, want)
    np.testing.assert_allclose(f, v - 0.5)


@pytest.mark.parametrize("dt", [kl.f32, kl.f64, kl.i32])
def test_element_dtypes(dt) -> None:
    @kl.kernel
    def scale(x: kl.ndarray(kl.types.vector(3, dt), ndim=1), y: kl.ndarray(kl.types.vector(3, dt), ndim=1)):
        for i in range(x.shape[0]):
            y[i] = x[i] * 3 + x[i].zyx

    x = (RNG.random((8, 3)) * 10).astype(dt.np_dtype)
    y = np.zeros_like(x)
    scale(x, y)
    np.testing.assert_allclose(y, x * 3 + x[:, ::-1], rtol=1e-6)


# ---------------------------------------------------------------------- construction, locals
@kl.kernel
def constructors(x: V2, out: kl.ndarray(kl.f32, ndim=2)):
    for i in range(x.shape[0]):
        v2 = x[i]
        v3 = kl.vec3(v2, 1.0)
        v4 = kl.math.vec4(0)
        v4.xy = v2.yx
        v4.w = v3.sum()
        v4[2] += 1.0
        m = kl.mat2([[v2.x, 1.0], [2.0, v2.y]])
        m[1, 0] = 3.0
        z = kl.Matrix.zero(kl.f32, 2, 2) + kl.Matrix.identity(kl.f32, 2) + kl.Vector.zero(kl.f32, 2).outer_product(v2)
        q = kl.Matrix([[1.0, 2.0], [3.0, 4.0]])
        k = 0
        while k < 3:
            v3 = v3 * 2.0
            k += 1
        out[i, 0] = v4.x
        out[i, 1] = v4.y
        out[i, 2] = v4.z
        out[i, 3] = v4.w
        out[i, 4] = m[1, 0] + m[0, 1] + m.trace() + z.trace() + q[1, 1]
        out[i, 5] = v3.z
        j = i % 3
        out[i, 6] = v3[j]  # a dynamic index: a select chain
        v3[j] = -1.0
        out[i, 7] = v3.sum()


def test_constructors_swizzles_and_locals() -> None:
    x = rand(9, 2)
    out = np.zeros((9, 8), np.float32)
    constructors(x, out)
    v3 = np.concatenate([x, np.ones((9, 1), np.float32)], 1)
    np.testing.assert_allclose(out[:, 0], x[:, 1])
    np.testing.assert_allclose(out[:, 1], x[:, 0])
    np.testing.assert_allclose(out[:, 2], 1.0)
    np.testing.assert_allclose(out[:, 3], v3.sum(1), rtol=1e-6)
    np.testing.assert_allclose(out[:, 4], 3 + 1 + x[:, 0] + x[:, 1] + 2 + 4, rtol=1e-6)
    v3 = v3 * 8
    np.testing.assert_allclose(out[:, 5], v3[:, 2])
    j = np.arange(9) % 3
    np.testing.assert_allclose(out[:, 6], v3[np.arange(9), j])
    v3[np.arange(9), j] = -1
    np.testing.assert_allclose(out[:, 7], v3.sum(1), rtol=1e-6)


gravity = kl.math.vec2(0.0, -9.8)


@kl.kernel
def captured(x: V2):
    for i in range(x.shape[0]):
        x[i] += gravity * 0.5


def test_captured_module_level_vector() -> None:
    x = rand(4, 2)
    want = x + np.float32([0, -4.9])
    captured(x)
    np.testing.assert_allclose(x, want)


# -------------------------------------------------------------------------- linear algebra
@kl.kernel
def linalg2(a: M2, v: V2, det: F1, inv: M2, mv: V2, vm: V2, mm: M2, t: M2):
    for i in range(a.shape[0]):
        m = a[i]
        det[i] = m.determinant()
        inv[i] = m.inverse()
        mv[i] = m @ v[i]
        vm[i] = v[i] @ m
        mm[i] = m @ m.transpose() + kl.math.outer_product(v[i], v[i])
        t[i] = m.transpose()
        t[i] @= m


def test_linear_algebra_2x2() -> None:
    n = 12
    a, v = rand(n, 2, 2) + np.eye(2, dtype=np.float32), rand(n, 2)
    det, inv, mv, vm, mm, t = (np.zeros(s, np.float32) for s in ((n,), (n, 2, 2), (n, 2), (n, 2), (n, 2, 2),
                                                                 (n, 2, 2)))
    linalg2(a, v, det, inv, mv, vm, mm, t)
    np.testing.assert_allclose(det, np.linalg.det(a), rtol=1e-5)
    np.testing.assert_allclose(inv, np.linalg.inv(a), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mv, np.einsum("nij,nj->ni", a, v), rtol=1e-5)
    np.testing.assert_allclose(vm, np.einsum("ni,nij->nj", v, a), rtol=1e-5)
    np.testing.assert_allclose(mm, a @ a.transpose(0, 2, 1) + v[:, :, None] * v[:, None, :], rtol=1e-5)
    np.testing.assert_allclose(t, a.transpose(0, 2, 1) @ a, rtol=1e-5)


@pytest.mark.parametrize("n", [3, 4])
def test_determinant_and_inverse_3x3_4x4(n: int) -> None:
    mt = kl.types.matrix(n, n, kl.f64)

    @kl.kernel
    def dinv(a: kl.ndarray(mt, ndim=1), det: kl.ndarray(kl.f64, ndim=1), inv: kl.ndarray(mt, ndim=1)):
        for i in range(a.shape[0]):
            det[i] = kl.math.determinant(a[i])
            inv[i] = kl.math.inverse(a[i])

    a = RNG.random((10, n, n)) + n * np.eye(n)
    det, inv = np.zeros(10), np.zeros((10, n, n))
    dinv(a, det, inv)
    np.testing.assert_allclose(det, np.linalg.det(a), rtol=1e-10)
    np.testing.assert_allclose(inv, np.linalg.inv(a), rtol=1e-9, atol=1e-12)


@kl.kernel
def geometry(a: V3, b: V3, c: V3, s: kl.ndarray(kl.f32, ndim=2), p: V2, q: V2):
    for i in range(a.shape[0]):
        c[i] = a[i].cross(b[i]).normalized()
        s[i, 0] = kl.math.cross(p[i], q[i])
        s[i, 1] = kl.math.length(a[i]) + kl.math.distance(a[i], b[i])
        s[i, 2] = kl.math.clamp(a[i], 0.2, 0.6).sum() + kl.math.mix(a[i], b[i], 0.25).sum()
        s[i, 3] = kl.math.normalize(a[i]).norm() + kl.math.dot(a[i], b[i])
        s[i, 4] = kl.cast(a[i] * 10.0, kl.i32).sum() + (a[i] * 10.0).cast(kl.i32).sum()


def test_geometry_functions() -> None:
    a, b = rand(20, 3), rand(20, 3)
    p, q = rand(20, 2), rand(20, 2)
    c, s = np.zeros((20, 3), np.float32), np.zeros((20, 5), np.float32)
    geometry(a, b, c, s, p, q)
    cr = np.cross(a, b)
    np.testing.assert_allclose(c, cr / np.linalg.norm(cr, axis=1)[:, None], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s[:, 0], p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s[:, 1], np.linalg.norm(a, axis=1) + np.linalg.norm(a - b, axis=1), rtol=1e-5)
    np.testing.assert_allclose(s[:, 2], np.clip(a, 0.2, 0.6).sum(1) + (a * 0.75 + b * 0.25).sum(1), rtol=1e-5)
    np.testing.assert_allclose(s[:, 3], 1 + (a * b).sum(1), rtol=1e-5)
    np.testing.assert_allclose(s[:, 4], 2 * (a * 10).astype(np.int32).sum(1))


# ------------------------------------------------------------------------- atomics, graphs
@kl.kernel
def scatter(x: V2, v: V2, grid_v: kl.ndarray(kl.vec2, ndim=2), grid_m: kl.ndarray(kl.f32, ndim=2)):
    for p in range(x.shape[0]):
        base = kl.cast(x[p] * 8.0, kl.i32)
        for i in range(2):
            for j in range(2):
                offset = kl.Vector([i, j])
                w = 0.25 + 0.1 * i
                grid_v[base + offset] += w * v[p]
                grid_m[base + offset] += w


def _scatter_reference(x, v, shape):
    gv, gm = np.zeros(shape + (2,), np.float32), np.zeros(shape, np.float32)
    base = (x * 8).astype(np.int32)
    for i in range(2):
        for j in range(2):
            w = np.float32(0.25 + 0.1 * i)
            np.add.at(gv, (base[:, 0] + i, base[:, 1] + j), w * v)
            np.add.at(gm, (base[:, 0] + i, base[:, 1] + j), w)
    return gv, gm


def test_whole_element_atomics_direct_call() -> None:
    x, v = rand(5000, 2) * 0.8, rand(5000, 2)
    gv, gm = np.zeros((9, 9, 2), np.float32), np.zeros((9, 9), np.float32)
    scatter(x, v, gv, gm)
    rv, rm = _scatter_reference(x, v, (9, 9))
    np.testing.assert_allclose(gv, rv, rtol=1e-4)
    np.testing.assert_allclose(gm, rm, rtol=1e-4)


def test_graph_saved_and_loaded(tmp_path: Path) -> None:
    g = kl.GraphBuilder()
    g.dispatch(scatter, kl.Arg("x", V2, shape=("n",)), kl.Arg("v", V2, shape=("n",)),
               kl.Arg("grid_v", kl.ndarray(kl.vec2, ndim=2)), kl.Arg("grid_m", kl.ndarray(kl.f32, ndim=2)))
    path = tmp_path / "scatter.kiln"
    g.compile().save(path)
    loaded = kl.load(path)
    x, v = rand(3000, 2) * 0.8, rand(3000, 2)
    gv, gm = np.zeros((9, 9, 2), np.float32), np.zeros((9, 9), np.float32)
    loaded.run({"x": x, "v": v, "grid_v": gv, "grid_m": gm})
    rv, rm = _scatter_reference(x, v, (9, 9))
    np.testing.assert_allclose(gv, rv, rtol=1e-4)
    np.testing.assert_allclose(gm, rm, rtol=1e-4)
    with pytest.raises(kl.ArgumentError, match=r"elements of shape \(2,\)"):
        loaded.run({"x": np.zeros((3000, 3), np.float32), "v": v, "grid_v": gv, "grid_m": gm})
    with pytest.raises(kl.ArgumentError, match=r"elements of shape \(2,\)"):
        loaded.run({"x": x, "v": v, "grid_v": np.zeros((9, 9, 3), np.float32), "grid_m": gm})


@kl.kernel
def scale_v2(x: V2):
    for i in range(x.shape[0]):
        x[i] *= 2.0


def test_direct_call_element_shape_errors() -> None:
    with pytest.raises(kl.ArgumentError, match=r"shape \(2,\)"):
        scale_v2(np.zeros((4, 3), np.float32))
    with pytest.raises(kl.ArgumentError, match=r"shape \(2, 2\)"):
        linalg2(*(np.zeros((2, 3, 3), np.float32),) + tuple(np.zeros(s, np.float32) for s in (
            (2, 2), (2,), (2, 2, 2), (2, 2), (2, 2), (2, 2, 2), (2, 2, 2))))
    x = np.ones((4, 2), np.float32)
    scale_v2(x)  # compiled now: the runtime binder checks from here on
    np.testing.assert_array_equal(x, 2.0)
    with pytest.raises(kl.ArgumentError, match=r"elements of shape \(2,\)"):
        scale_v2(np.zeros((4, 3), np.float32))


# --------------------------------------------------------------------------------- errors
def _error(src: str, types: tuple, match: str, cls: type = kl.KernelError) -> kl.KernelError:
    ns: dict = {"kl": kl}
    fname = f"<vec-test-{abs(hash(src))}>"
    linecache.cache[fname] = (len(src), None, src.splitlines(True), fname)  # so inspect finds the source
    exec(compile(src, fname, "exec"), ns)  # noqa: S102 - test kernels from source text
    k = next(v for v in ns.values() if isinstance(v, kl.Kernel))
    with pytest.raises(cls, match=match) as e:
        lower_kernel(k, types)
    return e.value


@pytest.mark.parametrize(("body", "match"), [
    ("o[i] = kl.vec2(1, 2) + kl.vec3(1, 2, 3)", r"shapes \(2,\) and \(3,\) do not match"),
    ("o[i] = (kl.mat2(1) @ kl.vec3(1)).x", r"shapes \(2, 2\) and \(3,\) do not match"),
    ("o[i] = kl.vec2(1, 2).z", r"'z' is out of range for a vector of 2"),
    ("o[i] = kl.vec3(1, 2)", r"kl.vec3\(\) needs 3 values \(or 1 to fill\), got 2"),
    ("o[i] = kl.vec2(1, 2)", r"cannot be used where a scalar is needed|cannot store"),
    ("o[i] = kl.sqrt(kl.vec2(1, 2))[5]", r"index 5 is out of range"),
    ("o[i] = kl.mat2(1).inverse().x", r"needs a vector"),
    ("o[i] = kl.vec2(1, 2).determinant()", r"determinant\(\) needs a square matrix"),
    ("o[i] = kl.vec2(1, 2) @ kl.vec2(1, 2)", r"between two vectors"),
    ("v = kl.vec2(1, 2)\n        v = 1.0", r"'v' is a vector local"),
    ("v = kl.vec2(1, 2)\n        v = kl.vec3(1.0)", r"cannot assign a vector of shape \(3,\)"),
    ("o[i] = kl.Matrix([[1, 2], [3]])[0, 0]", r"rows must all have the same length"),
    ("o[i] = kl.Vector([1, 2, 3, 4, 5])[0]", r"1..4 elements"),
])
def test_errors_point_at_the_line(body: str, match: str) -> None:
    src = f"@kl.kernel\ndef bad(o: kl.ndarray(kl.f32, ndim=1)):\n    for i in range(o.shape[0]):\n        {body}\n"
    err = _error(src, (F1,), match)
    assert err.filename.startswith("<vec-test") and err.lineno >= 4


def test_vector_array_indexed_with_too_many_indices() -> None:
    src = "@kl.kernel\ndef bad(x: kl.ndarray(kl.vec2, ndim=1)):\n    for i in range(x.shape[0]):\n        x[i, 0] = 1.0\n"
    _error(src, (V2,), r"1 dimension\(s\) but is indexed with 2")


# ------------------------------------------------------------------------------ CUDA, golden
@pytest.mark.filterwarnings("ignore:kiln. the cuda target holds PTX only")
def test_ptx_for_a_vector_kernel() -> None:
    from kiln.codegen.nvptx import build_ptx, nvptx_available

    if nvptx_available() is not None:
        pytest.skip(f"no NVPTX target: {nvptx_available()}")
    kir = lower_kernel(scatter, (V2, V2, kl.ndarray(kl.vec2, ndim=2), kl.ndarray(kl.f32, ndim=2)))
    ptx = build_ptx([kir])
    ptx_text = ptx if isinstance(ptx, str) else str(ptx)
    assert kir.kernel.name in ptx_text and "atom" in ptx_text
    g = kl.GraphBuilder()
    g.dispatch(captured, kl.Arg("x", V2))
    g.compile(targets=["cpu", "cuda"])


@kl.kernel
def small_vec(x: V2, y: V2):
    for i in range(x.shape[0]):
        v = x[i]
        v.x += 1.0
        y[i] = v.yx * 2.0


def test_golden_vector_ir() -> None:
    text = format_ir(lower_kernel(small_vec, (V2, V2)))
    path = GOLDEN / "vectors.txt"
    if os.environ.get("KILN_REGEN_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with KILN_REGEN_GOLDEN=1"
    assert text == path.read_text()
    assert "v.0" in text and "v.1" in text


# ------------------------------------------------------------------------- decompositions
@kl.kernel
def decompose(a: M2, u: M2, s: M2, v: M2, r: M2, p: M2):
    for i in range(a.shape[0]):
        U, S, V = kl.svd(a[i])
        u[i] = U
        s[i] = S
        v[i] = V
        R, P = kl.polar_decompose(a[i], kl.f32)
        r[i] = R
        p[i] = P


def test_svd_and_polar_decompose_2x2_against_numpy() -> None:
    a = (RNG.random((300, 2, 2)) * 2 - 1).astype(np.float32)
    a[0] = 0
    a[1] = np.diag([2.0, 3.0])
    a[2] = [[1, 2], [2, 4]]  # singular
    u, s, v, r, p = (np.zeros_like(a) for _ in range(5))
    decompose(a, u, s, v, r, p)
    eye = np.eye(2)
    np.testing.assert_allclose(u @ s @ v.transpose(0, 2, 1), a, atol=2e-6)
    np.testing.assert_allclose(u @ u.transpose(0, 2, 1), np.broadcast_to(eye, a.shape), atol=2e-6)
    np.testing.assert_allclose(v @ v.transpose(0, 2, 1), np.broadcast_to(eye, a.shape), atol=2e-6)
    sv = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(np.stack([s[:, 0, 0], s[:, 1, 1]], 1), sv, atol=2e-6)
    assert (s[:, 0, 1] == 0).all() and (s[:, 1, 0] == 0).all()
    np.testing.assert_allclose(r @ p, a, atol=2e-6)
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(eye, a.shape), atol=2e-6)
    np.testing.assert_allclose(p, p.transpose(0, 2, 1), atol=1e-6)
    assert np.linalg.eigvalsh(p.astype(np.float64)).min() > -1e-5
    np.testing.assert_array_equal(r[0], eye)  # the zero matrix: (I, 0), as Taichi


@pytest.mark.parametrize(("dt", "tol"), [(kl.f64, 1e-9), (kl.f32, 2e-5)])
def test_svd_and_polar_decompose_3x3_against_numpy(dt, tol: float) -> None:
    m3 = kl.ndarray(kl.types.matrix(3, 3, dt), ndim=1)

    @kl.kernel
    def decompose3(a: m3, u: m3, s: m3, v: m3, r: m3, p: m3):
        for i in range(a.shape[0]):
            U, S, V = kl.svd(a[i])
            u[i] = U
            s[i] = S
            v[i] = V
            R, P = kl.polar_decompose(a[i])
            r[i] = R
            p[i] = P

    a = (RNG.random((200, 3, 3)) * 2 - 1).astype(dt.np_dtype)
    a[0] = 0
    a[1] = np.diag([1.0, 3.0, 2.0])
    a[2] = np.outer([1, 2, 3], [1, -1, 2])  # rank 1
    a[3] = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]  # rank 2
    a[4] = np.diag([1, 1, -1])
    u, s, v, r, p = (np.zeros_like(a) for _ in range(5))
    decompose3(a, u, s, v, r, p)
    eye = np.broadcast_to(np.eye(3), a.shape)
    np.testing.assert_allclose(u @ s @ v.transpose(0, 2, 1), a, atol=tol)
    for q in (u, v, r):  # rotations, as Taichi's
        np.testing.assert_allclose(q @ q.transpose(0, 2, 1), eye, atol=tol)
        np.testing.assert_allclose(np.linalg.det(q.astype(np.float64)), 1.0, atol=tol)
    np.testing.assert_allclose(s * (1 - np.eye(3)), 0.0)
    sv = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(np.abs(np.stack([s[:, 0, 0], s[:, 1, 1], s[:, 2, 2]], 1)), sv, atol=tol)
    nonsingular = np.abs(np.linalg.det(a.astype(np.float64))) > 1e-3
    assert (np.sign(s[:, 2, 2]) == np.sign(np.linalg.det(a.astype(np.float64))))[nonsingular].all()
    np.testing.assert_allclose(r @ p, a, atol=tol)
    np.testing.assert_allclose(p, p.transpose(0, 2, 1), atol=tol)


def test_decompositions_are_not_allowed_in_while_conditions() -> None:
    src = ("@kl.kernel\ndef bad(a: kl.ndarray(kl.mat2, ndim=1)):\n    for i in range(a.shape[0]):\n"
           "        while kl.polar_decompose(a[i])[1][0, 0] > 1.0:\n            a[i] *= 0.5\n")
    _error(src, (M2,), r"cannot be used in a while condition")
    src = ("@kl.kernel\ndef bad(a: kl.ndarray(kl.vec3, ndim=1)):\n    for i in range(a.shape[0]):\n"
           "        U, S, V = kl.svd(a[i])\n")
    _error(src, (V3,), r"svd\(\) needs a 2x2 or 3x3 matrix")


@kl.kernel
def documented_forms(x: V3, vol: kl.ndarray(kl.f32, ndim=3), out: kl.ndarray(kl.f32, ndim=2)):
    for i in range(x.shape[0]):
        v: kl.vec3 = 0.0
        v += abs(-x[i])
        iv = kl.ivec2(1.7, 2)
        bits = (iv | kl.ivec2(4, 8)) ^ 1
        I = kl.Vector([i % 2, 1])
        out[i, 0] = v.sum()
        out[i, 1] = bits.sum() + (~iv).x
        out[i, 2] = vol[I, 2]
        sw = v.xxyy
        out[i, 3] = sw.sum() + sw.n
        s = kl.math.clamp(x[i].x, 0.25, 0.5)
        out[i, 4] = s + kl.math.sign(x[i] - 0.5).sum()


def test_documented_forms() -> None:
    x = rand(6, 3)
    vol = rand(2, 2, 3)
    out = np.zeros((6, 5), np.float32)
    documented_forms(x, vol, out)
    np.testing.assert_allclose(out[:, 0], x.sum(1), rtol=1e-6)
    assert (out[:, 1] == ((1 | 4) ^ 1) + ((2 | 8) ^ 1) + ~1).all()
    np.testing.assert_allclose(out[:, 2], vol[np.arange(6) % 2, 1, 2])
    np.testing.assert_allclose(out[:, 3], 2 * x[:, 0] + 2 * x[:, 1] + 4, rtol=1e-6)
    np.testing.assert_allclose(out[:, 4], np.clip(x[:, 0], 0.25, 0.5) + np.sign(x - 0.5).sum(1), rtol=1e-6)


# ----------------------------------------------------------------- vector kernel arguments
@kl.kernel
def affine(x: V2, g: kl.vec2, m: kl.mat2, s: kl.f32):
    for i in range(x.shape[0]):
        x[i] = m @ x[i] * s + g


def test_vector_and_matrix_kernel_arguments_direct() -> None:
    x = rand(5, 2)
    want = x @ np.float32([[0, 1], [1, 0]]).T * 2 + [1, 2]
    affine(x, (1.0, 2.0), [[0, 1], [1, 0]], 2.0)
    np.testing.assert_allclose(x, want, rtol=1e-6)
    affine(x, np.float32([0, 0]), np.eye(2), 1.0)  # the compiled kernel's binder from now on
    np.testing.assert_allclose(x, want, rtol=1e-6)
    with pytest.raises(kl.ArgumentError, match=r"argument 'g': expected a f32 vector/matrix of shape \(2,\)"):
        affine(x, (1.0, 2.0, 3.0), np.eye(2), 1.0)
    with pytest.raises(kl.ArgumentError, match=r"argument 'm'"):
        affine(x, (1.0, 2.0), "eye", 1.0)


def test_vector_graph_args_and_constants(tmp_path: Path) -> None:
    g = kl.GraphBuilder()
    g.dispatch(affine, kl.Arg("x", V2), kl.Arg("g", kl.vec2), ((0.0, 1.0), (1.0, 0.0)), 2.0)
    with pytest.raises(kl.ArgumentError, match=r"expects kl.mat2"):
        g.dispatch(affine, kl.Arg("x", V2), kl.Arg("g", kl.vec2), (1.0, 2.0), 2.0)
    path = tmp_path / "affine.kiln"
    g.compile().save(path)
    loaded = kl.load(path)
    x = rand(7, 2)
    want = x[:, ::-1] * 2 + [3, -1]
    loaded.run({"x": x, "g": [3.0, -1.0]})
    np.testing.assert_allclose(x, want, rtol=1e-6)
    with pytest.raises(kl.ArgumentError, match=r"shape \(2,\)"):
        loaded.run({"x": x, "g": 1.0})


@kl.kernel
def list_stores(gv: kl.types.ndarray(dtype=kl.math.vec2, ndim=2), w_out: kl.ndarray(kl.f32, ndim=2)):
    for i, j in kl.ndrange(gv.shape[0], gv.shape[1]):
        gv[i, j] = [0.5, i]
        fx = kl.vec2(0.25, 0.75) + j
        w = kl.Matrix([0.5 * (1.5 - fx) ** 2, 0.75 - (fx - 1.0) ** 2])  # rows from vectors: 2x2
        w_out[i, j] = w[1, 0] + w[0, 1]


def test_list_stores_and_matrix_of_vector_rows() -> None:
    gv = np.ones((3, 4, 2), np.float32)
    w_out = np.zeros((3, 4), np.float32)
    list_stores(gv, w_out)
    np.testing.assert_array_equal(gv[..., 0], 0.5)
    np.testing.assert_array_equal(gv[..., 1], np.arange(3)[:, None] + np.zeros(4))
    j = np.arange(4, dtype=np.float32)
    want = (0.75 - (0.25 + j - 1.0) ** 2) + 0.5 * (1.5 - (0.75 + j)) ** 2
    np.testing.assert_allclose(w_out, np.broadcast_to(want, (3, 4)), rtol=1e-6)


@kl.kernel
def selects(x: V2, y: V2):
    for i in range(x.shape[0]):
        v = x[i]
        y[i] = v if v.x > 0.5 else -v
        y[i] += kl.select(v > 0.5, v, kl.vec2(0.0))


def test_vector_selects() -> None:
    x = rand(16, 2)
    y = np.zeros_like(x)
    selects(x, y)
    want = np.where(x[:, :1] > 0.5, x, -x) + np.where(x > 0.5, x, 0)
    np.testing.assert_allclose(y, want)


def test_host_side_vector_ndarrays() -> None:
    x = kl.Vector.ndarray(2, kl.f32, shape=5)
    c = kl.Matrix.ndarray(2, 2, kl.f32, shape=(3, 4))
    assert x.shape == (5, 2) and x.dtype == np.float32 and c.shape == (3, 4, 2, 2)
    scale_v2(x)
    with pytest.raises(ValueError, match="1..4"):
        kl.Vector.ndarray(5, kl.f32, shape=2)


@kl.func
def spring_force(d: kl.vec3, rest: kl.f32, k: kl.f32) -> kl.f32:
    return k * (d.norm() - rest)


@kl.kernel
def springs(x: V3, f: F1):
    for i in range(x.shape[0]):
        f[i] = spring_force(x[i] - kl.vec3(0.5), 0.25, 2.0)


def test_vector_arguments_to_funcs() -> None:
    x = rand(10, 3)
    f = np.zeros(10, np.float32)
    springs(x, f)
    np.testing.assert_allclose(f, 2 * (np.linalg.norm(x - 0.5, axis=1) - 0.25), rtol=1e-5, atol=1e-6)
    src = ("@kl.func\ndef g(v: kl.vec2) -> kl.f32:\n    return v.x\n\n@kl.kernel\ndef bad(o: kl.ndarray(kl.f32, ndim=1)):\n"
           "    for i in range(o.shape[0]):\n        o[i] = g(kl.vec3(1.0))\n")
    _error(src, (F1,), r"argument 'v' of func 'g' expects kl.vec2, got a vector of shape \(3,\)")


def test_manifest_element_shapes_are_validated() -> None:
    import json
    import struct

    from kiln.artifact import container
    from kiln.runtime.compiled import load_bytes

    g = kl.GraphBuilder()
    g.dispatch(affine, kl.Arg("x", V2), kl.Arg("g", kl.vec2), ((1.0, 0.0), (0.0, 1.0)), 1.0)
    m = kl.Module()
    m.add_graph("main", g)
    data = m.compile().to_bytes()

    def edited(edit) -> bytes:
        m_len = struct.unpack_from("<Q", data, 24)[0]
        doc = json.loads(data[64:64 + m_len])
        edit(doc)
        entry = doc.pop("blobs")[0]
        return container.pack(doc, {entry["name"]: data[entry["offset"]:entry["offset"] + entry["size"]]})

    params = lambda d: d["graphs"]["main"]["params"]
    load_bytes(edited(lambda d: None))
    with pytest.raises(kl.ArtifactError, match="element_shape"):
        load_bytes(edited(lambda d: params(d)[0].__setitem__("element_shape", [2, 2])))  # ndim 2 array
    with pytest.raises(kl.ArtifactError, match="vector argument 'g' needs 2 scalar params"):
        load_bytes(edited(lambda d: params(d)[2].__delitem__("element_shape")))
    with pytest.raises(kl.ArtifactError, match="element_shape"):
        load_bytes(edited(lambda d: params(d)[0].__setitem__("element_shape", [9])))
    old = edited(lambda d: [p.pop("element_shape", None) for p in params(d)[:1]])
    x = rand(3, 2)
    load_bytes(old).graphs["main"].run({"x": x, "g": (0.0, 0.0)})  # an array without element_shape still runs


@kl.kernel
def svd_in_if(a: M2, out: F1):
    for i in range(a.shape[0]):
        out[i] = 0.0
        if kl.svd(a[i])[1][0, 0] > 1.0:
            out[i] = 1.0


def test_decomposition_in_an_if_test_is_computed_before_the_if() -> None:
    a = (RNG.random((50, 2, 2)) * 2 - 1).astype(np.float32)
    out = np.zeros(50, np.float32)
    svd_in_if(a, out)
    np.testing.assert_array_equal(out, (np.linalg.svd(a, compute_uv=False)[:, 0] > 1.0).astype(np.float32))
    text = format_ir(lower_kernel(svd_in_if, (M2, F1)))
    first_if = text.index("if ")
    assigned_after = [ln for ln in text[first_if:].splitlines() if ln.strip().startswith("decomp.")]
    assert text.rfind("decomp.", 0, first_if) > 0 and not assigned_after
