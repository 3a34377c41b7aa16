"""Rename kernels and funcs so that one compilation never holds two different functions under
one IR name.

The front end names a specialisation after the Python function's qualified name and its types,
which is unique within one kernel but not across a module: two closures made by the same factory
(`make(1.0)`, `make(2.0)`) share a name while their bodies differ in the constants they captured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from kiln.ir import nodes as ir
from kiln.passes.walk import rewrite_function


def rename_calls(kir: ir.KernelIR, renames: dict[str, str], kernel_name: str | None = None) -> ir.KernelIR:
    """Rename funcs (definitions and every Call) per `renames`, and the kernel to `kernel_name`."""

    def fe(e: ir.Expr) -> ir.Expr:
        if isinstance(e, ir.Call) and e.func in renames:
            return dataclasses.replace(e, func=renames[e.func])
        return e

    def fix(fn: ir.FunctionIR, name: str) -> ir.FunctionIR:
        fn = rewrite_function(fn, fe)
        return fn if name == fn.name else dataclasses.replace(fn, name=name)

    funcs = tuple(fix(f, renames.get(f.name, f.name)) for f in kir.funcs)
    kernel = fix(kir.kernel, kernel_name or kir.kernel.name)
    return dataclasses.replace(kir, kernel=kernel, funcs=funcs)


def make_names_unique(kirs: Sequence[ir.KernelIR]) -> list[ir.KernelIR]:
    """The kernels, in order, with clashing kernel and func names given a numeric suffix; a kernel
    equal to an earlier one comes back as that earlier one."""
    kernels: dict[str, ir.KernelIR] = {}
    funcs: dict[str, ir.FunctionIR] = {}

    def fresh(base: str, taken: dict) -> str:
        n = 2
        while f"{base}_{n}" in taken:
            n += 1
        return f"{base}_{n}"

    out: list[ir.KernelIR] = []
    for k in kirs:
        prev = kernels.get(k.kernel.name)
        if prev is not None and prev == k:
            out.append(prev)
            continue
        renames = {f.name: fresh(f.name, funcs) for f in k.funcs
                   if f.name in funcs and funcs[f.name] != f}
        name = fresh(k.kernel.name, kernels) if prev is not None else None
        if renames or name:
            k = rename_calls(k, renames, name)
        for f in k.funcs:
            funcs.setdefault(f.name, f)
        kernels[k.kernel.name] = k
        out.append(k)
    return out
