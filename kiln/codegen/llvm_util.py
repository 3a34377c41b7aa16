"""Small LLVM IR helpers shared by the CPU and NVPTX emitters: scalar types and their
register/memory LLVM types, constants, names, opaque-pointer GEP/alloca, callable function
pointers, function attributes, and the (pointer, extents) value of an array argument."""

from __future__ import annotations

import re

from llvmlite import ir

from kiln.errors import KernelError
from kiln.ir import nodes as N
from kiln.types import NdArrayType, ScalarType, wrap_int

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
HALF = ir.HalfType()
FLOAT = ir.FloatType()
DOUBLE = ir.DoubleType()
VOID = ir.VoidType()

FLOAT_TYPES = {16: HALF, 32: FLOAT, 64: DOUBLE}
FLOAT_SUFFIX = {16: "f16", 32: "f32", 64: "f64"}


def runtime_global(module: ir.Module, name: str, ty: ir.Type, init: ir.Constant, align: int = 8) -> ir.GlobalVariable:
    """A writable global the runtime finds by name (thread pointers, the debug record, the print
    buffer and their tables): dso_local, so kiln's objects never go through a GOT
    (docs/object-code.md)."""
    g = ir.GlobalVariable(module, ty, name)
    g.initializer = init
    g.storage_class = "dso_local"
    g.align = align
    g.type = PTR
    return g


def reg_type(t: ScalarType) -> ir.Type:
    if t.is_bool:
        return I1
    if t.is_float:
        return FLOAT_TYPES[t.bits]
    return ir.IntType(t.bits)


def mem_type(t: ScalarType) -> ir.Type:
    return I8 if t.is_bool else reg_type(t)


def c_ident(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s or "_"


def codegen_error(msg: str, loc: N.Loc | None = None) -> KernelError:
    if loc is None:
        return KernelError(msg)
    return KernelError(msg, filename=loc.filename, lineno=loc.line, col=loc.col)


def const_value(t: ScalarType, value: bool | float) -> ir.Constant:
    ty = reg_type(t)
    if t.is_bool:
        return ir.Constant(I1, int(bool(value)))
    if t.is_int:
        return ir.Constant(ty, wrap_int(int(value), t, bit_pattern=True))
    return ir.Constant(ty, float(value))


def gep(b: ir.IRBuilder, ptr: ir.Value, indices: list, inbounds: bool = True,
         source_etype: ir.Type | None = None, name: str = "") -> ir.Value:
    g = b.gep(ptr, indices, inbounds=inbounds, source_etype=source_etype, name=name)
    g.type = PTR       # opaque pointers throughout
    return g


def alloca(b: ir.IRBuilder, ty: ir.Type, name: str = "") -> ir.Value:
    a = b.alloca(ty, name=name)
    a.type = PTR
    return a


class FnPointer:
    """A function pointer value made callable for llvmlite's IRBuilder.call."""

    def __init__(self, v: ir.Value, fnty: ir.FunctionType) -> None:
        self.v = v
        self.type = v.type
        self.function_type = fnty

    def get_reference(self) -> str:
        return self.v.get_reference()


def fn_attrs(fn: ir.Function, *extra: str) -> ir.Function:
    fn.attributes.add("nounwind")
    for a in extra:
        fn.attributes.add(a)
    return fn


class ArrayVal:
    """An array argument inside a function being emitted: data pointer, one i64 per extent and
    one i64 element stride per dimension (kiln.abi: element [i, j] at ptr[i*s0 + j*s1])."""

    def __init__(self, ptr: ir.Value, extents: list[ir.Value], t: NdArrayType, strides: list[ir.Value]) -> None:
        self.ptr = ptr
        self.extents = extents
        self.type = t
        self.strides = strides

    @staticmethod
    def contiguous_strides(b: ir.IRBuilder, extents: list[ir.Value]) -> list[ir.Value]:
        """The strides of a C-ordered buffer of `extents` (kiln's private copies)."""
        out: list[ir.Value] = [ir.Constant(I64, 1)]
        for e in reversed(extents[1:]):
            out.insert(0, b.mul(out[0], e, flags=("nsw",)))
        return out

    @property
    def dtype(self) -> ScalarType:
        assert self.type.dtype is not None
        return self.type.dtype


def declare_fabs64(b: ir.IRBuilder) -> ir.Function:
    m = b.module
    g = m.globals.get("llvm.fabs.f64")
    if g is None:
        g = ir.Function(m, ir.FunctionType(DOUBLE, [DOUBLE]), name="llvm.fabs.f64")
    return g
