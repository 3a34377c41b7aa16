"""kiln's import structure: one scan of every module's imports, the layer map, and a Graphviz
picture of the layers.

    python tools/import_graph.py            # rewrite docs/layers.dot and render docs/layers.svg

The scan (`scan_imports`) and the layer map (`LAYERS`) are what tests/test_layers.py checks, so
the picture in docs/architecture.md is drawn from the same facts the test enforces.
`tests/test_layers.py` also checks that the committed docs/layers.dot is up to date; rendering
the SVG needs Graphviz's `dot` (apt-get install graphviz) and happens only here.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kiln"
DOT_PATH = ROOT / "docs" / "layers.dot"
SVG_PATH = ROOT / "docs" / "layers.svg"


@dataclass(frozen=True)
class Layer:
    name: str
    modules: tuple[str, ...]        # module names or package prefixes that belong to the layer
    uses: tuple[str, ...]           # the layers directly below it that it may import
    role: str


#: kiln's layers, bottom first. A module may import its own layer and every layer reachable
#: through `uses`; anything else runs up (or across) a layer.
LAYERS: tuple[Layer, ...] = (
    Layer("base", ("kiln._version", "kiln._record", "kiln._extras", "kiln.types", "kiln.errors", "kiln.config",
                   "kiln.abi"),
          (), "dtypes, errors, configuration, the argument-block ABI"),
    Layer("ir", ("kiln.ir",), ("base",), "typed kernel IR, graph IR, builtins table, verifier, printer"),
    Layer("artifact", ("kiln.artifact", "kiln.signing"), ("base",), "the .kiln container and manifest, signatures"),
    Layer("runtime", ("kiln.runtime",), ("artifact",), "loading and running saved files (numpy only)"),
    Layer("lang", ("kiln.lang",), ("ir",), "front end: Python ast -> typed IR"),
    Layer("passes", ("kiln.passes",), ("ir",), "IR -> IR passes"),
    Layer("codegen", ("kiln.codegen",), ("ir", "passes", "runtime"),
          "IR -> LLVM IR -> object code / PTX (checked with the runtime's ELF inspector)"),
    Layer("driver", ("kiln.driver",), ("lang", "codegen", "artifact"), "the compile pipeline on plain data"),
    Layer("graph", ("kiln.graph",), ("driver", "runtime"), "Arg, GraphBuilder, Module"),
    Layer("dispatch", ("kiln.dispatch",), ("graph",), "direct kernel calls, set_device"),
    Layer("api", ("kiln",), ("graph", "dispatch"), "the public namespace (lazy attributes)"),
    Layer("cli", ("kiln.cli", "kiln.__main__"), ("api",), "kiln demo / inspect / run / bench"),
)


@dataclass(frozen=True)
class Import:
    importer: str        # module name of the file holding the import
    imported: str        # the kiln module it names (a submodule when `from pkg import submodule`)
    line: int
    in_function: bool    # inside a def (a lazy import)
    type_checking: bool  # under `if TYPE_CHECKING:`


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def all_modules() -> list[str]:
    return sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


class _Scanner(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.depth = 0
        self.type_checking = 0
        self.found: list[Import] = []

    def _add(self, name: str, line: int) -> None:
        if name == "kiln" or name.startswith("kiln."):
            self.found.append(Import(self.module, name, line, self.depth > 0, self.type_checking > 0))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        guarded = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        self.type_checking += guarded
        for child in node.body:
            self.visit(child)
        self.type_checking -= guarded
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parent = self.package.split(".")[: len(self.package.split(".")) - (node.level - 1)]
            base = ".".join([*parent, base] if base else parent)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            self._add(sub if _is_module(sub) else base, node.lineno)


def scan_imports() -> list[Import]:
    """Every import of a kiln module in kiln/, with where it sits."""
    out: list[Import] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        scanner = _Scanner(module_name(path), path.name == "__init__.py")
        scanner.visit(ast.parse(path.read_text(), str(path)))
        out.extend(scanner.found)
    return out


def layer_of(module: str) -> str:
    """The layer of a module: the longest matching entry in LAYERS."""
    best, best_len = None, -1
    for layer in LAYERS:
        for m in layer.modules:
            if (module == m or module.startswith(m + ".")) and len(m) > best_len:
                best, best_len = layer.name, len(m)
    if best is None:
        raise KeyError(f"module {module} belongs to no layer in tools/import_graph.LAYERS")
    return best


def reachable_layers() -> dict[str, set[str]]:
    """Each layer -> the layers it may import (itself and everything below through `uses`)."""
    uses = {layer.name: layer.uses for layer in LAYERS}
    out: dict[str, set[str]] = {}
    for name, below in uses.items():
        seen, todo = {name}, list(below)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(uses[n])
        out[name] = seen
    return out


def module_edges(imports: list[Import]) -> set[tuple[str, str]]:
    """File-level edges (importer, imported), a package's import meaning its __init__."""
    return {(i.importer, i.imported) for i in imports if i.importer != i.imported}


def layer_dot(imports: list[Import]) -> str:
    """Graphviz text: one box per layer listing its modules, one arrow per layer-to-layer use
    seen in the code (solid: top-level imports; dashed: only lazy or TYPE_CHECKING imports)."""
    modules: dict[str, list[str]] = {layer.name: [] for layer in LAYERS}
    for m in all_modules():
        modules[layer_of(m)].append(m)
    eager: set[tuple[str, str]] = set()
    lazy: set[tuple[str, str]] = set()
    for i in imports:
        a, b = layer_of(i.importer), layer_of(i.imported)
        if a != b:
            (lazy if i.in_function or i.type_checking else eager).add((a, b))
    lines = ["// generated by tools/import_graph.py from the imports in kiln/; do not edit",
             "digraph kiln_layers {", "  rankdir=BT;",
             '  node [shape=box, fontname="Helvetica", fontsize=10];', '  edge [color="#555555"];']
    for layer in LAYERS:
        files = "\\l".join(m.removeprefix("kiln.") or "kiln (__init__)" for m in modules[layer.name])
        lines.append(f'  "{layer.name}" [label="{layer.name}: {layer.role}\\n\\n{files}\\l"];')
    for a, b in sorted(eager):
        lines.append(f'  "{a}" -> "{b}";')
    for a, b in sorted(lazy - eager):
        lines.append(f'  "{a}" -> "{b}" [style=dashed];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    DOT_PATH.write_text(layer_dot(scan_imports()))
    print(f"wrote {DOT_PATH.relative_to(ROOT)}")
    dot = shutil.which("dot")
    if dot is None:
        print("Graphviz `dot` not found (apt-get install graphviz): the SVG was not rendered", file=sys.stderr)
        return 1
    subprocess.run([dot, "-Tsvg", str(DOT_PATH), "-o", str(SVG_PATH)], check=True)
    print(f"wrote {SVG_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
