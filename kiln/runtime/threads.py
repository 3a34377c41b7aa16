"""The CPU thread pool: libgomp (the OpenMP runtime) driven from LLVM-generated code.

Generated objects never link against libgomp. They call through pointer globals
(`kiln_rt_gomp_parallel`, `kiln_rt_omp_get_thread_num`, `kiln_rt_omp_get_num_threads`) that
`attach` fills after loading, plus `kiln_rt_num_threads`. Where libgomp is absent the pointers stay
null and parallel loops run on the calling thread. bench/NOTES.md records why this design won.

The thread policy (worker count from the CPU limit, libgomp's wait policy, fork) is described for
users in docs/language.md, "Threads"; the measurements behind it are in bench/NOTES.md.
"""

from __future__ import annotations

import _thread
import ctypes
import math
import os
import time
import warnings
import weakref
from typing import Any

from kiln import config

_GOMP_NAMES = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
_GLOBALS = ("kiln_rt_gomp_parallel", "kiln_rt_omp_get_thread_num", "kiln_rt_omp_get_num_threads")
#: libgomp spin iterations before a waiting thread sleeps (~10-35 us); bench/NOTES.md "Busy machines"
KILN_SPINCOUNT = "1000"

_gomp_addresses: tuple[int, int, int] | None | bool = False   # False: not looked up yet
_wait_policy = "libgomp not loaded yet"
_attached: weakref.WeakSet[Any] = weakref.WeakSet()
_attached_lock = _thread.allocate_lock()   # the load monitor's thread walks _attached too
_warned_over_limit = False
#: seconds between two looks at the machine's load (only while kiln picks the thread count itself)
LOAD_PERIOD_S = 0.1


def _environment() -> dict[str, str]:
    """libgomp's own wait-policy variables as the user set them (read by kiln.config, the one
    place that reads the environment)."""
    return config.openmp_wait_environment()


# --------------------------------------------------------------------------------------------
# how many CPUs this process may use
# --------------------------------------------------------------------------------------------

def _read_quota_file(path: str, period_path: str | None) -> float | None:
    """CPUs allowed by one cgroup file: v2 `cpu.max` ("max 100000" / "150000 100000"), or v1
    `cpu.cfs_quota_us` (-1: no limit) with its `cpu.cfs_period_us`."""
    try:
        with open(path) as f:
            fields = f.read().split()
        if period_path is None:
            quota, period = fields[0], fields[1] if len(fields) > 1 else "100000"
        else:
            with open(period_path) as f:
                quota, period = fields[0], f.read().strip()
    except (OSError, IndexError):
        return None
    try:
        q, p = int(quota), int(period)
    except ValueError:      # "max"
        return None
    return q / p if q > 0 and p > 0 else None


def _cgroup_dirs(mount: str, path: str) -> list[str]:
    """`mount/path` and each of its parents up to the mount point: a parent's quota limits too, and
    in a container the path seen in /proc/self/cgroup may not exist below the mount (the mount
    point itself is then the container's own cgroup)."""
    parts = [p for p in path.strip("/").split("/") if p]
    return [os.path.join(mount, *parts[:k]) for k in range(len(parts), -1, -1)]


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """CPUs' worth of time per period that the process's cgroup (v2 or v1) allows; None if unlimited.

    `root` and `proc_cgroup` are parameters so that tests can point them at a fake hierarchy."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found: list[float] = []
    for line in lines:
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":       # cgroup v2
            for d in _cgroup_dirs(root, path):
                q = _read_quota_file(os.path.join(d, "cpu.max"), None)
                if q is not None:
                    found.append(q)
        elif "cpu" in controllers.split(","):        # cgroup v1, mounted as cpu or cpu,cpuacct
            for mount in {os.path.join(root, controllers), os.path.join(root, "cpu")}:
                for d in _cgroup_dirs(mount, path):
                    q = _read_quota_file(os.path.join(d, "cpu.cfs_quota_us"), os.path.join(d, "cpu.cfs_period_us"))
                    if q is not None:
                        found.append(q)
    return min(found) if found else None


def cpu_limit(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> int:
    """CPUs this process may use: the affinity mask's size, capped by the cgroup quota rounded up."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def _over_limit_warning(n: int, source: str) -> None:
    """Warn (once per process: test suites switch counts often) about a count above the CPU limit."""
    global _warned_over_limit
    limit = cpu_limit()
    if n > limit and not _warned_over_limit:
        _warned_over_limit = True
        warnings.warn(f"kiln: {source} asks for {n} threads, more than the {limit} CPU(s) this process may use; "
                      "parallel loops will wait for each other (docs/language.md, 'Threads')",
                      RuntimeWarning, stacklevel=3)


