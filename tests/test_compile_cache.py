"""The on-disk compile cache (kiln.driver.cache): hits, misses on every change of what a kernel
compiles to, corrupt entries, concurrent processes, and the switch. The suite runs with the cache
off (tests/conftest.py); each test here turns it on with a private folder."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kiln as kl
import kiln.codegen
from kiln import config
from kiln.driver import CompileRequest, KernelSpec, cache, compile_program

ROOT = Path(__file__).resolve().parents[1]
F32_1 = kl.ndarray(kl.f32, ndim=1)

KERNEL_FILE = '''
import kiln as kl

SCALE = {scale}

@kl.kernel
def scaled(x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = x[i] * SCALE + {offset}
'''


@pytest.fixture
def cache_on(tmp_path: Path) -> Any:
    with config.configured(cache=True, cache_dir=str(tmp_path / "cache")):
        yield tmp_path / "cache"


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the objects built (the driver looks build_object up on kiln.codegen each time)."""
    calls: list[int] = []
    original = kiln.codegen.build_object

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(kiln.codegen, "build_object", counting)
    return calls


def _module_from(path: Path, text: str, name: str) -> Any:
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _request(kernel: Any) -> CompileRequest:
    return CompileRequest(kernels=(KernelSpec("scaled", kernel, (F32_1, F32_1)),))


def _run(data: bytes, x: np.ndarray) -> np.ndarray:
    from kiln.runtime.compiled import load_bytes
    y = np.zeros_like(x)
    load_bytes(data).kernels["scaled"](x, y)
    return y


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.kiln"))


X = np.arange(8, dtype=np.float32)


def test_hit_returns_the_stored_file_without_compiling(cache_on: Path, compiles: list[int], tmp_path: Path) -> None:
    mod = _module_from(tmp_path / "k_hit.py", KERNEL_FILE.format(scale=2.0, offset=1.0), "k_hit")
    first = compile_program(_request(mod.scaled))
    assert len(compiles) == 1 and len(_entries(cache_on)) == 1
    again = compile_program(_request(mod.scaled))
    assert again == first and len(compiles) == 1          # the same bytes (timestamp included)
    np.testing.assert_array_equal(_run(again, X), X * 2 + 1)


def test_a_source_change_is_a_miss(cache_on: Path, compiles: list[int], tmp_path: Path) -> None:
    path = tmp_path / "k_src.py"
    a = _module_from(path, KERNEL_FILE.format(scale=2.0, offset=1.0), "k_src_a")
    np.testing.assert_array_equal(_run(compile_program(_request(a.scaled)), X), X * 2 + 1)
    b = _module_from(path, KERNEL_FILE.format(scale=2.0, offset=5.0), "k_src_b")   # same file and name
    np.testing.assert_array_equal(_run(compile_program(_request(b.scaled)), X), X * 2 + 5)
    assert len(compiles) == 2 and len(_entries(cache_on)) == 2


def test_a_changed_global_constant_is_a_miss(cache_on: Path, compiles: list[int], tmp_path: Path) -> None:
    path = tmp_path / "k_glob.py"
    a = _module_from(path, KERNEL_FILE.format(scale=2.0, offset=1.0), "k_glob")
    key_a = cache.request_key(_request(a.scaled))
    np.testing.assert_array_equal(_run(compile_program(_request(a.scaled)), X), X * 2 + 1)
    # the same file executed again with the global rebound: identical source, another constant
    b = _module_from(path, KERNEL_FILE.format(scale=2.0, offset=1.0), "k_glob_b")
    b.SCALE = 3.0
    assert cache.request_key(_request(b.scaled)) != key_a
    np.testing.assert_array_equal(_run(compile_program(_request(b.scaled)), X), X * 3 + 1)
    assert len(compiles) == 2


