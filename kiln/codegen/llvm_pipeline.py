"""The one LLVM sequence every target goes through: parse the emitted module text, verify it,
optimise it, and emit machine code (an object file or assembly text such as PTX)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import llvmlite.binding as llvm

from kiln.errors import KilnError

#: how the driver watches code generation: `stage(name)` wraps each step ("llvm emit", "llvm
#: optimise", "object emit") to time it and tag its errors (kiln.driver.pipeline)
StageHook = Callable[[str], AbstractContextManager[object]]


def no_stage(name: str) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class LlvmOutput:
    """What the pipeline produced: the optimised module text, the object file (when asked for
    an object) and the assembly text (when asked for assembly or with `want_asm`)."""

    llvm_ir: str
    obj: bytes = b""
    asm: str = ""


def optimise_and_emit(module_text: str, tm: Any, *, opt_level: int, vectorize: bool,
                      emit_object: bool, want_asm: bool = False, want_ir: bool = True, who: str = "kiln.codegen",
                      stage: StageHook = no_stage, link: Callable[[Any], None] | None = None) -> LlvmOutput:
    """Parse + verify `module_text` (a code generator bug if that fails), set the triple and data
    layout of target machine `tm`, call `link(module)` (NVPTX links libdevice there), run LLVM's
    O`opt_level` pipeline (loop unrolling always; loop and SLP vectorisation with `vectorize`),
    then emit an object (`emit_object`) or assembly. The optimised module's text is rendered
    only with `want_ir` (the driver asks for it only when dumping: 1-2% of a small compile)."""
    with stage("llvm optimise"):
        mod = _parse_and_optimise(module_text, tm, opt_level=opt_level, vectorize=vectorize, who=who, link=link)
    with stage("object emit"):
        if not emit_object:
            return LlvmOutput(str(mod) if want_ir else "", b"", tm.emit_assembly(mod))
        obj = bytes(tm.emit_object(mod))
        # the text as it was when the object was emitted (what kiln always reported as llvm_ir)
        return LlvmOutput(str(mod) if want_ir else "", obj, tm.emit_assembly(mod) if want_asm else "")


def _parse_and_optimise(module_text: str, tm: Any, *, opt_level: int, vectorize: bool, who: str,
                        link: Callable[[Any], None] | None) -> Any:
    try:
        mod = llvm.parse_assembly(module_text)
        mod.verify()
    except RuntimeError as e:  # a code generator bug, not a user error
        raise KilnError(f"{who} produced invalid LLVM IR: {e}") from e
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    if link is not None:
        link(mod)
    if opt_level > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=min(3, opt_level))
        if vectorize:
            pto.loop_vectorization = True
            pto.slp_vectorization = True
        pto.loop_unrolling = True
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
    return mod
