"""kiln.dask on a real dask.distributed LocalCluster with two worker processes: blocks of dask
arrays and parameter sweeps run a saved graph; the file is linked once per worker; workers never
import the compiler."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kiln as kl
import kiln.dask as kd
from kiln.errors import ArgumentError

# A loaded machine can make the distributed scheduler drop a task ("lost dependencies") or miss a
# heartbeat; those are the cluster's timing, not kiln's results, so a failed test is re-run.
# The cluster's worker processes have hung the whole suite twice when started late in a loaded
# session (never when this file runs on its own): .ci/run runs this file as a separate step with a
# time limit (KILN_TEST_DASK=1), and the main suite leaves it out.
pytestmark = [pytest.mark.flaky(reruns=2, reruns_delay=2),
              pytest.mark.skipif(os.environ.get("KILN_TEST_DASK") != "1",
                                 reason="run apart: KILN_TEST_DASK=1 pytest tests/test_dask.py (.ci/run does)")]

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

F32 = kl.ndarray(kl.f32, ndim=1)


@kl.kernel
def saxpy(a: kl.f32, x: F32, y: F32):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def scale2d(s: kl.f32, src: kl.ndarray(kl.f32, ndim=2), dst: kl.ndarray(kl.f32, ndim=2)):
    for i, j in kl.ndrange(src.shape[0], src.shape[1]):
        dst[i, j] = s * src[i, j]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    # One kiln thread per task: two worker processes of two threads each share this machine.
    # The workers inherit the environment and read it when they import kiln.
    saved = os.environ.get("KILN_NUM_THREADS")
    os.environ["KILN_NUM_THREADS"] = "1"
    try:
        # bounded start-up: a cluster that cannot start fails the test instead of hanging the suite
        with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=2, dashboard_address=None,
                                      worker_dashboard_address=None, timeout="120s") as cluster, \
                distributed.Client(cluster, timeout="120s") as c:
            yield c
    finally:
        if saved is None:
            del os.environ["KILN_NUM_THREADS"]
        else:
            os.environ["KILN_NUM_THREADS"] = saved


@pytest.fixture(scope="module")
def saxpy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    g = kl.GraphBuilder()
    g.dispatch(saxpy, kl.Arg("a", kl.f32), kl.Arg("x", F32, shape=("n",)), kl.Arg("y", F32, shape=("n",)))
    path = tmp_path_factory.mktemp("dask") / "saxpy.kiln"
    g.compile().save(path)
    return path


def test_map_blocks_new_output(client: Any, saxpy_file: Path) -> None:
    x = np.arange(1000, dtype=np.float32)
    y = kd.map_blocks(kl.load(saxpy_file), {"x": da.from_array(x, chunks=100)}, out="y", args={"a": 3.0})
    assert y.dtype == np.float32 and y.chunks == ((100,) * 10,)
    np.testing.assert_array_equal(y.compute(), 3 * x)


def test_map_blocks_updates_a_copy_of_an_input(client: Any, saxpy_file: Path) -> None:
    x = np.arange(600, dtype=np.float32)
    y0 = np.ones(600, np.float32)
    y = kd.map_blocks(str(saxpy_file), {"x": da.from_array(x, chunks=150), "y": da.from_array(y0, chunks=150)},
                      out="y", args={"a": 2.0})
    np.testing.assert_array_equal(y.compute(), 2 * x + 1)
    assert (y0 == 1).all()


def test_map_blocks_2d_strided_blocks(client: Any, tmp_path: Path) -> None:
    g = kl.GraphBuilder()
    g.dispatch(scale2d, 0.5, kl.Arg("src", kl.ndarray(kl.f32, ndim=2)), kl.Arg("dst", kl.ndarray(kl.f32, ndim=2)))
    path = tmp_path / "scale.kiln"
    g.compile().save(path)
    img = np.arange(60 * 40, dtype=np.float32).reshape(60, 40)
    out = kd.map_blocks(kl.load(path), {"src": da.from_array(img, chunks=(25, 15))}, out="dst")
    np.testing.assert_array_equal(out.compute(), 0.5 * img)


def test_sweep(client: Any, saxpy_file: Path) -> None:
    x = np.arange(50, dtype=np.float32)
    y0 = np.full(50, 2.0, np.float32)
    futures = kd.sweep(kl.load(saxpy_file), [{"a": a} for a in (0.0, 1.0, 2.5, -1.0)], {"x": x, "y": y0}, repeat=3)
    results = client.gather(futures)
    assert [sorted(r) for r in results] == [["y"]] * 4      # the array the graph writes
    for a, r in zip((0.0, 1.0, 2.5, -1.0), results):
        np.testing.assert_allclose(r["y"], y0 + 3 * np.float32(a) * x, rtol=1e-6)
    assert (y0 == 2.0).all()


def test_file_linked_once_per_worker_and_no_compiler_on_workers(client: Any, tmp_path: Path) -> None:
    g = kl.GraphBuilder()        # a file no other test ships
    for _ in range(2):
        g.dispatch(saxpy, kl.Arg("a", kl.f32), kl.Arg("x", F32, shape=("n",)), kl.Arg("y", F32, shape=("n",)))
    path = tmp_path / "twice.kiln"
    g.compile().save(path)
    shipped = kd.ship(kl.load(path), client)
    before = client.run(kd.links_in_this_process)
    x = np.arange(64, dtype=np.float32)
    results = client.gather(kd.sweep(shipped, [{"a": float(a)} for a in range(24)], {"x": x, "y": x}))
    np.testing.assert_array_equal(results[3]["y"], x + 2 * 3 * x)
    kd.map_blocks(shipped, {"x": da.from_array(x, chunks=4)}, out="y", args={"a": 1.0}).compute()
    after = client.run(kd.links_in_this_process)
    # 40 tasks, 2 workers: each worker linked the file at most once.
    assert sorted(after[w] - before[w] for w in after) in ([0, 1], [1, 1]), (before, after)
    leaked = client.run(eval, "sorted(m for m in __import__('sys').modules "
                              "if m.startswith(('kiln.lang', 'kiln.codegen', 'kiln.compiler', 'llvmlite')))")
    assert all(v == [] for v in leaked.values()), leaked
    # The file is cluster data under one key that the tasks depend on, not bytes inside them.
    assert list(client.who_has(shipped.data)) == [shipped.data.key]


def test_bad_arguments(client: Any, saxpy_file: Path) -> None:
    step = kl.load(saxpy_file)
    x = da.from_array(np.zeros(10, np.float32), chunks=5)
    with pytest.raises(ArgumentError, match=r"also needs \['a'\]"):
        kd.map_blocks(step, {"x": x}, out="y")
    with pytest.raises(ArgumentError, match="has no argument 'z'"):
        kd.map_blocks(step, {"x": x}, out="z", args={"a": 1.0})
    with pytest.raises(ArgumentError, match="is a scalar"):
        kd.map_blocks(step, {"x": x}, out="a")
    with pytest.raises(ArgumentError, match=r"no argument\(s\) \['b'\]"):
        kd.sweep(step, [{"b": 1.0}], {"x": np.zeros(3, np.float32)})
    with pytest.raises(ArgumentError, match="expected a compiled graph"):
        kd.ship(object(), client)


def test_sweep_particles_example(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "sweep_particles.py"
    spec = importlib.util.spec_from_file_location("example_sweep_particles", path)
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(n=3000, frames=4, client=client) == 0
    out = capsys.readouterr().out
    assert "sweep_particles: OK" in out and out.count("max |state - numpy| = 0.00e+00") == 4


LOCAL_SCHEDULER = """
import numpy as np, dask.array as da, kiln as kl, kiln.dask as kd
step = kl.load(__import__("sys").argv[1])
x = np.arange(100, dtype=np.float32)
y = kd.map_blocks(step, {"x": da.from_array(x, chunks=10)}, out="y", args={"a": 2.0})
assert np.array_equal(y.compute(), 2 * x)
print("links", kd.links_in_this_process())
"""


def test_map_blocks_without_a_cluster(saxpy_file: Path, tmp_path: Path) -> None:
    """No distributed client: dask's local scheduler runs the blocks in this process, which
    links the file once."""
    import subprocess
    import sys
    script = tmp_path / "local.py"
    script.write_text(LOCAL_SCHEDULER)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, str(script), str(saxpy_file)], capture_output=True, text=True, env=env,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "links 1"