def _closure_kernel(k: float) -> Any:
    @kl.kernel
    def scaled(x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
        for i in range(x.shape[0]):
            y[i] = x[i] * k
    return scaled


def test_closure_constants_and_argument_types_are_in_the_key(cache_on: Path) -> None:
    two, three = _closure_kernel(2.0), _closure_kernel(3.0)
    assert cache.request_key(_request(two)) != cache.request_key(_request(three))
    assert cache.request_key(_request(two)) == cache.request_key(_request(_closure_kernel(2.0)))
    np.testing.assert_array_equal(_run(compile_program(_request(two)), X), X * 2)
    np.testing.assert_array_equal(_run(compile_program(_request(three)), X), X * 3)
    f64 = CompileRequest(kernels=(KernelSpec("scaled", two, (kl.ndarray(kl.f64, ndim=1),) * 2),))
    assert cache.request_key(f64) != cache.request_key(_request(two))
    other_target = CompileRequest(kernels=_request(two).kernels, cpu_targets=("x86-64-v2",))
    assert cache.request_key(other_target) != cache.request_key(_request(two))


class _Opaque:
    n = 3


OPAQUE = _Opaque()


@kl.kernel
def reads_an_object(x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = x[i] * OPAQUE.n


def test_a_kernel_reading_an_arbitrary_object_is_not_cached(cache_on: Path) -> None:
    assert cache.request_key(_request(reads_an_object)) is None


def test_a_corrupt_entry_is_a_miss_and_is_rewritten(cache_on: Path, compiles: list[int], tmp_path: Path) -> None:
    mod = _module_from(tmp_path / "k_bad.py", KERNEL_FILE.format(scale=2.0, offset=1.0), "k_bad")
    compile_program(_request(mod.scaled))
    (entry,) = _entries(cache_on)
    for damage in (lambda b: b[: len(b) // 2], lambda b: b[:-9] + bytes([b[-9] ^ 0xFF]) + b[-8:], lambda b: b""):
        entry.write_bytes(damage(entry.read_bytes()))
        data = compile_program(_request(mod.scaled))
        np.testing.assert_array_equal(_run(data, X), X * 2 + 1)
        assert entry.read_bytes() == data                  # the fresh result replaced it
    assert len(compiles) == 4
    assert cache.load(cache.request_key(_request(mod.scaled)) or "") is not None


def test_graphs_are_cached_with_their_dispatches(cache_on: Path, compiles: list[int], tmp_path: Path) -> None:
    mod = _module_from(tmp_path / "k_graph.py", KERNEL_FILE.format(scale=2.0, offset=1.0), "k_graph")
    xa, ya = kl.Arg("x", F32_1), kl.Arg("y", F32_1)

    def graph(n: int) -> Any:
        g = kl.GraphBuilder()
        for _ in range(n):
            g.dispatch(mod.scaled, xa, ya)
            g.dispatch(mod.scaled, ya, xa)
        return g.compile()

    graph(2)
    graph(3)
    graph(2)
    assert len(compiles) == 2 and len(_entries(cache_on)) == 2
    x = X.copy()
    graph(2).run({"x": x, "y": np.zeros_like(x)})
    ref = X.copy()
    for _ in range(4):
        ref = ref * 2 + 1
    np.testing.assert_array_equal(x, ref)


FIELD_FILE = """
import kiln as kl

level = kl.field(kl.f32, shape=3)

@kl.kernel
def raise_level():
    for i in level:
        level[i] += 1.0
"""


def test_a_changed_field_content_is_a_miss(cache_on: Path, tmp_path: Path) -> None:
    # a compiled graph records its fields' content as their initial value
    mod = _module_from(tmp_path / "k_field.py", FIELD_FILE, "k_field")

    def run_once() -> np.ndarray:
        g = kl.GraphBuilder()
        g.dispatch(mod.raise_level)
        cg = g.compile()
        cg.run({})
        return np.asarray(cg.fields["level"]).copy()

    np.testing.assert_array_equal(run_once(), [1, 1, 1])
    mod.level.from_numpy(np.float32([5, 6, 7]))
    np.testing.assert_array_equal(run_once(), [6, 7, 8])
    mod.level.from_numpy(np.float32([0, 0, 2]))
    np.testing.assert_array_equal(run_once(), [1, 1, 3])


def test_switched_off_it_neither_reads_nor_writes(tmp_path: Path, compiles: list[int]) -> None:
    mod = _module_from(tmp_path / "k_off.py", KERNEL_FILE.format(scale=2.0, offset=1.0), "k_off")
    with config.configured(cache=False, cache_dir=str(tmp_path / "off")):
        compile_program(_request(mod.scaled))
        compile_program(_request(mod.scaled))
    assert len(compiles) == 2 and not (tmp_path / "off").exists()
    with config.configured(cache=True, cache_dir=str(tmp_path / "off")):
        assert not cache.enabled_for(CompileRequest(cuda=True, cpu_targets=()), dumping=False)
        assert not cache.enabled_for(_request(mod.scaled), dumping=True)
        assert cache.enabled_for(_request(mod.scaled), dumping=False)


def test_default_location_follows_xdg_and_kiln_cache_dir() -> None:
    cfg = config.Config()
    assert cache.cache_dir(cfg.replace(xdg_cache_home="/x/cache")) == os.path.join("/x/cache", "kiln")
    assert cache.cache_dir(cfg.replace(cache_dir="/y", xdg_cache_home="/x")) == "/y"
    assert cache.cache_dir(cfg) == os.path.join(os.path.expanduser("~"), ".cache", "kiln")
    assert config.Config.from_environ({"KILN_CACHE": "0"}).cache is False and cfg.cache is True


CHILD = textwrap.dedent('''
    import sys, numpy as np
    sys.path.insert(0, sys.argv[1])
    import k_child
    x = np.arange(1000, dtype=np.float32)
    y = np.zeros_like(x)
    k_child.scaled(x, y)
    assert (y == x * 2 + 1).all()
    print("llvmlite" in sys.modules)
''')


def _children(tmp_path: Path, n: int, **env: str) -> list[str]:
    (tmp_path / "k_child.py").write_text(KERNEL_FILE.format(scale=2.0, offset=1.0))
    full = {**os.environ, "PYTHONPATH": str(ROOT), "KILN_CACHE": "1", "KILN_CACHE_DIR": str(tmp_path / "cache"), **env}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], env=full, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out.strip())
    return outs


def test_two_processes_compiling_at_once_both_succeed_and_leave_one_valid_entry(tmp_path: Path) -> None:
    _children(tmp_path, 2)
    entries = _entries(tmp_path / "cache")
    assert len(entries) == 1 and not [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]
    from kiln.artifact import container
    container.unpack(entries[0].read_bytes())                 # whole and checksummed


def test_a_second_process_direct_call_hits_without_llvmlite(tmp_path: Path) -> None:
    assert _children(tmp_path, 1) == ["True"]                 # compiled: imported llvmlite
    assert _children(tmp_path, 1) == ["False"]                # a hit: linked from the cache alone
    assert _children(tmp_path, 1, KILN_CACHE="0") == ["True"]


def test_an_unwritable_cache_folder_never_fails_a_compile(tmp_path: Path, compiles: list[int]) -> None:
    mod = _module_from(tmp_path / "k_ro.py", KERNEL_FILE.format(scale=2.0, offset=1.0), "k_ro")
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    with config.configured(cache=True, cache_dir=str(blocker)):
        for _ in range(2):
            np.testing.assert_array_equal(_run(compile_program(_request(mod.scaled)), X), X * 2 + 1)
    assert len(compiles) == 2 and blocker.read_text().startswith("a file")
