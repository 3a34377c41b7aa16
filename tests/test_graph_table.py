"""The graph entry as a loop over a constant dispatch table (kiln.codegen.cpu_module): a graph
gives bit for bit what the same kernels called one by one give, whatever the constants' dtypes,
the repetition and the number of dispatches, and it stops at the first non-zero status."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import kiln as kl
from kiln.abi import layout_params
from kiln.codegen.cpu_module import CpuModuleEmitter, DispatchTable, const_slot_bits
from kiln.driver import lower_kernel
from kiln.ir.graph import ArgBinding, ConstBinding, Dispatch, GraphIR

A1 = kl.ndarray


@kl.kernel
def put_all(vb: kl.bool_, v8: kl.i8, v16: kl.i16, v32: kl.i32, v64: kl.i64,
            w8: kl.u8, w16: kl.u16, w32: kl.u32, w64: kl.u64, h: kl.f16, f: kl.f32, d: kl.f64,
            ob: A1(kl.bool_, ndim=1), o8: A1(kl.i8, ndim=1), o16: A1(kl.i16, ndim=1), o32: A1(kl.i32, ndim=1),
            o64: A1(kl.i64, ndim=1), p8: A1(kl.u8, ndim=1), p16: A1(kl.u16, ndim=1), p32: A1(kl.u32, ndim=1),
            p64: A1(kl.u64, ndim=1), oh: A1(kl.f16, ndim=1), of: A1(kl.f32, ndim=1), od: A1(kl.f64, ndim=1),
            slot: kl.i64):
    ob[slot] = vb
    o8[slot] = v8
    o16[slot] = v16
    o32[slot] = v32
    o64[slot] = v64
    p8[slot] = w8
    p16[slot] = w16
    p32[slot] = w32
    p64[slot] = w64
    oh[slot] = h
    of[slot] = f
    od[slot] = d


_DTYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
           np.float16, np.float32, np.float64)
_OUT_NAMES = ("ob", "o8", "o16", "o32", "o64", "p8", "p16", "p32", "p64", "oh", "of", "od")
#: per row: one value for each scalar parameter of put_all (extremes, negative zero, rounding)
_CONSTS = (
    (True, -128, -32768, -2**31, -2**63, 255, 65535, 2**32 - 1, 2**64 - 1, 0.1, 0.1, 0.1),
    (False, 127, 32767, 2**31 - 1, 2**63 - 1, 0, 0, 0, 0, -0.0, -0.0, -0.0),
    (True, -1, -1, -1, -1, 1, 1, 1, 1, 65504.0, 3.4028234663852886e38, 1e308),
    (False, 5, -7, 123456, -9876543210, 200, 40000, 3_000_000_000, 2**63 + 5, 1e-7, 1e-45, 5e-324),
    (True, 0, 0, 0, 0, 9, 9, 9, 9, 65500.0, 3.4e38, 2.5),     # round near the largest finite values
)


def _outs(n: int) -> dict[str, np.ndarray]:
    return {name: np.zeros(n, dt) for name, dt in zip(_OUT_NAMES, _DTYPES)}


def test_baked_constants_of_every_dtype_match_direct_calls() -> None:
    g = kl.GraphBuilder()
    args = [kl.Arg(name, kl.ndarray(t, ndim=1)) for name, t in zip(
        _OUT_NAMES, (kl.bool_, kl.i8, kl.i16, kl.i32, kl.i64, kl.u8, kl.u16, kl.u32, kl.u64, kl.f16, kl.f32, kl.f64))]
    for row, consts in enumerate(_CONSTS):
        g.dispatch(put_all, *consts, *args, row)
    graph = g.compile()
    got = _outs(len(_CONSTS))
    graph.run(got)
    ref = _outs(len(_CONSTS))
    for row, consts in enumerate(_CONSTS):
        put_all(*consts, *ref.values(), row)
    for name in _OUT_NAMES:
        assert got[name].tobytes() == ref[name].tobytes(), name


@kl.kernel
def mul_add(x: kl.ndarray(kl.i32, ndim=1), k: kl.i32, c: kl.i32):
    for i in range(x.shape[0]):
        x[i] = x[i] * k + c


@kl.kernel
def shift(x: kl.ndarray(kl.i32, ndim=1), y: kl.ndarray(kl.i32, ndim=1), s: kl.i32):
    for i in range(x.shape[0]):
        y[i] = y[i] + (x[(i + s) % x.shape[0]] >> 3)


@kl.kernel
def blend(y: kl.ndarray(kl.f32, ndim=1), x: kl.ndarray(kl.i32, ndim=1), w: kl.f32):
    for i in range(y.shape[0]):
        y[i] = y[i] * w + x[i]


def test_many_dispatches_of_repeated_kernels_match_direct_calls() -> None:
    """300 dispatches of 3 kernels, with repeated and distinct constants and both argument
    orders: the graph's result is bit-identical to the same calls made one by one."""
    X = kl.Arg("x", kl.ndarray(kl.i32, ndim=1))
    Y = kl.Arg("y", kl.ndarray(kl.i32, ndim=1))
    Z = kl.Arg("z", kl.ndarray(kl.f32, ndim=1))
    K = kl.Arg("k", kl.i32)
    calls = []
    for d in range(300):
        if d % 3 == 0:
            calls.append((mul_add, ("x" if d % 2 else "y", 3 if d % 4 else K, d)))
        elif d % 3 == 1:
            calls.append((shift, ("x", "y", d % 7) if d % 2 else ("y", "x", 1)))
        else:
            calls.append((blend, ("z", "x", 0.5 + (d % 5) * 0.125)))
    g = kl.GraphBuilder()
    named = {"x": X, "y": Y, "z": Z}
    for k, a in calls:
        g.dispatch(k, *(named.get(v, v) if isinstance(v, str) else v for v in a))
    graph = g.compile()
    rng = np.random.default_rng(1)
    init = {"x": rng.integers(-1000, 1000, 97, dtype=np.int32), "y": rng.integers(-1000, 1000, 97, dtype=np.int32),
            "z": rng.random(97, dtype=np.float32)}
    got = {n: a.copy() for n, a in init.items()}
    graph.run({**got, "k": -5})
    ref = {n: a.copy() for n, a in init.items()}
    for k, a in calls:
        k(*(ref[v] if isinstance(v, str) else v for v in (x if x is not K else -5 for x in a)))
    for n in init:
        assert got[n].tobytes() == ref[n].tobytes(), n


