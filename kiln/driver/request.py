"""What the driver compiles, as plain data: kernels with their parameter types, recorded graphs,
and targets. The graph layer (`GraphBuilder`, `Module`) and the direct-call dispatcher build a
`CompileRequest`; the driver never sees their classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kiln.errors import TargetError
from kiln.types import NdArrayType, ScalarType

ParamTypes = tuple[ScalarType | NdArrayType, ...]
ShapeDim = int | str | None


@dataclass(frozen=True)
class GraphArgSpec:
    """A named graph argument (a `kl.Arg`): its type and, for arrays, the shape checked at run time."""

    name: str
    type: ScalarType | NdArrayType
    shape: tuple[ShapeDim, ...] | None = None


@dataclass(frozen=True)
class DispatchSpec:
    """One recorded launch: the kernel object (kiln.lang.Kernel), its parameter types, and per
    parameter either the graph argument bound to it or a constant baked into the graph."""

    kernel: Any
    param_types: ParamTypes
    args: tuple[GraphArgSpec | bool | int | float, ...]


@dataclass(frozen=True)
class GraphSpec:
    name: str
    args: tuple[GraphArgSpec, ...]           # in order of first use
    dispatches: tuple[DispatchSpec, ...]


@dataclass(frozen=True)
class KernelSpec:
    """A kernel exported on its own under `name` (callable after loading)."""

    name: str
    kernel: Any
    param_types: ParamTypes


@dataclass(frozen=True)
class CompileRequest:
    graphs: tuple[GraphSpec, ...] = ()
    kernels: tuple[KernelSpec, ...] = ()
    #: CPU target names ("host", "x86-64-v2", "aarch64", ...), at most one per architecture;
    #: empty: no CPU code
    cpu_targets: tuple[str, ...] = ("host",)
    cuda: bool = False                       # also build PTX (+ cubins) for CUDA
    cuda_archs: tuple[str, ...] | None = None
    fast_math: bool = False                  # CUDA: libdevice's fast f32 sin/cos/exp/log/... variants
    debug: bool = False                      # every kernel with run-time checks (docs/debug.md)
    #: record each field's content at compile time as its initial value (False for direct calls,
    #: which bind fields to their own arrays)
    field_init: bool = True
    random_seed: int = 0                     # initial seed of the module's kl.random state

    def __post_init__(self) -> None:
        s = self.random_seed
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2 ** 64:
            raise ValueError(f"seed: a random seed is an integer in [0, 2**64), got {s!r}")


def resolve_targets(target: str, targets: Sequence[Any] | None) -> tuple[tuple[str, ...], bool]:
    """(CPU target names, whether to build CUDA) from a `targets` list such as ["cpu", "cuda"] or
    ["x86-64-v2", "aarch64", "cuda"]; None means the CPU target `target` alone. Several CPU
    targets must be for different architectures (checked by the driver, which knows them)."""
    if targets is None:
        return (target,), False
    cpus: list[str] = []
    cuda = False
    for t in targets:
        if t == "cuda" and not cuda:
            cuda = True
            continue
        name = target if t == "cpu" else t
        if not isinstance(t, str) or t == "cuda" or name in cpus:
            raise TargetError(f"unknown or repeated target {t!r} in targets={list(targets)!r}; "
                              "use 'cpu' (or CPU target names, one per architecture) and/or 'cuda'")
        cpus.append(name)
    if not cpus and not cuda:
        raise TargetError("targets=[] names no target")
    return tuple(cpus), cuda