def _default_threads() -> int:
    env = config.current().num_threads
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"KILN_NUM_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"KILN_NUM_THREADS must be a positive integer, got {env!r}")
        _over_limit_warning(n, "KILN_NUM_THREADS")
        return n
    return cpu_limit()


_num_threads = _default_threads()
_explicit = bool(config.current().num_threads)   # else kiln adapts to load
_load_cap = _num_threads               # the load monitor's current limit on the default count
_monitor_started = False


# --------------------------------------------------------------------------------------------
# libgomp: its wait policy, loading it, pointing objects at it
# --------------------------------------------------------------------------------------------

def _libgomp_loaded() -> bool:
    """True when another library (Numba's OpenMP layer, scikit-learn, ...) has loaded libgomp already:
    its constructor has read the environment then, so kiln's spin count would not take effect."""
    try:
        ctypes.CDLL("libgomp.so.1", mode=getattr(os, "RTLD_NOLOAD", 4) | os.RTLD_LAZY)
    except OSError:
        return False
    return True


def _load_libgomp() -> ctypes.CDLL:
    """dlopen libgomp with kiln's bounded spin count unless the user chose a wait policy. The
    variable is removed again afterwards so that child processes inherit the user's environment."""
    global _wait_policy
    user = {k: v for k, v in _environment().items() if v.strip()}
    if user:
        _wait_policy = "the user's: " + ", ".join(f"{k}={v}" for k, v in sorted(user.items()))
        return ctypes.CDLL("libgomp.so.1")
    if _libgomp_loaded():
        _wait_policy = "libgomp's own (it was loaded before kiln by another library)"
        return ctypes.CDLL("libgomp.so.1")
    with config.environment_variable("GOMP_SPINCOUNT", KILN_SPINCOUNT):   # read by libgomp's constructor
        lib = ctypes.CDLL("libgomp.so.1")
    _wait_policy = f"kiln's: GOMP_SPINCOUNT={KILN_SPINCOUNT}"
    return lib


def _gomp() -> tuple[int, int, int] | None:
    global _gomp_addresses, _wait_policy
    if _gomp_addresses is False:
        try:
            lib = _load_libgomp()
            _gomp_addresses = tuple(  # type: ignore[assignment]
                ctypes.cast(getattr(lib, n), ctypes.c_void_p).value or 0 for n in _GOMP_NAMES)
        except (OSError, AttributeError):
            _gomp_addresses = None
            _wait_policy = "none: libgomp is missing, parallel loops run on the calling thread"
    return _gomp_addresses or None  # type: ignore[return-value]


def threading_available() -> bool:
    """True when parallel loops can use more than the calling thread."""
    return _gomp() is not None


def wait_policy() -> str:
    """Whose libgomp wait policy is in force: kiln's, the user's, or libgomp's own."""
    return _wait_policy


def threads_in_use() -> int:
    """Threads parallel loops use right now: `get_num_threads()`, or fewer while other processes keep
    CPUs busy and the count is kiln's default (see `_threads_for_load`)."""
    if not threading_available():
        return 1
    return _num_threads if _explicit else max(1, min(_num_threads, _load_cap))


