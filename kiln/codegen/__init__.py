"""kiln's code generator: typed kernel IR -> LLVM IR -> optimised x86-64 ELF object bytes.

    build_object(kernels, graphs, target, opt_level=3, stage=None, want_asm=False) -> ObjectCode
    emit_llvm_ir(kernels, graphs=(), target=None) -> str   (unoptimised module text)

See kiln.codegen.target.OBJECT_CONTRACT for what the object looks like to the loader, and
kiln.codegen.emit for the arithmetic semantics chosen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from kiln.codegen.target import (
    ALLOWED_EXTERNAL_SYMBOLS,
    OBJECT_CONTRACT,
    TargetSpec,
    create_target_machine,
    host_target,
    named_target,
    object_external_symbols,
)
from kiln.errors import KilnError
from kiln.ir.graph import GraphIR
from kiln.ir.nodes import KernelIR

__all__ = [
    "ALLOWED_EXTERNAL_SYMBOLS", "OBJECT_CONTRACT", "ObjectCode", "StageHook", "TargetSpec", "build_object",
    "emit_llvm_ir", "host_target", "named_target", "object_external_symbols",
]


@dataclass(frozen=True)
class ObjectCode:
    blob: bytes
    target: TargetSpec
    kernel_symbols: dict[str, str] = field(default_factory=dict)   # FunctionIR.name -> entry
    graph_symbols: dict[str, str] = field(default_factory=dict)    # GraphIR.name -> entry
    llvm_ir: str = ""                                              # optimised module text
    llvm_ir_unoptimised: str = ""                                  # the emitter's module text
    asm: str = ""                                                  # assembly, when asked for


#: how the driver watches code generation: `stage(name)` wraps each step ("llvm emit", "llvm
#: optimise", "object emit") to time it and tag its errors (kiln.driver.pipeline)
StageHook = Callable[[str], AbstractContextManager[object]]


def _no_stage(name: str) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


def _emit(kernels: Sequence[KernelIR], graphs: Sequence[GraphIR], triple: str, layout: str):
    from kiln.codegen.emit import ModuleEmitter

    me = ModuleEmitter(triple, layout)
    me.add_kernels(kernels)
    me.add_graphs(graphs)
    return me


def emit_llvm_ir(kernels: Sequence[KernelIR], graphs: Sequence[GraphIR] = (),
                 target: TargetSpec | None = None) -> str:
    """The unoptimised LLVM module text (for tests and debugging)."""
    if target is None:
        return str(_emit(kernels, graphs, "", "").module)
    tm = create_target_machine(target)
    return str(_emit(kernels, graphs, tm.triple, str(tm.target_data)).module)


def build_object(kernels: Sequence[KernelIR], graphs: Sequence[GraphIR], target: TargetSpec,
                 opt_level: int = 3, stage: StageHook | None = None, want_asm: bool = False) -> ObjectCode:
    """One relocatable object for all `kernels` and `graphs`. `stage` (optional) wraps each step;
    `want_asm` also renders the assembly text (for KILN_DUMP=asm)."""
    import llvmlite.binding as llvm

    stage = stage or _no_stage
    tm = create_target_machine(target, opt_level)
    with stage("llvm emit"):
        me = _emit(kernels, graphs, tm.triple, str(tm.target_data))
        text = str(me.module)
    with stage("llvm optimise"):
        try:
            mod = llvm.parse_assembly(text)
            mod.verify()
        except RuntimeError as e:  # a code generator bug, not a user error
            raise KilnError(f"kiln.codegen produced invalid LLVM IR: {e}") from e
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        if opt_level > 0:
            pto = llvm.create_pipeline_tuning_options(speed_level=min(3, opt_level))
            pto.loop_vectorization = True
            pto.slp_vectorization = True
            pto.loop_unrolling = True
            pb = llvm.create_pass_builder(tm, pto)
            pb.getModulePassManager().run(mod, pb)
    with stage("object emit"):
        blob = tm.emit_object(mod)
        asm = tm.emit_assembly(mod) if want_asm else ""
    return ObjectCode(blob=bytes(blob), target=target, kernel_symbols=dict(me.kernel_symbols),
                      graph_symbols=dict(me.graph_symbols), llvm_ir=str(mod), llvm_ir_unoptimised=text,
                      asm=asm)
