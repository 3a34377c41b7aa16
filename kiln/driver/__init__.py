"""The compile driver: plain data (kernels, recorded graphs, targets) in, a .kiln file's bytes out.

    compile_program(CompileRequest(...), options=None) -> bytes     (kiln.driver.compile)
    lower_kernel(kernel, param_types) -> KernelIR                    (front end + IR passes)
    IR_PASSES, Pipeline, CompileOptions                              (kiln.driver.pipeline)

It sits above the front end, the IR passes, the code generator and the artifact writer, and below
the graph layer and the direct-call dispatcher, which build its requests (docs/architecture.md).
"""

from kiln.driver.compile import compile_program, lower_kernel
from kiln.driver.pipeline import IR_PASSES, CompileOptions, Pass, Pipeline
from kiln.driver.request import (
    CompileRequest,
    DispatchSpec,
    GraphArgSpec,
    GraphSpec,
    KernelSpec,
    ParamTypes,
    resolve_targets,
)

__all__ = [
    "IR_PASSES", "CompileOptions", "CompileRequest", "DispatchSpec", "GraphArgSpec", "GraphSpec", "KernelSpec",
    "ParamTypes", "Pass", "Pipeline", "compile_program", "lower_kernel", "resolve_targets",
]
