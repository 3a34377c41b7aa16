"""Direct kernel calls: `saxpy(2.0, x, y)` compiles once per argument types, then reuses the code.

`kl.kernel` makes a `DirectKernel`: the front end's `Kernel` plus `__call__`. The dispatcher sits
above the compile driver and the runtimes; the front end knows nothing about it.

The current device of direct calls lives here and only here (`_device`, read through
`current_device()`, changed by `set_device`); it starts as `KILN_DEVICE` (kiln.config).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from kiln import config
from kiln.abi import RNG_PARAM
from kiln.driver import CompileRequest, KernelSpec, ParamTypes
from kiln.errors import ArgumentError
from kiln.graph.linking import compile_and_link
from kiln.lang.fields import Template, TemplateArg
from kiln.lang.kernel import Kernel
from kiln.runtime.binding import bind_call_arguments
from kiln.runtime.cuda_driver import device_ordinal
from kiln.runtime.host_arrays import HostArrayError, host_view
from kiln.runtime.rng import draws, new_rng_state
from kiln.types import (
    MAX_NDIM,
    SCALARS_BY_NAME,
    MatrixType,
    NdArrayType,
    ScalarType,
    default_fp,
    from_numpy,
    set_default_fp,
)

#: where direct kernel calls run: "cpu", "cuda" or "cuda:N" (kl.set_device; env KILN_DEVICE)
_device: str = config.current().device


def set_device(device: str) -> None:
    """Run direct kernel calls (`saxpy(2.0, x, y)`) on "cpu" (default), "cuda" (GPU 0) or
    "cuda:N" (GPU N), like Taichi's `ti.init(arch=...)`. Graphs choose their targets at compile
    time and are not affected. On a GPU, numpy arguments are copied to it and back
    (docs/cuda.md) and device arrays (PyTorch, CuPy) on that GPU are used in place."""
    global _device
    _check_device(device, "set_device")
    _device = device


def _check_device(device: str, where: str) -> None:
    if device != "cpu":
        try:
            device_ordinal(device)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


#: `kl.init(arch=kl.cpu)` / `kl.init(arch=kl.cuda)` (`kl.gpu`: the only GPU kiln runs on)
cpu = "cpu"
cuda = "cuda"
gpu = "cuda"
#: the seed `kl.init(random_seed=...)` asked for (for kiln's random numbers)
random_seed: int | None = None


def init(arch: str | None = None, default_fp: ScalarType | None = None, random_seed: int | None = None,
         **_taichi_options: Any) -> None:
    """Taichi-compatible entry point: `kl.init(arch=kl.cpu | kl.cuda, default_fp=kl.f64)` sets the
    device of direct calls (`set_device`) and the default float type (kiln.types.set_default_fp).
    Taichi's other options (debug, log_level, kernel_profiler, ...) are accepted and ignored: they
    do not change results."""
    if arch is not None:
        set_device(arch)
    if default_fp is not None:
        set_default_fp(default_fp)
    if random_seed is not None:
        globals()["random_seed"] = random_seed


def current_device() -> str:
    return _device


#: the random-number state of direct kernel calls (kl.random), one per process: seed lo, seed
#: hi, run counter lo, hi. Kernels advance the run counter themselves (kiln.lang.random).
_rng_state = new_rng_state(0)


def set_random_seed(seed: int) -> None:
    """Restart the random numbers of direct kernel calls from `seed` (an int in [0, 2**64)),
    like Taichi's `ti.init(random_seed=...)`. Compiled graphs keep their own state
    (`compile(seed=...)`, `compiled.seed(n)`)."""
    _rng_state[:] = new_rng_state(seed)


seed = set_random_seed       # kl.seed(n)


class CallPlan:
    """How one specialisation of a direct kernel is called, decided once when it is compiled:
    the compiled code, the mode it was compiled for (device, debug mode, default float type),
    the fields bound to their own arrays, whether the process-wide random state is passed, and
    the runtime entry that takes a dict already holding every parameter."""

    __slots__ = ("__weakref__", "compiled", "device", "config", "fp", "owner", "names", "arity", "by_name",
                 "fields", "rng", "plain", "invoke", "result")

    def __init__(self, kernel: Kernel, compiled: Any, types: ParamTypes, device: str) -> None:
        self.compiled = compiled
        self.device = device
        #: the configuration in force when this plan was last chosen: while it stays in force (and
        #: the device and default float type), calls compile the same way (DirectKernel.__call__)
        self.config = config.current()
        self.fp = default_fp()
        self.owner = f"kernel {kernel.name!r}"
        self.names = tuple(n for n, t in zip(kernel.param_names, types) if not isinstance(t, TemplateArg))
        self.arity = len(self.names)
        self.by_name = _by_name(self.names)
        #: (hidden parameter "@name", Field): the field's own storage, read at each call, so
        #: direct calls update it in place
        self.fields = tuple(kernel.hidden_fields(types).items())
        self.rng = draws(compiled.params)
        #: neither fields nor the random state to add: the argument dict is complete
        self.plain = not self.fields and not self.rng
        # the CPU runtime can skip its own field/random-state binding: this plan does it
        self.invoke = compiled.run_bound if device == "cpu" else compiled.run
        #: the field a kernel's return value lands in (`-> kl.f32`; kiln.lang.kernel), else None
        self.result = kernel.result_field

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Bind positional and keyword arguments (the runtime binder checks their values)."""
        return self.run(self.by_name(args) if len(args) == self.arity and not kwargs
                 else bind_call_arguments(self.owner, self.names, args, kwargs))

    def run(self, bound: dict[str, Any]) -> Any:
        """Run on the visible arguments by name, in a dict this call owns; the kernel's return
        value if it declares one."""
        for hidden, f in self.fields:
            bound[hidden] = f.array
        if self.rng:
            bound[RNG_PARAM] = _rng_state       # the process-wide state, not the module's own
        self.invoke(bound)
        return None if self.result is None else self.result[None]


