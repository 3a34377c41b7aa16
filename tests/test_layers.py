"""The import structure of kiln (docs/architecture.md): every module sits in a layer, imports run
down the layers only, no two files import each other through any chain, and imports inside
functions are the documented lazy ones below. The scan and the layer map live in
tools/import_graph.py, which also draws docs/layers.dot from them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import import_graph as ig

#: imports inside functions, kept lazy on purpose: (importer, imported) -> why
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("kiln.cli.demo_child", "kiln"):
        "the demo's runtime child installs its import blocker before kiln is imported",
    ("kiln.cli.demo_child", "kiln.cli.demo_reference"): "imported after the import blocker, like kiln",
    ("kiln.cli.main", "kiln.cli.demo"): "each subcommand imports only what it needs (CLI start-up time)",
    ("kiln.cli.main", "kiln.cli.quickbench"): "each subcommand imports only what it needs",
    ("kiln.cli.main", "kiln.artifact.container"): "each subcommand imports only what it needs",
    ("kiln.cli.main", "kiln.artifact.manifest"): "each subcommand imports only what it needs",
    ("kiln.cli.main", "kiln.runtime.hostcpu"): "each subcommand imports only what it needs",
    ("kiln.cli.main", "kiln.runtime.elf"): "each subcommand imports only what it needs",
    ("kiln.cli.main", "kiln.runtime.compiled"): "each subcommand imports only what it needs",
    ("kiln.driver.compile", "kiln.codegen"):
        "LLVM (llvmlite) is imported by the first compile, not when kernels or graphs are defined",
    ("kiln.driver.compile", "kiln.codegen.cuda_link"): "the CUDA code generator only for CUDA targets",
    ("kiln.driver.compile", "kiln.codegen.nvptx"): "the CUDA code generator only for CUDA targets",
    ("kiln.dispatch", "kiln.runtime.cuda_arrays"): "the CUDA array reader only when a device array is passed",
    ("kiln.graph.linking", "kiln.runtime.cuda"): "the CUDA runtime only for CUDA-only modules",
    ("kiln.runtime.compiled", "kiln.runtime.cuda"): "the CUDA runtime only for kl.load(..., device='cuda')",
    ("kiln.runtime.native", "kiln.runtime.elf"): "only the object loader in use is imported",
    ("kiln.runtime.native", "kiln.runtime.mcjit"): "MCJIT needs llvmlite: imported only when chosen",
    ("kiln.cli.main", "kiln"): "each subcommand imports only what it needs (kiln --version)",
    ("kiln.cli.main", "kiln.cli.graph_picture"): "each subcommand imports only what it needs (inspect --svg)",
    ("kiln.cli.main", "kiln.runtime.runnable"): "each subcommand imports only what it needs",
    ("kiln.dask", "kiln._extras"): "the missing-extra message is built only when dask is missing",
    ("kiln.runtime.cuda_driver", "kiln._extras"): "the missing-extra message only when cuda-bindings is missing",
    ("kiln.runtime.mcjit", "kiln._extras"): "the missing-extra message only when llvmlite is missing",
    ("kiln.runtime.compiled", "kiln.signing"): "signatures need the optional cryptography package",
    ("kiln.runtime.cuda", "kiln.signing"): "signatures need the optional cryptography package",
    ("kiln.cli.main", "kiln.signing"): "each subcommand imports only what it needs",
}

#: lazy imports in files that other helpers of issue 12 own (runtime binding/compiled/cuda,
#: threads): each is to be moved to the top of its module or given a reason above at merge.
PENDING_LAZY_IMPORTS: frozenset[tuple[str, str]] = frozenset({
    ("kiln.runtime.compiled", "kiln.runtime.native"),
    ("kiln.runtime.compiled", "kiln.runtime.hostcpu"),
    ("kiln.runtime.mcjit", "kiln.runtime.elf_host"),
    ("kiln.runtime.threads", "kiln.runtime.native"),
})

# removed by the codegen restructure: the four-file emitter circle and the lazy imports that
# hold it together (the lead empties these two constants when that branch is merged)
CODEGEN_CIRCLES_TO_REMOVE: frozenset[frozenset[str]] = frozenset()
CODEGEN_LAZY_IMPORTS_TO_REMOVE: frozenset[tuple[str, str]] = frozenset()


@pytest.fixture(scope="module")
def imports() -> list[ig.Import]:
    return ig.scan_imports()


def test_every_module_has_a_layer() -> None:
    for m in ig.all_modules():
        ig.layer_of(m)          # raises KeyError naming the module


def test_layer_map_is_well_formed() -> None:
    names = [layer.name for layer in ig.LAYERS]
    assert len(set(names)) == len(names)
    for i, layer in enumerate(ig.LAYERS):
        below = set(names[:i])
        assert set(layer.uses) <= below, f"layer {layer.name} uses a layer listed above it: {layer.uses}"


def test_no_import_runs_up_a_layer(imports: list[ig.Import]) -> None:
    """Top-level, lazy and TYPE_CHECKING imports alike go to the importer's layer or below."""
    reach = ig.reachable_layers()
    bad = [f"{i.importer} ({ig.layer_of(i.importer)}) imports {i.imported} ({ig.layer_of(i.imported)}) "
           f"at line {i.line}" for i in imports if ig.layer_of(i.imported) not in reach[ig.layer_of(i.importer)]]
    assert not bad, "imports that run up a layer:\n" + "\n".join(bad)


