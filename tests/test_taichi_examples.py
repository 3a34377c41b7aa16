"""The six Taichi programs of bench/taichi_programs/, ported to kiln in examples/ (issue 13):

- each port IS the Taichi program with `ti.` renamed to `kl.` (line by line, the `ti.init` line
  and the imports aside);
- each example builds its module, saves it, runs it from the file in a fresh process (runtime
  only) and checks the result against its numpy reference or a conservation law (small sizes),
  on the CPU and, with an NVIDIA GPU, on CUDA (skipped cleanly without one);
- each module compiles for the cuda target here too (PTX needs no GPU), so codegen failures show
  on any machine, and the GPU code of mpm88, mass_spring and julia runs on the CPU (the NVPTX
  emulation of tests/test_nvptx_emulated.py) to the CPU code's results;
- each program's own Taichi host code (`run()`) works with kiln's direct kernel calls.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TAICHI = ROOT / "bench" / "taichi_programs"

#: main() keyword arguments that keep each example to a few seconds (compiling is most of it)
SMALL: dict[str, dict[str, Any]] = {
    "mpm88": {"n": 512, "steps": 20, "substeps": 10},
    "nbody": {"steps": 10},
    "waterwave": {"steps": 30},
    "game_of_life": {"steps": 12},
    "julia": {"steps": 3},
    "mass_spring": {"steps": 100},
}
NAMES = list(SMALL)
#: where a port's kiln part starts (the module build and the check that replace ti.init)
KILN_PART = "# -- kiln:"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"taichi_example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _program_lines(text: str) -> list[str]:
    """The program's lines without its docstring, imports, blank lines, mypy comments and the
    `__main__` block."""
    tree = ast.parse(text)
    doc = tree.body[0]
    start = doc.end_lineno if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) else 0
    lines = text.splitlines()[start or 0:]
    if "if __name__ == \"__main__\":" in lines:
        lines = lines[:lines.index("if __name__ == \"__main__\":")]
    return [ln for ln in lines if ln.strip() and not re.match(r"(import |from \S+ import |# mypy:)", ln)]


@pytest.mark.parametrize("name", NAMES)
def test_port_is_the_taichi_program_renamed(name: str) -> None:
    taichi = (TAICHI / f"{name}.py").read_text()
    renamed = [re.sub(r"\bti\.", "kl.", ln) for ln in _program_lines(taichi) if not ln.startswith("ti.init(")]
    port = (EXAMPLES / f"{name}.py").read_text()
    assert KILN_PART in port
    assert _program_lines(port.split(KILN_PART)[0]) == renamed


def _gpu() -> None:
    from kiln.runtime.cuda import cuda_available

    why = cuda_available()
    if why:
        pytest.skip(f"no usable CUDA GPU: {why}")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("name", NAMES)
def test_taichi_example(name: str, device: str, capsys: pytest.CaptureFixture[str]) -> None:
    if device == "cuda":
        _gpu()
    assert _load(name).main(device, **SMALL[name]) == 0
    assert f"{name}: OK" in capsys.readouterr().out


def _nvptx_reason() -> str | None:
    try:
        from kiln.codegen.nvptx import nvptx_available
    except ImportError as e:  # pragma: no cover - llvmlite missing
        return str(e)
    return nvptx_available()


@pytest.mark.filterwarnings("ignore:kiln. the cuda target holds PTX only")   # without nvJitLink here
@pytest.mark.parametrize("name", NAMES)
def test_taichi_example_compiles_for_cuda(name: str, tmp_path: Path) -> None:
    why = _nvptx_reason()
    if why:
        pytest.skip(f"no NVPTX target: {why}")
    from kiln.artifact.container import unpack

    path = tmp_path / f"{name}.kiln"
    _load(name).build(targets=("cpu", "cuda")).save(path)
    c = unpack(path.read_bytes())
    assert {t["kind"] for t in c.manifest["targets"]} == {"cpu", "cuda"}
    ptx = bytes(c.blobs[c.manifest["cuda"]["ptx"]]).decode()
    assert ".target sm_80" in ptx and ".entry" in ptx


def _own_run_errors(name: str, mod: Any) -> dict[str, float]:
    """The program's own `run()` (its Taichi host code, kernels called directly) at a small size,
    against its numpy reference: max |kiln - numpy| / max |numpy| per output."""
    import numpy as np

    from tests.reference import (
        game_of_life_numpy,
        mass_spring_numpy,
        mpm88_numpy,
        nbody_numpy,
        waterwave_numpy,
    )

    def rel(got: Any, want: Any) -> float:
        return float(np.abs(got - want).max() / max(1e-30, float(np.abs(want).max())))

    rng = np.random.default_rng(1)
    if name == "mpm88":
        x0 = (rng.random((256, 2)) * 0.4 + 0.2).astype(np.float32)
        v0 = (0.1 * rng.standard_normal((256, 2)) + [0.0, -1.0]).astype(np.float32)
        got, want = mod.run(5, x0, v0), mpm88_numpy.run(x0, v0, 5)
        return {k: rel(g, w) for k, g, w in zip(("x", "v", "J", "grid_m"), [got[i] for i in (0, 1, 3, 5)],
                                                   [want[i] for i in (0, 1, 3, 5)])}
    if name == "nbody":
        n = mod.n_bodies
        pos0, vel0 = rng.standard_normal((n, 3)).astype(np.float32), np.zeros((n, 3), np.float32)
        mass0 = ((0.5 + rng.random(n)) / n).astype(np.float32)
        got, want = mod.run(3, pos0, vel0, mass0), nbody_numpy.run(pos0, vel0, mass0, 3)
        return {"pos": rel(got[0], want[0]), "vel": rel(got[1], want[1]), "energy": rel(got[3], want[3])}
    if name == "waterwave":
        got, want = mod.run(12), waterwave_numpy.run(((30.0, 20.0, 1.0, 4.0), (60.0, 40.0, -0.5, 3.0)), 12)
        return {k: rel(g, w) for k, g, w in zip(("h", "prev", "brightness", "energy"), got, want)}
    if name == "game_of_life":
        initial = (rng.random(mod.res) < 0.3).astype(np.int32)
        got, want = mod.run(6, initial), game_of_life_numpy.run(initial, 6)
        return {"board": rel(got[0], want[0]), "population": rel(got[1], want[1])}
    # from numpy's flat net (init_flat still sets `pinned`): the flat net is symmetric, so the
    # velocities cancel to round-off and one ulp of a position (an fma) shows as a large relative error
    x0, v0, _ = mass_spring_numpy.initial_state(mod.n)
    got, want = mod.run(20, x0, v0), mass_spring_numpy.run(x0, v0, 20)
    return {"x": rel(got[0], want[0]), "v": rel(got[1], want[1])}


@pytest.mark.parametrize("name", ["mpm88", "nbody", "waterwave", "game_of_life", "mass_spring"])
def test_the_programs_own_run_with_direct_calls(name: str) -> None:
    """Taichi's host code as written (`run()`: fields, ndarrays' to_numpy/from_numpy, a kernel's
    return value) works with kiln's direct kernel calls (tests/test_julia_example.py: julia)."""
    errors = _own_run_errors(name, _load(name))
    assert max(errors.values()) < 1e-4, errors


