"""`print` in kernels, in the object: the module's print buffer, its site table, and the code a
`Print` statement becomes (the layout and its decoding live in kiln.runtime.print_buffer).

Each Print statement of the module gets a site number when it is emitted; the table lists every
site once, module-wide. A module without print gets none of this (no global, no table), so
release code that does not print is unchanged.
"""

from __future__ import annotations

import json
import os

from llvmlite import ir

from kiln.codegen.llvm_util import I8, I32, I64, gep, runtime_global
from kiln.ir import nodes as N
from kiln.runtime.print_buffer import BUFFER, CAPACITY, STATE, TABLE, TABLE_LEN
from kiln.types import ScalarType

_STATE_TY = ir.ArrayType(I64, 2)
_BUFFER_TY = ir.ArrayType(I64, CAPACITY)


class PrintSites:
    """Module-wide print state of one module emitter (see the module docstring)."""

    def __init__(self, module: ir.Module) -> None:
        self.module = module
        self.sites: list[tuple[tuple[str, ...], tuple[str, ...], N.Loc]] = []
        self._state: ir.GlobalVariable | None = None
        self._buffer: ir.GlobalVariable | None = None

    def _global(self, name: str, ty: ir.Type, init: ir.Constant) -> ir.GlobalVariable:
        return runtime_global(self.module, name, ty, init)

    def _globals(self) -> tuple[ir.GlobalVariable, ir.GlobalVariable]:
        if self._state is None or self._buffer is None:
            self._state = self._global(STATE, _STATE_TY, ir.Constant(_STATE_TY, None))
            self._buffer = self._global(BUFFER, _BUFFER_TY, ir.Constant(_BUFFER_TY, None))
        return self._state, self._buffer

    def emit(self, b: ir.IRBuilder, s: N.Print, values: list[ir.Value]) -> None:
        """Append one record: reserve 1 + len(values) slots atomically, write them when they fit,
        else count the record as dropped. `values` are already widened to i64 (`slot_value`)."""
        self.sites.append((s.texts, tuple(v.type.name for v in s.values), s.loc))
        state, buffer = self._globals()
        zero = ir.Constant(I32, 0)
        used = gep(b, state, [zero, zero], source_etype=_STATE_TY)
        n = ir.Constant(I64, 1 + len(values))
        start = b.atomic_rmw("add", used, n, "monotonic")
        fits = b.icmp_unsigned("<=", b.add(start, n), ir.Constant(I64, CAPACITY))
        with b.if_else(fits) as (then, otherwise):
            with then:
                words = [ir.Constant(I64, len(self.sites)), *values]    # site + 1: 0 is "no record"
                for k, w in enumerate(words):
                    slot = gep(b, buffer, [zero, b.add(start, ir.Constant(I64, k))], source_etype=_BUFFER_TY)
                    b.store(w, slot, align=8)
            with otherwise:
                dropped = gep(b, state, [zero, ir.Constant(I32, 1)], source_etype=_STATE_TY)
                b.atomic_rmw("add", dropped, ir.Constant(I64, 1), "monotonic")

    def emit_table(self) -> None:
        """The JSON site table and its length, once every kernel is in (nothing without print)."""
        if not self.sites:
            return
        doc = {"sites": [[list(texts), list(types), os.path.basename(loc.filename), loc.line]
                         for texts, types, loc in self.sites]}
        raw = json.dumps(doc, separators=(",", ":")).encode()
        ty = ir.ArrayType(I8, len(raw))
        self._global(TABLE, ty, ir.Constant(ty, bytearray(raw)))
        self._global(TABLE_LEN, I64, ir.Constant(I64, len(raw)))


def slot_value(b: ir.IRBuilder, v: ir.Value, t: ScalarType) -> ir.Value:
    """`v` (a register value of type `t`) as the 64 bits of its print slot: ints sign- or
    zero-extended, bools 0/1, floats widened to f64."""
    if t.is_float:
        wide = v if t.bits == 64 else b.fpext(v, ir.DoubleType())
        return b.bitcast(wide, I64)
    if t.bits == 64:
        return v
    return b.sext(v, I64) if t.kind == "i" else b.zext(v, I64)
