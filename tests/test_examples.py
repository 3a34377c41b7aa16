"""The examples keep working (small sizes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name,kwargs", [("particles", {"n": 5000, "frames": 10}),
                                         ("image_filter", {"h": 64, "w": 96})])
def test_example(name: str, kwargs: dict, capsys) -> None:
    assert _load(name).main(**kwargs) == 0
    assert f"{name}: OK" in capsys.readouterr().out
