"""The compile progress line (kiln.driver.pipeline.Progress): on a terminal after the delay,
erased at the end; nothing at all when stderr is not a terminal."""

from __future__ import annotations

import io
import time

from kiln.driver.pipeline import CompileOptions, Pipeline, Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_on_a_terminal_names_the_stage_and_kernels() -> None:
    pipe = Pipeline(CompileOptions())
    pipe.kernels_total = 4
    out = _Terminal()
    with Progress(pipe, "main", stream=out, delay_s=0.0, interval_s=0.01) as progress, pipe.stage("llvm optimise"):
        deadline = time.monotonic() + 10
        while "llvm optimise" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    text = out.getvalue()
    assert progress.shown > 0
    assert "kiln: compiling main (" in text and "llvm optimise; kernels lowered 0/4" in text
    assert text.endswith("\r\x1b[K")                     # the line is erased when the compile ends


def test_silent_when_not_a_terminal_or_quick() -> None:
    pipe = Pipeline(CompileOptions())
    log = io.StringIO()                                  # isatty() is False
    with Progress(pipe, "main", stream=log, delay_s=0.0, interval_s=0.01):
        time.sleep(0.05)
    assert log.getvalue() == ""
    quick = _Terminal()
    with Progress(pipe, "main", stream=quick, delay_s=5.0) as progress:
        pass
    assert quick.getvalue() == "" and progress.shown == 0
