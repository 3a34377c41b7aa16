"""kiln's code generator: typed kernel IR -> LLVM IR -> optimised x86-64 ELF object bytes.

    build_object(kernels, graphs, target, opt_level=3, stage=None, want_asm=False) -> ObjectCode
    emit_llvm_ir(kernels, graphs=(), target=None) -> str   (unoptimised module text)

The kernels must have been through kiln.passes (lower_aug_stores, fold_constants,
plan_parallel). See kiln.codegen.target.OBJECT_CONTRACT for what the object looks like to the
loader, and kiln.codegen.body_emitter for the arithmetic semantics chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kiln.codegen.cpu_module import CpuModuleEmitter
from kiln.codegen.llvm_pipeline import StageHook, no_stage, optimise_and_emit
from kiln.codegen.module_base import AbiParams
from kiln.codegen.target import (
    ALLOWED_EXTERNAL_SYMBOLS,
    OBJECT_CONTRACT,
    TargetSpec,
    create_target_machine,
    host_target,
    named_target,
    object_external_symbols,
)
from kiln.ir import nodes as N
from kiln.ir.graph import GraphIR
from kiln.ir.nodes import KernelIR

__all__ = [
    "ALLOWED_EXTERNAL_SYMBOLS",
    "OBJECT_CONTRACT",
    "VECTORIZE_STATEMENT_LIMIT",
    "ObjectCode",
    "StageHook",
    "TargetSpec",
    "build_object",
    "emit_llvm_ir",
    "host_target",
    "named_target",
    "object_external_symbols",
    "worth_vectorizing",
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


def _emit(kernels: Sequence[KernelIR], graphs: Sequence[GraphIR], triple: str,
          layout: str, abi: AbiParams | None = None) -> CpuModuleEmitter:
    me = CpuModuleEmitter(triple, layout)
    me.add_kernels(kernels)
    me.add_graphs(graphs)
    if abi is not None:
        me.add_abi_descriptors(abi)
    return me


def emit_llvm_ir(kernels: Sequence[KernelIR], graphs: Sequence[GraphIR] = (),
                 target: TargetSpec | None = None) -> str:
    """The unoptimised LLVM module text (for tests and debugging)."""
    if target is None:
        return str(_emit(kernels, graphs, "", "").module)
    tm = create_target_machine(target)
    return str(_emit(kernels, graphs, tm.triple, str(tm.target_data)).module)


#: Statements (counted through nested blocks, funcs included) above which a kernel is compiled
#: without LLVM's loop/SLP vectorisers. Their dependence analysis is quadratic in the accesses of
#: a loop body: a parallel loop around 2000 unrolled statements spends 2.4 s there, 4000 spend
#: 12 s (0.07 s and 0.3 s without), and such bodies (long kl.static unrollings) gain little.
VECTORIZE_STATEMENT_LIMIT = 1000


def _statement_count(body: Sequence[N.Stmt]) -> int:
    n = 0
    for s in body:
        n += 1
        for f in ("body", "then_body", "else_body"):
            inner = getattr(s, f, None)
            if inner:
                n += _statement_count(inner)
    return n


def worth_vectorizing(kernels: Sequence[KernelIR]) -> bool:
    """Whether LLVM's vectorisers run on this object (see VECTORIZE_STATEMENT_LIMIT)."""
    return all(sum(_statement_count(f.body) for f in (k.kernel, *k.funcs)) <= VECTORIZE_STATEMENT_LIMIT
               for k in kernels)


def build_object(kernels: Sequence[KernelIR], graphs: Sequence[GraphIR], target: TargetSpec,
                 opt_level: int = 3, stage: StageHook | None = None, want_asm: bool = False,
                 abi: AbiParams | None = None, want_ir: bool = True) -> ObjectCode:
    """One relocatable object for all `kernels` and `graphs`. `stage` (optional) wraps each step;
    `want_asm` also renders the assembly text (for KILN_DUMP=asm), `want_ir` the optimised LLVM
    IR text (`ObjectCode.llvm_ir`, empty without it); `abi` (the manifest's
    parameters of each entry, keyed ("kernel", IR name) / ("graph", name)) adds the ABI
    descriptors that bind a manifest to this object (kiln.runtime.abi_digest)."""
    stage = stage or no_stage
    tm = create_target_machine(target, opt_level)
    with stage("llvm emit"):
        me = _emit(kernels, graphs, tm.triple, str(tm.target_data), abi)
        text = str(me.module)
    out = optimise_and_emit(text, tm, opt_level=opt_level, vectorize=worth_vectorizing(kernels), emit_object=True,
                            want_asm=want_asm, want_ir=want_ir, stage=stage)
    return ObjectCode(blob=out.obj, target=target, kernel_symbols=dict(me.kernel_symbols),
                      graph_symbols=dict(me.graph_symbols), llvm_ir=out.llvm_ir, llvm_ir_unoptimised=text,
                      asm=out.asm)
