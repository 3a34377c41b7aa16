"""kiln's front end: `@kernel` / `@func` and the kernel-language builtins (Python AST -> typed IR).

The builtins' names are declared once, in kiln/ir/builtins.py; `kiln.lang.builtins_py` exports
a stub for each, and this package re-exports them all.
"""

from kiln.lang import builtins_py
from kiln.lang.builtins_py import *  # every builtin stub, as declared in the registry
from kiln.lang.kernel import Func, Kernel, func, kernel

__all__ = ["Func", "Kernel", "func", "kernel"] + builtins_py.__all__
