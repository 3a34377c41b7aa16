"""Saving .kiln files (container.write_bytes): atomic, durable, no temporaries left behind,
safe with many threads saving to one path."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import kiln as kl
from kiln.artifact import container
from kiln.errors import ArtifactError, KilnError
from kiln.runtime.compiled import load


@kl.kernel
def add_const(x: kl.ndarray(kl.f32, ndim=1), a: kl.f32):
    for i in range(x.shape[0]):
        x[i] = x[i] + a


@pytest.fixture(scope="module")
def graphs():
    out = []
    for c in (1.0, 2.0):
        g = kl.GraphBuilder()
        g.dispatch(add_const, kl.Arg("x", kl.ndarray(kl.f32, ndim=1)), c)
        out.append(g.compile(target="x86-64-v2"))
    return out


def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.endswith(".tmp") or ".tmp" in n]


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_save_is_complete_with_normal_permissions(graphs, tmp_path):
    path = tmp_path / "m.kiln"
    graphs[0].save(path)
    assert path.read_bytes() == graphs[0]._module.to_bytes()
    assert (os.stat(path).st_mode & 0o777) == 0o666 & ~_umask()
    assert _leftovers(tmp_path) == []


def test_file_and_folder_are_fsynced(graphs, tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def record(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    graphs[0].save(tmp_path / "m.kiln")
    assert synced == ["file", "dir"]


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_save_leaves_old_file_and_no_temporary(graphs, tmp_path, monkeypatch, exc):
    path = tmp_path / "m.kiln"
    graphs[0].save(path)
    before = path.read_bytes()

    def fail(fd: int, data) -> int:
        raise exc

    monkeypatch.setattr(os, "write", fail)
    expected = ArtifactError if isinstance(exc, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        graphs[1].save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_failed_rename_removes_temporary(graphs, tmp_path, monkeypatch):
    def fail(src, dst) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(ArtifactError, match="cannot save.*Permission denied"):
        graphs[0].save(tmp_path / "m.kiln")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_unwritable_destination_is_artifact_error(graphs, tmp_path):
    with pytest.raises(ArtifactError, match="cannot save"):
        graphs[0].save(tmp_path / "missing-folder" / "m.kiln")
    with pytest.raises(ArtifactError, match="cannot save"):
        container.write_bytes(tmp_path, b"data")      # a folder in the way


def test_concurrent_saves_to_one_path(graphs, tmp_path):
    """8 threads x 30 saves of two different modules: each save returns or raises a KilnError,
    the file is always one complete module, nothing is left over."""
    path = tmp_path / "m.kiln"
    datas = {g._module.to_bytes() for g in graphs}
    outcomes: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    seen_bad: list[bytes] = []

    def saver(k: int) -> None:
        for _ in range(30):
            try:
                graphs[k % 2].save(path)
                result = "ok"
            except KilnError as e:
                result = f"kiln error: {e}"
            except BaseException as e:  # noqa: BLE001 - anything else is the bug looked for
                result = f"unexpected {type(e).__name__}: {e}"
            with lock:
                outcomes.append(result)

    def reader() -> None:
        while not stop.is_set():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            if data not in datas:
                seen_bad.append(data)

    threads = [threading.Thread(target=saver, args=(k,)) for k in range(8)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert len(outcomes) == 240
    assert [o for o in outcomes if o != "ok"] == []
    assert seen_bad == []
    x = np.zeros(3, np.float32)
    load(path).run({"x": x})
    assert x[0] in (1.0, 2.0)
    assert _leftovers(tmp_path) == []
