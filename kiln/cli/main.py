"""The `kiln` command line: demo, inspect, run, bench.

Errors kiln raises on purpose (KilnError), bad values and missing files end with one line on
stderr naming the error type, and exit code 2; never a traceback. A reader that closes the pipe
early (`kiln inspect f.kiln | head -1`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from kiln.errors import KilnError


def cmd_demo(ns: argparse.Namespace) -> int:
    from kiln.cli.demo import main
    return main(ns.output)


def _summary(path: str) -> dict[str, Any]:
    from kiln.artifact.container import read_file
    from kiln.artifact.manifest import Manifest
    from kiln.runtime.hostcpu import host_arch, missing_features

    c = read_file(path)   # verifies the manifest and every blob checksum
    m = Manifest.from_json(c.manifest, set(c.blobs))
    doc: dict[str, Any] = c.manifest     # verified JSON: read its optional parts as plain data
    targets = []
    for t in m.targets:
        runnable = t.kind == "cpu" and t.arch == host_arch() and not missing_features(t.features)
        entry: dict[str, Any] = {"name": t.name, "kind": t.kind, "arch": t.arch, "cpu": t.cpu,
                                 "triple": t.triple, "features": t.features, "runs_here": runnable}
        if t.kind == "cuda":
            entry["cubins"] = sorted(m.cuda.cubins) if m.cuda is not None else []
            entry["ptx"] = m.cuda is not None and m.cuda.ptx in t.blobs
            if m.cuda is not None and m.cuda.cubins_missing is not None:
                entry["cubins_missing"] = m.cuda.cubins_missing
            if m.cuda is not None:
                entry["block_size"] = m.cuda.block_size
        if t.kind == "cpu" and t.arch in ("x86_64", "aarch64"):
            from kiln.runtime.elf import EM_AARCH64, EM_X86_64, inspect_elf_object
            machine = EM_X86_64 if t.arch == "x86_64" else EM_AARCH64   # validated, not loaded
            try:
                info = inspect_elf_object(bytes(c.blobs[t.blobs[0]]), machines=frozenset({machine}))
                entry["object_check"] = f"ok ({len(info.sections)} sections)"
            except KilnError as e:
                entry["object_check"] = f"FAILED: {e}"
        targets.append(entry)
    return {
        "file": path, "size": c.size, "format_version": ".".join(map(str, m.format_version)),
        "kiln_version": m.kiln_version, "created": m.created, "targets": targets,
        "blobs": [{"name": b["name"], "size": b["size"], "sha256": b["sha256"], "verified": True}
                  for b in doc["blobs"]],
        "graphs": {g.name: {"args": [_param(p) for p in g.params],
                            "dispatches": [{"kernel": m.kernels[d.kernel].display_name, "ir_name": d.kernel,
                                            "bindings": [b.arg if b.kind == "arg" else f"{b.value}:{b.dtype}"
                                                         for b in d.bindings]} for d in g.dispatches]}
                   for g in m.graphs.values()},
        "kernels": {k.name: {"display_name": k.display_name, "params": [_param(p) for p in k.params],
                             "entries": k.entries} for k in m.kernels.values()},
        "exported_kernels": m.exported_kernels,
        "provenance": m.provenance,
        "trust": _trust_lines(path),
    }


def _trust_lines(path: str) -> list[str]:
    """Signature status and the trust model (kiln.signing.describe_trust)."""
    from kiln.signing import describe_trust
    return describe_trust(path)


def _provenance_lines(prov: dict[str, Any] | None) -> list[str]:
    """The manifest's build information (docs/format.md "Provenance"), for the text report."""
    if prov is None:
        return ["provenance: not recorded (written by an older kiln or another tool)"]
    flags = ", ".join(f"{k}={v}" for k, v in prov.get("flags", {}).items()) or "none"
    head = f"provenance: built by kiln {prov.get('kiln_version', '?')} for {prov.get('target', '?')}; flags: {flags}"
    lines = [head]
    lines += [f"  source of {name}: sha256 {digest[:16]}..." for name, digest in prov.get("sources", {}).items()]
    return lines


