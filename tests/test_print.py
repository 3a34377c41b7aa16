"""`print` inside kernels (docs/language.md "Printing", kiln.runtime.print_buffer): the text on
CPU, from a saved file in a process without the compiler, in the interpreter, the overflow
rule, debug failures, and the CUDA path (PTX, and the runtime reading the device buffer)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import kiln as kl
from kiln import passes
from kiln.interp import run_kernel
from kiln.runtime.print_buffer import CAPACITY, parse_table
from kiln.types import NdArrayType

REPO = Path(__file__).resolve().parents[1]
F32_1 = kl.ndarray(kl.f32, ndim=1)
LABEL = "gain"          # a global string constant


def _show(x: F32_1, n: kl.i32, flag: kl.u8):
    print("start", n, 0.25, True, LABEL)
    for i in range(x.shape[0]):
        v = kl.vec3(x[i], 2.0, kl.f32(n))
        m = kl.Matrix([[1, 2], [3, 4]], dt=kl.i32)
        print("x =", x[i], v, sep=" | ", end=";\n")
        print(f"i={i} flag={flag + kl.u8(i)} half={kl.f16(x[i])} big={kl.u64(2**64 - 1)} m={m}")


show = kl.kernel(_show)
EXPECTED = ("start 7 0.25 True gain\n"
            "x = | 0.1 | [0.1, 2.0, 7.0];\n"
            "i=0 flag=255 half=0.1 big=18446744073709551615 m=[[1, 2], [3, 4]]\n"
            "x = | -2.5 | [-2.5, 2.0, 7.0];\n"
            "i=1 flag=0 half=-2.5 big=18446744073709551615 m=[[1, 2], [3, 4]]\n")
ARGS = (np.array([0.1, -2.5], np.float32), 7, 255)


def test_print_on_cpu(capsys) -> None:
    show(*ARGS)
    assert capsys.readouterr().out == EXPECTED


def test_interpreter_prints_the_same_text() -> None:
    out = io.StringIO()
    kir = passes.lower_aug_stores(show.specialize((NdArrayType(kl.f32, 1), kl.i32, kl.u8)))
    from kiln.interp import Interpreter
    Interpreter(kir, out=out).run({"x": ARGS[0].copy(), "n": 7, "flag": 255})
    assert out.getvalue() == EXPECTED
    run_kernel(kir, {"x": ARGS[0].copy(), "n": 7, "flag": 255})       # default: sys.stdout


def test_print_from_a_saved_file_without_the_compiler(tmp_path: Path) -> None:
    g = kl.GraphBuilder()
    g.dispatch(show, kl.Arg("x", F32_1), kl.Arg("n", kl.i32), kl.Arg("flag", kl.u8))
    path = tmp_path / "show.kiln"
    g.compile().save(path)
    code = ("import sys, numpy as np, kiln as kl\n"
            f"g = kl.load({str(path)!r})\n"
            "g.run({'x': np.array([0.1, -2.5], np.float32), 'n': 7, 'flag': 255})\n"
            "bad = [m for m in sys.modules if m.startswith(('kiln.lang', 'kiln.codegen', 'llvmlite'))]\n"
            "print('compiler modules:', bad)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert proc.stdout == EXPECTED + "compiler modules: []\n"


@kl.kernel
def chatty(n: kl.i64, out: kl.ndarray(kl.i64, ndim=1)):
    for _ in range(1):
        for i in range(n):      # the inner loop is serial: records in program order
            print(i, i * 2)
    out[0] = n


def test_full_buffer_drops_records_and_says_so(capfd) -> None:
    n = CAPACITY // 3 + 10                      # each record takes 3 slots
    out = np.zeros(1, np.int64)
    chatty(n, out)
    captured = capfd.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == CAPACITY // 3 and lines[0] == "0 0" and lines[-1] == f"{len(lines) - 1} {2 * len(lines) - 2}"
    assert f"kiln: {n - len(lines)} print record(s) dropped" in captured.err
    assert out[0] == n                          # the kernel itself ran to the end
    chatty(2, out)                              # the next run starts with an empty buffer
    assert capfd.readouterr().out == "0 0\n1 2\n"


@kl.kernel(debug=True)
def prints_then_fails(x: F32_1, k: kl.i64):
    print("before", k)
    x[k] = 1.0
    print("after")


def test_debug_failure_prints_what_ran_first(capsys) -> None:
    with pytest.raises(kl.KernelIndexError):
        prints_then_fails(np.zeros(2, np.float32), 5)
    assert capsys.readouterr().out == "before 5\n"


@kl.kernel
def silent(x: F32_1):
    for i in range(x.shape[0]):
        x[i] = x[i] * 2.0


def test_release_code_without_print_is_unchanged(tmp_path: Path) -> None:
    from kiln.artifact.container import read_file
    g = kl.GraphBuilder()
    g.dispatch(silent, kl.Arg("x", F32_1))
    g.compile(targets=["cpu", "cuda"], cuda_archs=[]).save(tmp_path / "silent.kiln")
    c = read_file(tmp_path / "silent.kiln")
    assert all(b"kiln_print" not in bytes(blob) for blob in c.blobs.values())


@pytest.mark.parametrize("bad, message", [
    ("print(x, file=None)", "only the sep= and end= keywords"),
    ("print(x, sep=s)", "must be a string literal"),
    ("print(f'{x:.3f}')", "plain {expression}"),
    ("print(*t)", "print\\(\\*args\\)"),
])
def test_print_errors(tmp_path: Path, bad: str, message: str) -> None:
    src = ("import kiln as kl\n"
           "def k(x: kl.f32, s: kl.i32):\n"
           "    t = (x, x)\n"
           f"    {bad}\n")
    import importlib.util
    path = tmp_path / "bad_print.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("bad_print", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(kl.KernelError, match=message):
        kl.kernel(module.k)(1.0, 2)


def test_cuda_print_buffer(monkeypatch, capsys) -> None:
    """The PTX carries the buffer and the table; the CUDA runtime reads the device buffer after
    a run (the recording driver plays the GPU: the test writes what GPU threads would)."""
    import fake_cuda_driver as fake

    from kiln.runtime import cuda

    fake.install(monkeypatch)
    g = kl.GraphBuilder()
    g.dispatch(show, kl.Arg("x", F32_1), kl.Arg("n", kl.i32), kl.Arg("flag", kl.u8))
    m = kl.Module(targets=["cpu", "cuda"], cuda_archs=[])
    m.add_graph("main", g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = cuda.load_module(m.compile())
    graph = cm.graphs["main"]
    args = {"x": ARGS[0], "n": 7, "flag": 255}
    graph.run(args)                                       # nothing recorded: nothing printed
    assert b"kiln_print_buffer" in fake.IMAGES[-1]
    assert capsys.readouterr().out == ""
    state, _ = fake.GLOBALS["kiln_print_state"]
    buffer, size = fake.GLOBALS["kiln_print_buffer"]
    assert size == CAPACITY * 8
    tptr, tsize = fake.GLOBALS["kiln_print_table"]
    sites = parse_table(fake.MEM[tptr].raw[:tsize])
    site = next(k for k, (texts, _types) in enumerate(sites) if texts[0] == "start ")
    assert sites[site][1] == ["i32"]                  # 0.25, True and "gain" are text already
    record = struct.pack("<3q", site + 1, -3, site + 1)
    import ctypes
    ctypes.memmove(fake.MEM[buffer], record, 24)
    ctypes.memmove(fake.MEM[state], struct.pack("<2q", 3, 2), 16)     # a cut-off 2nd record: not shown
    graph.run(args)
    captured = capsys.readouterr()
    assert captured.out == "start -3 0.25 True gain\n"
    assert "kiln: 2 print record(s) dropped" in captured.err
    assert fake.MEM[state].raw[:16] == bytes(16) and fake.MEM[buffer].raw[:24] == bytes(24)   # cleared
