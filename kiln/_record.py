"""`Record`: a small value class for modules on the runtime's import path.

`@dataclass` generates its methods with `exec` when a class is defined, which costs about a
millisecond per class; a process that only loads and runs a .kiln file imports the runtime's
classes every time, so they derive from `Record` instead (fields in `__slots__`, defaults in
`_defaults`). IR nodes, which only the compiler imports, stay frozen dataclasses.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Record:
    __slots__: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Records are treated as immutable by convention; not enforcing it keeps construction
        # cheap (a manifest of a few kernels makes hundreds of them at load time).
        names = self.__slots__
        if len(args) == len(names) and not kwargs:
            for name, value in zip(names, args):
                setattr(self, name, value)
            return
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes {len(names)} fields, got {len(args)}")
        for name, value in zip(names, args):
            setattr(self, name, value)
        for name in names[len(args):]:
            if name in kwargs:
                setattr(self, name, kwargs.pop(name))
            elif name in self._defaults:
                setattr(self, name, self._defaults[name])
            else:
                raise TypeError(f"{type(self).__name__}: missing field {name!r}")
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(kwargs)}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, *(v if not isinstance(v, dict) else tuple(v.items())
                                             for v in self._values())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self.__slots__)})"
