"""One table of operator semantics shared by constant folding (kiln.passes.fold_constants), the
AugStore lowering (kiln.passes.lower_aug_stores) and the code generators (kiln.codegen).

For each "plain" binary operator (one whose meaning is a single wrapping integer or IEEE float
instruction) the table names both the Python operation that folds it and the llvmlite
`IRBuilder` method that emits it, so the two can never disagree. Operators with extra rules
(`//`, `%`, `**`, `/` on ints, shifts) are lowered and folded by dedicated code in each user.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kiln.ir.nodes import AtomicOp, BinaryOp, CompareOp
from kiln.types import ScalarType, int_range


@dataclass(frozen=True)
class PlainBinary:
    """A binary operator that is one instruction: `fold` is exact in Python (ints are wrapped to
    the type's width afterwards, floats rounded to the type), `int_insn`/`float_insn` name the
    llvmlite IRBuilder method (None: not defined on that kind of operand)."""

    fold: Callable[[Any, Any], Any]
    int_insn: str | None
    float_insn: str | None


PLAIN_BINARY: dict[BinaryOp, PlainBinary] = {
    BinaryOp.ADD: PlainBinary(operator.add, "add", "fadd"),
    BinaryOp.SUB: PlainBinary(operator.sub, "sub", "fsub"),
    BinaryOp.MUL: PlainBinary(operator.mul, "mul", "fmul"),
    BinaryOp.BITAND: PlainBinary(operator.and_, "and_", None),
    BinaryOp.BITOR: PlainBinary(operator.or_, "or_", None),
    BinaryOp.BITXOR: PlainBinary(operator.xor, "xor", None),
}

#: Python meaning of each comparison (the code generators use `op.value` as the LLVM predicate)
COMPARE: dict[CompareOp, Callable[[Any, Any], bool]] = {
    CompareOp.EQ: operator.eq, CompareOp.NE: operator.ne, CompareOp.LT: operator.lt,
    CompareOp.LE: operator.le, CompareOp.GT: operator.gt, CompareOp.GE: operator.ge,
}

#: the binary operator an atomic / augmented store applies (MIN and MAX are builtins instead)
ATOMIC_AS_BINARY: dict[AtomicOp, BinaryOp] = {
    AtomicOp.ADD: BinaryOp.ADD, AtomicOp.SUB: BinaryOp.SUB, AtomicOp.AND: BinaryOp.BITAND,
    AtomicOp.OR: BinaryOp.BITOR, AtomicOp.XOR: BinaryOp.BITXOR,
}

#: the LLVM `atomicrmw` operation of each atomic op, on floats and on ints (min/max on ints get
#: an "u" prefix when unsigned); a missing entry means there is none (bitwise ops on floats)
_ATOMICRMW_FLOAT = {AtomicOp.ADD: "fadd", AtomicOp.SUB: "fsub", AtomicOp.MIN: "fmin", AtomicOp.MAX: "fmax"}
_ATOMICRMW_INT = {AtomicOp.ADD: "add", AtomicOp.SUB: "sub", AtomicOp.AND: "and", AtomicOp.OR: "or",
                  AtomicOp.XOR: "xor", AtomicOp.MIN: "min", AtomicOp.MAX: "max"}


def atomicrmw_name(op: AtomicOp, t: ScalarType) -> str | None:
    """The LLVM `atomicrmw` operation for `op` on dtype `t`, or None when there is none."""
    if t.is_float:
        return _ATOMICRMW_FLOAT.get(op)
    name = _ATOMICRMW_INT[op]
    if op in (AtomicOp.MIN, AtomicOp.MAX) and t.kind != "i":
        return "u" + name
    return name


def reduction_identity(op: AtomicOp, t: ScalarType) -> bool | int | float:
    """The value `x` with `x op v == v` for every v of type `t` (what a private accumulator or a
    private array copy starts from)."""
    if op in (AtomicOp.MIN, AtomicOp.MAX):
        low = op is AtomicOp.MAX
        if t.is_float:
            return float("-inf") if low else float("inf")
        lo, hi = int_range(t)
        return lo if low else hi
    if op is AtomicOp.AND:
        return -1
    return 0.0 if t.is_float else 0
