"""kiln.config: one frozen object for every environment variable, documented in one table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kiln import config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import gen_config_doc


def test_doc_table_is_in_sync() -> None:
    assert gen_config_doc.DOC_PATH.read_text() == gen_config_doc.config_doc(), \
        "docs/configuration.md is stale: run `python tools/gen_config_doc.py`"


def test_fields_and_settings_agree() -> None:
    assert set(config.Config.__annotations__) == {s.field for s in config.SETTINGS}
    assert len({s.env for s in config.SETTINGS}) == len(config.SETTINGS)


def test_parsing_from_an_environment() -> None:
    cfg = config.Config.from_environ({"KILN_NUM_THREADS": " 3 ", "KILN_DEVICE": " CUDA ", "KILN_LOADER": "MCJIT",
                                      "KILN_DUMP": "ir, LLVM,,asm", "KILN_DUMP_DIR": "out", "KILN_TIMING": "1",
                                      "KILN_VERIFY": "0"})
    assert (cfg.num_threads, cfg.device, cfg.loader) == ("3", "cuda", "mcjit")
    assert (cfg.dump, cfg.dump_dir, cfg.timing, cfg.verify) == (("ir", "llvm", "asm"), "out", True, False)
    empty = config.Config.from_environ({})
    assert empty == config.Config() and empty.device == "cpu" and empty.dump_dir == "kiln_dump"
    assert config.Config.from_environ({"KILN_DEVICE": " "}).device == "cpu"


def test_frozen_and_replace() -> None:
    cfg = config.Config()
    with pytest.raises(AttributeError, match="frozen"):
        cfg.timing = True  # type: ignore[misc]
    assert cfg.replace(timing=True).timing is True and cfg.timing is False
    with pytest.raises(TypeError, match="unknown configuration field"):
        config.Config(bogus=1)


def test_configured_restores() -> None:
    before = config.current()
    with config.configured(dump_dir="elsewhere") as cfg:
        assert config.current() is cfg and cfg.dump_dir == "elsewhere"
    assert config.current() is before


def test_verify_is_on_under_pytest() -> None:
    assert config.current().verify is True          # tests/conftest.py sets KILN_VERIFY=1


def test_only_config_reads_the_environment() -> None:
    """No other module of kiln reads os.environ (one home for every variable)."""
    readers = [p.relative_to(ROOT).as_posix() for p in (ROOT / "kiln").rglob("*.py")
               if ("os.environ" in p.read_text() or "getenv" in p.read_text()) and p.name != "config.py"]
    assert readers == [], readers


def test_import_kiln_does_not_read_the_configuration() -> None:
    """`import kiln` stays cheap: the configuration module is not even imported."""
    code = "import sys, kiln; print('kiln.config' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


def test_every_tuning_knob_is_read_where_the_table_says() -> None:
    import importlib
    import inspect

    for knob in config.TUNING_KNOBS:
        source = inspect.getsource(importlib.import_module(knob.used_in))
        assert f"TUNING.{knob.field}" in source, f"{knob.field} is not read by {knob.used_in}"
    with pytest.raises(AttributeError):
        config.TUNING.private_limit = 1  # type: ignore[misc]
