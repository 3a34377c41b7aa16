"""Compile a request with the driver and link the file's bytes into this process: what
`GraphBuilder.compile`, `Module.compile` and direct kernel calls (kiln.dispatch) share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kiln import config
from kiln.driver import CompileOptions, CompileRequest, compile_program
from kiln.runtime.compiled import load_bytes


def compile_and_link(request: CompileRequest, dump: str | Sequence[str] | None = None) -> Any:
    """The compiled module: a `CompiledModule` when the request has a CPU target, else (CUDA
    only: nothing to link on the CPU) a `kiln.runtime.cuda.CudaModule`. `dump` replaces
    KILN_DUMP for this compile."""
    options = None if dump is None else CompileOptions.from_config(config.current(), dump)
    data = compile_program(request, options)
    if request.cpu_target is None:
        # lazy: the CUDA runtime is imported only by processes that build CUDA-only modules
        from kiln.runtime.cuda import load_bytes as load_cuda_bytes
        return load_cuda_bytes(data, source="<compiled module>")
    return load_bytes(data, source="<compiled module>")