def test_runtime_never_imports_the_compiler(imports: list[ig.Import]) -> None:
    """The boundary tests/test_boundaries.py proves at run time, checked on the source too."""
    for i in imports:
        if i.importer.startswith(("kiln.runtime", "kiln.artifact")):
            assert not i.imported.startswith(("kiln.lang", "kiln.codegen", "kiln.passes", "kiln.driver")), i
    for path in (ig.PACKAGE / "runtime").rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith(("import llvmlite", "from llvmlite")):
                assert path.name == "mcjit.py", f"{path}: {stripped}"   # the documented MCJIT fallback


def strongly_connected_components(edges: set[tuple[str, str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative; components of one node are left out."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            succ = graph[node]
            if child < len(succ):
                work.append((node, child + 1))
                nxt = succ[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def test_scc_finder() -> None:
    edges = {("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d"), ("f", "a")}
    assert sorted(map(sorted, strongly_connected_components(edges))) == [["a", "b", "c"], ["d", "e"]]
    assert strongly_connected_components({("a", "b"), ("b", "c")}) == []


def test_no_circle_between_files(imports: list[ig.Import]) -> None:
    """Imports that run (TYPE_CHECKING-only imports never execute and are left out)."""
    edges = {(i.importer, i.imported) for i in imports if not i.type_checking and i.importer != i.imported}
    circles = [c for c in strongly_connected_components(edges) if frozenset(c) not in CODEGEN_CIRCLES_TO_REMOVE]
    assert not circles, f"import circles: {[sorted(c) for c in circles]}"


def test_imports_inside_functions_are_the_documented_lazy_ones(imports: list[ig.Import]) -> None:
    allowed = set(LAZY_IMPORTS) | PENDING_LAZY_IMPORTS | CODEGEN_LAZY_IMPORTS_TO_REMOVE
    lazy = {(i.importer, i.imported) for i in imports if i.in_function and not i.type_checking}
    unexpected = sorted(lazy - allowed)
    assert not unexpected, ("imports inside functions that are not documented lazy imports "
                            f"(move them to the top of the module or add them to LAZY_IMPORTS): {unexpected}")
    stale = sorted(allowed - lazy)
    assert not stale, f"allow-list entries no longer in the code (remove them): {stale}"


def test_committed_layer_picture_is_up_to_date(imports: list[ig.Import]) -> None:
    assert ig.DOT_PATH.read_text() == ig.layer_dot(imports), \
        "docs/layers.dot is stale: run `python tools/import_graph.py` and commit docs/layers.dot and .svg"


def test_defining_kernels_and_graphs_does_not_import_llvm(tmp_path: Path) -> None:
    """The lazy imports above at work: @kl.kernel and recording a graph stay free of LLVM."""
    import os
    import subprocess
    code = ("import sys, kiln as kl\n"
            "@kl.kernel\n"
            "def k(x: kl.ndarray(kl.f32, ndim=1)):\n"
            "    for i in range(x.shape[0]):\n"
            "        x[i] = 0.0\n"
            "g = kl.GraphBuilder(); g.dispatch(k, kl.Arg('x', kl.ndarray(kl.f32, ndim=1)))\n"
            "kl.set_device('cpu')\n"
            "bad = [m for m in sys.modules if m.startswith(('llvmlite', 'kiln.codegen'))]\n"
            "assert not bad, bad\n")
    script = tmp_path / "define_only.py"           # kernels need a source file
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(ig.ROOT))
    subprocess.run([sys.executable, str(script)], check=True, env=env)
