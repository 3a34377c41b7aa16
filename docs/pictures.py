"""Regenerate the graph pictures of the documentation with `kiln inspect --svg`:

    PYTHONPATH=. python docs/pictures.py

tests/test_packaging.py checks that the committed pictures are current.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))


def builders() -> dict[str, Callable[[], Any]]:
    """docs-relative picture path -> function returning the GraphBuilder it draws."""
    import image_filter
    import particles

    from kiln.cli.demo import build_graph
    return {"demo_graph.svg": build_graph, "examples/particles_graph.svg": particles.build,
            "examples/image_filter_graph.svg": image_filter.build}


def render(build: Callable[[], Any]) -> str:
    """The SVG `kiln inspect --svg` draws for the graph `build()` returns."""
    from kiln.cli.main import main
    with tempfile.TemporaryDirectory() as tmp:
        model, svg = os.path.join(tmp, "g.kiln"), os.path.join(tmp, "g.svg")
        build().compile(target="x86-64-v2").save(model)
        if main(["inspect", model, "--svg", svg]) != 0:
            raise RuntimeError("kiln inspect --svg failed")
        with open(svg, encoding="utf-8") as f:
            return f.read()


def main() -> int:
    for rel, build in builders().items():
        path = os.path.join(ROOT, "docs", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(render(build))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
