"""Debug mode's pass: give every array access and every integer division a run-time check.

Runs last (kiln.driver.pipeline.debug_passes), only when compiling with `debug=True`. It numbers
each check site of the kernel and its funcs (`KernelIR.checks`: kind, array, source line) and
marks the node with that number (`Load.check`, `Store.check`, `AtomicRMW.check`,
`Binary.check`); the code generators lower a marked node to "test, and on failure record the
site and the values in the module's error record and leave the kernel" (kiln.codegen.debug).

It also drops the privatising parts of every parallel plan (scalar reductions, private array
copies, GPU coarsening and lock-step): with them an atomic's index would be evaluated once per
chunk (or served from registers) instead of at the user's access, where the check belongs.
"""

from __future__ import annotations

import dataclasses

from kiln.ir import nodes as N
from kiln.passes.walk import rewrite_function

_DIVISIONS = (N.BinaryOp.FLOORDIV, N.BinaryOp.MOD)


class _Sites:
    """The check sites numbered so far (shared by a kernel and its funcs)."""

    def __init__(self) -> None:
        self.sites: list[N.CheckSite] = []

    def add(self, kind: str, array: str, loc: N.Loc) -> int:
        self.sites.append(N.CheckSite(kind, array, loc))
        return len(self.sites) - 1

    def expr(self, e: N.Expr) -> N.Expr:
        if isinstance(e, N.Load | N.AtomicRMW) and e.check < 0:
            return dataclasses.replace(e, check=self.add("index", e.array.name, e.loc))
        if (isinstance(e, N.Binary) and e.op in _DIVISIONS and e.type.is_int and e.check < 0
                and not (isinstance(e.rhs, N.Const) and e.rhs.value != 0)):
            return dataclasses.replace(e, check=self.add("divide", "", e.loc))
        return e

    def stmt(self, s: N.Stmt, loops: tuple[str, ...]) -> N.Stmt:
        if isinstance(s, N.Store) and s.check < 0:
            return dataclasses.replace(s, check=self.add("index", s.array.name, s.loc))
        if isinstance(s, N.ParallelFor) and s.plan is not None:
            plan = dataclasses.replace(s.plan, reductions=(), private_arrays=(), lockstep=False, coarsen=None,
                                       vector=None)
            return dataclasses.replace(s, plan=plan)
        return s


def insert_bounds_checks(kir: N.KernelIR) -> N.KernelIR:
    """`kir` with every access and integer `//`/`%` of its kernel and funcs checked."""
    if kir.checks:
        return kir                      # already checked (the pass is idempotent)
    sites = _Sites()
    funcs = tuple(rewrite_function(f, sites.expr, sites.stmt) for f in kir.funcs)
    kernel = rewrite_function(kir.kernel, sites.expr, sites.stmt)
    return dataclasses.replace(kir, kernel=kernel, funcs=funcs, checks=tuple(sites.sites))
