"""The AST walker shared by the expression and statement lowering: `visit_<NodeName>` dispatch,
source locations mapped back to the user's file, the one place where errors get rendered, and
name resolution (static loop constants, locals, params, globals, closure, builtins)."""

from __future__ import annotations

import ast
import builtins as py_builtins
from dataclasses import dataclass, field
from typing import Any

from kiln.errors import KernelError, KernelTypeError
from kiln.ir import nodes as ir
from kiln.lang.values import LangError, Value, from_python
from kiln.types import ScalarType


@dataclass
class SourceInfo:
    """Where a function's source lives: the real file, the real line of the first source line,
    the raw (un-dedented) lines, and how many columns `textwrap.dedent` removed."""

    filename: str
    first_line: int
    lines: list[str]
    indent: int

    def loc(self, node: ast.AST) -> ir.Loc:
        lineno = getattr(node, "lineno", 1)
        col = self._col(lineno, getattr(node, "col_offset", 0))
        end_col: int | None = None
        if getattr(node, "end_lineno", None) == lineno and getattr(node, "end_col_offset", None) is not None:
            end_col = self._col(lineno, node.end_col_offset)  # type: ignore[attr-defined]
        return ir.Loc(self.filename, lineno + self.first_line - 1, col, end_col)

    def _col(self, lineno: int, byte_col: int) -> int:
        # ast columns are UTF-8 byte offsets into the dedented line
        raw = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else ""
        ded = raw[self.indent:] if len(raw) >= self.indent else raw.lstrip()
        chars = len(ded.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))
        return chars + self.indent

    def line_text(self, real_line: int) -> str:
        i = real_line - self.first_line
        return self.lines[i] if 0 <= i < len(self.lines) else ""


@dataclass
class LocalVar:
    ir_name: str
    type: ScalarType
    #: None: defined at the kernel's top level (or in a func); k: private to parallel loop k
    region: int | None
    line: int


@dataclass
class LoopCtx:
    kind: str          # "serial", "parallel", "ndrange" (serial ndrange), "static"
    line: int


@dataclass
class Scope:
    """Per-function name tables."""

    params: dict[str, Value] = field(default_factory=dict)
    locals: dict[str, LocalVar] = field(default_factory=dict)
    consts: list[dict[str, Value]] = field(default_factory=list)


class ASTTransformer:
    """Dispatches `visit_<NodeName>`; an AST node with no visitor is a KernelError."""

    src: SourceInfo

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise LangError(f"{_describe_node(node)} is not supported in kernels", node)
        try:
            return method(node)
        except LangError as e:
            if e.node is None:
                e.node = node
            raise
        except (KernelError, RecursionError):
            raise
        except Exception as e:  # an internal bug: still point at the user's code
            raise LangError(f"internal compiler error: {type(e).__name__}: {e}", node) from e

    def loc(self, node: ast.AST) -> ir.Loc:
        return self.src.loc(node)

    def to_kernel_error(self, e: LangError) -> KernelError:
        """Render a LangError with file:line:col, the source line and a caret span."""
        node = e.node
        loc = self.src.loc(node) if node is not None else ir.Loc(self.src.filename, self.src.first_line, 0)
        cls = KernelTypeError if e.type_error else KernelError
        return cls(e.msg, filename=loc.filename, lineno=loc.line, col=loc.col,
                   source_line=self.src.line_text(loc.line), end_col=loc.end_col)


_NODE_NAMES = {
    "Lambda": "lambda", "ListComp": "list comprehension", "SetComp": "set comprehension",
    "DictComp": "dict comprehension", "GeneratorExp": "generator expression", "With": "'with'",
    "AsyncWith": "'async with'", "Try": "'try'", "TryStar": "'try'", "FunctionDef": "nested def",
    "AsyncFunctionDef": "nested def", "ClassDef": "class definition", "Global": "'global'",
    "Nonlocal": "'nonlocal'", "Assert": "'assert'", "Raise": "'raise'", "Delete": "'del'",
    "Import": "'import'", "ImportFrom": "'import'", "List": "list", "Dict": "dict", "Set": "set",
    "Yield": "'yield'", "YieldFrom": "'yield from'", "Await": "'await'", "JoinedStr": "f-string",
    "Starred": "starred expression", "NamedExpr": "':=' (walrus)", "Slice": "slicing",
    "AsyncFor": "'async for'", "Match": "'match'",
}


def _describe_node(node: ast.AST) -> str:
    name = type(node).__name__
    return _NODE_NAMES.get(name, f"'{name}' syntax")


class NameResolver:
    """Compile-time lookup of a name in the function's globals, closure and builtins."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def lookup(self, name: str) -> tuple[bool, object]:
        code = self.fn.__code__
        if name in code.co_freevars and self.fn.__closure__ is not None:
            cell = self.fn.__closure__[code.co_freevars.index(name)]
            try:
                return True, cell.cell_contents
            except ValueError:
                return False, None
        g = self.fn.__globals__
        if name in g:
            return True, g[name]
        b = g.get("__builtins__", py_builtins)
        bd = b if isinstance(b, dict) else vars(b)
        if name in bd:
            return True, bd[name]
        return False, None

    def resolve(self, name: str) -> Value:
        found, obj = self.lookup(name)
        if not found:
            raise LangError(f"undefined name '{name}'")
        return from_python(obj)
