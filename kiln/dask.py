"""Run saved graphs on a Dask cluster (`dask.distributed`): over the blocks of dask arrays
(`map_blocks`) or over a list of parameter sets (`sweep`).

The graph travels as its .kiln file bytes, scattered to every worker once (`broadcast=True`);
tasks carry only a reference to that data plus the file's SHA-256, and each worker process links
the file once and keeps it (`_graph_on_worker`). Workers need the runtime alone: this module
imports dask lazily and never imports the front end, the code generator or llvmlite.

    import kiln as kl, kiln.dask
    step = kl.load("model.kiln")
    y = kiln.dask.map_blocks(step, {"x": x_dask}, out="y", args={"a": 2.0})   # a dask array
    futures = kiln.dask.sweep(step, [{"a": 1.0}, {"a": 2.0}], {"x": x, "y": y0})
    results = client.gather(futures)        # [{"y": array}, {"y": array}]
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kiln.errors import ArgumentError, ArgumentValueError
from kiln.runtime.compiled import _unpickle, load
from kiln.runtime.runnable import ArgSpec
from kiln.types import SCALARS_BY_NAME

__all__ = ["ShippedGraph", "map_blocks", "ship", "sweep"]

# Worker-side cache: (sha256, graph name, device) -> the linked graph. Tasks run on a worker's
# threads, so linking is guarded; `_LINKS` counts links per process (tests check it stays 1).
_GRAPHS: dict[tuple[str, str, str], Any] = {}
_LOCK = threading.Lock()
_LINKS = [0]


class ShippedGraph:
    """A graph whose file has been sent to the cluster: what tasks carry instead of the bytes.

    `data` is a distributed Future of the file bytes (or the bytes themselves when there is no
    distributed client: the local schedulers run tasks in this process)."""

    __slots__ = ("args", "data", "device", "digest", "name")

    def __init__(self, data: Any, digest: str, name: str, device: str, args: list[ArgSpec]) -> None:
        self.data = data
        self.digest = digest
        self.name = name
        self.device = device
        self.args = args

    def spec(self, name: str) -> ArgSpec:
        """The argument `name` of the graph, or an ArgumentError listing the graph's arguments."""
        for a in self.args:
            if a.name == name:
                return a
        raise ArgumentError(f"graph {self.name!r} has no argument {name!r}; it has "
                            f"{[a.name for a in self.args]}")

    def __repr__(self) -> str:
        return f"<ShippedGraph {self.name!r} sha256={self.digest[:12]} device={self.device}>"


def _file_of(graph: Any) -> tuple[bytes, str, str]:
    """(file bytes, graph name, device) of a loaded graph, from its pickle form (one rule for
    how a graph becomes bytes: kiln.runtime.compiled)."""
    parts = graph.__reduce__()
    if not (isinstance(parts, tuple) and parts[0] is _unpickle and parts[1][1] == "graph"):
        raise ArgumentError(f"expected a compiled graph (kl.load(...)) or a .kiln path, got {type(graph).__name__}")
    data, _, name, device = parts[1]
    return data, name, device


def _client(client: Any) -> Any:
    if client is not None:
        return client
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:      # no client in this process: the local schedulers
        return None


def ship(graph: Any, client: Any = None) -> ShippedGraph:
    """Send `graph`'s file to every worker of `client` (default: the current distributed client)
    once, and return the reference tasks carry. With no distributed client, nothing is sent."""
    from kiln._extras import require
    require("dask", extra="dask", purpose="kiln.dask")
    if isinstance(graph, (str, os.PathLike)):
        graph = load(graph)
    data, name, device = _file_of(graph)
    digest = hashlib.sha256(data).hexdigest()
    args = list(graph.args)
    client = _client(client)
    if client is not None:
        # broadcast: a replica in every worker's memory now (and a worker that joins later
        # fetches it once from a peer). hash=False: a fresh key per ship; re-scattering under a
        # content-hash key that an earlier, released ship is still forgetting can hang.
        data = client.scatter(data, broadcast=True, hash=False)
    return ShippedGraph(data, digest, name, device, args)


def _graph_on_worker(data: bytes, digest: str, name: str, device: str) -> Any:
    key = (digest, name, device)
    graph = _GRAPHS.get(key)
    if graph is None:
        with _LOCK:
            graph = _GRAPHS.get(key)
            if graph is None:
                graph = _unpickle(data, "graph", name, device)
                _GRAPHS[key] = graph
                _LINKS[0] += 1
    return graph


def links_in_this_process() -> int:
    """How many files this process has linked for kiln.dask tasks (one per distinct graph)."""
    return _LINKS[0]


# --- map_blocks ----------------------------------------------------------------------------------

