"""Fields and template parameters in compiled graphs and modules.

A kernel that uses a field has a hidden array parameter `@name` (kiln.lang.function). In a
compiled file every field used by a graph or exported kernel is recorded once (manifest `fields`,
with its content at compile time as an init blob), each graph gets a hidden graph parameter
`@name` for it (bound with kind `field`), and the runtime passes its own storage there on every run.
Template parameters are compiled in and take no argument.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from kiln.abi import HIDDEN_PREFIX, element_params
from kiln.artifact.manifest import FieldInfo
from kiln.driver.request import CompileRequest, DispatchSpec, GraphArgSpec, GraphSpec, KernelSpec
from kiln.errors import ArgumentError
from kiln.ir.graph import ArgBinding, ConstBinding
from kiln.lang.fields import TemplateArg
from kiln.types import MatrixType


def hidden_fields(kernel: Any, types: Sequence[Any]) -> dict[str, Any]:
    """Hidden IR parameter name -> Field for one kernel specialisation."""
    fn = getattr(kernel, "hidden_fields", None)
    return {} if fn is None else dict(fn(tuple(types)))


def collect_fields(request: CompileRequest) -> dict[str, Any]:
    """Every field the request's graphs and kernels use, by name (one Field per name)."""
    out: dict[str, Any] = {}
    uses = [(d.kernel, d.param_types) for g in request.graphs for d in g.dispatches]
    uses += [(k.kernel, k.param_types) for k in request.kernels]
    for kernel, types in uses:
        for hidden, f in hidden_fields(kernel, types).items():
            name = hidden.removeprefix(HIDDEN_PREFIX)
            prev = out.setdefault(name, f)
            if prev is not f:
                raise ArgumentError(f"two different fields are both named {name!r} in one module; give one "
                                    "another name with kl.field(..., name=...)")
    return out


def with_field_args(g: GraphSpec) -> GraphSpec:
    """The graph with a hidden graph argument `@name` for each field its dispatches use (fixed shape)."""
    extra: dict[str, GraphArgSpec] = {}
    for d in g.dispatches:
        for hidden, f in hidden_fields(d.kernel, d.param_types).items():
            extra.setdefault(hidden, GraphArgSpec(hidden, f.array_type, tuple(f.array.shape)))
    if not extra:
        return g
    return GraphSpec(g.name, tuple(g.args) + tuple(extra.values()), g.dispatches)


def dispatch_bindings(d: DispatchSpec, const: Any) -> tuple[ArgBinding | ConstBinding, ...]:
    """One binding per IR parameter of the dispatched kernel: its own parameters (template
    parameters are compiled in and skipped), then its hidden field parameters."""
    out: list[ArgBinding | ConstBinding] = []
    for a, t in zip(d.args, d.param_types):
        if isinstance(t, TemplateArg):
            continue
        if isinstance(t, MatrixType):  # one binding per element parameter
            out += ([ArgBinding(n) for n in element_params(a.name, t.size)] if isinstance(a, GraphArgSpec)
                    else [ConstBinding(const(x, t.dtype), t.dtype) for x in np.ravel(a).tolist()])
            continue
        out.append(ArgBinding(a.name) if isinstance(a, GraphArgSpec) else ConstBinding(const(a, t), t))
    out += [ArgBinding(hidden) for hidden in hidden_fields(d.kernel, d.param_types)]
    return tuple(out)


def field_infos(request: CompileRequest, blobs: dict[str, bytes]) -> dict[str, FieldInfo]:
    """The manifest's `fields` section; adds each field's content at compile time to `blobs`."""
    out: dict[str, FieldInfo] = {}
    for name, f in collect_fields(request).items():
        init = None
        if request.field_init and f.array.any():
            init = f"field.{name}"
            blobs[init] = f.array.tobytes()
        out[name] = FieldInfo(name, f.dtype.name, tuple(f.shape), tuple(f.element_shape), init)
    return out


def expand_request(request: CompileRequest) -> CompileRequest:
    """The request with each graph's hidden field arguments added."""
    if not request.graphs:
        return request
    return dataclasses.replace(request, graphs=tuple(with_field_args(g) for g in request.graphs))


__all__ = ["KernelSpec", "collect_fields", "dispatch_bindings", "expand_request", "field_infos"]
