"""The pass manager: named IR -> IR passes, and the watch kept over every compile stage.

`IR_PASSES` is the list every kernel goes through between the front end and code generation.
`Pipeline` runs it and wraps each stage (front end, each pass, verify, LLVM emit/optimise,
object emit, PTX, cubin link, pack) so that

- its time is recorded (`KILN_TIMING=1` prints the table to stderr after the compile),
- its output can be dumped to a file named by kernel and stage (`KILN_DUMP=ir,llvm,asm,ptx`,
  `KILN_DUMP_DIR`, or `compile(dump=...)`),
- an error raised inside it names the stage (`KilnError.stage`),
- the IR verifier runs after every pass (`KILN_VERIFY=1`, always under pytest) or once, after
  the last pass.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from kiln import passes
from kiln.config import DUMP_KINDS, Config
from kiln.errors import KilnError
from kiln.ir.nodes import KernelIR
from kiln.ir.printer import format_ir
from kiln.ir.verify import verify


@dataclass(frozen=True)
class Pass:
    """One IR -> IR pass: its stage name, the function, and why it exists."""

    name: str
    run: Callable[[KernelIR], KernelIR]
    purpose: str


#: the IR passes, in order (each is tested alone in tests/test_passes.py)
IR_PASSES: tuple[Pass, ...] = (
    Pass("lower_aug_stores", passes.lower_aug_stores,
         "`x[i] += v`: an atomic inside parallel loops, a load-op-store elsewhere"),
    Pass("fold_constants", passes.fold_constants,
         "fold literal arithmetic with kiln's own semantics (wrapping ints, f16/f32 rounding)"),
    Pass("plan_parallel", passes.plan_parallel,
         "decide each parallel loop's plan (privatised reductions, CUDA launch phases); codegen obeys it"),
)


#: the passes that follow IR_PASSES in debug mode (`compile(debug=True)`, `KILN_DEBUG=1`,
#: `@kl.kernel(debug=True)`; docs/debug.md)
DEBUG_PASSES: tuple[Pass, ...] = (
    Pass("insert_bounds_checks", passes.insert_bounds_checks,
         "debug mode: check every array index and integer divisor at run time"),
)


def ir_passes(debug: bool) -> tuple[Pass, ...]:
    """The passes a kernel goes through: IR_PASSES, then DEBUG_PASSES in debug mode."""
    return IR_PASSES + DEBUG_PASSES if debug else IR_PASSES


@dataclass(frozen=True)
class CompileOptions:
    """What the pipeline watches: dump kinds and folder, timing, verify after every pass; and
    `debug`: every kernel compiled with run-time checks (docs/debug.md)."""

    dump: frozenset[str] = frozenset()
    dump_dir: str = "kiln_dump"
    timing: bool = False
    verify_each_pass: bool = False
    debug: bool = False

    @classmethod
    def from_config(cls, cfg: Config, dump: str | Sequence[str] | None = None) -> CompileOptions:
        """The options of `cfg`; `dump` (a compile() argument) replaces KILN_DUMP when given."""
        kinds = cfg.dump if dump is None else tuple(
            n.strip().lower() for n in (dump.split(",") if isinstance(dump, str) else dump) if n.strip())
        unknown = sorted(set(kinds) - set(DUMP_KINDS))
        if unknown:
            raise KilnError(f"unknown dump kind(s) {', '.join(unknown)}: expected some of {', '.join(DUMP_KINDS)}")
        return cls(frozenset(kinds), cfg.dump_dir, cfg.timing, cfg.verify, cfg.debug)


_STAGE_EXT = {"ir": "kir", "llvm": "ll", "asm": "s", "ptx": "ptx"}


class Pipeline:
    """One compile's stage watch: timings, dumps, error tags (see the module docstring)."""

    def __init__(self, options: CompileOptions) -> None:
        self.options = options
        self.timings: dict[str, list[float]] = {}
        self._dump_count: dict[str, int] = {}
        self.dumped: list[str] = []
        self.current_stage = ""          # what a progress line says (kiln.driver.pipeline.Progress)
        self.kernels_lowered = 0
        self.kernels_total = 0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block under `name` and tag kiln errors raised in it."""
        self.current_stage = name
        t0 = time.perf_counter()
        try:
            yield
        except KilnError as e:
            if e.stage is None:
                e.stage = name
            raise
        except Exception as e:  # a bug (e.g. IRVerifyError): keep its type, say where it happened
            if hasattr(e, "add_note") and not getattr(e, "_kiln_stage_noted", False):
                e.add_note(f"kiln compile stage: {name}")
                e._kiln_stage_noted = True  # type: ignore[attr-defined]
            raise
        finally:
            self.timings.setdefault(name, []).append(time.perf_counter() - t0)

    def lower(self, kernel_name: str, front_end: Callable[[], KernelIR], debug: bool = False) -> KernelIR:
        """Front end, then every pass in IR_PASSES (and DEBUG_PASSES when `debug` or the options
        say so), verified after each or once at the end."""
        with self.stage("front end"):
            kir = front_end()
        self.dump("ir", kernel_name, "front_end", lambda: format_ir(kir))
        if self.options.verify_each_pass:
            with self.stage("verify"):
                verify(kir, lowered=False)
        for p in ir_passes(debug or self.options.debug):
            with self.stage(p.name):
                kir = p.run(kir)
            self.dump("ir", kernel_name, p.name, functools.partial(format_ir, kir))
            if self.options.verify_each_pass:
                with self.stage("verify"):
                    verify(kir, lowered=_past_lowering(p))
        if not self.options.verify_each_pass:
            with self.stage("verify"):
                verify(kir, lowered=True)           # cheap structural check before code generation
        self.kernels_lowered += 1
        return kir

    def dump(self, kind: str, unit: str, stage: str, text: Callable[[], str]) -> None:
        """Write `text()` to `<dump_dir>/<unit>.<n>.<stage>.<ext>` when `kind` is being dumped."""
        if kind not in self.options.dump:
            return
        os.makedirs(self.options.dump_dir, exist_ok=True)
        safe = re.sub(r"[^0-9A-Za-z_.+-]", "_", unit)
        n = self._dump_count[safe] = self._dump_count.get(safe, -1) + 1
        path = os.path.join(self.options.dump_dir, f"{safe}.{n:02d}.{stage}.{_STAGE_EXT[kind]}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text())
        self.dumped.append(path)

    def report(self) -> None:
        """Print the per-stage timing table to stderr when KILN_TIMING is on."""
        if self.options.timing:
            sys.stderr.write(format_timings(self.timings))


def _past_lowering(p: Pass) -> bool:
    """Whether AugStore must be gone after pass `p` (it is lowered by lower_aug_stores)."""
    names = [q.name for q in IR_PASSES + DEBUG_PASSES]
    return names.index(p.name) >= names.index("lower_aug_stores")


def format_timings(timings: dict[str, list[float]]) -> str:
    total = sum(sum(ts) for ts in timings.values())
    lines = ["kiln compile stages:", f"  {'stage':<18} {'runs':>5} {'ms':>10} {'share':>7}"]
    for name, ts in timings.items():
        ms = 1e3 * sum(ts)
        share = 100 * sum(ts) / total if total else 0.0
        lines.append(f"  {name:<18} {len(ts):>5} {ms:>10.2f} {share:>6.1f}%")
    lines.append(f"  {'total':<18} {'':>5} {1e3 * total:>10.2f}")
    return "\n".join(lines) + "\n"


class Progress:
    """A one-line progress report on stderr while a long compile runs (the stage and the kernels
    lowered so far), shown only when `stream` is a terminal and the compile has taken more than
    `delay_s`; the line is erased when the compile ends. Silent otherwise (logs, pipes, CI)."""

    def __init__(self, pipe: Pipeline, unit: str, stream: TextIO | None = None, delay_s: float = 1.0,
                 interval_s: float = 0.25) -> None:
        self.pipe = pipe
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.delay_s = delay_s
        self.interval_s = interval_s
        self.shown = 0                        # lines written (tests read it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def __enter__(self) -> Progress:  # noqa: PYI034 - typing.Self needs Python 3.11
        isatty = getattr(self.stream, "isatty", None)
        if isatty is not None and isatty():
            self._t0 = time.perf_counter()
            self._thread = threading.Thread(target=self._loop, name="kiln-compile-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        if self.shown:
            self._write("\r\x1b[K")

    def line(self) -> str:
        p = self.pipe
        kernels = f"; kernels lowered {p.kernels_lowered}/{p.kernels_total}" if p.kernels_total else ""
        return (f"kiln: compiling {self.unit} ({time.perf_counter() - self._t0:.1f} s): "
                f"{p.current_stage or 'starting'}{kernels}")

    def _loop(self) -> None:
        if self._stop.wait(self.delay_s):
            return
        while True:
            self._write("\r\x1b[K" + self.line())
            self.shown += 1
            if self._stop.wait(self.interval_s):
                return

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):         # a closed or broken terminal must not fail the compile
            pass
