"""A mypy plugin for kernel annotations: `plugins = ["kiln.mypy_plugin"]` in the mypy config.

kiln's scalar types (`kl.f32`, `kl.i32`, `kl.bool_`, ...) are objects, not classes, so mypy
rejects `a: kl.f32` as an annotation; with this plugin mypy reads them as Python's float, int and
bool, which is how kernel code uses them. A module-level alias `F32 = kl.ndarray(kl.f32, ndim=1)`
becomes a type alias of `Any`, so `x: F32` is accepted. An array annotation written in place
(`x: kl.ndarray(kl.f32, ndim=1)`) is a call, and mypy rejects every call in an annotation while
parsing, before any plugin runs: a module that writes them also disables that one check with

    # mypy: disable-error-code="valid-type"

after which those parameters are `Any` and everything else in the module is checked as usual
(docs/typing.md). Only mypy imports this module.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.nodes import GDEF, SymbolTableNode, TypeAlias
from mypy.plugin import AnalyzeTypeContext, DynamicClassDefContext, Plugin
from mypy.types import AnyType, Type, TypeOfAny

from kiln.types import SCALARS_BY_NAME

_PYTHON_TYPE = {"b": "builtins.bool", "i": "builtins.int", "u": "builtins.int", "f": "builtins.float"}
_MODULES = ("kiln", "kiln.types")
_ARRAY_FACTORY = "kiln.types.ndarray"


class KilnPlugin(Plugin):
    """Maps `kiln.types.<scalar>` used as a type to the matching Python type."""

    def get_type_analyze_hook(self, fullname: str) -> Callable[[AnalyzeTypeContext], Type] | None:
        module, _, name = fullname.rpartition(".")
        scalar = SCALARS_BY_NAME.get(name.rstrip("_")) if module in _MODULES else None
        if scalar is None:
            return None
        target = _PYTHON_TYPE[scalar.kind]
        return lambda ctx: ctx.api.named_type(target, [])

    def get_dynamic_class_hook(self, fullname: str) -> Callable[[DynamicClassDefContext], None] | None:
        return _array_alias if fullname == _ARRAY_FACTORY else None


def _array_alias(ctx: DynamicClassDefContext) -> None:
    """`NAME = kl.ndarray(...)` at module level: NAME is a type alias of Any for annotations."""
    alias = TypeAlias(AnyType(TypeOfAny.special_form), ctx.api.qualified_name(ctx.name), ctx.api.cur_mod_id,
                      ctx.call.line, ctx.call.column)
    ctx.api.add_symbol_table_node(ctx.name, SymbolTableNode(GDEF, alias))


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point."""
    return KilnPlugin