def _param(p: Any) -> dict[str, Any]:
    d = {"name": p.layout.name, "kind": p.layout.kind, "dtype": p.layout.dtype}
    if p.layout.kind == "ndarray":
        d["ndim"] = p.layout.ndim
        d["access"] = p.access
        if p.shape is not None:
            d["shape"] = list(p.shape)
    return d


def _fmt_param(p: dict[str, Any]) -> str:
    if p["kind"] == "scalar":
        return f"{p['name']}: {p['dtype']}"
    dims = ["?" if d is None else str(d) for d in p.get("shape", [])]
    shape = f", shape=({', '.join(dims)}{',' if len(dims) == 1 else ''})" if "shape" in p else ""
    return f"{p['name']}: ndarray({p['dtype']}, ndim={p['ndim']}{shape}) [{p['access']}]"


def _pick_graph(names: list[str], wanted: str | None, file: str) -> str:
    if wanted is None:
        if len(names) != 1:
            raise KilnError(f"{file} holds graphs {sorted(names)}: choose one with --graph")
        return names[0]
    if wanted not in names:
        raise KilnError(f"{file} has no graph {wanted!r}; it has {sorted(names)}")
    return wanted


def _write_picture(s: dict[str, Any], ns: argparse.Namespace) -> None:
    from kiln.cli.graph_picture import to_dot, to_svg
    graph = _pick_graph(list(s["graphs"]), ns.graph, ns.file)
    for path, render in ((ns.svg, to_svg), (ns.dot, to_dot)):
        if path is None:
            continue
        text = render(s, graph)
        if path == "-":
            sys.stdout.write(text)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {path} (graph {graph!r}, {len(s['graphs'][graph]['dispatches'])} dispatches)",
                  file=sys.stderr)


def cmd_inspect(ns: argparse.Namespace) -> int:
    s = _summary(ns.file)
    if ns.svg is not None or ns.dot is not None:
        _write_picture(s, ns)
        return 0
    if ns.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{s['file']}: kiln format {s['format_version']}, {s['size']} bytes, made by kiln {s['kiln_version']} "
          f"at {s['created']}")
    for t in s["targets"]:
        if t["kind"] == "cuda":
            cubins = ", ".join(t.get("cubins", [])) or f"none ({t.get('cubins_missing', 'not built')})"
            print(f"  target {t['name']}: cuda, PTX for {t['cpu']}{' (driver JIT on newer GPUs)' if t.get('ptx') else ''}"
                  f"; cubins: {cubins}; block size {t.get('block_size', '?')}")
            continue
        print(f"  target {t['name']}: {t['kind']} {t['arch']} cpu={t['cpu']} "
              f"({'runs here' if t['runs_here'] else 'does NOT run here'}); object check: {t.get('object_check', '-')}")
    for b in s["blobs"]:
        print(f"  blob {b['name']}: {b['size']} bytes, sha256 {b['sha256'][:16]}... verified")
    for name, g in s["graphs"].items():
        print(f"  graph {name}: {len(g['dispatches'])} dispatches")
        print(f"    args: {', '.join(_fmt_param(p) for p in g['args'])}")
        for i, d in enumerate(g["dispatches"]):
            if i == 12 and len(g["dispatches"]) > 14:
                print(f"    ... {len(g['dispatches']) - 13} more")
                continue
            if 12 < i < len(g["dispatches"]) - 1:
                continue
            print(f"    {i:4d}: {d['kernel']}({', '.join(map(str, d['bindings']))})")
    for name, k in s["kernels"].items():
        print(f"  kernel {k['display_name']} [{name}]: ({', '.join(_fmt_param(p) for p in k['params'])}) "
              f"entries {k['entries']}")
    if s["exported_kernels"]:
        print(f"  callable kernels: {', '.join(s['exported_kernels'])}")
    for line in _provenance_lines(s["provenance"]) + s["trust"]:
        print(f"  {line}")
    return 0


