"""IR-to-IR passes between the front end and the code generator; the driver runs them in the
order of `kiln.driver.pipeline.IR_PASSES` (the pass manager: timing, dumps, verify after each)."""

from kiln.passes.fold_constants import fold_constants, fold_function
from kiln.passes.insert_bounds_checks import insert_bounds_checks
from kiln.passes.lower_aug_stores import lower_aug_stores
from kiln.passes.plan_parallel import plan_parallel
from kiln.passes.rename import make_names_unique, rename_calls

__all__ = ["fold_constants", "fold_function", "insert_bounds_checks", "lower_aug_stores", "make_names_unique", "plan_parallel",
           "rename_calls"]
