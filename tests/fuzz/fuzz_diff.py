"""Differential fuzzer: random well-typed kernels (kernelgen.py) compiled by kiln and run by direct
call, against the reference interpreter (kiln.interp) on the same typed IR.

    PYTHONPATH=$PWD python tests/fuzz/fuzz_diff.py --seed 1 --count 2000 [--out DIR] [--debug]

Integers and bools must match bit for bit; floats bit for bit too (any NaN matches any NaN),
except the `tx_` outputs, which apply one transcendental builtin last and may differ by a few
ulp. Each kernel is written to a module file (kl.kernel reads its source), compiled for the host
and run in this process, so run it under a supervisor (the exit status says whether it
crashed); with --out every mismatching kernel's source and arguments are kept there.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import random
import sys
import tempfile
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kernelgen import Draw, KernelGen

#: allowed ulp distance for outputs of transcendental builtins
MAX_ULP = 4
#: the outcomes that are not findings
PASSED = frozenset({"ok", "unspecified", "raised"})


def load_kernel(source: str, folder: str, name: str) -> Any:
    path = os.path.join(folder, f"{name}.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.kern


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in units in the last place between same-typed float arrays (NaN==NaN: 0)."""
    ints = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
    ia, ib = a.view(ints).astype(np.int64), b.view(ints).astype(np.int64)
    top = np.int64(1) << np.int64(8 * a.dtype.itemsize - 1)
    ia = np.where(ia < 0, -(ia + top) if a.dtype.itemsize < 8 else -(ia & ~top), ia)
    ib = np.where(ib < 0, -(ib + top) if a.dtype.itemsize < 8 else -(ib & ~top), ib)
    d = np.abs(ia - ib)
    both_nan = np.isnan(a) & np.isnan(b)
    return np.where(both_nan, 0, d)


def compare(name: str, got: np.ndarray, want: np.ndarray) -> str | None:
    """None if equal under the rules above, else a description of the first difference."""
    if got.dtype.kind == "f":
        if name.startswith("tx_"):
            bad = np.flatnonzero(_ulps(got, want) > MAX_ULP)
        else:
            same = (got.view(f"u{got.dtype.itemsize}") == want.view(f"u{got.dtype.itemsize}"))
            bad = np.flatnonzero(~(same | (np.isnan(got) & np.isnan(want))))
    else:
        bad = np.flatnonzero(got != want)
    if len(bad) == 0:
        return None
    k = int(bad[0])
    return f"{name}[{k}]: compiled {got[k]!r}, interpreter {want[k]!r}"


def _outcome(run: Any) -> str:
    """'' when `run()` returns, else the debug-mode exception it raises, as `Type: message`."""
    from kiln.errors import KernelIndexError, KernelZeroDivisionError
    try:
        run()
    except (KernelIndexError, KernelZeroDivisionError) as e:
        return f"{type(e).__name__}: {e}"
    return ""


def check_kernel(gen: KernelGen, folder: str, tag: str, debug: bool = False) -> tuple[str, str]:
    """('ok' | 'raised' | 'unspecified' | 'rejected' | 'mismatch' | 'interp-error', detail). 'unspecified':
    the run reached a result docs/language.md leaves open (kiln.interp.UnspecifiedBehavior).
    `debug`: compiled in debug mode (on one thread, so that the first failing check is the
    interpreter's) against the interpreter running the checked IR: the same exception (type and
    message) or none, and the same arrays (what ran before a failure included)."""
    from kiln import config, passes
    from kiln.errors import KernelError
    from kiln.interp import UnspecifiedBehavior, run_kernel
    from kiln.runtime.threads import get_num_threads, set_num_threads
    from kiln.types import SCALARS_BY_NAME, NdArrayType

    source = gen.source()
    args = gen.inputs()
    kern = load_kernel(source, folder, f"kdiff_{tag}")
    types = tuple(NdArrayType(SCALARS_BY_NAME[t], 1) if k == "array" else SCALARS_BY_NAME[t]
                  for _n, k, t in gen.params())
    try:
        # the interpreter runs the IR before constant folding, so the folder is checked too (the
        # direct call below runs the whole pipeline, kiln.driver.lower_kernel, for the compiler)
        kir = passes.lower_aug_stores(kern.specialize(types))
        if debug:
            kir = passes.insert_bounds_checks(kir)
    except KernelError as e:
        return "rejected", f"{str(e).splitlines()[0]}\n{source}"
    compiled_args = {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in args.items()}
    interp_args = {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in args.items()}
    try:
        interp_raised = _outcome(lambda: run_kernel(kir, interp_args))
    except UnspecifiedBehavior as e:    # the language leaves the result open: nothing to compare
        return "unspecified", str(e)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        return "interp-error", f"{type(e).__name__}: {e}\n{source}"
    threads = get_num_threads()
    if debug:
        set_num_threads(1)
    try:
        with np.errstate(all="ignore"), config.configured(debug=debug):
            compiled_raised = _outcome(lambda: kern(**compiled_args))
    finally:
        set_num_threads(threads)
    if compiled_raised != interp_raised:
        return "mismatch", (f"compiled raised {compiled_raised or 'nothing'!r}, interpreter "
                            f"{interp_raised or 'nothing'!r}\nargs={args}\n{source}")
    outcome = "raised" if interp_raised else "ok"     # "raised": the same debug-mode error
    for name, want in interp_args.items():
        if isinstance(want, np.ndarray) and not name.startswith("in_"):
            diff = compare(name, compiled_args[name], want)
            if diff:
                return "mismatch", f"{diff}\nargs={ {n: v for n, v in args.items()} }\n{source}"
    return outcome, interp_raised


def run(seed: int, count: int, out: str | None = None, log: Any = print, debug: bool = False) -> dict[str, Any]:
    import warnings
    warnings.simplefilter("ignore")
    rng = random.Random(seed)
    stats: collections.Counter[str] = collections.Counter()
    examples: dict[str, list[str]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as folder:
        for k in range(count):
            gen = KernelGen(Draw(rng.randint), transcendental=True, wild_indices=debug)
            outcome, detail = check_kernel(gen, folder, f"{seed}_{k}", debug)
            stats[outcome] += 1
            if (k + 1) % 50 == 0:      # partial counts survive an interrupted long run
                log(f"progress {json.dumps({'kernels': k + 1, 'outcomes': dict(stats)})}")
            if outcome not in PASSED:
                if len(examples[outcome]) < 5:
                    examples[outcome].append(detail)
                    log(f"--- {outcome} (kernel {k}) ---\n{detail}")
                if out and outcome == "mismatch":
                    os.makedirs(out, exist_ok=True)
                    with open(os.path.join(out, f"mismatch_{seed}_{k}.txt"), "w") as f:
                        f.write(detail)
    return {"kernels": count, "outcomes": dict(stats), "examples": dict(examples)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--out", default=None)
    ap.add_argument("--debug", action="store_true", help="compile in debug mode, interpret the checks")
    args = ap.parse_args(argv)
    result = run(args.seed, args.count, args.out, log=lambda s: print(s, file=sys.stderr), debug=args.debug)
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}))
    return 0 if set(result["outcomes"]) <= PASSED else 1


if __name__ == "__main__":
    sys.exit(main())
