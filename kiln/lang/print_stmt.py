"""`print(...)` inside kernels and funcs (docs/language.md "Printing"), as Taichi has it: string
literals, scalars, vectors and matrices, f-strings with plain `{expr}` fields, and the `sep=` and
`end=` keywords (string literals). It becomes one `ir.Print`; the runtime writes the text after
the run (kiln.runtime.print_buffer)."""

from __future__ import annotations

import ast
from collections.abc import Callable

from kiln.ir import nodes as ir
from kiln.lang.values import LangError, Lit, MatrixVal, Static, Value

Piece = str | ir.Expr


def is_print_call(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"


def lower_print(node: ast.Call, visit: Callable[[ast.AST], Value], loc: ir.Loc) -> ir.Print:
    """The Print statement of a `print(...)` call; `visit` evaluates an argument expression."""
    sep, end = " ", "\n"
    for kw in node.keywords:
        if kw.arg not in ("sep", "end"):
            raise LangError(f"print in a kernel accepts only the sep= and end= keywords, not {kw.arg!r}", kw)
        if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str | type(None))):
            raise LangError(f"print's {kw.arg}= must be a string literal", kw)
        default = " " if kw.arg == "sep" else "\n"
        value = default if kw.value.value is None else kw.value.value
        sep, end = (value, end) if kw.arg == "sep" else (sep, value)
    pieces: list[Piece] = []
    for k, arg in enumerate(node.args):
        if isinstance(arg, ast.Starred):
            raise LangError("print(*args) is not supported in kernels", arg)
        if k:
            pieces.append(sep)
        pieces += _argument(arg, visit)
    pieces.append(end)
    return _interleave(pieces, loc)


def _argument(arg: ast.expr, visit: Callable[[ast.AST], Value]) -> list[Piece]:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr):
        out: list[Piece] = []
        for part in arg.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value))
            elif isinstance(part, ast.FormattedValue) and part.format_spec is None and part.conversion == -1:
                out += _value(visit(part.value), part)
            else:
                raise LangError("f-string fields in kernels take a plain {expression} (no format spec, "
                                "no !r/!s)", part)
        return out
    return _value(visit(arg), arg)


def _value(v: Value, node: ast.AST) -> list[Piece]:
    if isinstance(v, Lit):
        return [str(v.value)]
    if isinstance(v, Static) and isinstance(v.obj, str):      # a global string constant
        return [v.obj]
    if isinstance(v, ir.Expr):
        return [v]
    if isinstance(v, MatrixVal):
        if len(v.shape) == 1:
            return _listed(list(v.items))
        rows = [_listed(list(v.items[r * v.shape[1]:(r + 1) * v.shape[1]])) for r in range(v.shape[0])]
        out: list[Piece] = ["["]
        for r, row in enumerate(rows):
            out += ([", "] if r else []) + row
        return out + ["]"]
    raise LangError("print in a kernel shows strings, scalars, vectors and matrices", node)


def _listed(items: list[ir.Expr]) -> list[Piece]:
    out: list[Piece] = ["["]
    for k, e in enumerate(items):
        out += ([", "] if k else []) + [e]
    return out + ["]"]


def _interleave(pieces: list[Piece], loc: ir.Loc) -> ir.Print:
    texts: list[str] = [""]
    values: list[ir.Expr] = []
    for p in pieces:
        if isinstance(p, str):
            texts[-1] += p
        else:
            values.append(p)
            texts.append("")
    return ir.Print(loc, tuple(texts), tuple(values))
