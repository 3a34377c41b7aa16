"""Runs the graphs of a saved .kiln module in a fresh Python process that imports only kiln's
runtime (no front end, no compiler, no llvmlite), as a deployment would: the Taichi ports in
this folder build and save a module, then check what this returns against numpy.

A plan is a list of steps, each a dict:
- `{"graph": name, "args": {scalar args}, "arrays": [names], "repeat": n}` runs a graph n times
  (default 1) with the named arrays (updated in place, across steps) and the scalars;
- `{"snapshot": label}` keeps a copy of every field and array as they are now, under
  `label/name` in the result.
Arrays come in as numpy arrays; `fields` (name -> numpy array) are written into the loaded
module's fields before the plan runs (else they start from the file's recorded content).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np

_CHILD = r"""
import json, sys
import numpy as np
import kiln as kl
path, device, plan, inputs, out = sys.argv[1:6]
m = kl.load_module(path, device=device)
data = dict(np.load(inputs))
arrays = {k: v for k, v in data.items() if not k.startswith("field:")}
for k, v in data.items():
    if k.startswith("field:"):
        f = m.fields[k[6:]]
        if hasattr(f, "from_numpy"):
            f.from_numpy(v)            # a field on the GPU
        else:
            f[...] = v
result = {}

def snapshot(prefix):
    for k, f in m.fields.items():
        result[prefix + "field:" + k] = f.to_numpy() if hasattr(f, "to_numpy") else np.array(f)
    for k, a in arrays.items():
        result[prefix + k] = np.array(a)

for step in json.loads(plan):
    if "snapshot" in step:
        snapshot(step["snapshot"] + "/")
        continue
    g = m.graphs[step["graph"]]
    args = {**step.get("args", {}), **{n: arrays[n] for n in step.get("arrays", [])}}
    for _ in range(step.get("repeat", 1)):
        g.run(args)
snapshot("")
compiler = sorted(n for n in sys.modules if n.startswith(("kiln.lang", "kiln.codegen", "llvmlite")))
if compiler:
    sys.exit(f"the fresh process imported the compiler: {compiler}")
np.savez(out, **result)
"""


def run_saved(path: str | os.PathLike[str], plan: list[dict[str, Any]], device: str = "cpu",
              arrays: dict[str, np.ndarray] | None = None,
              fields: dict[Any, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Load the module saved at `path` in a fresh process on `device` ("cpu" or "cuda"), run
    `plan` there and return the fields (as "field:<name>"), the arrays, and the snapshots.
    `fields` is keyed by kl.field objects (their name in the file) or names."""
    inputs = {**(arrays or {}),
              **{f"field:{getattr(k, 'name', k)}": v for k, v in (fields or {}).items()}}
    root = str(Path(__file__).resolve().parents[1])   # kiln's source tree (kiln is not installed)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "outputs.npz")
        np.savez(src, **cast(dict[str, Any], inputs))   # (numpy's stub types **kwds as bool)
        proc = subprocess.run([sys.executable, "-c", _CHILD, os.fspath(path), device, json.dumps(plan), src, out],
                              env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"the fresh process failed (exit {proc.returncode}):\n{proc.stderr}")
        with np.load(out) as got:
            return dict(got)
