"""`ModuleEmitterBase`: what the CPU and the NVPTX module emitters share. It owns the llvmlite
module and its global names, declares @kl.func bodies and intrinsics, and builds the integer
power helper. Each target's module emitter (kiln.codegen.cpu_module, kiln.codegen.nvptx) adds
its entries and says which body emitter lowers its function bodies (`new_body_emitter`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Protocol

from llvmlite import ir

from kiln.artifact.manifest import ParamInfo
from kiln.codegen.debug_checks import DebugChecks
from kiln.codegen.llvm_util import FLOAT_SUFFIX, I1, I8, I64, PTR, VOID, c_ident, fn_attrs, reg_type
from kiln.codegen.print_sites import PrintSites
from kiln.errors import KilnError
from kiln.ir import nodes as N
from kiln.runtime.abi_digest import DIGEST_SIZE, SUFFIX, abi_digest
from kiln.types import NdArrayType, ScalarType

#: the manifest's parameters of each entry point: ("kernel", IR name) or ("graph", name) -> params
AbiParams = Mapping[tuple[str, str], Sequence[ParamInfo]]


class BodyEmitter(Protocol):
    """What a module emitter needs of a function body emitter (kiln.codegen.body_emitter
    imports this module, so the type is named structurally here)."""

    def emit(self) -> None: ...


class ModuleEmitterBase(ABC):
    """Owns the llvmlite module, its global names and the functions every target shares."""

    def __init__(self, triple: str = "", data_layout: str = "") -> None:
        self.module = ir.Module(name="kiln")
        if triple:
            self.module.triple = triple
        if data_layout:
            self.module.data_layout = data_layout
        self.used: set[str] = set()
        self.func_irs: dict[str, N.FunctionIR] = {}
        self.funcs: dict[str, ir.Function] = {}        # FunctionIR.name -> internal function
        self.kernel_irs: dict[str, N.FunctionIR] = {}
        self.kernel_symbols: dict[str, str] = {}
        self._ipow: dict[str, ir.Function] = {}
        #: debug mode's record, site table and fail helper (unused by release kernels)
        self.debug = DebugChecks(self.module, self.unique)
        #: `print` in kernels: the print buffer and its site table (nothing without print)
        self.prints = PrintSites(self.module)

    @abstractmethod
    def new_body_emitter(self, fir: N.FunctionIR, fn: ir.Function) -> BodyEmitter:
        """The emitter that lowers `fir` into the (empty) LLVM function `fn` for this target."""

    @abstractmethod
    def add_kernels(self, kernels: Sequence[N.KernelIR]) -> None:
        """Emit the kernels, every func they use, and their entry points."""

    def emit_body(self, fir: N.FunctionIR, fn: ir.Function) -> None:
        self.new_body_emitter(fir, fn).emit()

    def add_abi_descriptors(self, abi: AbiParams) -> None:
        """`<entry>_abi`: the digest of what the manifest will say about each entry point
        (kiln.runtime.abi_digest), which the loader compares with the manifest it reads."""
        ty = ir.ArrayType(I8, DIGEST_SIZE)
        graph_symbols: dict[str, str] = getattr(self, "graph_symbols", {})    # CPU modules only
        entries = [("kernel", n, s) for n, s in self.kernel_symbols.items()] + [
            ("graph", n, s) for n, s in graph_symbols.items()]
        for kind, name, symbol in entries:
            params = abi.get((kind, name))
            if params is None:
                raise KilnError(f"no ABI parameters for {kind} {name!r}")
            g = ir.GlobalVariable(self.module, ty, symbol + SUFFIX)
            g.initializer = ir.Constant(ty, bytearray(abi_digest(kind, name, symbol, params)))
            g.storage_class = "dso_local"
            g.align = 8

    # -- names and declarations -----------------------------------------------------------
    def unique(self, base: str) -> str:
        base = c_ident(base)
        name, k = base, 1
        while name in self.used or name in self.module.globals:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def declare(self, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
        g = self.module.globals.get(name)
        if g is None:
            g = ir.Function(self.module, ir.FunctionType(ret, list(args)), name=name)
        return g

    def intrinsic(self, base: str, t: ScalarType, nargs: int = 1) -> ir.Function:
        ty = reg_type(t)
        return self.declare(f"{base}.{FLOAT_SUFFIX[t.bits]}", ty, [ty] * nargs)


    # -- funcs and shared helpers ---------------------------------------------------------
    def declare_funcs(self, kernels: Sequence[N.KernelIR]) -> list[tuple[N.FunctionIR, ir.Function]]:
        """Declare every @kl.func the kernels use (once each), so bodies may call any of them in
        any order; returns the (IR, LLVM function) pairs whose bodies still need emitting."""
        todo: list[tuple[N.FunctionIR, ir.Function]] = []
        for k in kernels:
            self.debug.register(k, [f.name for f in k.funcs if f.name not in self.func_irs])
            for f in k.funcs:
                if f.name in self.func_irs:
                    continue
                self.func_irs[f.name] = f
                fn = ir.Function(self.module, self.function_type(f), name=self.unique(f"kiln_func_{f.name}"))
                fn.linkage = "internal"
                fn_attrs(fn)
                self.funcs[f.name] = fn
                todo.append((f, fn))
        return todo


    def function_type(self, f: N.FunctionIR) -> ir.FunctionType:
        args: list[ir.Type] = []
        for p in f.params:
            if isinstance(p.type, NdArrayType):
                args += [PTR] + [I64] * (2 * p.type.rank)     # data, extents, strides
            else:
                args.append(reg_type(p.type))
        ret = reg_type(f.ret) if (f.ret is not None and not f.is_kernel) else VOID
        return ir.FunctionType(ret, args)


    def ipow(self, t: ScalarType) -> ir.Function:
        """Internal `T kiln_ipow_T(T base, T exp)` by repeated squaring."""
        fn = self._ipow.get(t.name)
        if fn is not None:
            return fn
        ty = reg_type(t)
        fn = ir.Function(self.module, ir.FunctionType(ty, [ty, ty]), name=self.unique(f"kiln_ipow_{t.name}"))
        fn.linkage = "internal"
        fn_attrs(fn)
        base, exp = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        one = ir.Constant(ty, 1)
        zero = ir.Constant(ty, 0)
        loop = fn.append_basic_block("loop")
        done = fn.append_basic_block("done")
        if t.is_signed:
            neg = fn.append_basic_block("neg")
            pos = fn.append_basic_block("pos")
            b.cbranch(b.icmp_signed("<", exp, zero), neg, pos)
            b.position_at_end(neg)
            is_one = b.icmp_signed("==", base, one)
            is_m1 = b.icmp_signed("==", base, ir.Constant(ty, -1))
            odd = b.trunc(exp, I1)
            m1 = b.select(odd, ir.Constant(ty, -1), one)
            b.ret(b.select(is_one, one, b.select(is_m1, m1, zero)))
            b.position_at_end(pos)
        pre = b.block
        b.branch(loop)
        b.position_at_end(loop)
        acc = b.phi(ty, "acc")
        bb = b.phi(ty, "b")
        e = b.phi(ty, "e")
        acc.add_incoming(one, pre)
        bb.add_incoming(base, pre)
        e.add_incoming(exp, pre)
        odd = b.trunc(e, I1)
        acc2 = b.select(odd, b.mul(acc, bb), acc)
        e2 = b.lshr(e, one)
        bb2 = b.mul(bb, bb)
        acc.add_incoming(acc2, loop)
        bb.add_incoming(bb2, loop)
        e.add_incoming(e2, loop)
        b.cbranch(b.icmp_unsigned("==", e2, zero), done, loop)
        b.position_at_end(done)
        b.ret(acc2)
        self._ipow[t.name] = fn
        return fn