def test_dispatch_table_shares_records_of_repeated_dispatches() -> None:
    kir = lower_kernel(mul_add, (kl.ndarray(kl.i32, ndim=1), kl.i32, kl.i32))
    name = kir.kernel.name
    x_type = kl.ndarray(kl.i32, ndim=1)
    same = Dispatch(name, (ArgBinding("x"), ConstBinding(3, kl.i32), ConstBinding(-1, kl.i32)))
    other = Dispatch(name, (ArgBinding("x"), ConstBinding(4, kl.i32), ConstBinding(-1, kl.i32)))
    g = GraphIR("g", (("x", x_type),), (same, other, same) * 100)
    t = DispatchTable.build(g, {name: kir.kernel})
    assert t.kernels == [name]
    assert len(t.dispatch_record) == 300 and len(t.records) == 2
    assert t.dispatch_record[:4] == [0, 1, 0, 0]
    assert sorted(t.const_bits) == sorted({3, 4, 2**32 - 1})


@pytest.mark.parametrize(("t", "value", "raw"), [
    (kl.bool_, True, b"\x01"), (kl.i8, -2, b"\xfe"), (kl.u16, 65535, b"\xff\xff"),
    (kl.i64, -1, b"\xff" * 8), (kl.f16, 1.0, np.float16(1.0).tobytes()),
    (kl.f32, 0.1, np.float32(0.1).tobytes()), (kl.f64, -0.0, np.float64(-0.0).tobytes()),
])
def test_const_slot_bits_is_the_value_zero_extended(t, value, raw) -> None:
    assert const_slot_bits(t, value).to_bytes(8, "little") == raw.ljust(8, b"\x00")


@kl.kernel
def bump(x: kl.ndarray(kl.i64, ndim=1), v: kl.i64):
    x[0] = x[0] * 10 + v


def test_graph_returns_the_first_non_zero_status_and_runs_nothing_after_it() -> None:
    """Kernels return 0 today; swap one kernel's entry for a function returning 7 and check that
    the graph entry returns 7 at once: the dispatches before it ran, those after it did not."""
    from llvmlite import binding as llvm
    from llvmlite import ir

    from kiln.codegen.llvm_util import I32, PTR

    i64_1 = kl.ndarray(kl.i64, ndim=1)
    kir = lower_kernel(bump, (i64_1, kl.i64))
    me = CpuModuleEmitter()
    me.add_kernels([kir])
    name = kir.kernel.name
    failing = ir.Function(me.module, ir.FunctionType(I32, [PTR]), name="fail_entry")
    ir.IRBuilder(failing.append_basic_block()).ret(ir.Constant(I32, 7))
    me.kernel_irs["failing"] = kir.kernel
    me.kernel_entries["failing"] = failing
    binds = (ArgBinding("x"),)
    me.add_graphs([GraphIR("g", (("x", i64_1),), (
        Dispatch(name, binds + (ConstBinding(1, kl.i64),)), Dispatch(name, binds + (ConstBinding(2, kl.i64),)),
        Dispatch("failing", binds + (ConstBinding(0, kl.i64),)), Dispatch(name, binds + (ConstBinding(3, kl.i64),))))])
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    mod = llvm.parse_assembly(str(me.module))
    tm = llvm.Target.from_default_triple().create_target_machine()
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    entry = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)(engine.get_function_address(me.graph_symbols["g"]))
    x = np.zeros(1, np.int64)
    block = (ctypes.c_int64 * 3)(x.ctypes.data, 1, 1)     # data, extent, element stride
    assert layout_params([("x", i64_1)])[0].size == 24
    assert entry(ctypes.addressof(block)) == 7
    assert x[0] == 12        # 0*10+1, then *10+2; the dispatch after the failing one did not run
