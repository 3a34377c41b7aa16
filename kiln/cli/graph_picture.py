"""`kiln inspect --svg/--dot`: a picture of a saved graph.

The picture is a table: one column (lane) per graph argument, one row per dispatch, and in each
cell a mark for what that dispatch does with that argument (read, write, read+write). Repeated
dispatch sequences (a time-stepping loop recorded 100 times) are folded into one block drawn once
with an `x100` label, so a graph of a few hundred dispatches stays a page long. The SVG is
written here in pure Python (no Graphviz needed); `--dot` writes Graphviz text of the same
folded structure for people who prefer `dot -Tsvg`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

from kiln._record import Record

#: Longest repeated sequence looked for when folding (longer loops are rare; keeps folding cheap).
MAX_PERIOD = 64


class Step(Record):
    """One dispatch as drawn: the kernel's name, its bindings and each argument's use."""

    __slots__ = ('kernel', 'bindings', 'uses')
    kernel: str
    bindings: tuple[str, ...]
    uses: tuple[tuple[str, str], ...]   # (graph argument, "read" | "write" | "readwrite")


class Block(Record):
    """`steps` run `repeat` times in a row (repeat 1: plain dispatches)."""

    __slots__ = ('repeat', 'steps', 'first')
    repeat: int
    steps: tuple[Step, ...]
    first: int          # index of the block's first dispatch in the graph


def graph_steps(summary: dict[str, Any], graph: str) -> list[Step]:
    """The dispatches of `graph` in a `kiln inspect --json` summary, with each argument's use
    taken from the dispatched kernel's parameter access modes."""
    kernels = summary["kernels"]
    steps = []
    for d in summary["graphs"][graph]["dispatches"]:
        params = kernels[d["ir_name"]]["params"]
        uses = []
        for p, b in zip(params, d["bindings"]):
            is_arg = not (isinstance(b, str) and ":" in b)   # constants are shown as "value:dtype"
            if not is_arg:
                continue
            access = p.get("access", "read") if p["kind"] == "ndarray" else "read"
            if access != "none":
                uses.append((b, access))
        steps.append(Step(d["kernel"], tuple(map(str, d["bindings"])), tuple(uses)))
    return steps


