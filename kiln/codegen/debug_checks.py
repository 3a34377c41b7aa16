"""Debug mode in the object: the module's error record, its site table, and the helper a failed
check calls (the layout and its decoding live in kiln.runtime.debug_record).

kiln.passes.insert_bounds_checks numbers the checks of each kernel from 0; a module holds many
kernels, so `DebugChecks.register` gives each kernel (and the funcs it declares first) a base
and the object's table lists every site once, module-wide. A release module has no checked
kernel and gets none of this.
"""

from __future__ import annotations

import json
import os

from llvmlite import ir

from kiln.codegen.llvm_util import I8, I32, I64, VOID, fn_attrs, gep, runtime_global
from kiln.ir import nodes as N
from kiln.runtime.debug_record import KERNEL, RECORD, RECORD_SLOTS, TABLE, TABLE_LEN
from kiln.types import MAX_NDIM

_RECORD_TY = ir.ArrayType(I64, RECORD_SLOTS)


class DebugChecks:
    """Module-wide debug state of one module emitter (see the module docstring)."""

    def __init__(self, module: ir.Module, unique: object) -> None:
        self.module = module
        self.unique = unique
        #: function IR name -> base of its check ids in the module-wide table
        self.base: dict[str, int] = {}
        #: kernel IR name -> its index in the table's kernels
        self.kernel_index: dict[str, int] = {}
        self.kernels: list[str] = []
        self.sites: list[N.CheckSite] = []
        self._record: ir.GlobalVariable | None = None
        self._current: ir.GlobalVariable | None = None
        self._fail: ir.Function | None = None

    def register(self, kir: N.KernelIR, new_funcs: list[str]) -> None:
        """Give `kir` (when it has checks) and the funcs it declares first their id base."""
        if not kir.checks:
            return
        base = len(self.sites)
        self.sites += kir.checks
        self.kernel_index[kir.kernel.name] = len(self.kernels)
        self.kernels.append(kir.display_name or kir.kernel.name)
        for name in (kir.kernel.name, *new_funcs):
            self.base[name] = base

    @property
    def enabled(self) -> bool:
        return bool(self.sites)

    # -- globals ----------------------------------------------------------------------------
    def _global(self, name: str, ty: ir.Type, init: ir.Constant) -> ir.GlobalVariable:
        return runtime_global(self.module, name, ty, init)

    def record(self) -> ir.GlobalVariable:
        if self._record is None:
            self._record = self._global(RECORD, _RECORD_TY, ir.Constant(_RECORD_TY, None))
            self._current = self._global(KERNEL, I64, ir.Constant(I64, 0))
        return self._record

    def current_kernel(self) -> ir.GlobalVariable:
        self.record()
        assert self._current is not None
        return self._current

    def emit_table(self) -> None:
        """The JSON site table (kiln.runtime.debug_record) and its length, once all kernels are in."""
        if not self.enabled:
            return
        doc = {"kernels": self.kernels,
               "sites": [[s.kind, s.array, os.path.basename(s.loc.filename), s.loc.line] for s in self.sites]}
        raw = json.dumps(doc, separators=(",", ":")).encode()
        ty = ir.ArrayType(I8, len(raw))
        self._global(TABLE, ty, ir.Constant(ty, bytearray(raw)))
        self._global(TABLE_LEN, I64, ir.Constant(I64, len(raw)))
        self.record()

    # -- the helper a failed check calls ---------------------------------------------------
    def fail_fn(self) -> ir.Function:
        """Internal cold `void kiln_debug_fail(i64 site, i64 ndim, i64 x0.., i64 e0..)`: the
        first failure (a compare-and-swap on the flag) fills the record; later ones are dropped."""
        if self._fail is not None:
            return self._fail
        args = [I64, I64] + [I64] * (2 * MAX_NDIM)
        fn = ir.Function(self.module, ir.FunctionType(VOID, args), name="kiln_debug_fail")
        fn.linkage = "internal"
        fn_attrs(fn, "noinline", "cold")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        rec = self.record()
        zero32 = ir.Constant(I32, 0)

        def slot(k: int) -> ir.Value:
            return gep(b, rec, [zero32, ir.Constant(I32, k)], inbounds=True, source_etype=_RECORD_TY)

        pair = b.cmpxchg(slot(0), ir.Constant(I64, 0), ir.Constant(I64, 1), "monotonic", "monotonic")
        first = b.extract_value(pair, 1)
        with b.if_then(first):
            b.store(b.load(self.current_kernel(), typ=I64), slot(1))
            for k, v in enumerate(fn.args):
                b.store(v, slot(2 + k))
        b.ret_void()
        self._fail = fn
        return fn

    def failed(self, b: ir.IRBuilder) -> ir.Value:
        """An i1: whether a check of this module has failed (the record's flag is set)."""
        flag = b.load(self.record(), typ=I64, align=8)
        return b.icmp_unsigned("!=", flag, ir.Constant(I64, 0))



