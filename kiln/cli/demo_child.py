"""The demo's fresh process: load a saved heat-diffusion graph with the compiler blocked, run it,
check it against numpy and report timings. Usage: python -m kiln.cli.demo_child FILE RUNS"""

from __future__ import annotations

import sys
import time

BLOCKED = ("kiln.lang", "kiln.codegen", "kiln.driver", "kiln.dispatch", "kiln.passes", "llvmlite")


class _BlockCompiler:
    """A meta-path finder that makes importing the compiler fail loudly in this process."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} is blocked: the runtime must not need it")


def main(path: str, runs: int) -> int:
    sys.meta_path.insert(0, _BlockCompiler())
    t0 = time.perf_counter()
    import numpy as np

    import kiln as kl
    from kiln.cli.demo_reference import initial_state, reference
    t1 = time.perf_counter()
    step = kl.load(path)
    assert isinstance(step, kl.CompiledGraph)     # the demo file holds one CPU graph
    t2 = time.perf_counter()
    u, v = initial_state()
    energy = np.zeros(1, np.float64)
    times = []
    energies = []
    for _ in range(runs):
        energy[0] = 0.0
        s = time.perf_counter()
        step.run({"u": u, "v": v, "alpha": 0.2, "energy": energy})
        times.append(time.perf_counter() - s)
        energies.append(float(energy[0]))
    ref_u, ref_e = reference(runs)
    err = float(np.abs(u - ref_u).max())
    e_err = max(abs(a - b) / abs(b) for a, b in zip(energies, ref_e))
    leaked = [m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)]
    print(f"  imports  {1e3 * (t1 - t0):8.1f} ms   (numpy + kiln runtime)")
    print(f"  load     {1e3 * (t2 - t1):8.2f} ms   {step!r}")
    print(f"  args     {step.args}")
    print(f"  run      {1e3 * min(times):8.2f} ms   per graph run, {len(step.info.dispatches)} dispatches "
          f"({1e6 * min(times) / len(step.info.dispatches):.1f} us per dispatch), {runs} runs")
    print(f"  check    max |u - numpy| = {err:.2e}, energy rel. error = {e_err:.2e}, "
          f"energy after each run: {', '.join(f'{e:.1f}' for e in energies)}")
    print(f"  compiler modules imported in this process: {leaked or 'none'}")
    ok = err < 1e-3 and e_err < 1e-5 and not leaked
    print("kiln demo: OK" if ok else "kiln demo: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
