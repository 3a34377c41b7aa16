"""Thread-count controls and fork safety of the CPU thread pool."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

import kiln as kl


@kl.kernel
def _saxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


X = np.ones(1 << 18, np.float32)


def _child(q) -> None:  # type: ignore[no-untyped-def]
    y = np.zeros_like(X)
    _saxpy(2.0, X, y)
    q.put((float(y.sum()), kl.get_num_threads()))


def test_forked_child_runs_parallel_kernels_serially() -> None:
    # libgomp's pool does not survive fork(): without kiln's at-fork hook the child hangs here.
    y = np.zeros_like(X)
    _saxpy(2.0, X, y)                  # the parent has used the thread pool
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    p.join(60)
    alive = p.is_alive()
    if alive:
        p.kill()
    assert not alive, "forked child hung in the thread pool"
    total, threads = q.get(timeout=5)
    assert total == 2.0 * X.size and threads == 1


def test_set_num_threads_validates() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            kl.set_num_threads(bad)  # type: ignore[arg-type]
    n = kl.get_num_threads()
    kl.set_num_threads(1)
    try:
        assert kl.get_num_threads() == 1
        y = np.zeros_like(X)
        _saxpy(3.0, X, y)
        assert (y == 3.0).all()
    finally:
        kl.set_num_threads(n)


def test_env_thread_count() -> None:
    import os
    import subprocess
    import sys
    code = "import kiln; print(kiln.get_num_threads())"
    env = dict(os.environ, KILN_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    env["KILN_NUM_THREADS"] = "lots"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "KILN_NUM_THREADS must be a positive integer" in bad.stderr
