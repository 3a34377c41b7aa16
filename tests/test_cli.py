"""The kiln command line: inspect, run, demo, and errors."""

from __future__ import annotations

import json
import os
import re
import shutil
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
    assert "kiln format 2.0" in out
    assert "runs here" in out and "object check: ok" in out
    assert "verified" in out
    assert "graph main: 2 dispatches" in out
    assert "args: a: f32, x: ndarray(f32, ndim=1, shape=(n,)) [read]" in out
    assert "0: saxpy(a, x, y)" in out and "1: saxpy(1.0:f32, x, y)" in out


def test_inspect_json(model: Path, capsys) -> None:
    assert main(["inspect", str(model), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format_version"] == "2.0"   # 2: arrays carry strides (kiln.abi)
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


def _kiln(*args: str, stdin_closed_after: int | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "kiln", *args], capture_output=True, text=True, env=env,
                          check=False, timeout=300)


def test_version() -> None:
    proc = _kiln("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"kiln {kl.__version__}"


def test_closed_pipe_is_quiet(model: Path) -> None:
    """`kiln inspect file | head -1`: the reader closes the pipe early; no traceback, exit 0."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(f'"{sys.executable}" -m kiln inspect "{model}" | head -c 1; exit ${{PIPESTATUS[0]}}',
                          shell=True, executable="/bin/bash", capture_output=True, text=True, env=env, check=False)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 0


def test_errors_are_typed_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "junk.kiln"
    bad.write_bytes(b"not a kiln file at all")
    proc = _kiln("inspect", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.startswith("kiln inspect: error: ArtifactError: ")
    assert "Traceback" not in proc.stderr


def _demo_like_graph() -> kl.GraphBuilder:
    x = kl.Arg("x", kl.ndarray(kl.f32, ndim=1), shape=("n",))
    y = kl.Arg("y", kl.ndarray(kl.f32, ndim=1), shape=("n",))
    g = kl.GraphBuilder()
    g.dispatch(saxpy, 0.5, x, y)                 # prologue
    for _ in range(120):                        # a loop recorded 120 times: period 2
        g.dispatch(saxpy, kl.Arg("a", kl.f32), x, y)
        g.dispatch(saxpy, 1.0, y, x)
    return g


def test_fold_groups_repeated_sequences() -> None:
    from kiln.cli.graph_picture import Step, fold
    a, b, c = (Step(k, (), ()) for k in "abc")
    blocks = fold([c, a, b, a, b, a, b, c])
    assert [(blk.repeat, [s.kernel for s in blk.steps], blk.first) for blk in blocks] == [
        (1, ["c"], 0), (3, ["a", "b"], 1), (1, ["c"], 7)]
    assert [blk.repeat for blk in fold([a] * 300)] == [300]
    assert fold([]) == []


def test_inspect_svg_and_dot(tmp_path: Path, capsys) -> None:
    import xml.etree.ElementTree as ET
    path = tmp_path / "loop.kiln"
    _demo_like_graph().compile().save(path)
    svg, dot = tmp_path / "g.svg", tmp_path / "g.dot"
    assert main(["inspect", str(path), "--svg", str(svg), "--dot", str(dot)]) == 0
    root = ET.parse(svg).getroot()          # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "graph 'main': 241 dispatches, 3 arguments" in texts
    assert "x120  (dispatches 1-240)" in texts
    assert "0: saxpy(0.5:f32, x, y)" in texts and "2: saxpy(1.0:f32, y, x)" in texts
    # 241 dispatches drawn as 3 rows plus the block header: the picture stays small.
    assert len([t for t in texts if t and t[0].isdigit() and ": saxpy(" in t]) == 3
    text = dot.read_text()
    assert 'subgraph "cluster_1" { label="x120";' in text
    assert '"arg:x" -> "d1";' in text and '"d1" -> "arg:y" [color=firebrick];' in text
    assert main(["inspect", str(path), "--dot", "-"]) == 0
    assert capsys.readouterr().out.startswith('digraph "main" {')
    if shutil.which("dot"):             # Graphviz, where installed, accepts the text
        proc = subprocess.run(["dot", "-Tsvg", str(dot)], capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == 0 and "<svg" in proc.stdout, proc.stderr


def test_run_device_cuda_without_gpu_is_a_clear_error(model: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros(3, np.float32))
    proc = _kiln("run", str(model), "--device", "cuda", "--arg", f"x={tmp_path / 'x.npy'}")
    # This file has no cuda target: whatever the machine, a typed error, never a traceback.
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("kiln run: error: ")


BLOCK_LLVMLITE = '''
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "llvmlite" or name.startswith("llvmlite."):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
from kiln.cli.main import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.parametrize("command", [["demo"], ["bench", "--quick"]])
def test_missing_compile_extra_names_the_install_command(command: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", BLOCK_LLVMLITE, *command], capture_output=True, text=True,
                          env=env, check=False, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "MissingExtraError" in proc.stderr
    assert 'pip install "kiln-aot[compile]"' in proc.stderr


def test_picture_of_a_file_with_several_graphs(tmp_path: Path, capsys) -> None:
    m = kl.Module()
    for name, const in (("first", 1.0), ("second", 2.0)):
        g = kl.GraphBuilder()
        g.dispatch(saxpy, const, kl.Arg("x", kl.ndarray(kl.f32, ndim=1)), kl.Arg("y", kl.ndarray(kl.f32, ndim=1)))
        m.add_graph(name, g)
    path = tmp_path / "two.kiln"
    m.save(path)
    assert main(["inspect", str(path), "--dot", "-"]) == 2
    assert "choose one with --graph" in capsys.readouterr().err
    assert main(["inspect", str(path), "--dot", "-", "--graph", "second"]) == 0
    assert '"d0" [label="0: saxpy(2.0:f32, x, y)", shape=box];' in capsys.readouterr().out
    assert main(["inspect", str(path), "--svg", "-", "--graph", "nope"]) == 2
    assert "has no graph 'nope'" in capsys.readouterr().err


def test_run_device_cuda_on_a_cuda_file_here(tmp_path: Path) -> None:
    """A file with a cuda target, run with --device cuda: on a GPU machine it runs; elsewhere the
    message says what is missing (cuda-bindings, a driver or a GPU), never a traceback."""
    g = kl.GraphBuilder()
    g.dispatch(saxpy, kl.Arg("a", kl.f32), kl.Arg("x", kl.ndarray(kl.f32, ndim=1)),
               kl.Arg("y", kl.ndarray(kl.f32, ndim=1)))
    path = tmp_path / "gpu.kiln"
    g.compile(targets=["cpu", "cuda"], cuda_archs=[]).save(path)     # PTX only: no nvJitLink needed
    x = np.arange(4, dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.ones(4, np.float32))
    proc = _kiln("run", str(path), "--device", "cuda", "--arg", f"x={tmp_path / 'x.npy'}", "--arg",
                 f"y={tmp_path / 'y.npy'}", "--arg", "a=2", "--out", f"y={tmp_path / 'out.npy'}")
    assert "Traceback" not in proc.stderr
    if proc.returncode == 0:
        assert "on cuda" in proc.stdout
        np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), 2 * x + 1)
    else:
        assert proc.returncode == 2
        assert re.match(r"kiln run: error: (MissingCudaExtraError|CudaError): ", proc.stderr), proc.stderr