# -- the generated GPU code, run on the CPU (tests/test_nvptx_emulated.py's harness) ------------
def _emulated(kernel: Any, types: tuple[Any, ...] = ()) -> Any:
    """`kernel`'s NVPTX entries compiled for the host, run thread by thread over a small grid;
    the fields it uses are passed as their hidden parameters, after the kernel's own."""
    from tests.test_nvptx_emulated import EmulatedKernel

    e = EmulatedKernel(kernel, types)
    fields = [f.array for f in kernel.hidden_fields(types).values()]
    return lambda *args: e.run(*args, *fields, block=32, grid=3)


def _f32_slot(x: float) -> int:
    """A f32 scalar argument as the harness passes it: its bits in the low half of the slot."""
    import struct

    return int(struct.unpack("<I", struct.pack("<f", x))[0])


@pytest.mark.skipif(_nvptx_reason() is not None, reason="no NVPTX target")
def test_mpm88_gpu_code_matches_the_cpu() -> None:
    import numpy as np

    mpm88 = _load("mpm88")
    kernels = (mpm88.clear_grid, mpm88.particle_to_grid, mpm88.update_grid, mpm88.grid_to_particle)
    gpu = {k.name: _emulated(k, tuple(k.annotations)) for k in kernels}
    rng = np.random.default_rng(4)
    n = 96
    cpu_state = list(mpm88.make_state(n))
    cpu_state[0][:] = rng.random((n, 2)) * 0.4 + 0.2
    cpu_state[1][:] = 0.5 * rng.standard_normal((n, 2))
    cpu_state[3][:] = 1.0
    gpu_state = [a.copy() for a in cpu_state]
    x, v, C, J, grid_v, grid_m = gpu_state
    for _ in range(3):
        gpu["clear_grid"](grid_v, grid_m)
        gpu["particle_to_grid"](x, v, C, J, grid_v, grid_m)
        gpu["update_grid"](grid_v, grid_m)
        gpu["grid_to_particle"](x, v, C, J, grid_v)
        mpm88.substep(*cpu_state)
    for name, a, b in zip(mpm88.STATE, gpu_state, cpu_state):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(b).max()), err_msg=name)


@pytest.mark.skipif(_nvptx_reason() is not None, reason="no NVPTX target")
def test_mass_spring_and_julia_gpu_code_match_the_cpu() -> None:
    import numpy as np

    ms = _load("mass_spring")
    ms.init_flat()
    ms.x.from_numpy(ms.x.to_numpy() + 0.002 * np.random.default_rng(5).standard_normal(ms.x.shape + (3,)))
    start = {f: f.to_numpy() for f in (ms.x, ms.v, ms.force)}
    forces, integrate = _emulated(ms.compute_forces), _emulated(ms.integrate)
    for _ in range(5):
        forces()
        integrate()
    gpu = {f: f.to_numpy() for f in start}
    for f, a in start.items():
        f.from_numpy(a)
    for _ in range(5):
        ms.compute_forces()
        ms.integrate()
    for f, a in gpu.items():
        np.testing.assert_allclose(a, f.to_numpy(), rtol=1e-5, atol=1e-6 * float(np.abs(f.to_numpy()).max()))

    julia = _load("julia")
    _emulated(julia.paint, (julia.kl.f32,))(_f32_slot(0.3))
    counts, light = julia.iterations.to_numpy(), julia.brightness.to_numpy()
    julia.paint(0.3)
    same = counts == julia.iterations.to_numpy()
    assert same.mean() > 0.999
    np.testing.assert_allclose(light[same], julia.brightness.to_numpy()[same], atol=1e-4)