def _by_name(names: tuple[str, ...]) -> Callable[[tuple[Any, ...]], dict[str, Any]]:
    """`args -> dict(zip(names, args))` for exactly len(names) positional arguments. dict(zip())
    costs 0.3-0.8 us on this project's slow test machine, a third of a whole tiny kernel call; a
    dict display of up to four names costs 0.1-0.2 us."""
    if len(names) == 1:
        (n0,) = names
        return lambda a: {n0: a[0]}
    if len(names) == 2:
        n0, n1 = names
        return lambda a: {n0: a[0], n1: a[1]}
    if len(names) == 3:
        n0, n1, n2 = names
        return lambda a: {n0: a[0], n1: a[1], n2: a[2]}
    if len(names) == 4:
        n0, n1, n2, n3 = names
        return lambda a: {n0: a[0], n1: a[1], n2: a[2], n3: a[3]}
    return lambda a: dict(zip(names, a))


class DirectKernel(Kernel):
    """A `@kl.kernel`: the front end's Kernel, callable directly on arrays.

    The compiled code is cached on the kernel object, so it dies with it: `_call_cache` maps
    (mode, parameter types, default float type) to a `CallPlan`; `_fixed` short-cuts fully
    annotated kernels, which have one specialisation per mode: their calls skip the type checks
    of `call_kernel` (the runtime binder checks every argument).
    """

    def __init__(self, fn: Callable[..., Any], debug: bool = False) -> None:
        super().__init__(fn)
        #: always compiled in debug mode (`@kl.kernel(debug=True)`; docs/debug.md)
        self.debug = debug
        self._call_cache: dict[tuple[Any, ...], CallPlan] = {}
        self._fixed: CallPlan | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        plan = self._fixed
        # Same device, same configuration object (set_debug and config overrides replace it) and
        # same default float type: still the mode the plan was compiled for. Inline, since every
        # function call here costs ~0.1 us of a ~2 us call.
        if plan is not None and plan.device == _device and plan.config is config.current() and plan.fp is default_fp():
            if len(args) == plan.arity and not kwargs and plan.plain:
                plan.invoke(plan.by_name(args))
                return None
            return plan.call(args, kwargs)
        return call_kernel(self, args, kwargs)


def kernel(fn: Callable[..., Any] | None = None, *, debug: bool = False) -> Any:
    """Decorator: compile `fn` as a kiln kernel (its outermost for loop runs in parallel).
    `@kl.kernel(debug=True)` compiles it with run-time checks (docs/debug.md)."""
    if fn is None:
        return lambda f: DirectKernel(f, debug)
    return DirectKernel(fn, debug)


def _mode(kernel: DirectKernel) -> str:
    """The cache key of how a direct call compiles now: the device, and ":debug" in debug mode
    (`@kl.kernel(debug=True)`, `kl.set_debug(True)`, `KILN_DEBUG=1`)."""
    return _device + ":debug" if kernel.debug or config.current().debug else _device


def _is_fixed(kernel: Kernel) -> bool:
    """Every parameter annotated with a concrete type: one specialisation per mode."""
    return all(isinstance(a, ScalarType | MatrixType) or isinstance(a, NdArrayType) and a.is_concrete
               for a in kernel.annotations)


