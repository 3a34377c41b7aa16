"""Modules compiled only for other machines (cross-compiling, e.g. target="aarch64" on an x86-64
machine): they save like any compiled module, and running them here is a clear error."""

from __future__ import annotations

import os
from typing import Any

from kiln.artifact import container
from kiln.errors import ArtifactError
from kiln.runtime.hostcpu import host_arch


class CrossCompiledModule:
    """A module compiled for other machines: `save()`/`to_bytes()` work, running raises."""

    def __init__(self, data: bytes, doc: dict[str, Any], arches: list[str]) -> None:
        self._data = data
        self.arches = arches
        graphs, kernels = doc.get("graphs"), doc.get("exported_kernels")
        self.graphs = {str(n): CrossCompiledGraph(self, str(n)) for n in (graphs if isinstance(graphs, dict) else {})}
        self.kernels = {str(n): CrossCompiledGraph(self, str(n)) for n in (kernels if isinstance(kernels, dict) else {})}

    def save(self, path: str | os.PathLike[str]) -> None:
        container.write_bytes(path, self._data)

    def to_bytes(self) -> bytes:
        return self._data

    def __repr__(self) -> str:
        return f"<CrossCompiledModule for {', '.join(self.arches)} graphs={sorted(self.graphs)}>"


class CrossCompiledGraph:
    """A graph or kernel of a CrossCompiledModule: save it here, run it on its machine."""

    def __init__(self, module: CrossCompiledModule, name: str) -> None:
        self._module = module
        self.name = name

    def save(self, path: str | os.PathLike[str]) -> None:
        self._module.save(path)

    def to_bytes(self) -> bytes:
        return self._module.to_bytes()

    def run(self, *args: Any, **kwargs: Any) -> None:
        raise ArtifactError(f"{self.name!r} was compiled for {', '.join(self._module.arches)}, this machine is "
                            f"{host_arch()}: save() it and run it there (or with the C runtime, c/)")

    __call__ = run

    def __repr__(self) -> str:
        return f"<CrossCompiledGraph {self.name!r} for {', '.join(self._module.arches)}>"


def cpu_arches(data: bytes) -> list[str]:
    """The architectures of the CPU targets in a freshly compiled file."""
    doc = container.unpack(data, source="<compiled module>").manifest
    targets = doc.get("targets")
    return [str(t.get("arch")) for t in targets if isinstance(t, dict) and t.get("kind") == "cpu"] \
        if isinstance(targets, list) else []
