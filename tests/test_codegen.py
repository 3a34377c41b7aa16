"""kiln.codegen: hand-built kernel IR -> object code, loaded with llvmlite's MCJIT and called
through ctypes with argument blocks packed per kiln.abi; results are compared with numpy."""

from __future__ import annotations

import ctypes
import dataclasses
import math

import numpy as np
import pytest

from kiln.abi import block_struct, layout_params
from kiln.errors import KernelError, KilnError, TargetError
from kiln.ir import nodes as N
from kiln.ir.graph import ArgBinding, ConstBinding, Dispatch, GraphIR
from kiln.passes import lower_aug_stores, plan_parallel
from kiln.types import (
    SCALAR_TYPES,
    NdArrayType,
    bool_,
    f16,
    f32,
    f64,
    i8,
    i32,
    i64,
    u8,
    u64,
)

llvm = pytest.importorskip("llvmlite.binding")

from kiln.codegen import ObjectCode, build_object, emit_llvm_ir
from kiln.codegen.nvptx import build_ptx, nvptx_available
from kiln.codegen.target import (
    ALLOWED_EXTERNAL_SYMBOLS,
    RUNTIME_GLOBALS,
    TargetSpec,
    create_target_machine,
    elf_relocation_types,
    elf_section_names,
    named_target,
    object_exported_symbols,
    object_external_symbols,
)

L = N.NO_LOC
B = N.BinaryOp
CMP = N.CompareOp
HOST = named_target("host")
BUILT: list[ObjectCode] = []


# ---------------------------------------------------------------------------------------------
# IR construction helpers
# ---------------------------------------------------------------------------------------------

def c(v, t=i64):
    return N.Const(t, L, v)


def var(name, t=i64):
    return N.Var(t, L, name)


def arr(name, dt, nd=1):
    return N.ArrayRef(name, NdArrayType(dt, nd), L)


def bin_(op, a, b, t=None):
    return N.Binary(t or a.type, L, op, a, b)


def cmp(op, a, b):
    return N.Compare(bool_, L, op, a, b)


def ld(a, *idx):
    return N.Load(a.type.dtype, L, a, tuple(idx))


def st(a, idx, v):
    return N.Store(L, a, tuple(idx), v)


def cast(v, t):
    return N.Cast(t, L, v)


def shape(a, d=0):
    return N.Shape(i64, L, a, d)


def assign(name, v):
    return N.Assign(L, name, v)


def prange(var_, start, stop, step=None):
    return N.ParallelRange(var_, start, stop, step or c(1))


def pfor(dims, body):
    return N.ParallelFor(L, tuple(dims), tuple(body))


def param(name, t):
    return N.Param(name, t, L)


def raw_kernel(name, params, body, locals_=(), funcs=()):
    f = N.FunctionIR(name, tuple(params), None, tuple(locals_), tuple(body), L, True)
    return N.KernelIR(f, tuple(funcs), name)


def kernel(name, params, body, locals_=(), funcs=()):
    """A hand-built kernel through the passes codegen expects (AugStore lowering, plans)."""
    return plan_parallel(lower_aug_stores(raw_kernel(name, params, body, locals_, funcs)))


def builtin(name, *args, t=None):
    return N.BuiltinCall(t or args[0].type, L, name, tuple(args))


# ---------------------------------------------------------------------------------------------
# loading and calling
# ---------------------------------------------------------------------------------------------

