"""The CPU thread pool: libgomp (the OpenMP runtime) driven from LLVM-generated code.

Generated objects never link against libgomp. They call through pointer globals
(`kiln_rt_gomp_parallel`, `kiln_rt_omp_get_thread_num`, `kiln_rt_omp_get_num_threads`) that
`attach` fills after loading, plus `kiln_rt_num_threads`. Where libgomp is absent the pointers stay
null and parallel loops run on the calling thread. bench/NOTES.md records why this design won.
"""

from __future__ import annotations

import ctypes
import os
import weakref
from typing import Any

from kiln import config

_GOMP_NAMES = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
_GLOBALS = ("kiln_rt_gomp_parallel", "kiln_rt_omp_get_thread_num", "kiln_rt_omp_get_num_threads")

_gomp_addresses: tuple[int, int, int] | None | bool = False   # False: not looked up yet
_attached: weakref.WeakSet[Any] = weakref.WeakSet()


def _default_threads() -> int:
    env = config.current().num_threads
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"KILN_NUM_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"KILN_NUM_THREADS must be a positive integer, got {env!r}")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_num_threads = _default_threads()


def _gomp() -> tuple[int, int, int] | None:
    global _gomp_addresses
    if _gomp_addresses is False:
        try:
            lib = ctypes.CDLL("libgomp.so.1")
            _gomp_addresses = tuple(  # type: ignore[assignment]
                ctypes.cast(getattr(lib, n), ctypes.c_void_p).value or 0 for n in _GOMP_NAMES)
        except (OSError, AttributeError):
            _gomp_addresses = None
    return _gomp_addresses or None  # type: ignore[return-value]


def threading_available() -> bool:
    """True when parallel loops can use more than the calling thread."""
    return _gomp() is not None


def attach(obj: Any) -> None:
    """Point a freshly loaded object's runtime globals at the thread pool."""
    from kiln.runtime.native import set_global
    gomp = _gomp() if _num_threads > 1 else None
    if gomp is not None:
        for name, addr in zip(_GLOBALS, gomp):
            set_global(obj, name, ctypes.c_void_p, addr)
    set_global(obj, "kiln_rt_num_threads", ctypes.c_int32, _num_threads if gomp else 1)
    _attached.add(obj)


def set_num_threads(n: int) -> None:
    """Use `n` threads for parallel loops from now on (all loaded graphs and kernels)."""
    global _num_threads
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    _num_threads = n
    for obj in list(_attached):
        attach(obj)


def get_num_threads() -> int:
    return _num_threads if threading_available() else 1


def _after_fork_in_child() -> None:
    # libgomp's thread pool does not survive fork(): a forked child (multiprocessing's default on
    # Linux) that enters a parallel region the parent had used hangs. Children run serially.
    global _num_threads
    _num_threads = 1
    for obj in list(_attached):
        attach(obj)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
