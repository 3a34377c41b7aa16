"""Thread-count controls, the CPU limit, libgomp's wait policy and fork safety of the thread pool."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kiln as kl
from kiln.runtime import threads

ROOT = str(Path(__file__).resolve().parent.parent)
THREAD_VARIABLES = ("KILN_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_DISPLAY_ENV")


def run_python(code: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter whose thread variables are only `env_vars`."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES and not k.startswith("OMP_WAIT_POLICY")}
    env.update(env_vars, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


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
    code = "import kiln; print(kiln.get_num_threads())"
    assert run_python(code, KILN_NUM_THREADS="1").stdout.strip() == "1"
    for bad_value in ("lots", "0", "-2"):
        bad = run_python(code, KILN_NUM_THREADS=bad_value)
        assert bad.returncode != 0 and "KILN_NUM_THREADS must be a positive integer" in bad.stderr


def test_default_threads_follow_a_restricted_affinity() -> None:
    one_cpu = min(os.sched_getaffinity(0))
    code = (f"import os; os.sched_setaffinity(0, {{{one_cpu}}}); import kiln; "
            "print(kiln.get_num_threads(), len(os.sched_getaffinity(0)))")
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]


def test_explicit_thread_counts_win_over_the_cpu_limit() -> None:
    # KILN_NUM_THREADS beats the affinity; a count above the limit is honoured with a warning,
    # and set_num_threads beats KILN_NUM_THREADS
    one_cpu = min(os.sched_getaffinity(0))
    pin = f"import os; os.sched_setaffinity(0, {{{one_cpu}}}); "
    out = run_python(pin + "import kiln; print(kiln.get_num_threads())", KILN_NUM_THREADS="3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3" and "RuntimeWarning" in out.stderr and "more than the 1 CPU" in out.stderr
    out = run_python(pin + "import kiln; kiln.set_num_threads(2); print(kiln.get_num_threads())", KILN_NUM_THREADS="1")
    assert out.stdout.strip() == "2" and "set_num_threads(2) asks for 2 threads" in out.stderr
    out = run_python("import kiln; kiln.set_num_threads(1); print(kiln.get_num_threads())", KILN_NUM_THREADS="2")
    assert out.stdout.strip() == "1" and "set_num_threads(1)" not in out.stderr


def _fake_cgroup(tmp_path: Path, proc_lines: str, files: dict[str, str]) -> tuple[str, str]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(proc_lines)
    return str(root), str(proc)


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cases = [("max 100000\n", None), ("150000 100000\n", 1.5), ("50000 100000\n", 0.5), ("200000\n", 2.0)]
    for i, (text, quota) in enumerate(cases):
        root, proc = _fake_cgroup(tmp_path / str(i), "0::/app/job\n", {"app/job/cpu.max": text})
        assert threads.cgroup_cpu_quota(root, proc) == quota
        want = affinity if quota is None else min(affinity, max(1, -int(-quota // 1)))
        assert threads.cpu_limit(root, proc) == want
    # a parent's quota limits the child; the tighter one wins
    root, proc = _fake_cgroup(tmp_path / "nested", "0::/app/job\n",
                              {"app/cpu.max": "100000 100000", "app/job/cpu.max": "max 100000"})
    assert threads.cgroup_cpu_quota(root, proc) == 1.0 and threads.cpu_limit(root, proc) == 1
    # in a container the path may not exist below the mount: the mount point's own file counts
    root, proc = _fake_cgroup(tmp_path / "container", "0::/host/side/path\n", {"cpu.max": "70000 100000"})
    assert threads.cgroup_cpu_quota(root, proc) == 0.7 and threads.cpu_limit(root, proc) == 1


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    lines = "4:memory:/x\n3:cpu,cpuacct:/job\n0::/\n"
    root, proc = _fake_cgroup(tmp_path / "a", lines, {"cpu,cpuacct/job/cpu.cfs_quota_us": "-1\n",
                                                      "cpu,cpuacct/job/cpu.cfs_period_us": "100000\n"})
    assert threads.cgroup_cpu_quota(root, proc) is None and threads.cpu_limit(root, proc) == affinity
    root, proc = _fake_cgroup(tmp_path / "b", lines, {"cpu,cpuacct/job/cpu.cfs_quota_us": "50000\n",
                                                      "cpu,cpuacct/job/cpu.cfs_period_us": "100000\n"})
    assert threads.cgroup_cpu_quota(root, proc) == 0.5 and threads.cpu_limit(root, proc) == 1
    # unreadable or malformed files mean "no limit known", never an error
    root, proc = _fake_cgroup(tmp_path / "c", lines, {"cpu,cpuacct/job/cpu.cfs_quota_us": "garbage\n"})
    assert threads.cgroup_cpu_quota(root, proc) is None
    assert threads.cgroup_cpu_quota(str(tmp_path / "none"), str(tmp_path / "missing")) is None


_SHOW_POLICY = ("import os, kiln; from kiln.runtime import threads; threads.threading_available(); "
                "print(threads.wait_policy()); print(os.environ.get('GOMP_SPINCOUNT'))")


@pytest.mark.skipif(not threads.threading_available(), reason="needs libgomp")
def test_kiln_sets_a_bounded_spin_count_before_libgomp_loads() -> None:
    # OMP_DISPLAY_ENV makes libgomp print the settings it read in its constructor
    out = run_python(_SHOW_POLICY, OMP_DISPLAY_ENV="verbose")
    assert out.returncode == 0, out.stderr
    assert f"GOMP_SPINCOUNT = '{threads.KILN_SPINCOUNT}'" in out.stderr
    policy, left_behind = out.stdout.splitlines()
    assert policy == f"kiln's: GOMP_SPINCOUNT={threads.KILN_SPINCOUNT}"
    assert left_behind == "None"          # not inherited by child processes


@pytest.mark.skipif(not threads.threading_available(), reason="needs libgomp")
def test_a_users_wait_policy_is_not_overridden() -> None:
    out = run_python(_SHOW_POLICY, OMP_DISPLAY_ENV="verbose", GOMP_SPINCOUNT="12345")
    assert "GOMP_SPINCOUNT = '12345'" in out.stderr
    assert out.stdout.splitlines() == ["the user's: GOMP_SPINCOUNT=12345", "12345"]
    out = run_python(_SHOW_POLICY, OMP_DISPLAY_ENV="verbose", OMP_WAIT_POLICY="active")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in out.stderr and f"= '{threads.KILN_SPINCOUNT}'" not in out.stderr
    assert out.stdout.splitlines() == ["the user's: OMP_WAIT_POLICY=active", "None"]
    # libgomp loaded by another library first: kiln says so instead of claiming its own policy
    code = "import ctypes; ctypes.CDLL('libgomp.so.1'); " + _SHOW_POLICY
    out = run_python(code, OMP_DISPLAY_ENV="verbose")
    assert "GOMP_SPINCOUNT = '300000'" in out.stderr
    assert out.stdout.splitlines()[0] == "libgomp's own (it was loaded before kiln by another library)"


def _spin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    while True:
        pass


@kl.kernel
def _wave_step(h: kl.ndarray(kl.f32, ndim=2), v: kl.ndarray(kl.f32, ndim=2), total: kl.ndarray(kl.f64, ndim=1)):
    for i, j in kl.ndrange((1, h.shape[0] - 1), (1, h.shape[1] - 1)):
        v[i, j] += 0.1 * (h[i - 1, j] + h[i + 1, j] + h[i, j - 1] + h[i, j + 1] - 4.0 * h[i, j])
        total[0] += kl.f64(v[i, j])


def test_parallel_results_unchanged_under_load() -> None:
    # another process keeps one CPU busy while kernels run with 2 threads: same results as 1 thread
    rng = np.random.default_rng(14)
    h = rng.random((300, 200), dtype=np.float32)
    x = rng.random(1 << 18, dtype=np.float32)

    def compute(n: int) -> tuple[np.ndarray, float, np.ndarray]:
        kl.set_num_threads(n)
        v = np.zeros_like(h)
        total = np.zeros(1)
        y = np.zeros_like(x)
        for _ in range(20):
            _wave_step(h, v, total)
            _saxpy(1.5, x, y)
        return v, float(total[0]), y

    old = kl.get_num_threads()
    busy = mp.get_context("spawn").Process(target=_spin, args=(max(os.sched_getaffinity(0)),), daemon=True)
    busy.start()
    try:
        serial = compute(1)
        parallel = compute(2)
    finally:
        busy.kill()
        busy.join()
        kl.set_num_threads(old)
    np.testing.assert_array_equal(parallel[0], serial[0])
    np.testing.assert_array_equal(parallel[2], serial[2])
    assert parallel[1] == pytest.approx(serial[1], rel=1e-9)     # f64 sum: only the order differs


def test_threads_for_load() -> None:
    # the CPUs other processes leave free, rounded to the nearest, between 1 and the count asked for
    assert threads._threads_for_load(0.0, 2, 2) == 2
    assert threads._threads_for_load(0.4, 2, 2) == 2
    assert threads._threads_for_load(0.6, 2, 2) == 1
    assert threads._threads_for_load(1.0, 2, 2) == 1
    assert threads._threads_for_load(5.0, 2, 2) == 1
    assert threads._threads_for_load(-0.3, 2, 2) == 2      # tick rounding can make the estimate negative
    assert threads._threads_for_load(0.0, 8, 4) == 4       # never above the count asked for
    assert threads._threads_for_load(2.2, 8, 8) == 6


def test_busy_ticks_reads_only_the_allowed_cpus(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  30 1 3 900 5 1 1 2 0 0\n"
                    "cpu0 10 0 1 300 1 0 0 1 0 0\n"
                    "cpu1 20 1 2 600 4 1 1 1 0 0\n"
                    "intr 12345\nctxt 999\n")
    # user + system + irq + softirq + steal; "nice" (the 2nd column) and idle/iowait are not load
    assert threads._busy_ticks({0}, str(stat)) == 10 + 1 + 0 + 0 + 1
    assert threads._busy_ticks({0, 1}, str(stat)) == 12 + (20 + 2 + 1 + 1 + 1)
    assert threads._busy_ticks({7}, str(stat)) == 0
    assert threads._busy_ticks({0}, str(tmp_path / "missing")) is None


_WATCH_LOAD = """
import os, sys, time
import numpy as np
import kiln as kl
from kiln.runtime import threads
step = kl.load(sys.argv[1])
step.run({"x": np.ones(1 << 16, np.float32)})      # attaches an object: starts the monitor
seen = set()
for _ in range(40):
    time.sleep(threads.LOAD_PERIOD_S)
    seen.add(threads.threads_in_use())
