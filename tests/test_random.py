"""kl.random (kiln/lang/random.py): Philox-4x32-10 as scalar IR, its exact stream, seeding
(kl.seed, compile(seed=...), compiled.seed), runs, independence and uniformity (fixed seeds, so
every bound below is checked against the same numbers on every run), the dtypes, CUDA code
generation, and a saved graph giving the same stream in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kiln as kl
from kiln.abi import RNG_PARAM
from kiln.artifact.container import unpack
from kiln.errors import ArtifactError, KernelError, KernelTypeError

F1 = kl.ndarray(kl.f32, ndim=1)
U1 = kl.ndarray(kl.u32, ndim=1)
ROOT = Path(__file__).resolve().parents[1]
LOOP0 = 1 << 24      # the key's loop tag of a kernel's first parallel loop (kiln/lang/random.py)

_M0, _M1, _W0, _W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
_MASK = np.uint64(0xFFFFFFFF)


def philox(ctr: list, key: list) -> list[np.ndarray]:
    """numpy Philox-4x32-10 (Salmon et al. 2011), vectorised over arrays of counters."""
    c = [np.asarray(x, np.uint64) for x in ctr]
    k0, k1 = (np.asarray(x, np.uint64) for x in key)
    for r in range(10):
        if r:
            k0, k1 = (k0 + np.uint64(_W0)) & _MASK, (k1 + np.uint64(_W1)) & _MASK
        p0, p2 = c[0] * np.uint64(_M0), c[2] * np.uint64(_M1)
        c = [(p2 >> np.uint64(32)) ^ c[1] ^ k0, p2 & _MASK, (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & _MASK]
    return [x.astype(np.uint32) for x in c]


def test_reference_matches_the_published_known_answers() -> None:
    # Random123's kat_vectors for philox4x32_10
    assert [int(x) for x in philox([0, 0, 0, 0], [0, 0])] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert [int(x) for x in philox([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2)] == [
        0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert [int(x) for x in philox([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0])] == [
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


@kl.kernel
def draw_u32(out: kl.ndarray(kl.u32, ndim=2)):
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = kl.random(kl.u32)


def test_the_stream_is_philox_of_iteration_draw_and_run() -> None:
    seed = 0x1234_5678_9ABC
    kl.seed(seed)
    n = 1000
    runs = []
    for _ in range(2):
        out = np.zeros((n, 3), np.uint32)
        draw_u32(out)
        runs.append(out)
    i = np.arange(n)
    for run, got in enumerate(runs):
        for j in range(3):
            # key hi: seed hi ^ (1 << 24), the kernel's first parallel loop
            want = philox([i, np.full(n, j), np.full(n, run), np.zeros(n)], [seed & 0xFFFFFFFF, (seed >> 32) ^ LOOP0])[0]
            np.testing.assert_array_equal(got[:, j], want)


def test_seeds_reproduce_and_runs_differ() -> None:
    out = [np.zeros((64, 2), np.uint32) for _ in range(4)]
    kl.seed(7)
    draw_u32(out[0])
    draw_u32(out[1])
    kl.set_random_seed(7)
    draw_u32(out[2])
    kl.seed(8)
    draw_u32(out[3])
    np.testing.assert_array_equal(out[0], out[2])
    assert (out[0] != out[1]).mean() > 0.99 and (out[0] != out[3]).mean() > 0.99
    with pytest.raises(ValueError, match="random seed"):
        kl.seed(-1)
    with pytest.raises(ValueError, match="random seed"):
        kl.seed(2 ** 64)


def test_iterations_are_independent() -> None:
    @kl.kernel
    def first(out: kl.ndarray(kl.u64, ndim=1), f: F1):
        for i in range(out.shape[0]):
            out[i] = kl.random(kl.u64)
            f[i] = kl.random()

    n = 100_000
    out, f = np.zeros(n, np.uint64), np.zeros(n, np.float32)
    kl.seed(1)
    first(out, f)
    assert np.unique(out).size == n                     # no two iterations share a first draw
    # neighbouring iterations are uncorrelated (4 standard errors)
    assert abs(np.corrcoef(f[:-1], f[1:])[0, 1]) * np.sqrt(n) < 4


@pytest.mark.parametrize("seed", [0, 3])
def test_floats_are_uniform_in_the_unit_interval(seed: int) -> None:
    @kl.kernel
    def fill(a: F1, b: kl.ndarray(kl.f64, ndim=1)):
        for i in range(a.shape[0]):
            a[i] = kl.random()
            b[i] = kl.random(kl.f64)

    n = 200_000
    a, b = np.zeros(n, np.float32), np.zeros(n, np.float64)
    kl.seed(seed)
    fill(a, b)
    for x in (a, b):
        assert 0.0 <= x.min() and x.max() < 1.0
        counts = np.bincount((x * 100).astype(np.int64), minlength=100)
        chi2 = float(((counts - n / 100) ** 2 / (n / 100)).sum())
        assert chi2 < 99 + 5 * np.sqrt(2 * 99)           # 99 degrees of freedom, ~5 sigma
        ks = np.abs(np.sort(x) - np.arange(1, n + 1) / n).max()
        assert ks < 1.95 / np.sqrt(n)                   # Kolmogorov-Smirnov at 0.1%
    assert np.any(b * 2.0 ** 24 != np.floor(b * 2.0 ** 24))   # f64 draws use more than 24 bits


def test_integer_dtypes_cover_their_range() -> None:
    @kl.kernel
    def ints(a: kl.ndarray(kl.i32, ndim=1), b: kl.ndarray(kl.i64, ndim=1), c: kl.ndarray(kl.u8, ndim=1)):
        for i in range(a.shape[0]):
            a[i] = kl.random(kl.i32)
            b[i] = kl.random(dtype=kl.i64)
            c[i] = kl.random(kl.u8)

    n = 50_000
    a, b, c = np.zeros(n, np.int32), np.zeros(n, np.int64), np.zeros(n, np.uint8)
    kl.seed(5)
    ints(a, b, c)
    assert (a < 0).mean() == pytest.approx(0.5, abs=0.02) and abs(a.astype(np.float64).mean()) < 2 ** 31 * 0.02
    assert (b < 0).mean() == pytest.approx(0.5, abs=0.02) and np.abs(b).max() > 2 ** 62
    assert np.bincount(c, minlength=256).min() > 100


def test_draws_in_loops_funcs_and_serial_code() -> None:
    @kl.func
    def unit_disk(r):
        # rejection sampling in a data-dependent while loop (as Taichi's nbody)
        x, y = 1.0, 1.0
        while x * x + y * y > 1.0:
            x, y = kl.random() * 2.0 - 1.0, kl.random() * 2.0 - 1.0
        return x * r, y * r

    @kl.func
    def coin(p: kl.f32) -> kl.i32:           # annotated: inlined anyway, it draws
        return 1 if kl.random() < p else 0

    @kl.kernel
    def k(pts: kl.ndarray(kl.f32, ndim=2), heads: kl.ndarray(kl.i32, ndim=1), s: F1):
        s[0] = kl.random()                   # outside the parallel loop
        for i in range(pts.shape[0]):
            pts[i, 0], pts[i, 1] = unit_disk(2.0)
            heads[i] = coin(0.25)

    n = 20_000
    pts, heads, s = np.zeros((n, 2), np.float32), np.zeros(n, np.int32), np.zeros(1, np.float32)
    kl.seed(11)
    k(pts, heads, s)
    r = np.hypot(pts[:, 0], pts[:, 1])
    assert r.max() <= 2.0 + 1e-6 and (r < np.sqrt(2)).mean() == pytest.approx(0.5, abs=0.02)
    assert heads.mean() == pytest.approx(0.25, abs=0.02) and set(np.unique(heads)) == {0, 1}
    assert 0 <= s[0] < 1

    @kl.kernel
    def two_loops(a: U1, b: U1, c: U1):
        c[0] = kl.random(kl.u32)
        for i in range(a.shape[0]):
            a[i] = kl.random(kl.u32)
        for i in range(b.shape[0]):
            b[i] = kl.random(kl.u32)

    a, b, c = np.zeros(1000, np.uint32), np.zeros(1000, np.uint32), np.zeros(1, np.uint32)
    kl.seed(3)
    two_loops(a, b, c)
    assert np.unique(np.concatenate([a, b, c])).size == 2001     # loops and serial code differ


def test_two_dimensional_loops_and_two_launches_in_a_graph() -> None:
    @kl.kernel
    def grid(a: kl.ndarray(kl.u64, ndim=2)):
        for i, j in kl.ndrange((1, a.shape[0]), (0, a.shape[1], 2)):
            a[i, j] = kl.random(kl.u64)

    a = np.zeros((300, 301), np.uint64)
    kl.seed(2)
    grid(a)
    drawn = a[1:, ::2]
    assert np.unique(drawn).size == drawn.size and not a[0].any() and not a[:, 1::2].any()

    g = kl.GraphBuilder()
    x = kl.Arg("x", kl.ndarray(kl.u32, ndim=2))
    y = kl.Arg("y", kl.ndarray(kl.u32, ndim=2))
    g.dispatch(draw_u32, x)
    g.dispatch(draw_u32, y)
    cg = g.compile(seed=9)
    assert [s.name for s in cg.args] == ["x", "y"]             # the state is not the caller's
    xs, ys = np.zeros((100, 2), np.uint32), np.zeros((100, 2), np.uint32)
    cg.run({"x": xs, "y": ys})
    assert (xs != ys).all()                                    # each launch advanced the run counter
    i = np.arange(100)
    np.testing.assert_array_equal(ys[:, 1], philox([i, np.ones(100), np.ones(100), np.zeros(100)], [9, LOOP0])[0])


def _graph() -> kl.GraphBuilder:
    g = kl.GraphBuilder()
    g.dispatch(draw_u32, kl.Arg("out", kl.ndarray(kl.u32, ndim=2)))
    return g


def test_graph_seed_is_in_the_file_and_reseeds(tmp_path: Path) -> None:
    cg = _graph().compile(seed=1234)
    path = tmp_path / "r.kiln"
    cg.save(path)
    assert unpack(path.read_bytes()).manifest["random_seed"] == 1234
    a, b, c = (np.zeros((50, 2), np.uint32) for _ in range(3))
    cg.run({"out": a})
    cg.run({"out": b})
    cg.seed(1234)
    cg.run({"out": c})
    np.testing.assert_array_equal(a, c)
    assert (a != b).all()
    loaded = kl.load(path)
    d = np.zeros((50, 2), np.uint32)
    loaded.run({"out": d})
    np.testing.assert_array_equal(a, d)
    with pytest.raises(ValueError, match="random seed"):
        _graph().compile(seed=-3)


def test_a_saved_graph_gives_the_same_stream_in_a_fresh_process(tmp_path: Path) -> None:
    path = tmp_path / "stream.kiln"
    cg = _graph().compile(seed=77)
    cg.save(path)
    want = [np.zeros((1000, 3), np.uint32) for _ in range(2)]
    for w in want:
        cg.run({"out": w})
    code = (f"import numpy as np, kiln, sys\ng = kiln.load({str(path)!r})\n"
            "outs = [np.zeros((1000, 3), np.uint32) for _ in range(2)]\n"
            "for o in outs: g.run({'out': o})\n"
            "assert 'kiln.lang' not in sys.modules\n"
            "print([int(o.astype(np.uint64).sum()) for o in outs], outs[1][:2].tolist())")
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert res.returncode == 0, res.stderr
    sums, head = json.loads(res.stdout.replace("] [", "], [").join("[]"))
    assert sums == [int(w.astype(np.uint64).sum()) for w in want]
    assert head == want[1][:2].tolist()


def test_manifest_seed_is_validated() -> None:
    from kiln.artifact.manifest import Manifest

    mod = kl.Module(seed=5)
    mod.add_graph("main", _graph())
    m = mod.compile()
    c = unpack(m.to_bytes())
    assert c.manifest["random_seed"] == 5 and m.manifest.random_seed == 5
    bad = dict(c.manifest, random_seed=-1)
    with pytest.raises(ArtifactError, match="random_seed"):
        Manifest.from_json(bad, set(c.blobs))


def test_ptx_of_a_random_kernel_builds() -> None:
    try:
        from kiln.codegen.nvptx import build_ptx, nvptx_available
    except ImportError:          # pragma: no cover - llvmlite missing
        pytest.skip("no llvmlite")
    if nvptx_available() is not None:
        pytest.skip("no NVPTX target")
    from kiln.driver import lower_kernel

    @kl.kernel
    def around(x: F1):
        x[0] = kl.random()                   # serial code before the loop reads the state too
        for i in range(1, x.shape[0]):
            x[i] = x[0] + kl.random()

    kernels = [lower_kernel(draw_u32, (kl.ndarray(kl.u32, 2),)), lower_kernel(around, (F1,))]
    ptx = build_ptx(kernels).ptx
    assert "mul.hi.u32" in ptx or "mul.wide.u32" in ptx
    assert [p.mode for p in kernels[1].launch_plan.phases] == ["single", "loop", "single"]


def test_errors() -> None:
    @kl.kernel
    def bad(x: F1):
        for i in range(x.shape[0]):
            x[i] = kl.random(kl.f16)

    with pytest.raises(KernelTypeError, match=r"kl.random\(dtype\) needs an integer type"):
        bad.specialize((kl.ndarray(kl.f32, 1),))

    @kl.kernel
    def bad2(x: F1):
        for i in range(x.shape[0]):
            x[i] = kl.random(kl.f32, 3)

    with pytest.raises(KernelError, match="one optional argument"):
        bad2.specialize((kl.ndarray(kl.f32, 1),))
    assert RNG_PARAM == "@rng"
    kir = draw_u32.specialize((kl.ndarray(kl.u32, 2),))
    assert kir.kernel.params[-1].name == RNG_PARAM


def test_exported_kernels_draw_from_their_module_and_threads_keep_the_stream() -> None:
    @kl.kernel
    def fill(a: U1):
        for i in range(a.shape[0]):
            a[i] = kl.random(kl.u32)

    m = kl.Module(seed=21)
    m.add_kernel(fill)
    cm = m.compile()
    assert [a.name for a in cm.kernels["fill"].args] == ["a"]
    n = 300_000                      # large enough to run on several threads
    a, b = np.zeros(n, np.uint32), np.zeros(n, np.uint32)
    cm.kernels["fill"](a)
    cm.kernels["fill"].run({"a": b})
    i = np.arange(n)
    for run, got in enumerate((a, b)):
        want = philox([i, np.zeros(n), np.full(n, run), np.zeros(n)], [21, LOOP0])[0]
        np.testing.assert_array_equal(got, want)
    own = np.array([21, 0, 0, 0], np.uint32)              # a caller may pass their own state
    cm.kernels["fill"].run({"a": b, RNG_PARAM: own})
    np.testing.assert_array_equal(b, a)
    assert own.tolist() == [21, 0, 1, 0]
    own[2] = 0xFFFFFFFF                                     # the 64-bit run counter carries
    cm.kernels["fill"].run({"a": b, RNG_PARAM: own})
    assert own.tolist() == [21, 0, 0, 1]
    np.testing.assert_array_equal(b, philox([i, np.zeros(n), np.full(n, 0xFFFFFFFF), np.zeros(n)], [21, LOOP0])[0])


@kl.kernel
def serial_and_loop(x: F1):
    x[0] = kl.random()                   # serial code before the loop reads the state too
    for i in range(1, x.shape[0]):
        x[i] = kl.random() + kl.random()


def test_the_cuda_code_draws_the_cpu_stream() -> None:
    """The NVPTX module run on the CPU (tests/test_nvptx_emulated.py) over a grid of threads: the
    same numbers as the CPU code, and one run-counter step per launch (a single-thread phase)."""
    try:
        from tests.test_nvptx_emulated import NVPTX_REASON, EmulatedKernel
    except ImportError:          # pragma: no cover - llvmlite missing
        pytest.skip("no llvmlite")
    if NVPTX_REASON is not None:
        pytest.skip(f"no NVPTX target: {NVPTX_REASON}")
    e = EmulatedKernel(serial_and_loop, (F1,))
    assert [p.mode for p in e.kir.launch_plan.phases] == ["single", "loop", "single"]
    n = 1000
    state = np.array([5, 6, 0, 0], np.uint32)
    gpu = [np.zeros(n, np.float32) for _ in range(2)]
    for g in gpu:
        e.run(g, state, block=32, grid=5)
    assert state.tolist() == [5, 6, 2, 0]
    kl.seed(5 + (6 << 32))
    for g in gpu:
        cpu = np.zeros(n, np.float32)
        serial_and_loop(cpu)
        np.testing.assert_array_equal(g, cpu)


def test_a_cpu_and_cuda_file_of_a_random_graph(tmp_path: Path) -> None:
    try:
        from kiln.codegen.nvptx import nvptx_available
    except ImportError:          # pragma: no cover - llvmlite missing
        pytest.skip("no llvmlite")
    if nvptx_available() is not None:
        pytest.skip("no NVPTX target")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # PTX only when nvJitLink is missing: fine here
        cg = _graph().compile(targets=["cpu", "cuda"], seed=4)
    cg.save(tmp_path / "both.kiln")
    c = unpack((tmp_path / "both.kiln").read_bytes())
    assert "cuda.ptx" in c.blobs and c.manifest["random_seed"] == 4
    params = c.manifest["graphs"]["main"]["params"]
    assert params[-1]["name"] == RNG_PARAM and params[-1]["shape"] == [4]
    out = np.zeros((10, 1), np.uint32)
    kl.load(tmp_path / "both.kiln").run({"out": out})
    np.testing.assert_array_equal(out[:, 0], philox([np.arange(10), np.zeros(10), np.zeros(10), np.zeros(10)],
                                                    [4, LOOP0])[0])


def test_compiled_funcs_that_draw_through_other_funcs_are_inlined() -> None:
    @kl.func
    def scaled(p: kl.f32) -> kl.f32:
        return kl.random() * p

    @kl.func
    def shifted(p: kl.f32) -> kl.f32:        # draws only through scaled()
        return scaled(p) + 1.0

    @kl.kernel
    def k(x: F1):
        for i in range(x.shape[0]):
            x[i] = shifted(2.0)

    x = np.zeros(10_000, np.float32)
    kl.seed(1)
    k(x)
    assert shifted.inlined and scaled.inlined
    assert 1.0 <= x.min() and x.max() < 3.0 and abs(float(x.mean()) - 2.0) < 0.02