def fold(steps: Sequence[Step], max_period: int = MAX_PERIOD) -> list[Block]:
    """Greedy run-length folding: at each position take the period whose back-to-back repeats
    cover the most dispatches (at least two repeats), else emit one dispatch."""
    ids: dict[Step, int] = {}
    seq = [ids.setdefault(s, len(ids)) for s in steps]   # compare small ints, not records
    blocks: list[Block] = []
    i, n = 0, len(seq)
    while i < n:
        best_period, best_repeat = 1, 1
        for period in range(1, min(max_period, (n - i) // 2) + 1):
            unit = seq[i:i + period]
            repeat = 1
            while seq[i + repeat * period:i + (repeat + 1) * period] == unit:
                repeat += 1
            if repeat > 1 and period * repeat > best_period * best_repeat:
                best_period, best_repeat = period, repeat
        blocks.append(Block(best_repeat, tuple(steps[i:i + best_period]), i))
        i += best_period * best_repeat
    return blocks


def _lanes(summary: dict[str, Any], graph: str) -> list[dict[str, Any]]:
    return list(summary["graphs"][graph]["args"])


def _arg_label(p: dict[str, Any]) -> str:
    if p["kind"] == "scalar":
        return f"{p['name']}: {p['dtype']}"
    return f"{p['name']}: {p['dtype']}[{p['ndim']}d]"


def to_dot(summary: dict[str, Any], graph: str) -> str:
    """Graphviz text: argument nodes, one node per dispatch of each folded block (blocks as
    clusters labelled `xN`), an edge into a dispatch for each read and out of it for each write."""
    lines = [f'digraph "{graph}" {{', "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    for p in _lanes(summary, graph):
        shape = "ellipse" if p["kind"] == "ndarray" else "plaintext"
        lines.append(f'  "arg:{p["name"]}" [label="{_arg_label(p)}", shape={shape}];')
    edges: list[str] = []   # outside the clusters: an edge inside one would pull the argument in
    for b, block in enumerate(fold(graph_steps(summary, graph))):
        indent = "  "
        if block.repeat > 1:
            lines.append(f'  subgraph "cluster_{b}" {{ label="x{block.repeat}"; style=rounded;')
            indent = "    "
        for s, step in enumerate(block.steps):
            node = f"d{block.first + s}"
            label = f"{block.first + s}: {step.kernel}({', '.join(step.bindings)})"
            lines.append(f'{indent}"{node}" [label="{_dot_escape(label)}", shape=box];')
            for arg, access in step.uses:
                if access in ("read", "readwrite"):
                    edges.append(f'  "arg:{arg}" -> "{node}";')
                if access in ("write", "readwrite"):
                    edges.append(f'  "{node}" -> "arg:{arg}" [color=firebrick];')
        if block.repeat > 1:
            lines.append("  }")
    lines.extend(edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# --- SVG -----------------------------------------------------------------------------------------

_ROW = 22           # height of one dispatch row
_LANE = 84          # width of one argument lane
_NAME_W = 300       # width of the dispatch-name column
_HEAD = 64          # height of the argument header
_PAD = 12
_MARK_FILL = {"read": "#ffffff", "write": "#c0392b", "readwrite": "#e67e22"}
_MARK_TEXT = {"read": "R", "write": "W", "readwrite": "RW"}


def to_svg(summary: dict[str, Any], graph: str) -> str:
    """A self-contained SVG of `graph` (see the module docstring for what it shows)."""
    lanes = _lanes(summary, graph)
    blocks = fold(graph_steps(summary, graph))
    lane_x = {p["name"]: _PAD + _NAME_W + _LANE * k + _LANE // 2 for k, p in enumerate(lanes)}
    width = _PAD * 2 + _NAME_W + _LANE * max(1, len(lanes))
    rows = sum(len(b.steps) + (1 if b.repeat > 1 else 0) for b in blocks)
    height = _HEAD + _ROW * rows + _PAD * 2 + 30
    total = len(summary["graphs"][graph]["dispatches"])
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">'),
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           _text(_PAD, 18, f"graph {graph!r}: {total} dispatches, {len(lanes)} arguments", bold=True)]
    for p in lanes:
        x = lane_x[p["name"]]
        out.append(_text(x, 40, p["name"], anchor="middle", bold=True))
        out.append(_text(x, 54, p["dtype"] + (f" {p['ndim']}d" if p["kind"] == "ndarray" else ""),
                         anchor="middle", size=10, fill="#555"))
        out.append(f'<line x1="{x}" y1="{_HEAD}" x2="{x}" y2="{height - _PAD - 30}" stroke="#ddd"/>')
    y = _HEAD
    for block in blocks:
        top = y
        if block.repeat > 1:
            y += _ROW
            out.append(_text(_PAD + 6, y - 7, f"x{block.repeat}  (dispatches {block.first}-"
                                               f"{block.first + block.repeat * len(block.steps) - 1})",
                             bold=True, fill="#2c3e50"))
        for s, step in enumerate(block.steps):
            out.extend(_row(step, block.first + s, y, lane_x))
            y += _ROW
        if block.repeat > 1:
            out.append(f'<rect x="{_PAD}" y="{top + 2}" width="{width - 2 * _PAD}" height="{y - top - 2}" '
                       'rx="6" fill="none" stroke="#2c3e50" stroke-width="1.5"/>')
    legend_y = height - _PAD - 8
    x = _PAD
    for access in ("read", "write", "readwrite"):
        out.append(_mark(x + 10, legend_y - 4, access))
        out.append(_text(x + 24, legend_y, access))
        x += 100
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _row(step: Step, index: int, y: int, lane_x: dict[str, int]) -> list[str]:
    label = f"{index}: {step.kernel}({', '.join(step.bindings)})"
    if len(label) > 44:
        label = label[:43] + "\u2026"
    parts = [_text(_PAD + 10, y + 15, label)]
    for arg, access in step.uses:
        if arg in lane_x:
            parts.append(_mark(lane_x[arg], y + _ROW // 2, access))
    return parts


def _mark(x: int, y: int, access: str) -> str:
    fg = "#000" if access == "read" else "#fff"
    return (f'<circle cx="{x}" cy="{y}" r="8" fill="{_MARK_FILL[access]}" stroke="#333"/>'
            + _text(x, y + 3, _MARK_TEXT[access], anchor="middle", size=8, fill=fg, bold=True))


def _text(x: int, y: int, text: str, *, anchor: str = "start", size: int = 12, fill: str = "#000",
          bold: bool = False) -> str:
    weight = ' font-weight="bold"' if bold else ""
    return (f'<text x="{x}" y="{y}" text-anchor="{anchor}" font-size="{size}" fill="{fill}"{weight}>'
            f"{escape(text)}</text>")