def _attach_locked(obj: Any) -> None:
    from kiln.runtime.native import set_global
    n = threads_in_use()
    gomp = _gomp() if n > 1 else None
    if gomp is not None:
        for name, addr in zip(_GLOBALS, gomp):
            set_global(obj, name, ctypes.c_void_p, addr)
    set_global(obj, "kiln_rt_num_threads", ctypes.c_int32, n if gomp else 1)


def _reattach_all() -> None:
    with _attached_lock:
        for obj in list(_attached):
            _attach_locked(obj)


def attach(obj: Any) -> None:
    """Point a freshly loaded object's runtime globals at the thread pool."""
    with _attached_lock:
        _attach_locked(obj)
        _attached.add(obj)
    if not _explicit and _num_threads > 1 and not _monitor_started:
        _start_load_monitor()


def set_num_threads(n: int) -> None:
    """Use `n` threads for parallel loops from now on (all loaded graphs and kernels)."""
    global _num_threads, _explicit
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    _over_limit_warning(n, f"set_num_threads({n})")
    _num_threads, _explicit = n, True
    _reattach_all()


def get_num_threads() -> int:
    return _num_threads if threading_available() else 1


# --------------------------------------------------------------------------------------------
# the load monitor: fewer threads while other processes hold CPUs (default count only)
# --------------------------------------------------------------------------------------------

def _threads_for_load(others_busy: float, cpus: int, limit: int) -> int:
    """Threads to use when other processes keep `others_busy` CPUs' worth of the process's `cpus`
    busy: the CPUs left, rounded to the nearest (a thread without a CPU of its own makes every
    parallel loop wait for the scheduler), between 1 and `limit`."""
    free = cpus - max(0.0, others_busy)
    return max(1, min(limit, int(free + 0.5)))


def _busy_ticks(cpus: set[int], stat_path: str = "/proc/stat") -> int | None:
    """Clock ticks the CPUs in `cpus` have spent busy (user, system, irq, softirq, steal). Not "nice":
    a process at a positive nice value yields its CPU to kiln's threads, so it does not count as load."""
    try:
        with open(stat_path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    total = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(x) for x in rest.split()]
            total += v[0] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return total


def _own_ticks(tick: float) -> float:
    t = os.times()
    return (t.user + t.system) * tick


def _monitor_loop(cpus: set[int], tick: float, pid: int) -> None:
    global _load_cap
    others = 0.0
    prev_busy, prev_own, prev_t = _busy_ticks(cpus), _own_ticks(tick), time.monotonic()
    while os.getpid() == pid and prev_busy is not None and not _explicit:   # explicit counts: done
        time.sleep(LOAD_PERIOD_S)
        busy, own, now = _busy_ticks(cpus), _own_ticks(tick), time.monotonic()
        if busy is None:
            return
        sample = (busy - prev_busy - (own - prev_own)) / max(1e-3, (now - prev_t) * tick)
        others = 0.5 * others + 0.5 * sample       # smooth over ~2 periods: no flapping on one tick
        prev_busy, prev_own, prev_t = busy, own, now
        cap = _threads_for_load(others, len(cpus), _num_threads)
        if cap != _load_cap:
            _load_cap = cap
            _reattach_all()


def _start_load_monitor() -> None:
    global _monitor_started
    _monitor_started = True
    try:
        cpus = set(os.sched_getaffinity(0))
        tick = float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux
        return
    if _busy_ticks(cpus) is None:
        return
    import threading  # here, not at import: `threading` costs ~0.6 ms of kiln's start-up
    threading.Thread(target=_monitor_loop, args=(cpus, tick, os.getpid()), name="kiln-load-monitor",
                     daemon=True).start()


def _after_fork_in_child() -> None:
    # libgomp's thread pool does not survive fork(): a forked child (multiprocessing's default on
    # Linux) that enters a parallel region the parent had used hangs. Children run serially.
    global _num_threads, _explicit, _attached_lock
    _num_threads, _explicit = 1, True
    _attached_lock = _thread.allocate_lock()   # another thread may have held it at the fork
    _reattach_all()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