print(kl.get_num_threads(), min(seen))
"""


@kl.kernel
def _double(x: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        x[i] = 2.0 * x[i]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not threads.threading_available(),
                    reason="needs 2 CPUs and libgomp")
def test_default_count_backs_off_while_a_cpu_is_busy(tmp_path: Path) -> None:
    # another process spinning on one of our CPUs leaves at most n-1 free: the default count drops;
    # an explicit count (KILN_NUM_THREADS) is kept as asked
    g = kl.GraphBuilder()
    g.dispatch(_double, kl.Arg("x", kl.ndarray(kl.f32, ndim=1), shape=("n",)))
    path = str(tmp_path / "double.kiln")
    g.compile().save(path)
    script = tmp_path / "watch.py"
    script.write_text(_WATCH_LOAD)
    cpus = sorted(os.sched_getaffinity(0))
    busy = mp.get_context("spawn").Process(target=_spin, args=(cpus[-1],), daemon=True)
    busy.start()
    try:
        env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
        env["PYTHONPATH"] = ROOT
        default = subprocess.run([sys.executable, str(script), path], env=env, capture_output=True, text=True,
                                 timeout=120, check=False)
        env["KILN_NUM_THREADS"] = str(len(cpus))
        fixed = subprocess.run([sys.executable, str(script), path], env=env, capture_output=True, text=True,
                               timeout=120, check=False)
    finally:
        busy.kill()
        busy.join()
    assert default.returncode == 0, default.stderr
    asked, fewest = map(int, default.stdout.split())
    assert asked == len(cpus) and fewest <= len(cpus) - 1
    assert fixed.stdout.split() == [str(len(cpus)), str(len(cpus))]
