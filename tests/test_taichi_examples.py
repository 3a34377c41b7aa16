"""The Taichi programs ported to kiln (examples/game_of_life.py, examples/waterwave.py) build a
module, save it, run it in a fresh process and match their numpy references (small sizes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"taichi_example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name,kwargs", [("game_of_life", {"steps": 12}), ("waterwave", {"steps": 30})])
def test_taichi_example(name: str, kwargs: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert _load(name).main(**kwargs) == 0
    assert f"{name}: OK" in capsys.readouterr().out
