"""What every loaded graph or kernel offers, whatever device runs it: the `Runnable` protocol.

`kiln.load()` returns a CPU `CompiledGraph` or, with device="cuda", a `CudaGraph`; both satisfy
`Runnable`, which is the return type callers program against. `ArgSpec` describes one argument.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from kiln._record import Record
from kiln.artifact.manifest import ParamInfo, ShapeDim
from kiln.errors import ArtifactError


class ArgSpec(Record):
    """What a graph or kernel argument must be: printed by `CompiledGraph.args`."""

    __slots__ = ('name', 'kind', 'dtype', 'ndim', 'shape', 'access')
    name: str
    kind: str  # "scalar" | "ndarray"
    dtype: str
    ndim: int
    shape: tuple[ShapeDim, ...] | None
    access: str

    def __repr__(self) -> str:
        if self.kind == "scalar":
            return f"{self.name}: {self.dtype}"
        shape = "" if self.shape is None else ", shape=(" + ", ".join(
            "?" if d is None else str(d) for d in self.shape) + ("," if self.ndim == 1 else "") + ")"
        return f"{self.name}: ndarray({self.dtype}, ndim={self.ndim}{shape}) [{self.access}]"


def arg_specs(params: tuple[ParamInfo, ...]) -> list[ArgSpec]:
    return [ArgSpec(p.layout.name, p.layout.kind, p.layout.dtype, p.layout.ndim, p.shape, p.access)
            for p in params]


@runtime_checkable
class Runnable(Protocol):
    """A loaded graph or kernel: `run({"name": value, ...})` checks every argument, then runs."""

    @property
    def name(self) -> str: ...

    @property
    def params(self) -> tuple[ParamInfo, ...]:
        """The parameters in argument-block order, as the manifest declares them."""
        ...

    @property
    def args(self) -> list[ArgSpec]:
        """The same, in the printable form `repr(graph.args)` shows."""
        ...

    def run(self, args: Mapping[str, Any]) -> None: ...

    def save(self, path: str | os.PathLike[str]) -> None: ...


def unpickled_member(module: Any, kind: str, name: str) -> Any:
    """What a pickle of a loaded module ("module"), graph ("graph") or kernel ("kernel") stands
    for, once its file is loaded again as `module` (CPU or CUDA: each runtime's `_unpickle`)."""
    if kind == "module":
        return module
    table = module.graphs if kind == "graph" else module.kernels
    if name not in table:
        raise ArtifactError(f"<unpickled>: the file has no {kind} {name!r}")
    return table[name]
