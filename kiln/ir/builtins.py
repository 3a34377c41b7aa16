"""Every math builtin of the kernel language, declared once: name, arity, result-type rule,
lowering recipe and doc. The front end reads `type_rule` to type calls; each code generator reads
`lowering` to emit them; docs/language.md is checked against `doc` by a test.

Lowering recipes (interpreted by each code generator):
- ("intrinsic", "llvm.sqrt"): an overloaded LLVM intrinsic on the float type (`.f32`/`.f64`);
- ("libm", "atan2"): a C math function (`atan2f` for f32, `atan2` for f64);
- ("custom", key): code written by the generator itself (rsqrt, abs on ints, min/max...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kiln.types import DEFAULT_FLOAT, ScalarType, bool_, f64, promote

TypeRule = Callable[[tuple[ScalarType, ...]], ScalarType]


def as_float(t: ScalarType) -> ScalarType:
    """Float type used when an int is passed to a float-only builtin."""
    if t.is_float:
        return t
    return f64 if t.bits == 64 else DEFAULT_FLOAT


def _float_unary(args: tuple[ScalarType, ...]) -> ScalarType:
    return as_float(args[0])


def _float_binary(args: tuple[ScalarType, ...]) -> ScalarType:
    return as_float(promote(args[0], args[1]))


def _same(args: tuple[ScalarType, ...]) -> ScalarType:
    return args[0]


def _promoted(args: tuple[ScalarType, ...]) -> ScalarType:
    return promote(args[0], args[1])


def _to_bool(args: tuple[ScalarType, ...]) -> ScalarType:
    return bool_


@dataclass(frozen=True)
class Builtin:
    name: str
    arity: int
    #: result type from the argument types (before the front end casts the arguments)
    type_rule: TypeRule
    #: the type every argument is cast to, derived from the result: "result", "float" (the
    #: result is bool but args are cast to as_float of themselves) or "none" (args kept)
    arg_cast: str
    lowering: tuple[str, str]
    doc: str
    float_only: bool = False


BUILTINS: dict[str, Builtin] = {}


def declare(b: Builtin) -> None:
    BUILTINS[b.name] = b


declare(Builtin("abs", 1, _same, "result", ("custom", "abs"), "absolute value (ints and floats)"))
declare(Builtin("min", 2, _promoted, "result", ("custom", "min"),
                "smaller of two values; with floats, NaN in either gives the other operand"))
declare(Builtin("max", 2, _promoted, "result", ("custom", "max"),
                "larger of two values; with floats, NaN in either gives the other operand"))
declare(Builtin("sqrt", 1, _float_unary, "result", ("intrinsic", "llvm.sqrt"), "square root"))
declare(Builtin("rsqrt", 1, _float_unary, "result", ("custom", "rsqrt"), "1 / sqrt(x)"))
declare(Builtin("exp", 1, _float_unary, "result", ("intrinsic", "llvm.exp"), "e ** x"))
declare(Builtin("log", 1, _float_unary, "result", ("intrinsic", "llvm.log"), "natural logarithm"))
declare(Builtin("sin", 1, _float_unary, "result", ("intrinsic", "llvm.sin"), "sine (radians)"))
declare(Builtin("cos", 1, _float_unary, "result", ("intrinsic", "llvm.cos"), "cosine (radians)"))
declare(Builtin("tan", 1, _float_unary, "result", ("libm", "tan"), "tangent (radians)"))
declare(Builtin("asin", 1, _float_unary, "result", ("libm", "asin"), "arc sine"))
declare(Builtin("acos", 1, _float_unary, "result", ("libm", "acos"), "arc cosine"))
declare(Builtin("atan", 1, _float_unary, "result", ("libm", "atan"), "arc tangent"))
declare(Builtin("atan2", 2, _float_binary, "result", ("libm", "atan2"), "atan2(y, x), the angle of (x, y)"))
declare(Builtin("tanh", 1, _float_unary, "result", ("libm", "tanh"), "hyperbolic tangent"))
declare(Builtin("floor", 1, _float_unary, "result", ("intrinsic", "llvm.floor"),
                "largest integral value <= x, as a float of x's type"))
declare(Builtin("ceil", 1, _float_unary, "result", ("intrinsic", "llvm.ceil"),
                "smallest integral value >= x, as a float of x's type"))
declare(Builtin("round", 1, _float_unary, "result", ("intrinsic", "llvm.roundeven"),
                "nearest integral value, ties to even (Python's round), as a float of x's type"))
declare(Builtin("pow", 2, _float_binary, "result", ("intrinsic", "llvm.pow"), "x ** y on floats"))
declare(Builtin("isnan", 1, _to_bool, "float", ("custom", "isnan"), "True where x is NaN"))
declare(Builtin("isinf", 1, _to_bool, "float", ("custom", "isinf"), "True where x is +inf or -inf"))
