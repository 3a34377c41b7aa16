"""Each IR pass alone, on hand-built IR, plus the verifier's checks."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from kiln.ir import nodes as ir
from kiln.ir.verify import IRVerifyError, verify
from kiln.passes import fold_constants, lower_aug_stores, plan_parallel
from kiln.passes.fold_constants import fold_expr
from kiln.types import INDEX, bool_, f16, f32, f64, i8, i32, i64, ndarray, u8, u32

L = ir.NO_LOC
A = ir.ArrayRef("x", ndarray(f32, 1), L)
AI = ir.ArrayRef("n", ndarray(i32, 1), L)
AH = ir.ArrayRef("h", ndarray(f16, 1), L)
PARAMS = (ir.Param("x", A.type, L), ir.Param("n", AI.type, L), ir.Param("h", AH.type, L))


def c(t, v):
    return ir.Const(t, L, v)


def kernel(body, locals_=(("i", INDEX),)) -> ir.KernelIR:
    return ir.KernelIR(ir.FunctionIR("k", PARAMS, None, locals_, tuple(body), L, True), (), "k")


def pfor(*body) -> ir.ParallelFor:
    return ir.ParallelFor(L, (ir.ParallelRange("i", c(INDEX, 0), c(INDEX, 10), c(INDEX, 1)),), tuple(body))


I = ir.Var(INDEX, L, "i")


# -------------------------------------------------------------------------------------------
# lower_aug_stores
# -------------------------------------------------------------------------------------------

def test_lower_aug_stores_parallel_is_atomic():
    kir = kernel([pfor(ir.AugStore(L, ir.AtomicOp.ADD, A, (I,), c(f32, 1.0)))])
    verify(kir)
    out = lower_aug_stores(kir)
    verify(out, lowered=True)
    st = out.kernel.body[0].body[0]
    assert isinstance(st, ir.ExprStmt) and isinstance(st.value, ir.AtomicRMW)
    assert st.value.op == ir.AtomicOp.ADD and st.value.type == f32
    with pytest.raises(IRVerifyError, match="AugStore left"):
        verify(kir, lowered=True)


def test_lower_aug_stores_serial_is_load_op_store():
    kir = kernel([ir.AugStore(L, ir.AtomicOp.SUB, AI, (c(i64, 0),), c(i32, 2)),
                  ir.AugStore(L, ir.AtomicOp.MAX, AI, (c(i64, 1),), c(i32, 2)),
                  ir.AugStore(L, ir.AtomicOp.ADD, AH, (c(i64, 1),), c(f16, 2.0))])
    out = lower_aug_stores(kir)
    verify(out, lowered=True)
    s0, s1, s2 = out.kernel.body
    assert isinstance(s0, ir.Store) and s0.value.op == ir.BinaryOp.SUB
    assert isinstance(s0.value.lhs, ir.Load)
    assert isinstance(s1.value, ir.BuiltinCall) and s1.value.name == "max"
    # f16 arithmetic happens in f32
    assert isinstance(s2.value, ir.Cast) and s2.value.type == f16 and s2.value.value.type == f32


def test_lower_aug_stores_in_serial_loop_inside_parallel_is_atomic():
    inner = ir.For(L, "j", c(i64, 0), c(i64, 3), c(i64, 1),
                   (ir.AugStore(L, ir.AtomicOp.XOR, AI, (c(i64, 0),), c(i32, 1)),))
    kir = kernel([pfor(inner)], (("i", INDEX), ("j", i64)))
    out = lower_aug_stores(kir)
    verify(out, lowered=True)
    assert isinstance(out.kernel.body[0].body[0].body[0].value, ir.AtomicRMW)


# -------------------------------------------------------------------------------------------
# fold_constants
# -------------------------------------------------------------------------------------------

def b(op, t, x, y):
    return fold_expr(ir.Binary(t, L, op, c(t, x), c(t, y)))


@pytest.mark.parametrize(("op", "t", "x", "y", "want"), [
    (ir.BinaryOp.ADD, i8, 127, 1, -128),
    (ir.BinaryOp.MUL, u8, 16, 16, 0),
    (ir.BinaryOp.SUB, u32, 0, 1, 2**32 - 1),
    (ir.BinaryOp.FLOORDIV, i32, -7, 2, -4),
    (ir.BinaryOp.MOD, i32, -7, 2, 1),
    (ir.BinaryOp.MOD, i32, 7, -2, -1),
    (ir.BinaryOp.POW, i32, 3, 4, 81),
    (ir.BinaryOp.POW, i8, 2, 7, -128),
    (ir.BinaryOp.SHL, i8, 1, 7, -128),
    (ir.BinaryOp.SHR, i32, -8, 1, -4),
    (ir.BinaryOp.BITXOR, i32, 6, 3, 5),
    (ir.BinaryOp.FLOORDIV, f64, -7.0, 2.0, -4.0),
    (ir.BinaryOp.MOD, f64, -7.0, 2.0, 1.0),
    (ir.BinaryOp.DIV, f32, 1.0, 3.0, float(np.float32(1 / 3))),
    (ir.BinaryOp.ADD, f32, 3e38, 3e38, math.inf),
])
def test_fold_binary(op, t, x, y, want):
    r = b(op, t, x, y)
    assert isinstance(r, ir.Const) and r.type == t and r.value == want


@pytest.mark.parametrize(("op", "t", "x", "y"), [
    (ir.BinaryOp.FLOORDIV, i32, 1, 0),
    (ir.BinaryOp.MOD, i32, 1, 0),
    (ir.BinaryOp.DIV, f32, 1.0, 0.0),
    (ir.BinaryOp.MOD, f64, 1.0, 0.0),
    (ir.BinaryOp.POW, i32, 2, -1),
    (ir.BinaryOp.SHL, i32, 1, 32),
    (ir.BinaryOp.POW, f64, -8.0, 1 / 3),
])
def test_fold_never_folds_undefined(op, t, x, y):
    assert isinstance(b(op, t, x, y), ir.Binary)


def test_fold_casts_unary_compare():
    assert fold_expr(ir.Cast(i32, L, c(f32, -2.7))).value == -2
    assert fold_expr(ir.Cast(u8, L, c(i32, 300))).value == 44
    assert fold_expr(ir.Cast(bool_, L, c(f32, 0.5))).value is True
    assert fold_expr(ir.Cast(f32, L, c(f64, 0.1))).value == float(np.float32(0.1))
    assert isinstance(fold_expr(ir.Cast(i32, L, c(f32, math.nan))), ir.Cast)
    assert isinstance(fold_expr(ir.Cast(i8, L, c(f32, 1000.0))), ir.Cast)
    assert fold_expr(ir.Unary(i8, L, ir.UnaryOp.NEG, c(i8, -128))).value == -128
    assert fold_expr(ir.Unary(u8, L, ir.UnaryOp.INVERT, c(u8, 0))).value == 255
    assert fold_expr(ir.Unary(bool_, L, ir.UnaryOp.NOT, c(bool_, False))).value is True
    assert fold_expr(ir.Compare(bool_, L, ir.CompareOp.LT, c(i32, 1), c(i32, 2))).value is True
    assert fold_expr(ir.Compare(bool_, L, ir.CompareOp.NE, c(f32, math.nan), c(f32, math.nan))).value is True
    x = ir.Var(bool_, L, "v")
    assert fold_expr(ir.Logical(bool_, L, ir.LogicalOp.AND, c(bool_, True), x)) is x
    assert fold_expr(ir.Logical(bool_, L, ir.LogicalOp.OR, c(bool_, True), x)).value is True
    assert fold_expr(ir.Select(f32, L, c(bool_, False), c(f32, 1.0), c(f32, 2.0))).value == 2.0


def test_fold_constants_pass_nested_and_dead_branches():
    expr = ir.Binary(i32, L, ir.BinaryOp.ADD, ir.Binary(i32, L, ir.BinaryOp.MUL, c(i32, 2), c(i32, 3)),
                     ir.Cast(i32, L, c(i64, 4)))
    st = ir.Store(L, AI, (c(i64, 0),), expr)
    dead = ir.If(L, ir.Compare(bool_, L, ir.CompareOp.GT, c(i32, 1), c(i32, 2)), (st,), ())
    live = ir.If(L, c(bool_, True), (st,), ())
    kir = kernel([pfor(st, dead, live)])
    verify(kir)
    out = fold_constants(kir)
    verify(out)
    body = out.kernel.body[0].body
    assert len(body) == 2
    assert all(isinstance(s, ir.Store) and s.value == ir.Const(i32, L, 10) for s in body)


# -------------------------------------------------------------------------------------------
# verify
# -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("stmt", "msg"), [
    (ir.Store(L, A, (c(i64, 0),), c(f64, 1.0)), "stored value has type"),
    (ir.Store(L, A, (c(i64, 0), c(i64, 0)), c(f32, 1.0)), "2 index(es) for a 1-d array"),
    (ir.Store(L, A, (c(f32, 0.0),), c(f32, 1.0)), "index of type"),
    (ir.ExprStmt(L, ir.Binary(f32, L, ir.BinaryOp.ADD, c(f32, 1.0), c(f64, 1.0))), "right operand"),
    (ir.ExprStmt(L, ir.Binary(f32, L, ir.BinaryOp.BITAND, c(f32, 1.0), c(f32, 1.0))), "bitwise"),
    (ir.ExprStmt(L, ir.Binary(f16, L, ir.BinaryOp.ADD, c(f16, 1.0), c(f16, 1.0))), "f16"),
    (ir.Assign(L, "nope", c(i32, 1)), "undeclared local"),
    (ir.Assign(L, "i", c(i32, 1)), "assigned to 'i'"),
    (ir.Break(L), "outside a serial loop"),
    (pfor(pfor()), "not at the kernel's top level"),
    (pfor(ir.Break(L)), "outside a serial loop"),
    (ir.If(L, c(i32, 1), (), ()), "condition of type"),
    (ir.ExprStmt(L, ir.AtomicRMW(f32, L, ir.AtomicOp.AND, A, (c(i64, 0),), c(f32, 1.0))), "atomic and"),
    (ir.ExprStmt(L, ir.Call(f32, L, "missing", ())), "unknown"),
    (ir.ExprStmt(L, ir.BuiltinCall(f32, L, "sqrt", (c(f64, 1.0),))), "argument types"),
    (ir.Return(L, c(i32, 1)), "return with a value"),
])
def test_verify_rejects(stmt, msg):
    with pytest.raises(IRVerifyError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        verify(kernel([stmt]))


def test_verify_parallel_for_in_func_and_callee_order():
    f = ir.FunctionIR("f", (), None, (("i", INDEX),), (pfor(),), L, False)
    with pytest.raises(IRVerifyError, match="ParallelFor in a func"):
        verify(ir.KernelIR(kernel([]).kernel, (f,), "k"))
    g = ir.FunctionIR("g", (), f32, (), (ir.Return(L, c(f32, 1.0)),), L, False)
    call = ir.ExprStmt(L, ir.Call(f32, L, "g", ()))
    verify(ir.KernelIR(kernel([call]).kernel, (g,), "k"))
    h = ir.FunctionIR("h", (), None, (), (call,), L, False)
    with pytest.raises(IRVerifyError, match="not yet defined"):
        verify(ir.KernelIR(kernel([]).kernel, (h, g), "k"))


# -------------------------------------------------------------------------------------------
# plan_parallel
# -------------------------------------------------------------------------------------------

def atomic(op, arr, idx, value) -> ir.ExprStmt:
    return ir.ExprStmt(L, ir.AtomicRMW(arr.type.dtype, L, op, arr, (idx,), value))


def test_plan_parallel_scalar_reductions_and_private_arrays():
    ADD, MAX = ir.AtomicOp.ADD, ir.AtomicOp.MAX
    here = ir.Loc("k.py", 3, 4)
    load = ir.Load(f32, L, A, (I,))
    body = (atomic(ADD, AI, ir.Const(i32, here, 0), c(i32, 1)),       # scalar reduction
            atomic(MAX, AI, c(i32, 1), c(i32, 7)),                     # a second one, same array
            atomic(ADD, AH, ir.Cast(i32, L, load), c(f16, 1.0)))      # f16 never privatised
    bins = ir.ArrayRef("b", ndarray(i32, 1), L)
    hist = atomic(ADD, bins, ir.Cast(INDEX, L, load), c(i32, 1))
    params = PARAMS + (ir.Param("b", bins.type, L),)
    kir = ir.KernelIR(ir.FunctionIR("k", params, None, (("i", INDEX),), (pfor(*body, hist),), L, True), (), "k")
    out = plan_parallel(kir)
    plan = out.kernel.body[0].plan
    assert plan.reductions == (ir.ScalarReduction("n", ADD, (c(i32, 0),)),    # locations stripped
                               ir.ScalarReduction("n", MAX, (c(i32, 1),)))
    assert plan.private_arrays == (ir.PrivateArray("b", ADD),)
    assert [s.array for s in plan.shared_atomics] == ["h"]
    assert "cannot be privatised" in plan.shared_atomics[0].reason
    assert not plan.heavy_iterations and plan.lockstep is False    # the f16 atomic is not planned
    assert out.launch_plan == ir.LaunchPlan((ir.LaunchPhase("loop", (0,), ()),))
    assert kir.kernel.body[0].plan is None                         # a pure function: input unchanged
    verify(out, lowered=True)


def test_plan_parallel_disqualifies_read_arrays_and_varying_scalars():
    ADD = ir.AtomicOp.ADD
    reads = (atomic(ADD, A, c(i32, 0), c(f32, 1.0)), ir.Assign(L, "v", ir.Load(f32, L, A, (c(INDEX, 1),))))
    kir = plan_parallel(kernel([pfor(*reads)], (("i", INDEX), ("v", f32))))
    plan = kir.kernel.body[0].plan
    assert plan.reductions == () and plan.private_arrays == ()
    assert plan.shared_atomics[0].array == "x" and "loads" in plan.shared_atomics[0].reason
    straight = plan_parallel(kernel([pfor(ir.Store(L, A, (I,), c(f32, 2.0)))])).kernel.body[0].plan
    assert straight.lockstep and not straight.heavy_iterations
    loop = ir.For(L, "j", c(INDEX, 0), c(INDEX, 3), c(INDEX, 1), (ir.Store(L, A, (I,), c(f32, 2.0)),))
    heavy = plan_parallel(kernel([pfor(loop)], (("i", INDEX), ("j", INDEX)))).kernel.body[0].plan
    assert heavy.heavy_iterations and not heavy.lockstep


def test_plan_parallel_launch_phases():
    store0 = ir.Store(L, A, (c(INDEX, 0),), c(f32, 1.0))
    setv = ir.Assign(L, "v", c(f32, 2.0))
    kir = plan_parallel(kernel([setv, store0, pfor(ir.Store(L, A, (I,), ir.Var(f32, L, "v")))], (("i", INDEX), ("v", f32))))
    assert kir.launch_plan.phases == (ir.LaunchPhase("single", (0, 1), ()), ir.LaunchPhase("loop", (2,), (0, 1)))
    serial = plan_parallel(kernel([setv, store0], (("v", f32),)))
    assert serial.launch_plan.phases == (ir.LaunchPhase("single", (0, 1)),)


def test_plan_parallel_records_cuda_refusal_instead_of_raising():
    where = ir.Loc("k.py", 7, 2)
    read = ir.Assign(where, "v", ir.Load(f32, where, A, (c(INDEX, 0),)))
    kir = plan_parallel(kernel([read, pfor(ir.Store(L, A, (I,), c(f32, 1.0)))], (("i", INDEX), ("v", f32))))
    lp = kir.launch_plan
    assert lp.phases == () and "reads array 'x', which the kernel writes" in lp.cuda_refusal
    assert lp.refusal_loc == ir.Loc("k.py", 7, 2)


def test_verify_checks_plans():
    kir = plan_parallel(kernel([pfor(atomic(ir.AtomicOp.ADD, AI, c(i32, 0), c(i32, 1)))]))
    verify(kir, lowered=True)
    loop = kir.kernel.body[0]
    bad_plan = dataclasses.replace(loop.plan, reductions=(ir.ScalarReduction("nope", ir.AtomicOp.ADD, ()),))
    bad = dataclasses.replace(kir, kernel=dataclasses.replace(kir.kernel, body=(dataclasses.replace(loop, plan=bad_plan),)))
    with pytest.raises(IRVerifyError, match="'nope', which is not an array parameter"):
        verify(bad)
    bad = dataclasses.replace(kir, launch_plan=ir.LaunchPlan((ir.LaunchPhase("loop", (3,)),)))
    with pytest.raises(IRVerifyError, match="outside the kernel body"):
        verify(bad)
