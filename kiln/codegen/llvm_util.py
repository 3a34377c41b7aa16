"""Small LLVM IR helpers shared by the CPU and NVPTX emitters: scalar types and their
register/memory LLVM types, constants, names, opaque-pointer GEP/alloca, callable function
pointers, function attributes, and the (pointer, extents) value of an array argument."""

from __future__ import annotations

import re

from llvmlite import ir

from kiln.errors import KernelError
from kiln.ir import nodes as N
from kiln.types import NdArrayType, ScalarType

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
HALF = ir.HalfType()
FLOAT = ir.FloatType()
DOUBLE = ir.DoubleType()
VOID = ir.VoidType()

_FLOATS = {16: HALF, 32: FLOAT, 64: DOUBLE}
_FSUFFIX = {16: "f16", 32: "f32", 64: "f64"}


def reg_type(t: ScalarType) -> ir.Type:
    if t.is_bool:
        return I1
    if t.is_float:
        return _FLOATS[t.bits]
    return ir.IntType(t.bits)


def mem_type(t: ScalarType) -> ir.Type:
    return I8 if t.is_bool else reg_type(t)


def c_ident(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s or "_"


def _err(msg: str, loc: N.Loc | None = None) -> KernelError:
    if loc is None:
        return KernelError(msg)
    return KernelError(msg, filename=loc.filename, lineno=loc.line, col=loc.col)


def const_value(t: ScalarType, value: bool | float) -> ir.Constant:
    ty = reg_type(t)
    if t.is_bool:
        return ir.Constant(I1, int(bool(value)))
    if t.is_int:
        v = int(value) & ((1 << t.bits) - 1)
        if v >= 1 << (t.bits - 1):
            v -= 1 << t.bits
        return ir.Constant(ty, v)
    return ir.Constant(ty, float(value))


def _gep(b: ir.IRBuilder, ptr: ir.Value, indices: list, inbounds: bool = True,
         source_etype: ir.Type | None = None, name: str = "") -> ir.Value:
    g = b.gep(ptr, indices, inbounds=inbounds, source_etype=source_etype, name=name)
    g.type = PTR       # opaque pointers throughout
    return g


def _alloca(b: ir.IRBuilder, ty: ir.Type, name: str = "") -> ir.Value:
    a = b.alloca(ty, name=name)
    a.type = PTR
    return a


class _Callee:
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



class _ArrayVal:
    def __init__(self, ptr: ir.Value, extents: list[ir.Value], t: NdArrayType) -> None:
        self.ptr = ptr
        self.extents = extents
        self.type = t

    @property
    def dtype(self) -> ScalarType:
        assert self.type.dtype is not None
        return self.type.dtype


_ATOMIC_FLOAT_OPS = {"add": "fadd", "sub": "fsub", "min": "fmin", "max": "fmax"}
_ATOMIC_INT_OPS = {"add": "add", "sub": "sub", "and": "and", "or": "or", "xor": "xor"}


def atomicrmw_op(op: str, t: ScalarType) -> str | None:
    """The LLVM `atomicrmw` operation for kiln atomic `op` ("add", "min", ...) on dtype `t`, or
    None when there is none (bitwise ops on floats)."""
    if t.is_float:
        return _ATOMIC_FLOAT_OPS.get(op)
    if op in ("min", "max"):
        return ("" if t.kind == "i" else "u") + op
    return _ATOMIC_INT_OPS.get(op)
