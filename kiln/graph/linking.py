"""Compile a request with the driver and link the file's bytes into this process: what
`GraphBuilder.compile`, `Module.compile` and direct kernel calls (kiln.dispatch) share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kiln import config
from kiln.artifact import container
from kiln.driver import CompileOptions, CompileRequest, compile_program
from kiln.graph.cross import CrossCompiledModule, cpu_arches
from kiln.runtime.compiled import load_bytes
from kiln.runtime.hostcpu import host_arch


def compile_and_link(request: CompileRequest, dump: str | Sequence[str] | None = None, cuda_device: int = 0) -> Any:
    """The compiled module: a `CompiledModule` when the request has a CPU target for this
    machine, a `CrossCompiledModule` (saves, does not run) when its CPU targets are all for other
    machines, else (CUDA only: nothing to link on the CPU) a `kiln.runtime.cuda.CudaModule` that
    runs on GPU `cuda_device`. `dump` replaces KILN_DUMP for this compile."""
    options = None if dump is None else CompileOptions.from_config(config.current(), dump)
    data = compile_program(request, options)
    if not request.cpu_targets:
        # lazy: the CUDA runtime is imported only by processes that build CUDA-only modules
        from kiln.runtime.cuda import load_bytes as load_cuda_bytes
        return load_cuda_bytes(data, source="<compiled module>", device=cuda_device)
    arches = cpu_arches(data)
    if host_arch() not in arches:
        return CrossCompiledModule(data, container.unpack(data, source="<compiled module>").manifest, arches)
    return load_bytes(data, source="<compiled module>")
