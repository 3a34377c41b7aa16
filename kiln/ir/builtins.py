"""Every builtin of the kernel language, declared once (like Warp's `add_builtin`).

Math builtins (`BUILTINS`): name, parameters, result-type rule, lowering recipe, numpy
implementation outside kernels, `math` alias and doc. Special forms (`SPECIAL_FORMS`: select,
cast, static, ndrange, atomics): name, front-end kind, parameters and doc. Everything else is
derived from these two tables: the front end types calls with `type_rule`; each code generator
emits them from `lowering`; `kiln.lang.builtins_py` builds its stubs from them; and the generated
sections (the stub names, `kiln._BUILTINS`, the tables in docs/language.md) are rewritten by
`python -m kiln.ir.builtins` and checked by tests/test_frontend.py.

Lowering recipes (interpreted by each code generator):
- ("intrinsic", "llvm.sqrt"): an overloaded LLVM intrinsic on the float type (`.f32`/`.f64`);
- ("libm", "atan2"): a C math function (`atan2f` for f32, `atan2` for f64);
- ("custom", key): code written by the generator itself (rsqrt, abs on ints, min/max...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kiln.types import ScalarType, bool_, default_fp, promote

TypeRule = Callable[[tuple[ScalarType, ...]], ScalarType]


def as_float(t: ScalarType) -> ScalarType:
    """Float type used when an int is passed to a float-only builtin or divided (`i / n`): the
    default float type, whatever the int's width (Taichi's rule)."""
    if t.is_float:
        return t
    return default_fp()


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
    #: parameter names, as the docs and the stubs show them
    params: tuple[str, ...]
    #: result type from the argument types (before the front end casts the arguments)
    type_rule: TypeRule
    #: the type every argument is cast to, derived from the result: "result", "float" (the
    #: result is bool but args are cast to as_float of themselves) or "none" (args kept)
    arg_cast: str
    lowering: tuple[str, str]
    doc: str
    #: the numpy function that computes it outside kernels (None: kiln.lang.builtins_py defines it)
    numpy: str | None
    #: the `math` module function that means the same inside a kernel (None: there is none)
    math_alias: str | None = None
    #: Python's builtin of the same name means it inside a kernel (min/max then take 2+ arguments)
    python_builtin: bool = False

    @property
    def arity(self) -> int:
        return len(self.params)


@dataclass(frozen=True)
class SpecialForm:
    """A builtin the front end handles itself rather than as a typed call."""

    name: str
    #: how the front end treats it: "select", "cast", "static", "ndrange" or "atomic"
    kind: str
    #: parameter names as the docs and the stub's doc show them ("*dims": any number)
    params: tuple[str, ...]
    doc: str

    @property
    def arity(self) -> int | None:
        """How many arguments a call takes (None: any number)."""
        return None if any(p.startswith("*") for p in self.params) else len(self.params)


BUILTINS: dict[str, Builtin] = {}
SPECIAL_FORMS: dict[str, SpecialForm] = {}


def declare(b: Builtin) -> None:
    BUILTINS[b.name] = b


def declare_form(f: SpecialForm) -> None:
    SPECIAL_FORMS[f.name] = f


_X, _XY = ("x",), ("x", "y")
declare(Builtin("abs", _X, _same, "result", ("custom", "abs"), "absolute value (ints and floats)", "abs", "fabs",
                python_builtin=True))
declare(Builtin("min", _XY, _promoted, "result", ("custom", "min"),
                "smaller of two values; with floats, NaN in either gives the other operand "
                "and -0.0 < +0.0", "fmin",
                python_builtin=True))
declare(Builtin("max", _XY, _promoted, "result", ("custom", "max"),
                "larger of two values; with floats, NaN in either gives the other operand "
                "and -0.0 < +0.0", "fmax",
                python_builtin=True))
declare(Builtin("sqrt", _X, _float_unary, "result", ("intrinsic", "llvm.sqrt"), "square root", "sqrt", "sqrt"))
declare(Builtin("rsqrt", _X, _float_unary, "result", ("custom", "rsqrt"), "1 / sqrt(x)", None))
declare(Builtin("exp", _X, _float_unary, "result", ("intrinsic", "llvm.exp"), "e ** x", "exp", "exp"))
declare(Builtin("log", _X, _float_unary, "result", ("intrinsic", "llvm.log"), "natural logarithm", "log", "log"))
declare(Builtin("sin", _X, _float_unary, "result", ("intrinsic", "llvm.sin"), "sine (radians)", "sin", "sin"))
declare(Builtin("cos", _X, _float_unary, "result", ("intrinsic", "llvm.cos"), "cosine (radians)", "cos", "cos"))
declare(Builtin("tan", _X, _float_unary, "result", ("libm", "tan"), "tangent (radians)", "tan", "tan"))
declare(Builtin("asin", _X, _float_unary, "result", ("libm", "asin"), "arc sine", "arcsin", "asin"))
declare(Builtin("acos", _X, _float_unary, "result", ("libm", "acos"), "arc cosine", "arccos", "acos"))
declare(Builtin("atan", _X, _float_unary, "result", ("libm", "atan"), "arc tangent", "arctan", "atan"))
declare(Builtin("atan2", ("y", "x"), _float_binary, "result", ("libm", "atan2"), "atan2(y, x), the angle of (x, y)",
                "arctan2", "atan2"))
declare(Builtin("tanh", _X, _float_unary, "result", ("libm", "tanh"), "hyperbolic tangent", "tanh", "tanh"))
declare(Builtin("floor", _X, _float_unary, "result", ("intrinsic", "llvm.floor"),
                "largest integral value <= x, as a float of x's type", "floor", "floor"))
declare(Builtin("ceil", _X, _float_unary, "result", ("intrinsic", "llvm.ceil"),
                "smallest integral value >= x, as a float of x's type", "ceil", "ceil"))
declare(Builtin("round", _X, _float_unary, "result", ("intrinsic", "llvm.roundeven"),
                "nearest integral value, ties to even (Python's round), as a float of x's type", "round"))
declare(Builtin("pow", _XY, _float_binary, "result", ("intrinsic", "llvm.pow"), "x ** y on floats", "power", "pow"))
declare(Builtin("isnan", _X, _to_bool, "float", ("custom", "isnan"), "True where x is NaN", "isnan", "isnan"))
declare(Builtin("isinf", _X, _to_bool, "float", ("custom", "isinf"), "True where x is +inf or -inf", "isinf",
                "isinf"))

declare_form(SpecialForm("select", "select", ("cond", "a", "b"),
                         "a where cond is true, else b (both evaluated); typed like `a if cond else b`"))
declare_form(SpecialForm("cast", "cast", ("value", "dtype"), "numeric conversion to the scalar type dtype"))
declare_form(SpecialForm("static", "static", ("x",), "evaluate x at compile time (if conditions, loop unrolling)"))
declare_form(SpecialForm("ndrange", "ndrange", ("*dims",),
                         "multi-dimensional range, only as a for iterable; each dim is n or (start, stop[, step])"))
declare_form(SpecialForm("random", "random", ("dtype=f32",),
                         "a random number: float in [0, 1) (default float type), any int type over its "
                         "full range (see Random numbers)"))
for _op in ("add", "sub", "min", "max", "and", "or", "xor"):
    declare_form(SpecialForm(f"atomic_{_op}", "atomic", ("x[i]", "v"),
                             f"atomically x[i] = x[i] {_op} v; returns the old value (see Atomics)"))

#: every builtin name a user can reach as `kl.name`, in declaration order
ALL_NAMES: tuple[str, ...] = (*BUILTINS, *SPECIAL_FORMS)


# ---------------------------------------------------------------------------------------------
# Generated sections: each file keeps the text between its markers equal to what these render
# ---------------------------------------------------------------------------------------------

def _render_stub_names() -> str:
    return "".join(f'{name}: BuiltinStub = STUBS["{name}"]\n' for name in ALL_NAMES)


def _render_export_list() -> str:
    lines, line = [], "   "
    for name in ALL_NAMES:
        item = f' "{name}",'
        if len(line) + len(item) > 110:
            lines.append(line)
            line = "   "
        line += item
    lines.append(line)
    return "_BUILTINS = (\n" + "\n".join(lines) + "\n)\n"


def _render_docs_tables() -> str:
    rows = ["| builtin | meaning |", "|---------|---------|"]
    rows += [f"| `kl.{b.name}({', '.join(b.params)})` | {b.doc} |" for b in BUILTINS.values()]
    rows += ["", "Special forms:", "", "| form | meaning |", "|------|---------|"]
    rows += [f"| `kl.{f.name}({', '.join(f.params)})` | {f.doc} |" for f in SPECIAL_FORMS.values()]
    return "\n".join(rows) + "\n"


#: path (from the repository root) -> (comment prefix, renderer)
GENERATED: dict[str, tuple[str, Callable[[], str]]] = {
    "kiln/lang/builtins_py.py": ("#", _render_stub_names),
    "kiln/__init__.py": ("#", _render_export_list),
    "docs/language.md": ("<!--", _render_docs_tables),
}


def _markers(prefix: str) -> tuple[str, str]:
    close = " -->" if prefix == "<!--" else ""
    return (f"{prefix} BEGIN GENERATED by `python -m kiln.ir.builtins` from kiln/ir/builtins.py{close}\n",
            f"{prefix} END GENERATED{close}\n")


def sync_generated(root: str, write: bool) -> list[str]:
    """The generated files whose sections differ from the registry (rewritten when `write`)."""
    import os

    stale = []
    for rel, (prefix, render) in GENERATED.items():
        path = os.path.join(root, rel)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        begin, end = _markers(prefix)
        if text.count(begin) != 1 or text.count(end) != 1:
            raise ValueError(f"{rel}: expected one pair of generated-section markers")
        head, rest = text.split(begin)
        body, tail = rest.split(end)
        if body != render():
            stale.append(rel)
            if write:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(head + begin + render() + end + tail)
    return stale


if __name__ == "__main__":   # regenerate: python -m kiln.ir.builtins
    import pathlib

    changed = sync_generated(str(pathlib.Path(__file__).resolve().parents[2]), write=True)
    print("rewrote " + ", ".join(changed) if changed else "generated sections are up to date")
