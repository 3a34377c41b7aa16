"""Graph IR: what a compiled graph does, independent of any target.

A graph is an ordered list of kernel dispatches over the graph's named parameters. Code
generators turn it into ONE native entry point (see kiln.abi) that fills each kernel's argument
block from the graph's block and calls the kernels in order. Loops and conditionals inside graphs
are planned as further node types beside `Dispatch`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.types import NdArrayType, ScalarType


@dataclass(frozen=True)
class ArgBinding:
    """A kernel parameter fed by the graph parameter `name` (same type, checked by the builder)."""

    name: str


@dataclass(frozen=True)
class ConstBinding:
    """A scalar kernel parameter baked in at compile time (already of the parameter's type)."""

    value: bool | int | float
    type: ScalarType


@dataclass(frozen=True)
class Dispatch:
    kernel: str                                      # FunctionIR.name of a compiled kernel
    bindings: tuple[ArgBinding | ConstBinding, ...]  # one per kernel parameter, in order


@dataclass(frozen=True)
class GraphIR:
    name: str
    params: tuple[tuple[str, ScalarType | NdArrayType], ...]   # graph args, block order
    dispatches: tuple[Dispatch, ...]