def call_kernel(kernel: DirectKernel, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run `kernel` on the arguments; its return value if it declares one (`-> kl.f32`)."""
    device = _device
    _check_device(device, "KILN_DEVICE")
    mode = _mode(kernel)
    bound = _bind(kernel, args, kwargs)
    names = kernel.param_names
    types = tuple(_type_of(kernel, n, ann, bound[n]) for n, ann in zip(names, kernel.annotations))
    for n, t in zip(names, types):
        if isinstance(t, TemplateArg):  # compiled in: not an argument of the native code
            del bound[n]
    key = (mode, types, default_fp())
    plan = kernel._call_cache.get(key)
    if plan is None:
        plan = CallPlan(kernel, _compile_direct(kernel, types, device, mode != device), types, device)
        kernel._call_cache[key] = plan
    if _is_fixed(kernel):
        # the same mode under the objects in force now (the key compares them by value, the
        # fast path by identity): refreshed, so the next calls in this mode go straight to it
        plan.config, plan.fp = config.current(), key[2]
        kernel._fixed = plan
    return plan.run(bound)


def _compile_direct(kernel: Kernel, types: ParamTypes, device: str, debug: bool = False) -> Any:
    """Compile one specialisation for `device` (in debug mode or not) and link it here."""
    # __name__ is an identifier except for lambdas and the like, which cannot be kernels
    spec = KernelSpec(kernel.name, kernel, types)
    # fields are bound to their own arrays on every call: the file needs no copy of their content
    if device == "cpu":
        request = CompileRequest(kernels=(spec,), cpu_targets=("host",), field_init=False, debug=debug)
        return compile_and_link(request).kernels[kernel.name]
    request = CompileRequest(kernels=(spec,), cpu_targets=(), cuda=True, field_init=False, debug=debug)
    return compile_and_link(request, cuda_device=device_ordinal(device)).kernels[kernel.name]


def _bind(kernel: Kernel, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return bind_call_arguments(f"kernel {kernel.name!r}", tuple(kernel.param_names), args, kwargs)


def _type_of(kernel: Kernel, name: str, ann: ScalarType | NdArrayType | Template,
             value: Any) -> ScalarType | NdArrayType | TemplateArg:
    """The concrete parameter type for a direct call; arrays must match the annotation exactly
    (no conversion), detailed value checks happen in the runtime binder. A template parameter
    takes a compile-time value (a numpy array passed to one is an array parameter)."""
    if isinstance(ann, ScalarType | MatrixType):
        return ann  # checked (and spread, for vectors) by the runtime binder
    if isinstance(ann, Template):
        if isinstance(value, np.ndarray):
            ann = NdArrayType(None, None)
        else:
            return TemplateArg(value)
    where = f"kernel {kernel.name!r}: argument {name!r}"
    if not isinstance(value, np.ndarray):
        if hasattr(value, "__cuda_array_interface__") or (hasattr(value, "__dlpack__") and _dlpack_device(value) != 1):
            return _device_array_type(where, ann, value)
        value = _host_view(where, ann, value)
    dt = from_numpy(value.dtype)
    if dt is None:
        raise ArgumentError(f"{where}: dtype {value.dtype} is not supported by kiln")
    problem = ann.mismatch(dt, value.ndim, str(value.dtype), value.shape)
    if problem is not None:
        raise ArgumentError(f"{where}: {problem}")
    if not 1 <= value.ndim <= MAX_NDIM:
        raise ArgumentError(f"{where}: arrays of {value.ndim} dimensions are not supported (1..{MAX_NDIM})")
    _check_element_shape(where, ann, tuple(value.shape))
    return NdArrayType(dt, value.ndim, ann.element_shape)


def _check_element_shape(where: str, ann: NdArrayType, shape: tuple[int, ...]) -> None:
    """An ndarray of vectors/matrices keeps its element dimensions last: numpy (n, 2) is vec2[n]."""
    es = ann.element_shape
    if es and (len(shape) <= len(es) or shape[len(shape) - len(es):] != es):
        raise ArgumentError(f"{where}: expected an array of {ann.element_type!r} (element shape {es}, the "
                            f"last dimension(s)), got shape {shape}")


def _dlpack_device(value: Any) -> int:
    """The DLPack device type of `value` (1: CPU), 0 when it does not say."""
    try:
        return int(value.__dlpack_device__()[0])
    except Exception:  # noqa: BLE001 - a foreign method; the binder words the error
        return 0


def _host_view(where: str, ann: NdArrayType, value: Any) -> np.ndarray:
    """The zero-copy numpy view the runtime binder will bind for a host array that is not a
    numpy array (CPU DLPack, __array_interface__, buffer protocol: kiln.runtime.host_arrays)."""
    try:
        view = host_view(value)
    except HostArrayError as e:
        raise ArgumentError(f"{where}: {e}") from None
    if view is None:
        raise ArgumentError(f"{where}: expected a numpy.ndarray ({ann!r}), got {type(value).__name__}")
    return view


def _device_array_type(where: str, ann: NdArrayType, value: Any) -> NdArrayType:
    """The parameter type of a GPU array argument (its dtype and ndim, from CAI or DLPack)."""
    # lazy: the CUDA runtime is imported only when a device array is passed
    from kiln.runtime.cuda_arrays import device_array

    info = device_array(value)
    if info is None:
        raise ArgumentError(f"{where}: expected a numpy array or a CUDA device array, got {type(value).__name__}")
    _, shape, dtype_name, _, _ = info
    dt = SCALARS_BY_NAME.get(dtype_name)
    if dt is None:
        raise ArgumentError(f"{where}: dtype {dtype_name} is not supported by kiln")
    problem = ann.mismatch(dt, len(shape), dtype_name, shape)
    if problem is not None:
        raise ArgumentError(f"{where}: {problem}")
    _check_element_shape(where, ann, tuple(shape))
    return NdArrayType(dt, len(shape), ann.element_shape)