class Loaded:
    def __init__(self, kernels, graphs=(), target=HOST, opt_level=3):
        self.oc = build_object(kernels, graphs, target, opt_level)
        BUILT.append(self.oc)
        self.layouts = {k.kernel.name: layout_params([(p.name, p.type) for p in k.kernel.params])
                        for k in kernels}
        for g in graphs:
            self.layouts[g.name] = layout_params(list(g.params))
        tm = create_target_machine(target)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(self.oc.blob))
        self.engine.finalize_object()

    def _entry(self, name):
        sym = self.oc.kernel_symbols.get(name) or self.oc.graph_symbols[name]
        addr = self.engine.get_function_address(sym)
        assert addr
        return ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)(addr)

    def __call__(self, name, *args):
        layout = self.layouts[name]
        assert len(args) == len(layout)
        vals = []
        for p, a in zip(layout, args):
            if p.kind == "ndarray":
                assert isinstance(a, np.ndarray) and a.ndim == p.ndim
                assert a.dtype == np.dtype(p.dtype if p.dtype == "bool" else a.dtype)
                vals.append(a.ctypes.data)
                vals += list(a.shape)
                vals += [s // a.itemsize for s in a.strides]     # element strides (kiln.abi)
            else:
                vals.append(a)
        s = block_struct(layout)
        buf = ctypes.create_string_buffer(s.pack(*vals), max(8, s.size))
        return self._entry(name)(ctypes.addressof(buf))

    def global_addr(self, name):
        a = self.engine.get_global_value_address(name)
        assert a
        return a

    def set_threads(self, n, min_iters=0):
        gomp = ctypes.CDLL("libgomp.so.1")
        ptr = ctypes.c_void_p
        if n > 1:
            vals = [ctypes.cast(gomp.GOMP_parallel, ptr).value,
                    ctypes.cast(gomp.omp_get_thread_num, ptr).value,
                    ctypes.cast(gomp.omp_get_num_threads, ptr).value]
        else:
            vals = [0, 0, 0]
        for name, v in zip(RUNTIME_GLOBALS[:3], vals):
            ctypes.c_void_p.from_address(self.global_addr(name)).value = v
        ctypes.c_int32.from_address(self.global_addr("kiln_rt_num_threads")).value = n
        ctypes.c_int64.from_address(self.global_addr("kiln_rt_min_parallel_iters")).value = min_iters


RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------

def _saxpy():
    X, Y = arr("x", f32), arr("y", f32)
    i = var("i")
    body = [st(Y, [i], bin_(B.ADD, bin_(B.MUL, var("a", f32), ld(X, i)), ld(Y, i)))]
    return kernel("saxpy", [param("a", f32), param("x", X.type), param("y", Y.type)],
                  [pfor([prange("i", c(0), shape(X))], body)], [("i", i64)])


@pytest.mark.parametrize("opt_level", [3, 0])
def test_saxpy_and_vectorized(opt_level):
    lib = Loaded([_saxpy()], opt_level=opt_level)
    for n in (0, 1, 7, 1000, 4099):
        x = RNG.standard_normal(n).astype(np.float32)
        y = RNG.standard_normal(n).astype(np.float32)
        ref = np.float32(2.5) * x + y
        assert lib("saxpy", 2.5, x, y) == 0
        np.testing.assert_allclose(y, ref, rtol=1e-6)
    if opt_level == 3:     # AVX2 host (znver3): 8 lanes
        assert "<8 x float>" in lib.oc.llvm_ir or "<16 x float>" in lib.oc.llvm_ir
    assert lib.oc.kernel_symbols == {"saxpy": "kiln_kernel_saxpy"}
    assert set(RUNTIME_GLOBALS) <= object_exported_symbols(lib.oc.blob)


def _stencil():
    A, O = arr("a", f64, 2), arr("o", f64, 2)
    i, j = var("i"), var("j")

    def at(di, dj):
        return ld(A, bin_(B.ADD, i, c(di)), bin_(B.ADD, j, c(dj)))

    s = bin_(B.ADD, bin_(B.ADD, at(-1, 0), at(1, 0)), bin_(B.ADD, at(0, -1), at(0, 1)))
    body = [st(O, [i, j], bin_(B.MUL, c(0.25, f64), s))]
    n_1 = bin_(B.SUB, shape(A, 0), c(1))
    m_1 = bin_(B.SUB, shape(A, 1), c(1))
    return kernel("stencil", [param("a", A.type), param("o", O.type)],
                  [pfor([prange("i", c(1), n_1), prange("j", c(1), m_1)], body)],
                  [("i", i64), ("j", i64)])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_stencil_ndrange(threads):
    lib = Loaded([_stencil()])
    lib.set_threads(threads, min_iters=0)
    for n, m in ((2, 2), (3, 5), (37, 29), (64, 70)):
        a = RNG.standard_normal((n, m))
        o = np.zeros((n, m))
        lib("stencil", a, o)
        ref = np.zeros((n, m))
        ref[1:-1, 1:-1] = 0.25 * ((a[:-2, 1:-1] + a[2:, 1:-1]) + (a[1:-1, :-2] + a[1:-1, 2:]))
        np.testing.assert_allclose(o, ref, rtol=1e-12)


def _atomics():
    X, S, H, C = arr("x", f32), arr("s", f64), arr("hits", i32), arr("cnt", i64)
    i = var("i")
    body = [
        N.ExprStmt(L, N.AtomicRMW(f64, L, N.AtomicOp.ADD, S, (c(0),), cast(ld(X, i), f64))),
        N.ExprStmt(L, N.AtomicRMW(f64, L, N.AtomicOp.MAX, S, (c(1),), cast(ld(X, i), f64))),
        N.ExprStmt(L, N.AtomicRMW(i32, L, N.AtomicOp.ADD, H, (i,), c(1, i32))),
        N.ExprStmt(L, N.AtomicRMW(i64, L, N.AtomicOp.ADD, C, (c(0),), c(1))),
        N.ExprStmt(L, N.AtomicRMW(i64, L, N.AtomicOp.MIN, C, (c(1),), i)),
        N.AugStore(L, N.AtomicOp.SUB, S, (c(2),), cast(ld(X, i), f64)),
    ]
    return kernel("atom", [param("x", X.type), param("s", S.type), param("hits", H.type),
                           param("cnt", C.type)],
                  [pfor([prange("i", c(0), shape(X))], body)], [("i", i64)])


@pytest.mark.parametrize("threads", [1, 2])
def test_atomic_sum_parallel(threads):
    lib = Loaded([_atomics()])
    lib.set_threads(threads, min_iters=16)
    for n in (5, 10001, 40000):
        x = RNG.standard_normal(n).astype(np.float32)
        s = np.array([0.0, -np.inf, 0.0])
        hits = np.zeros(n, np.int32)
        cnt = np.array([0, 10**9], np.int64)
        assert lib("atom", x, s, hits, cnt) == 0
        assert cnt[0] == n and cnt[1] == 0
        assert (hits == 1).all()
        np.testing.assert_allclose(s[0], x.astype(np.float64).sum(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(s[2], -x.astype(np.float64).sum(), rtol=1e-9, atol=1e-9)
        assert s[1] == x.max()


def _elementwise(name, dt_in, dt_out, fn, nargs=2):
    """out[i] = fn(a[i], b[i], ...)"""
    ins = [arr(n, dt_in) for n in "abc"[:nargs]]
    O = arr("o", dt_out)
    i = var("i")
    body = [st(O, [i], fn(*[ld(a, i) for a in ins]))]
    return kernel(name, [param(a.name, a.type) for a in ins] + [param("o", O.type)],
                  [pfor([prange("i", c(0), shape(O))], body)], [("i", i64)])


@pytest.mark.parametrize("dt", [i8, i32, i64, u8, u64])
def test_int_floordiv_mod(dt):
    fd = _elementwise("fd", dt, dt, lambda a, b: bin_(B.FLOORDIV, a, b))
    md = _elementwise("md", dt, dt, lambda a, b: bin_(B.MOD, a, b))
    lib = Loaded([fd, md])
    info = np.iinfo(dt.np_dtype)
    a = RNG.integers(info.min, info.max, 2000, dtype=dt.np_dtype, endpoint=True)
    b = RNG.integers(-7 if dt.kind == "i" else 0, 8, 2000).astype(dt.np_dtype)
    a[:4] = [info.min, info.min, 7, info.max]
    b[:4] = [-1 if dt.kind == "i" else 1, 0, 0, 0]
    q = np.empty_like(a)
    r = np.empty_like(a)
    lib("fd", a, b, q)
    lib("md", a, b, r)
    nz = b != 0
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(q[nz], np.floor_divide(a[nz], b[nz]))
        np.testing.assert_array_equal(r[nz], np.remainder(a[nz], b[nz]))
    assert (q[~nz] == 0).all() and (r[~nz] == 0).all()
    if dt.kind == "i":
        assert q[0] == info.min and r[0] == 0     # INT_MIN // -1 wraps


@pytest.mark.parametrize("dt", [f32, f64])
def test_float_floordiv_mod(dt):
    fd = _elementwise("fd", dt, dt, lambda a, b: bin_(B.FLOORDIV, a, b))
    md = _elementwise("md", dt, dt, lambda a, b: bin_(B.MOD, a, b))
    lib = Loaded([fd, md])
    a = (RNG.standard_normal(500) * 10).astype(dt.np_dtype)
    b = (RNG.standard_normal(500) * 3).astype(dt.np_dtype)
    a[:6] = [1.0, -1.0, 5.0, -5.0, 0.0, 7.5]
    b[:6] = [0.1, 0.1, -3.0, 3.0, -2.0, 0.0]
    q, r = np.empty_like(a), np.empty_like(a)
    lib("fd", a, b, q)
    lib("md", a, b, r)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(q, np.floor_divide(a, b))
        np.testing.assert_array_equal(r, np.remainder(a, b))
    if dt is f64:
        assert q[0] == 1.0 // 0.1 and r[1] == -1.0 % 0.1


def test_every_dtype_load_store():
    kernels = []
    for t in SCALAR_TYPES:
        X, O = arr("x", t), arr("o", t)
        i = var("i")
        body = [pfor([prange("i", c(0), shape(X))], [st(O, [i], ld(X, i))]),
                st(O, [c(0)], var("s", t))]
        kernels.append(kernel(f"copy_{t.name}", [param("x", X.type), param("s", t), param("o", O.type)],
                              body, [("i", i64)]))
    lib = Loaded(kernels)
    for t in SCALAR_TYPES:
        dt = t.np_dtype
        if t.is_bool:
            x = RNG.integers(0, 2, 33).astype(bool)
            s = True
        elif t.is_int:
            info = np.iinfo(dt)
            x = RNG.integers(info.min, info.max, 33, dtype=dt, endpoint=True)
            s = int(info.max) if t.kind == "u" else int(info.min)
        else:
            x = RNG.standard_normal(33).astype(dt)
            s = -1.5
        o = np.zeros_like(x)
        lib(f"copy_{t.name}", x, s, o)
        np.testing.assert_array_equal(o[1:], x[1:])
        assert o[0] == dt.type(s)


def test_casts_shifts_and_f16():
    def k(name, src, dst, fn):
        return _elementwise(name, src, dst, fn, nargs=1)

    kernels = [
        k("f2i", f64, i32, lambda a: cast(a, i32)),
        k("f2u8", f32, u8, lambda a: cast(a, u8)),
        k("d2h", f64, f16, lambda a: cast(a, f16)),
        k("i2h", i64, f16, lambda a: cast(a, f16)),
        k("h2d", f16, f64, lambda a: cast(a, f64)),
        k("hadd", f16, f16, lambda a: bin_(B.MUL, bin_(B.ADD, a, a), a)),
        k("f2b", f64, bool_, lambda a: cast(a, bool_)),
        _elementwise("shl", i32, i32, lambda a, b: bin_(B.SHL, a, b)),
        _elementwise("shr", i32, i32, lambda a, b: bin_(B.SHR, a, b)),
        _elementwise("ushr", u8, u8, lambda a, b: bin_(B.SHR, a, cast(b, i64), u8)),
    ]
    lib = Loaded(kernels)
    x = np.array([1.9, -1.9, 0.0, 3e9, -3e9, np.nan, 1e300, 65519.99, 1 + 2.0**-11 + 2.0**-40])
    o = np.zeros(len(x), np.int32)
    lib("f2i", x, o)
    assert list(o[:5]) == [1, -1, 0, 2**31 - 1, -(2**31)] and o[5] == 0
    u = np.zeros(4, np.uint8)
    lib("f2u8", np.array([3.7, -5, 300, 255.5], np.float32), u)
    assert list(u) == [3, 0, 255, 255]
    h = np.zeros(len(x), np.float16)
    lib("d2h", x, h)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(h, x.astype(np.float16))
    ints = np.array([0, 1, -7, 2049, 65504, 70000, -(2**62), 2**53 + 1], np.int64)
    h = np.zeros(len(ints), np.float16)
    lib("i2h", ints, h)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(h, ints.astype(np.float16))
    hv = RNG.standard_normal(100).astype(np.float16)
    d = np.zeros(100)
    lib("h2d", hv, d)
    np.testing.assert_array_equal(d, hv.astype(np.float64))
    hh = np.zeros(100, np.float16)
    lib("hadd", hv, hh)
    np.testing.assert_array_equal(hh, (hv + hv) * hv)
    bb = np.zeros(3, bool)
    lib("f2b", np.array([0.0, np.nan, -2.0]), bb)
    assert list(bb) == [False, True, True]
    a = np.array([1, -8, 5, -1, 3, 1], np.int32)
    n = np.array([3, 1, 40, 100, -1, 31], np.int32)
    o = np.zeros(6, np.int32)
    lib("shl", a, n, o)
    assert list(o) == [8, -16, 0, 0, 0, -(2**31)]
    lib("shr", a, n, o)
    assert list(o) == [0, -4, 0, -1, 0, 0]
    ua = np.array([200, 200, 200], np.uint8)
    un = np.array([1, 8, 255], np.uint8)
    uo = np.zeros(3, np.uint8)
    lib("ushr", ua, un, uo)
    assert list(uo) == [100, 0, 0]


def test_int_pow():
    kernels = [_elementwise("pw64", i64, i64, lambda a, b: bin_(B.POW, a, b)),
               _elementwise("pw8", i8, i8, lambda a, b: bin_(B.POW, a, b)),
               _elementwise("pwu", u64, u64, lambda a, b: bin_(B.POW, a, b)),
               _elementwise("pwf", f64, f64, lambda a, b: bin_(B.POW, a, b))]
    lib = Loaded(kernels)
    a = np.array([2, 3, -2, 1, -1, -1, 0, 0, 5, 7, 2], np.int64)
    b = np.array([10, 0, 3, -5, -3, -4, 0, 3, -1, 40, 64], np.int64)
    o = np.zeros_like(a)
    lib("pw64", a, b, o)
    ref = [(x ** y if y >= 0 else (1 if x == 1 else ((-1) ** (-y) if x == -1 else 0)))
           for x, y in zip(a.tolist(), b.tolist())]
    ref = [((r + 2**63) % 2**64) - 2**63 for r in ref]
    assert o.tolist() == ref
    a8, b8, o8 = np.array([3, -2, 2], np.int8), np.array([5, 7, 8], np.int8), np.zeros(3, np.int8)
    lib("pw8", a8, b8, o8)
    assert o8.tolist() == [(243 + 128) % 256 - 128, -128, 0]
    au, bu, ou = np.array([3, 2], np.uint64), np.array([41, 63], np.uint64), np.zeros(2, np.uint64)
    lib("pwu", au, bu, ou)
    assert ou.tolist() == [3**41 % 2**64, 2**63]
    fa, fb, fo = np.array([2.0, 9.0, -8.0]), np.array([0.5, 0.5, 1 / 3]), np.zeros(3)
    lib("pwf", fa, fb, fo)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(fo, np.power(fa, fb))


def test_func_call():
    # func scale(v: f32, x: arr, i: i64) -> f32: v = v * 2; return v + x[i]
    X = arr("x", f32)
    fn = N.FunctionIR("scale_f32", (param("v", f32), param("x", X.type), param("i", i64)), f32, (),
                      (assign("v", bin_(B.MUL, var("v", f32), c(2.0, f32))),
                       N.Return(L, bin_(B.ADD, var("v", f32), ld(X, var("i"))))), L, False)
    # func bump(o: arr, i: i64) (no return value)
    O = arr("o", f32)
    bump = N.FunctionIR("bump", (param("o", O.type), param("i", i64)), None, (),
                        (st(O, [var("i")], bin_(B.ADD, ld(O, var("i")), c(1.0, f32))), N.Return(L, None)),
                        L, False)
    i = var("i")
    body = [st(O, [i], N.Call(f32, L, "scale_f32", (ld(O, i), X, i))),
            N.ExprStmt(L, N.Call(bool_, L, "bump", (O, i)))]
    k = kernel("callk", [param("x", X.type), param("o", O.type)],
               [pfor([prange("i", c(0), shape(X))], body)], [("i", i64)], funcs=(fn, bump))
    lib = Loaded([k])
    x = RNG.standard_normal(50).astype(np.float32)
    o = RNG.standard_normal(50).astype(np.float32)
    ref = o * 2 + x + 1
    lib("callk", x, o)
    np.testing.assert_allclose(o, ref, rtol=1e-6)


def test_serial_control_flow():
    O = arr("o", i64)
    acc, i, w = var("acc"), var("i"), var("w")
    # acc = 0; for i in range(n, -3, -2): if i % 3 == 0: continue; if i < 4: break; acc += i
    # then while w < 1000: w = w * 3 + 1 ; o[0] = acc; o[1] = w; for i in range(5, 0): o[2] = 99
    body = [
        assign("acc", c(0)),
        N.For(L, "i", var("n"), c(-3), c(-2), (
            N.If(L, cmp(CMP.EQ, bin_(B.MOD, i, c(3)), c(0)), (N.Continue(L),), ()),
            N.If(L, cmp(CMP.LT, i, c(4)), (N.Break(L),), ()),
            assign("acc", bin_(B.ADD, acc, i)),
        )),
        assign("w", c(1)),
        N.While(L, cmp(CMP.LT, w, c(1000)), (assign("w", bin_(B.ADD, bin_(B.MUL, w, c(3)), c(1))),)),
        st(O, [c(0)], acc), st(O, [c(1)], w), st(O, [c(2)], c(7)),
        N.For(L, "i", c(5), c(0), c(1), (st(O, [c(2)], c(99)),)),
        N.For(L, "i", c(0), c(10), var("step"), (
            assign("i", bin_(B.ADD, i, c(100))),             # does not change the iteration
            st(O, [c(3)], bin_(B.ADD, ld(O, c(3)), i)),)),
    ]
    k = kernel("ctl", [param("n", i64), param("step", i64), param("o", O.type)], body,
               [("acc", i64), ("i", i64), ("w", i64)])
    lib = Loaded([k])

    def ref(n, step):
        acc = 0
        for i in range(n, -3, -2):
            if i % 3 == 0:
                continue
            if i < 4:
                break
            acc += i
        w = 1
        while w < 1000:
            w = w * 3 + 1
        s = sum(i + 100 for i in range(0, 10, step)) if step else 0
        return [acc, w, 7, s]

    for n, step in ((20, 3), (21, -1), (3, 0), (100, 1)):
        o = np.zeros(4, np.int64)
        lib("ctl", n, step, o)
        assert o.tolist() == ref(n, step)


def test_select_and_logical_short_circuit():
    X, O = arr("x", f32), arr("o", f32)
    i = var("i")
    n = shape(X)
    far = bin_(B.ADD, i, c(1 << 40))          # would crash if evaluated
    nxt = bin_(B.ADD, i, c(1))
    has_next = cmp(CMP.LT, nxt, n)
    # o[i] = x[i+1] if i+1 < n else (x[far] if i >= n else -1)
    sel = N.Select(f32, L, has_next, ld(X, nxt),
                   N.Select(f32, L, cmp(CMP.GE, i, n), ld(X, far), c(-1.0, f32)))
    # (i >= n and x[far] > 0) or (i + 1 < n and x[i+1] > 0)  -> add 10
    cond = N.Logical(bool_, L, N.LogicalOp.OR,
                     N.Logical(bool_, L, N.LogicalOp.AND, cmp(CMP.GE, i, n), cmp(CMP.GT, ld(X, far), c(0.0, f32))),
                     N.Logical(bool_, L, N.LogicalOp.AND, has_next, cmp(CMP.GT, ld(X, nxt), c(0.0, f32))))
    body = [st(O, [i], sel), N.If(L, cond, (st(O, [i], bin_(B.ADD, ld(O, i), c(10.0, f32))),), ())]
    k = kernel("sel", [param("x", X.type), param("o", O.type)],
               [pfor([prange("i", c(0), n)], body)], [("i", i64)])
    lib = Loaded([k])
    x = RNG.standard_normal(1000).astype(np.float32)
    o = np.zeros_like(x)
    lib("sel", x, o)
    ref = np.append(x[1:], np.float32(-1))
    ref = np.where(np.append(x[1:] > 0, False), ref + 10, ref)
    np.testing.assert_array_equal(o, ref)


UNARY = {
    "sqrt": np.sqrt, "rsqrt": lambda v: 1 / np.sqrt(v), "exp": np.exp, "log": np.log, "sin": np.sin,
    "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "tanh": np.tanh, "floor": np.floor, "ceil": np.ceil, "round": np.round, "abs": np.abs,
}
BINARY = {"atan2": np.arctan2, "pow": np.power, "min": np.fmin, "max": np.fmax}


@pytest.mark.parametrize("dt", [f32, f64])
def test_math_builtins(dt):
    kernels = [_elementwise(f"u_{n}", dt, dt, lambda a, n=n: builtin(n, a), nargs=1) for n in UNARY]
    kernels += [_elementwise(f"b_{n}", dt, dt, lambda a, b, n=n: builtin(n, a, b)) for n in BINARY]
    kernels += [_elementwise(f"p_{n}", dt, bool_, lambda a, n=n: builtin(n, a, t=bool_), nargs=1)
                for n in ("isnan", "isinf")]
    lib = Loaded(kernels)
    x = RNG.uniform(-0.99, 0.99, 257).astype(dt.np_dtype)
    x[:4] = [np.nan, np.inf, -np.inf, 2.5]
    y = RNG.uniform(0.1, 3, 257).astype(dt.np_dtype)
    y[5:7] = np.nan
    rtol = 2e-6 if dt is f32 else 1e-13
    with np.errstate(all="ignore"):
        for n, ref in UNARY.items():
            o = np.zeros_like(x)
            lib(f"u_{n}", x, o)
            np.testing.assert_allclose(o, ref(x), rtol=rtol, atol=1e-30, err_msg=n)
        for n, ref in BINARY.items():
            o = np.zeros_like(x)
            lib(f"b_{n}", x, y, o)
            np.testing.assert_allclose(o, ref(x, y), rtol=rtol, atol=1e-30, err_msg=n)
    for n, ref in (("isnan", np.isnan), ("isinf", np.isinf)):
        o = np.zeros(len(x), bool)
        lib(f"p_{n}", x, o)
        np.testing.assert_array_equal(o, ref(x))


def test_int_builtins_and_compare():
    kernels = [_elementwise("imin", i32, i32, lambda a, b: builtin("min", a, b)),
               _elementwise("umax", u8, u8, lambda a, b: builtin("max", a, b)),
               _elementwise("iabs", i32, i32, lambda a: builtin("abs", a), nargs=1),
               _elementwise("fne", f64, bool_, lambda a, b: cmp(CMP.NE, a, b)),
               _elementwise("flt", f64, bool_, lambda a, b: cmp(CMP.LT, a, b)),
               _elementwise("ult", u64, bool_, lambda a, b: cmp(CMP.LT, a, b))]
    lib = Loaded(kernels)
    a = np.array([-5, 3, -(2**31)], np.int32)
    b = np.array([2, -9, 0], np.int32)
    o = np.zeros(3, np.int32)
    lib("imin", a, b, o)
    assert o.tolist() == [-5, -9, -(2**31)]
    lib("iabs", a, o)
    assert o.tolist() == [5, 3, -(2**31)]
    ua, ub, uo = np.array([200, 3], np.uint8), np.array([100, 250], np.uint8), np.zeros(2, np.uint8)
    lib("umax", ua, ub, uo)
    assert uo.tolist() == [200, 250]
    fa, fb = np.array([np.nan, 1.0, 2.0]), np.array([np.nan, 1.0, np.nan])
    bo = np.zeros(3, bool)
    lib("fne", fa, fb, bo)
    assert bo.tolist() == [True, False, True]
    lib("flt", np.array([np.nan, 1.0, 0.5]), np.array([1.0, np.nan, 1.0]), bo)
    assert bo.tolist() == [False, False, True]
    lib("ult", np.array([2**63, 1, 5], np.uint64), np.array([1, 2**63, 5], np.uint64), bo)
    assert bo.tolist() == [False, True, False]


def test_graph_entry_three_kernels():
    # k_fill(o, v): o[i] = v ; k_axpy(a, x, y): y += a*x ; k_scale(y, s): y *= s
    Xa, Ya = arr("x", f32), arr("y", f32)
    i = var("i")
    k_fill = kernel("fill", [param("y", Ya.type), param("v", f32)],
                    [pfor([prange("i", c(0), shape(Ya))], [st(Ya, [i], var("v", f32))])], [("i", i64)])
    k_scale = kernel("scale", [param("y", Ya.type), param("s", f32)],
                     [pfor([prange("i", c(0), shape(Ya))],
                           [st(Ya, [i], bin_(B.MUL, ld(Ya, i), var("s", f32)))])], [("i", i64)])
    g = GraphIR("pipe.line", (("xs", Xa.type), ("ys", Ya.type), ("alpha", f32)), (
        Dispatch("fill", (ArgBinding("ys"), ConstBinding(1.5, f32))),
        Dispatch("saxpy", (ArgBinding("alpha"), ArgBinding("xs"), ArgBinding("ys"))),
        Dispatch("scale", (ArgBinding("ys"), ConstBinding(-2.0, f32))),
    ))
    lib = Loaded([k_fill, _saxpy(), k_scale], [g])
    assert lib.oc.graph_symbols == {"pipe.line": "kiln_graph_pipe_line"}
    x = RNG.standard_normal(100).astype(np.float32)
    y = np.zeros(100, np.float32)
    assert lib("pipe.line", x, y, 3.0) == 0
    np.testing.assert_allclose(y, (np.float32(1.5) + 3 * x) * -2, rtol=1e-6)


def test_symbol_sanitizing_and_collisions():
    ks = [kernel(n, [param("o", NdArrayType(i32, 1))], [st(arr("o", i32), [c(0)], c(v, i32))])
          for v, n in enumerate(["a.b", "a_b", "x<y>"])]
    lib = Loaded(ks)
    assert lib.oc.kernel_symbols == {"a.b": "kiln_kernel_a_b", "a_b": "kiln_kernel_a_b_2",
                                     "x<y>": "kiln_kernel_x_y_"}
    for v, n in enumerate(["a.b", "a_b", "x<y>"]):
        o = np.zeros(1, np.int32)
        lib(n, o)
        assert o[0] == v


def test_targets():
    assert named_target("x86-64-v2").cpu == "x86-64-v2"
    spec = named_target("x86-64-v3")
    assert TargetSpec.from_json(spec.to_json()) == spec
    with pytest.raises(TargetError):
        named_target("pentium-pro")
    assert HOST.name == "host" and HOST.features
    oc = build_object([_saxpy(), _stencil()], [], named_target("x86-64-v2"))
    BUILT.append(oc)
    assert oc.target.cpu == "x86-64-v2"
    assert "<4 x float>" in oc.llvm_ir and "<8 x float>" not in oc.llvm_ir
    # f16 on a target without F16C may need the conversion helpers, nothing else
    t16 = _elementwise("h", f16, f16, lambda a, b: bin_(B.ADD, a, cast(cast(b, f64), f16)))
    oc = build_object([t16], [], named_target("x86-64"))
    BUILT.append(oc)
    assert object_external_symbols(oc.blob) <= ALLOWED_EXTERNAL_SYMBOLS
    assert "__truncdfhf2" not in object_external_symbols(oc.blob)
    assert "define" in emit_llvm_ir([_saxpy()])


def test_object_contract():
    """Runs last (file order): every object built above references only allowed externals."""
    assert len(BUILT) >= 10
    for oc in BUILT:
        ext = object_external_symbols(oc.blob)
        assert ext <= ALLOWED_EXTERNAL_SYMBOLS, ext - ALLOWED_EXTERNAL_SYMBOLS
        names = elf_section_names(oc.blob)
        assert not any(n.startswith((".eh_frame", ".init_array", ".ctors", ".tbss", ".tdata"))
                       for n in names), names
        assert elf_relocation_types(oc.blob) <= {2, 4}     # R_X86_64_PC32, R_X86_64_PLT32
        assert "omp" not in " ".join(ext) and "GOMP" not in " ".join(ext)
    # sanity of the reader itself
    assert math.isfinite(len(BUILT))


def test_atomics_other_dtypes():
    H, U = arr("h", f16), arr("u", u64)
    i = var("i")
    body = [N.ExprStmt(L, N.AtomicRMW(f16, L, N.AtomicOp.ADD, H, (c(0),), c(0.5, f16))),
            N.ExprStmt(L, N.AtomicRMW(u64, L, N.AtomicOp.MIN, U, (c(0),), cast(i, u64))),
            N.ExprStmt(L, N.AtomicRMW(u64, L, N.AtomicOp.XOR, U, (c(1),), cast(i, u64)))]
    k = kernel("atom2", [param("h", H.type), param("u", U.type), param("n", i64)],
               [pfor([prange("i", c(0), var("n"))], body)], [("i", i64)])
    lib = Loaded([k])
    lib.set_threads(2, min_iters=0)
    h = np.zeros(1, np.float16)
    u = np.array([2**64 - 1, 0], np.uint64)
    lib("atom2", h, u, 100)
    assert h[0] == 50.0 and u[0] == 0 and u[1] == np.bitwise_xor.reduce(np.arange(100))


def test_codegen_refuses_ir_the_passes_did_not_prepare():
    """Codegen obeys plans and lowered IR; it never decides them itself."""
    X = arr("x", f32)
    loop = pfor([prange("i", c(0), shape(X))], [st(X, [var("i")], c(1.0, f32))])
    with pytest.raises(KernelError, match="without a plan"):
        emit_llvm_ir([raw_kernel("unplanned", [param("x", X.type)], [loop], [("i", i64)])])
    aug = N.AugStore(L, N.AtomicOp.ADD, X, (c(0),), c(1.0, f32))
    with pytest.raises(KernelError, match="AugStore left in the IR"):
        emit_llvm_ir([raw_kernel("aug", [param("x", X.type)], [aug])])


def test_build_object_returns_optimised_ir_and_asm_on_request():
    plain = build_object([_saxpy()], [], HOST)
    assert plain.asm == "" and "define" in plain.llvm_ir
    both = build_object([_saxpy()], [], HOST, want_asm=True)
    assert both.blob == plain.blob and both.llvm_ir == plain.llvm_ir
    assert ".text" in both.asm and "kiln_kernel_saxpy" in both.asm


def _with_plan(kir, plan):
    """`kir` with its (single, top-level) parallel loop's plan replaced."""
    body = tuple(dataclasses.replace(s, plan=plan) if isinstance(s, N.ParallelFor) else s
                 for s in kir.kernel.body)
    return dataclasses.replace(kir, kernel=dataclasses.replace(kir.kernel, body=body))


def test_codegen_obeys_the_parallel_plan():
    """Privatisation is what the plan says, not what codegen would decide: the same loop with
    an empty plan keeps every atomic, and results stay right either way."""
    k = _atomics()
    plan = k.kernel.body[0].plan
    assert {r.array for r in plan.reductions} == {"s", "cnt"}
    assert [p.array for p in plan.private_arrays] == ["hits"]
    planned = emit_llvm_ir([k])
    assert all(f"%\"{n}\"" in planned for n in ("red.s", "red.cnt", "priv.hits"))
    bare = _with_plan(k, N.ParallelPlan())
    text = emit_llvm_ir([bare])
    assert "red." not in text and "priv." not in text and text.count("atomicrmw") >= 6
    lib = Loaded([bare])
    lib.set_threads(2, min_iters=16)
    x = RNG.standard_normal(3000).astype(np.float32)
    s = np.array([0.0, -np.inf, 0.0])
    hits = np.zeros(3000, np.int32)
    cnt = np.array([0, 10**9], np.int64)
    assert lib("atom", x, s, hits, cnt) == 0
    assert cnt[0] == 3000 and cnt[1] == 0 and (hits == 1).all()
    np.testing.assert_allclose(s, [x.astype(np.float64).sum(), x.max(), -x.astype(np.float64).sum()], rtol=1e-9)


def test_build_ptx_obeys_the_launch_plan():
    if nvptx_available() is not None:
        pytest.skip(nvptx_available())
    k = _saxpy()
    pc = build_ptx([k], want_asm=True)
    assert pc.asm == pc.ptx and ".entry kiln_kernel_saxpy(" in pc.ptx and "define" in pc.llvm_ir
    assert [ln.mode for ln in pc.launches["saxpy"]] == ["loop"]
    refused = dataclasses.replace(k, launch_plan=N.LaunchPlan((), "kernel 'saxpy' cannot be compiled for "
                                                                "the cuda target: (test)", N.Loc("s.py", 4, 2)))
    with pytest.raises(KernelError, match=r"\(test\)") as e:
        build_ptx([refused])
    assert (e.value.filename, e.value.lineno) == ("s.py", 4)
    with pytest.raises(KilnError, match="no launch plan"):
        build_ptx([dataclasses.replace(k, launch_plan=None)])