def _parse_scalar(spec: Any, text: str) -> Any:
    if spec.dtype == "bool":
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"argument {spec.name!r}: expected true/false, got {text!r}")
    try:
        return int(text, 0) if spec.dtype[0] in "iu" else float(text)
    except ValueError:
        raise ValueError(f"argument {spec.name!r}: cannot parse {text!r} as {spec.dtype}") from None


def cmd_run(ns: argparse.Namespace) -> int:
    import time

    import numpy as np

    from kiln.runtime.compiled import load_module
    from kiln.runtime.runnable import ArgSpec

    mod = load_module(ns.file, device=ns.device)
    graph = mod.graphs[_pick_graph(list(mod.graphs), ns.graph, ns.file)]
    # CPU graphs list ArgSpecs; CUDA graphs list the manifest's ParamInfos.
    specs = {a.name: a for a in (
        a if isinstance(a, ArgSpec) else ArgSpec(a.layout.name, a.layout.kind, a.layout.dtype, a.layout.ndim,
                                                 a.shape, a.access) for a in graph.args)}
    values: dict[str, Any] = {}
    for item in ns.arg:
        name, sep, value = item.partition("=")
        if not sep or name not in specs:
            raise KilnError(f"--arg {item!r}: expected NAME=VALUE with NAME one of {sorted(specs)}")
        if specs[name].kind == "ndarray":
            values[name] = np.load(value, allow_pickle=False)
        else:
            values[name] = _parse_scalar(specs[name], value)
    outs = []
    for item in ns.out:
        name, sep, path = item.partition("=")
        if not sep or name not in values or specs[name].kind != "ndarray":
            raise KilnError(f"--out {item!r}: expected NAME=FILE.npy where NAME is an array given with --arg")
        outs.append((name, path))
    t0 = time.perf_counter()
    for _ in range(ns.repeat):
        graph.run(values)
    dt = time.perf_counter() - t0
    for name, path in outs:
        np.save(path, values[name])
    print(f"ran graph {graph.name!r} on {ns.device} {ns.repeat}x in {1e3 * dt:.3f} ms; wrote {', '.join(p for _, p in outs) or 'nothing'}")
    return 0


def cmd_bench(ns: argparse.Namespace) -> int:
    from kiln.cli.quickbench import main
    return main(quick=ns.quick)


def build_parser() -> argparse.ArgumentParser:
    from kiln import __version__
    p = argparse.ArgumentParser(prog="kiln", description="Bake compute graphs ahead of time.")
    p.add_argument("--version", action="version", version=f"kiln {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="build, save, reload in a fresh process and run a heat-diffusion graph")
    d.add_argument("--output", "-o", help="keep the saved .kiln file at this path")
    d.set_defaults(fn=cmd_demo)
    i = sub.add_parser("inspect", help="summarise and verify a .kiln file")
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.add_argument("--svg", metavar="OUT.svg", help="draw the graph (arguments, dispatches, reads and writes) "
                   "as SVG; '-' for stdout")
    i.add_argument("--dot", metavar="OUT.dot", help="the same picture as Graphviz text; '-' for stdout")
    i.add_argument("--graph", help="graph to draw (needed when the file holds several)")
    i.set_defaults(fn=cmd_inspect)
    r = sub.add_parser("run", help="run a saved graph on .npy inputs")
    r.add_argument("file")
    r.add_argument("--graph", help="graph name (needed when the file holds several)")
    r.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="run on the CPU (default) or the current CUDA GPU (the file needs a cuda target)")
    r.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="an array from a .npy file, or a scalar value")
    r.add_argument("--out", action="append", default=[], metavar="NAME=FILE.npy",
                   help="save an array argument after the run")
    r.add_argument("--repeat", type=int, default=1, help="run the graph this many times")
    r.set_defaults(fn=cmd_run)
    b = sub.add_parser("bench", help="a quick benchmark of this machine (bench/run.py has the peers)")
    b.add_argument("--quick", action="store_true")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 a failed check, 2 an error)."""
    ns = build_parser().parse_args(argv)
    try:
        code = int(ns.fn(ns))
        sys.stdout.flush()      # a closed pipe shows up here, inside the handler below
        return code
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (KilnError, ValueError, OSError) as e:
        print(f"kiln {ns.cmd}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
