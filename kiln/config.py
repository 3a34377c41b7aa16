"""kiln's configuration: every environment variable and knob, read once into one frozen object.

`current()` is the configuration in force: read from the environment the first time it is asked
for, then fixed. `configured(**changes)` swaps in a modified copy for a `with` block (tests, the
docs generator). docs/configuration.md is generated from `SETTINGS` (tools/gen_config_doc.py;
tests/test_config.py checks it is in sync).

Deliberately not a `@dataclass`: the runtime reads this module in every process that loads a
.kiln file, and a dataclass costs about a millisecond to define (see kiln/_record.py). Values the
consumers validate themselves (thread count, loader, device) are kept as the stripped text of
the variable, so a bad value raises the consumer's own error where it is used, not at import.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

#: the stages `KILN_DUMP` can name (one file per kernel or module and stage)
DUMP_KINDS = ("ir", "llvm", "asm", "ptx")


def _text(raw: str) -> str:
    return raw.strip()


def _lower_text(raw: str) -> str:
    return raw.strip().lower()


def _flag(raw: str) -> bool:
    return raw.strip().lower() not in ("", "0", "false", "no", "off")


def _names(raw: str) -> tuple[str, ...]:
    return tuple(n for n in (p.strip().lower() for p in raw.split(",")) if n)


class Setting:
    """One configuration entry: the field, its environment variable, default, parser and doc."""

    __slots__ = ("field", "env", "default", "parse", "doc")

    def __init__(self, field: str, env: str, default: Any, parse: Callable[[str], Any], doc: str) -> None:
        self.field = field
        self.env = env
        self.default = default
        self.parse = parse
        self.doc = doc


#: every setting, in the order of the documentation table
SETTINGS: tuple[Setting, ...] = (
    Setting("num_threads", "KILN_NUM_THREADS", "", _text,
            "CPU threads for parallel loops (a positive integer); empty: the CPUs this process may use. "
            "`kl.set_num_threads` changes it at run time."),
    Setting("device", "KILN_DEVICE", "cpu", lambda raw: _lower_text(raw) or "cpu",
            "where direct kernel calls run at start-up: `cpu`, `cuda` or `cuda:N` (`kl.set_device` changes it)."),
    Setting("loader", "KILN_LOADER", "", _lower_text,
            "object loader: `elf` (kiln's own, Linux x86-64), `mcjit` (llvmlite) or `auto`/empty "
            "(elf where it works, else mcjit)."),
    Setting("dump", "KILN_DUMP", (), _names,
            "comma-separated compile stages to write to files: `ir` (IR after the front end and after "
            "each pass), `llvm` (LLVM IR before and after optimisation), `asm`, `ptx`."),
    Setting("dump_dir", "KILN_DUMP_DIR", "kiln_dump", lambda raw: raw.strip() or "kiln_dump",
            "folder for `KILN_DUMP` files (created when needed)."),
    Setting("timing", "KILN_TIMING", False, _flag,
            "`1`: print a table of the time spent in each compile stage to stderr after each compile."),
    Setting("libdevice", "KILN_LIBDEVICE", "", _text,
            "CUDA compiles: path of `libdevice.10.bc`, or `builtin` to use kiln's own math; empty: "
            "search cuda-pathfinder, the `nvidia-nvvm` wheel, `CUDA_HOME`/`CUDA_PATH`, /usr/local/cuda."),
    Setting("cuda_home", "CUDA_HOME", "", _text,
            "a CUDA toolkit folder searched for libdevice (`CUDA_PATH` is read when this is empty)."),
    Setting("cuda_path", "CUDA_PATH", "", _text, "as `CUDA_HOME`, the Windows spelling."),
    Setting("debug", "KILN_DEBUG", False, _flag,
            "`1`: compile every kernel in debug mode: array indices and integer divisors checked at run "
            "time, overlapping arguments refused (docs/debug.md). `kl.set_debug` changes it at run time."),
    Setting("verify", "KILN_VERIFY", False, _flag,
            "`1`: run the IR verifier after every pass (always on under pytest); otherwise it runs "
            "once, after the last pass."),
    Setting("cache", "KILN_CACHE", True, _flag,
            "`0`: do not use the on-disk compile cache (direct kernel calls and `compile()` then "
            "compile in every process). CUDA compiles and compiles with `KILN_DUMP` never use it."),
    Setting("cache_dir", "KILN_CACHE_DIR", "", _text,
            "folder of the on-disk compile cache (one checksummed `.kiln` file per entry; safe to "
            "delete at any time); empty: `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`."),
    Setting("xdg_cache_home", "XDG_CACHE_HOME", "", _text,
            "the XDG base folder for caches; the compile cache lives in its `kiln` folder when "
            "`KILN_CACHE_DIR` is empty."),
)


class Knob:
    """One tuning knob of the code generators: a constant chosen from measurements, kept here so
    that every knob is listed, documented and changed in one place (read at import by `used_in`)."""

    __slots__ = ("field", "value", "used_in", "doc")

    def __init__(self, field: str, value: int, used_in: str, doc: str) -> None:
        self.field = field
        self.value = value
        self.used_in = used_in
        self.doc = doc


#: every tuning knob, in the order of the documentation table
TUNING_KNOBS: tuple[Knob, ...] = (
    Knob("min_parallel_iters", 4096, "kiln.codegen.cpu_module",
         "CPU: a parallel loop with fewer (weighted) iterations runs on the calling thread; the "
         "default of the `kiln_rt_min_parallel_iters` global the runtime may overwrite."),
    Knob("heavy_iteration_weight", 256, "kiln.codegen.cpu_body",
         "CPU: how many simple iterations one iteration holding a loop or a call is assumed to cost."),
    Knob("private_limit", 2048, "kiln.codegen.cpu_body",
         "CPU: largest array (elements) a chunk privatises for histogram-style atomics (a stack copy "
         "cleared and merged per chunk)."),
    Knob("cuda_block_size", 256, "kiln.codegen.nvptx", "CUDA: threads per block of every launch."),
    Knob("cuda_unroll", 4, "kiln.codegen.nvptx_body",
         "CUDA: iterations a thread runs in lock step in the grid-stride loop."),
    Knob("cuda_loop_waves_1d", 16, "kiln.codegen.nvptx",
         "CUDA: grid cap of 1-D loops without reductions, in waves of resident blocks."),
    Knob("cuda_loop_waves_coarsened", 16, "kiln.codegen.nvptx",
         "CUDA: grid cap of coarsened (stencil) loops, in waves (H200 5-point stencil before vector access: 60% of copy "
         "with 1 wave, 67% with 4, 78% with 16)."),
    Knob("cuda_coarsen_factor", 4, "kiln.passes.plan_parallel",
         "CUDA: rows of the slowest dimension one thread runs in a coarsened stencil loop (< 2: off)."),
    Knob("cuda_vector_width", 4, "kiln.passes.plan_parallel",
         "CUDA: consecutive innermost iterations one thread runs with vector loads/stores (a power of "
         "two; < 2: off)."),
    Knob("cuda_vector_width_reductions", 8, "kiln.passes.plan_parallel",
         "CUDA: the same for loops with planned reductions (one wave of blocks: more loads in flight)."),
)


class Tuning:
    """The tuning knobs as attributes (`TUNING.private_limit`), read-only."""

    __slots__ = tuple(k.field for k in TUNING_KNOBS)

    min_parallel_iters: int
    heavy_iteration_weight: int
    private_limit: int
    cuda_block_size: int
    cuda_unroll: int
    cuda_loop_waves_1d: int
    cuda_loop_waves_coarsened: int
    cuda_coarsen_factor: int
    cuda_vector_width: int
    cuda_vector_width_reductions: int

    def __init__(self) -> None:
        for k in TUNING_KNOBS:
            object.__setattr__(self, k.field, k.value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("kiln.config.TUNING is read-only; change the knob in TUNING_KNOBS")


TUNING = Tuning()


class Config:
    """The settings in force (frozen: use `replace` or `configured` for a changed copy)."""

    __slots__ = tuple(s.field for s in SETTINGS)

    num_threads: str
    device: str
    loader: str
    dump: tuple[str, ...]
    dump_dir: str
    timing: bool
    libdevice: str
    cuda_home: str
    cuda_path: str
    debug: bool
    verify: bool
    cache: bool
    cache_dir: str
    xdg_cache_home: str

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(self.__slots__)
        if unknown:
            raise TypeError(f"unknown configuration field(s): {', '.join(sorted(unknown))}")
        for s in SETTINGS:
            object.__setattr__(self, s.field, values.get(s.field, s.default))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("kiln.config.Config is frozen; use replace() or configured()")

    def replace(self, **changes: Any) -> Config:
        return Config(**{**{f: getattr(self, f) for f in self.__slots__}, **changes})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f) for f in self.__slots__))

    def __repr__(self) -> str:
        return "Config(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__) + ")"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        return cls(**{s.field: s.parse(env[s.env]) for s in SETTINGS if s.env in env})


#: libgomp's own variables that choose its wait policy; a user who sets one keeps it (kiln.runtime.threads)
OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def openmp_wait_environment() -> dict[str, str]:
    """The OpenMP wait-policy variables set in the environment now (OMP_WAIT_POLICY and its
    OpenMP 5.1 spellings OMP_WAIT_POLICY_ALL/_DEV/_DEV_<n>, GOMP_SPINCOUNT): read live, because
    they belong to libgomp, which reads them when it is loaded."""
    return {k: v for k, v in os.environ.items()
            if k in OPENMP_WAIT_VARIABLES or k.startswith("OMP_WAIT_POLICY")}


@contextmanager
def environment_variable(name: str, value: str) -> Iterator[None]:
    """Set `name` for the `with` block only (a library that reads it while being loaded), then
    restore it, so that child processes inherit the user's environment."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


_current: Config | None = None


def current() -> Config:
    """The configuration in force (read from the environment on first use)."""
    global _current
    if _current is None:
        _current = Config.from_environ()
    return _current


def set_debug(enabled: bool = True) -> None:
    """Compile kernels compiled from now on in debug mode (or not): the run-time form of
    `KILN_DEBUG` (docs/debug.md). Kernels already compiled keep their mode."""
    global _current
    _current = current().replace(debug=bool(enabled))


@contextmanager
def configured(**changes: Any) -> Iterator[Config]:
    """Run a `with` block under a changed configuration, restored afterwards."""
    global _current
    saved = current()
    _current = saved.replace(**changes)
    try:
        yield _current
    finally:
        _current = saved
