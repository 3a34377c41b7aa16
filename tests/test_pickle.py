"""Compiled graphs, kernels and modules pickle as their file bytes: no code objects travel, and
spawned worker processes (multiprocessing, concurrent.futures) that never saw the kernels' source
run them."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kiln as kl
from kiln.errors import ArtifactError
from kiln.runtime.compiled import _unpickle

ROOT = Path(__file__).resolve().parents[1]


@kl.kernel
def saxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@pytest.fixture(scope="module")
def module() -> Any:
    m = kl.Module()
    g = kl.GraphBuilder()
    g.dispatch(saxpy, kl.Arg("a", kl.f32), kl.Arg("x", kl.ndarray(kl.f32, ndim=1)),
               kl.Arg("y", kl.ndarray(kl.f32, ndim=1)))
    m.add_graph("step", g)
    m.add_kernel(saxpy, kl.f32, kl.ndarray(kl.f32, ndim=1), kl.ndarray(kl.f32, ndim=1))
    return m.compile()


def _globals_in(stream: bytes) -> set[str]:
    """Every `module.name` a pickle stream imports when loaded."""
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
    return found


def test_roundtrip_graph_kernel_module(module: Any) -> None:
    x = np.arange(8, dtype=np.float32)
    for obj in (module, module.graphs["step"], module.kernels["saxpy"]):
        stream = pickle.dumps(obj)
        assert _globals_in(stream) == {"kiln.runtime.compiled._unpickle"}   # no code objects, no kernels
        assert module.to_bytes() in stream
        back = pickle.loads(stream)
        assert type(back) is type(obj)
    graph = pickle.loads(pickle.dumps(module.graphs["step"]))
    y = np.ones(8, np.float32)
    graph.run({"a": 2.0, "x": x, "y": y})
    np.testing.assert_array_equal(y, 2 * x + 1)
    kernel = pickle.loads(pickle.dumps(module.kernels["saxpy"]))
    kernel(3.0, x, y)
    np.testing.assert_array_equal(y, 5 * x + 1)
    assert sorted(pickle.loads(pickle.dumps(module)).graphs) == ["step"]


def test_unpickle_of_a_missing_name_is_an_artifact_error(module: Any) -> None:
    with pytest.raises(ArtifactError, match="no graph 'nope'"):
        _unpickle(module.to_bytes(), "graph", "nope", "cpu")


def _run_in_worker(graph: Any, a: float, n: int) -> list[float]:
    x = np.arange(n, dtype=np.float32)
    y = np.zeros(n, np.float32)
    graph.run({"a": a, "x": x, "y": y})
    return y.tolist()


def test_multiprocessing_spawn_pool(module: Any) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_run_in_worker, [(module.graphs["step"], a, 4) for a in (1.0, 2.0, 3.0)])
    assert results == [[a * i for i in range(4)] for a in (1.0, 2.0, 3.0)]


def test_process_pool_executor(module: Any) -> None:
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        futures = [ex.submit(_run_in_worker, module.graphs["step"], a, 5) for a in (0.5, 4.0)]
        results = [f.result() for f in futures]
    assert results == [[0.5 * i for i in range(5)], [4.0 * i for i in range(5)]]


UNPICKLE_WITHOUT_COMPILER = '''
import sys, pickle
BLOCKED = ("kiln.lang", "kiln.codegen", "kiln.compiler", "kiln.graph", "llvmlite")
class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
graph = pickle.loads(sys.stdin.buffer.read())
x = np.arange(3, dtype=np.float32); y = np.ones(3, np.float32)
graph.run({"a": 2.0, "x": x, "y": y})
print(y.tolist())
'''


def test_unpickles_with_the_runtime_alone(module: Any) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", UNPICKLE_WITHOUT_COMPILER], input=pickle.dumps(module.graphs["step"]),
                          capture_output=True, env=env, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == "[1.0, 3.0, 5.0]"