def map_blocks(graph: Any, arrays: Mapping[str, Any], *, out: str, args: Mapping[str, Any] | None = None,
               client: Any = None) -> Any:
    """Run `graph` once per block of the dask arrays in `arrays` (graph argument name -> dask
    array, all chunked alike) and return the dask array of argument `out`'s blocks.

    `out` is either one of `arrays` (each block is copied, updated by the graph and returned) or
    another array argument, allocated per block zero-filled with the first array's block shape
    and the argument's dtype. `args` holds every other argument (scalars; small arrays, copied
    per block when the graph writes them). Blocks are independent: no halo exchange, so a
    stencil sees each block's edges as the array's edges.
    """
    import dask.array as da
    if not arrays:
        raise ArgumentError("map_blocks: give at least one dask array")
    shipped = graph if isinstance(graph, ShippedGraph) else ship(graph, client)
    names = list(arrays)
    out_spec = shipped.spec(out)
    for n in [*names, out]:
        if shipped.spec(n).kind != "ndarray":
            raise ArgumentError(f"map_blocks: argument {n!r} of graph {shipped.name!r} is a scalar, not an array")
    fixed = dict(args or {})
    missing = [a.name for a in shipped.args if a.name not in fixed and a.name not in names and a.name != out]
    if missing:
        raise ArgumentError(f"map_blocks: graph {shipped.name!r} also needs {missing}: pass them in args=")
    dtype = SCALARS_BY_NAME[out_spec.dtype].np_dtype
    writes = [a.name for a in shipped.args if a.kind == "ndarray" and a.access in ("write", "readwrite")]
    first = arrays[names[0]]
    if out not in arrays and out_spec.ndim != first.ndim:
        raise ArgumentValueError(f"map_blocks: {out!r} has ndim {out_spec.ndim}, the blocks have ndim {first.ndim}")
    return da.map_blocks(_block_task, *(arrays[n] for n in names), dtype=dtype,
                         meta=np.empty((0,) * first.ndim, dtype), data=shipped.data, digest=shipped.digest,
                         graph_name=shipped.name, device=shipped.device, names=names, out=out, out_dtype=dtype,
                         fixed=fixed, writes=writes)


def _block_task(*blocks: np.ndarray, data: bytes, digest: str, graph_name: str, device: str, names: list[str],
                out: str, out_dtype: np.dtype, fixed: dict[str, Any], writes: list[str]) -> np.ndarray:
    # (`graph_name`, not `name`: dask.array.map_blocks keeps `name=` for itself)
    graph = _graph_on_worker(data, digest, graph_name, device)
    values: dict[str, Any] = {}
    for n, block in zip(names, blocks):
        # Dask blocks may be views of shared inputs: copy what the graph writes. Read-only blocks
        # are copied only when strided or unaligned (deserialised buffers can start anywhere).
        usable = block.flags.c_contiguous and block.flags.aligned
        values[n] = np.array(block, order="C") if n in writes or n == out or not usable else block
    for n, v in fixed.items():
        values[n] = np.array(v, order="C") if isinstance(v, np.ndarray) and n in writes else v
    if out not in values:
        values[out] = np.zeros(blocks[0].shape, out_dtype)
    graph.run(values)
    return values[out]


# --- sweep ---------------------------------------------------------------------------------------

def sweep(graph: Any, params_list: Sequence[Mapping[str, Any]], fixed_args: Mapping[str, Any] | None = None, *,
          outputs: Sequence[str] | None = None, repeat: int = 1, client: Any = None) -> list[Any]:
    """Run `graph` once per parameter set on the cluster; return one Future per set, whose
    result is {name: array} for `outputs` (default: every array the graph writes).

    Each task runs the graph `repeat` times (e.g. frames of a simulation) on its own copies of
    the arrays in `fixed_args` merged with its parameter set (a set overrides fixed values).
    The file and the arrays of `fixed_args` go to each worker once, not with every task.
    """
    client = _client(client)
    if client is None:
        raise ArgumentError("kiln.dask.sweep needs a dask.distributed Client (distributed.Client(...))")
    if repeat < 1:
        raise ArgumentValueError(f"sweep: repeat must be >= 1, got {repeat}")
    shipped = graph if isinstance(graph, ShippedGraph) else ship(graph, client)
    fixed = dict(fixed_args or {})
    known = {a.name for a in shipped.args}
    for params in params_list:
        unknown = sorted((set(params) | set(fixed)) - known)
        if unknown:
            raise ArgumentError(f"sweep: graph {shipped.name!r} has no argument(s) {unknown}; it has {sorted(known)}")
    wanted = list(outputs) if outputs is not None else [
        a.name for a in shipped.args if a.kind == "ndarray" and a.access in ("write", "readwrite")]
    for n in wanted:
        if shipped.spec(n).kind != "ndarray":
            raise ArgumentError(f"sweep: output {n!r} is a scalar argument, not an array")
    arrays = {n: v for n, v in fixed.items() if isinstance(v, np.ndarray)}
    scattered = client.scatter(arrays, broadcast=True, hash=False) if arrays else {}
    fixed.update(scattered)
    return [client.submit(_sweep_task, shipped.data, shipped.digest, shipped.name, shipped.device, fixed,
                          dict(params), wanted, repeat, pure=False) for params in params_list]


def _sweep_task(data: bytes, digest: str, name: str, device: str, fixed: dict[str, Any], params: dict[str, Any],
                outputs: list[str], repeat: int) -> dict[str, np.ndarray]:
    graph = _graph_on_worker(data, digest, name, device)
    # The fixed arrays live once in the worker's memory and are shared by its tasks: copy them
    # (and the set's own arrays, which a threaded worker may share with the caller).
    values = {n: (np.array(v, order="C") if isinstance(v, np.ndarray) else v) for n, v in {**fixed, **params}.items()}
    for _ in range(repeat):
        graph.run(values)
    return {n: values[n] for n in outputs}
