"""A reference interpreter for kiln's kernel IR (pure Python + numpy), the oracle of the
differential fuzzer (tests/test_differential.py, tests/fuzz/fuzz_diff.py).

    from kiln.driver import lower_kernel
    from kiln.interp import run_kernel
    run_kernel(lower_kernel(my_kernel, param_types), {"x": x, "a": 2.0})

Compiler-side only (it imports kiln.ir, never the runtime's hot path).
"""

from kiln.interp.interpreter import Interpreter, run_kernel
from kiln.interp.scalars import INEXACT_BUILTINS, UnspecifiedBehavior

__all__ = ["INEXACT_BUILTINS", "Interpreter", "UnspecifiedBehavior", "run_kernel"]
