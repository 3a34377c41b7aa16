"""Golden tests of the IR text form (kiln.ir.printer): the lowered IR of a few kernels, printed,
must match tests/golden/<name>.txt. After an intended change of the IR or of the printer,
regenerate them with `KILN_REGEN_GOLDEN=1 python -m pytest tests/test_ir_printer.py` and review
the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import kiln as kl
from kiln.driver import lower_kernel
from kiln.ir import nodes as ir
from kiln.ir.graph import ArgBinding, ConstBinding, Dispatch, GraphIR
from kiln.ir.printer import expr_text, format_graph, format_ir
from kiln.types import f32

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = os.environ.get("KILN_REGEN_GOLDEN") == "1"

F32_1 = kl.ndarray(kl.f32, ndim=1)
F64_1 = kl.ndarray(kl.f64, ndim=1)
I32_1 = kl.ndarray(kl.i32, ndim=1)
F32_2 = kl.ndarray(kl.f32, ndim=2)


@kl.kernel
def saxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def total(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f64, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]


@kl.kernel
def collatz(start: kl.ndarray(kl.i32, ndim=1), steps: kl.ndarray(kl.i32, ndim=1)):
    for i in range(start.shape[0]):
        n = start[i]
        count = 0
        while n != 1 and count < 1000:
            if n % 2 == 0:
                n = n // 2
            else:
                n = 3 * n + 1
            count += 1
        for _ in range(2, 0, -1):
            if count > 500:
                break
        steps[i] = count


@kl.func
def clamp(v: kl.f32, lo: kl.f32, hi: kl.f32) -> kl.f32:
    return kl.min(kl.max(v, lo), hi)


@kl.kernel
def blur(src: kl.ndarray(kl.f32, ndim=2), dst: kl.ndarray(kl.f32, ndim=2)):
    for i, j in kl.ndrange((1, src.shape[0] - 1), (1, src.shape[1] - 1)):
        dst[i, j] = clamp(0.25 * (src[i - 1, j] + src[i + 1, j] + src[i, j - 1] + src[i, j + 1]), 0.0, 1.0)


@kl.kernel
def histogram(values: kl.ndarray(kl.i32, ndim=1), bins: kl.ndarray(kl.i32, ndim=1)):
    for i in range(values.shape[0]):
        b = values[i] % bins.shape[0]
        old = kl.atomic_max(bins[b], values[i])
        if old < 0:
            bins[0] -= 1
        bins[b] += 1


CASES = {
    "saxpy": (saxpy, (kl.f32, F32_1, F32_1)),
    "reduction": (total, (F32_1, F64_1)),
    "control_flow": (collatz, (I32_1, I32_1)),
    "funcs": (blur, (F32_2, F32_2)),
    "atomics": (histogram, (I32_1, I32_1)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_printed_ir_matches_golden(name: str) -> None:
    kernel, types = CASES[name]
    text = format_ir(lower_kernel(kernel, types))
    path = GOLDEN / f"{name}.txt"
    if REGENERATE:
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with KILN_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"printed IR of {name} changed (KILN_REGEN_GOLDEN=1 to accept)"


def test_one_line_per_statement_and_source_lines() -> None:
    text = format_ir(lower_kernel(saxpy, (kl.f32, F32_1, F32_1)))
    lines = text.splitlines()
    assert lines[0].startswith("kernel saxpy__f32_f32a1_f32a1(a: f32, x: f32[:], y: f32[:])")
    assert all("# test_ir_printer.py:" in ln for ln in lines
               if not ln.lstrip().startswith(("locals", "# plan:", "# cuda launches:")))
    assert "    # plan: lockstep; gpu vector x4 (y, x)" in lines     # plan_parallel's decisions, under its loop
    assert "y[i]:f32 = ((a * x[i]) + y[i])" in text
    assert len(text) < 500          # the dataclass repr of this kernel is ~2,400 characters


def test_expressions_and_graphs() -> None:
    loc = ir.NO_LOC
    a = ir.Var(f32, loc, "a")
    cast = ir.Cast(kl.f64, loc, ir.Binary(f32, loc, ir.BinaryOp.MUL, a, ir.Const(f32, loc, 2.0)))
    assert expr_text(cast) == "f64((a * 2.0:f32))"
    assert expr_text(ir.Unary(kl.bool_, loc, ir.UnaryOp.NOT, ir.Const(kl.bool_, loc, True))) == "not true:bool"
    g = GraphIR("main", (("x", F32_1), ("a", kl.f32)),
                (Dispatch("saxpy__f32_f32a1_f32a1", (ConstBinding(2.0, kl.f32), ArgBinding("x"), ArgBinding("x"))),))
    assert format_graph(g) == "graph main(x: f32[:], a: f32)\n  dispatch saxpy__f32_f32a1_f32a1(2.0:f32, x, x)\n"
