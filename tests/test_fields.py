"""Module-level fields (`kl.field`), template parameters and data-oriented classes: Python-scope
access, direct calls, graphs and modules saved and loaded in a fresh process, and misuse errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kiln as kl
from kiln.errors import ArgumentError, ArtifactError, KernelError, KernelTypeError

ROOT = Path(__file__).resolve().parents[1]

# -- fields used by the kernels below (module level, as Taichi programs write them) --------------
grid = kl.field(kl.f32, shape=(4, 3))
total = kl.field(kl.f32, shape=())
counts = kl.field(kl.i32, shape=5)
vel = kl.Vector.field(2, kl.f32, shape=3)


@kl.kernel
def add_to_grid(a: kl.f32):
    for i, j in grid:
        grid[i, j] += a * i + j


@kl.kernel
def sum_grid():
    total[None] = 0.0
    for i, j in grid:
        total[None] += grid[i, j]


@kl.func
def bump(k: kl.i64) -> kl.i32:
    counts[k] += 1
    return counts[k]


@kl.kernel
def bump_all(out: kl.ndarray(kl.i32, ndim=1)):
    for k in range(5):
        out[k] = bump(k)


@kl.kernel
def spin():
    for p in vel:
        vel[p] = kl.vec2(-vel[p].y, vel[p].x)   # elements of a vector field are vectors


def _reset() -> None:
    grid.fill(0)
    total[None] = 0
    counts.fill(0)


# -- Python scope ---------------------------------------------------------------------------------
def test_python_scope_access() -> None:
    f = kl.field(kl.f32, shape=(2, 3), name="f")
    assert f.shape == (2, 3) and f.dtype == kl.f32 and f.element_shape == ()
    f[1, 2] = 5.0
    assert f[1, 2] == 5.0 and f.to_numpy()[1, 2] == 5.0
    f.from_numpy(np.arange(6).reshape(2, 3))
    assert f.to_numpy().dtype == np.float32 and f.to_numpy().sum() == 15
    f.fill(2)
    assert (f.to_numpy() == 2).all()
    z = kl.field(kl.i32, shape=())
    z[None] = 7
    assert z[None] == 7 and z.to_numpy().shape == ()
    v = kl.Vector.field(3, kl.f32, shape=4)
    assert v.element_shape == (3,) and v.to_numpy().shape == (4, 3)
    m = kl.Matrix.field(2, 2, kl.f64, shape=(5,))
    assert m.to_numpy().shape == (5, 2, 2)
    with pytest.raises(ValueError, match=r"has shape \(2, 3\), got an array of shape \(3, 2\)"):
        f.from_numpy(np.zeros((3, 2)))
    with pytest.raises(IndexError, match="x\\[None\\]"):
        z[0]
    with pytest.raises(ValueError, match="shape must be"):
        kl.field(kl.f32, shape=(0, 2))
    with pytest.raises(TypeError, match="dtype"):
        kl.field("nope", shape=3)


# -- direct calls ---------------------------------------------------------------------------------
def test_direct_calls_read_and_write_fields_in_place() -> None:
    _reset()
    add_to_grid(1.0)
    add_to_grid(1.0)
    ref = 2 * (np.arange(4)[:, None] + np.arange(3)[None, :]).astype(np.float32)
    np.testing.assert_array_equal(grid.to_numpy(), ref)
    sum_grid()
    assert total[None] == ref.sum()


def test_func_using_a_field_passes_it_on() -> None:
    _reset()
    out = np.zeros(5, np.int32)
    bump_all(out)
    bump_all(out)
    np.testing.assert_array_equal(out, [2] * 5)
    np.testing.assert_array_equal(counts.to_numpy(), [2] * 5)


def test_vector_field_elements_are_vectors() -> None:
    vel.from_numpy(np.array([[1, 0], [0, 1], [2, 3]], np.float32))
    spin()
    np.testing.assert_array_equal(vel.to_numpy(), [[0, 1], [-1, 0], [-3, 2]])


def test_closure_field_and_its_name() -> None:
    state = kl.field(kl.i64, shape=3)

    @kl.kernel
    def count():
        for i in state:
            state[i] += i

    count()
    count()
    np.testing.assert_array_equal(state.to_numpy(), [0, 2, 4])
    assert state.name == "state"


# -- graphs and modules ---------------------------------------------------------------------------
_CHILD = """
import sys, json, numpy as np, kiln as kl
m = kl.load_module(sys.argv[1])
g = m.graphs["main"]
before = {k: np.asarray(v).tolist() for k, v in m.fields.items()}
g.run({"a": 1.0})
g.run({"a": 1.0})
other = kl.load_module(sys.argv[1])           # a second load owns its own storage
print(json.dumps({"before": before, "after": {k: np.asarray(v).tolist() for k, v in m.fields.items()},
                  "other": {k: np.asarray(v).tolist() for k, v in other.fields.items()},
                  "args": [repr(a) for a in g.args]}))
"""


def test_graph_owns_fields_saved_loaded_in_a_fresh_process(tmp_path: Path) -> None:
    _reset()
    add_to_grid(1.0)                       # the content at compile time becomes the initial value
    start = grid.to_numpy()
    g = kl.GraphBuilder()
    g.dispatch(add_to_grid, kl.Arg("a", kl.f32))
    g.dispatch(sum_grid)
    cg = g.compile()
    assert [repr(a) for a in cg.args] == ["a: f32"]
    cg.run({"a": 1.0})
    step = (np.arange(4)[:, None] + np.arange(3)[None, :]).astype(np.float32)
    mod = cg
    np.testing.assert_array_equal(mod.fields["grid"], start + step)
    assert float(mod.fields["total"]) == (start + step).sum()
    np.testing.assert_array_equal(grid.to_numpy(), start)       # the Python-side field is untouched
    path = tmp_path / "fields.kiln"
    cg.save(path)
    doc = cg._module.manifest.to_json()
    assert doc["fields"]["grid"] == {"dtype": "f32", "shape": [4, 3], "element_shape": [], "init": "field.grid"}
    assert doc["fields"]["total"]["shape"] == []
    bindings = doc["graphs"]["main"]["dispatches"][0]["bindings"]
    assert bindings == [{"arg": "a"}, {"field": "grid"}]
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT)}, check=True)
    out = json.loads(proc.stdout)
    np.testing.assert_array_equal(out["before"]["grid"], start)
    np.testing.assert_array_equal(out["after"]["grid"], start + 2 * step)
    assert out["after"]["total"] == (start + 2 * step).sum()
    np.testing.assert_array_equal(out["other"]["grid"], start)
    assert out["args"] == ["a: f32"]


def test_module_exported_kernel_uses_module_fields() -> None:
    _reset()
    m = kl.Module()
    m.add_kernel(bump_all)
    cm = m.compile()
    out = np.zeros(5, np.int32)
    cm.kernels["bump_all"](out)
    cm.kernels["bump_all"](out)
    np.testing.assert_array_equal(out, [2] * 5)
    np.testing.assert_array_equal(cm.fields["counts"], [2] * 5)
    np.testing.assert_array_equal(counts.to_numpy(), [0] * 5)
    cm.fields["counts"][:] = 10                       # writable between runs
    cm.kernels["bump_all"](out)
    np.testing.assert_array_equal(out, [11] * 5)


def test_damaged_field_manifest_is_an_artifact_error() -> None:
    from kiln.artifact import container

    g = kl.GraphBuilder()
    g.dispatch(sum_grid)
    c = container.unpack(g.compile()._module.to_bytes())
    doc = dict(c.manifest)
    doc.pop("blobs", None)
    bad = json.loads(json.dumps(doc))
    del bad["fields"]["grid"]
    with pytest.raises(ArtifactError, match="names no field"):
        kl.load_bytes(container.pack(bad, {k: bytes(v) for k, v in c.blobs.items()}))


# -- templates ------------------------------------------------------------------------------------
heights = [kl.field(kl.f32, shape=(5, 4), name=f"h{k}") for k in range(3)]


@kl.func
def laplacian(h: kl.template(), i: kl.i64, j: kl.i64) -> kl.f32:
    return h[i - 1, j] + h[i + 1, j] + h[i, j - 1] + h[i, j + 1] - 4.0 * h[i, j]


@kl.kernel
def leap(prev: kl.template(), cur: kl.template(), nxt: kl.template(), c: kl.template()):
    for i, j in kl.ndrange((1, 4), (1, 3)):
        nxt[i, j] = 2.0 * cur[i, j] - prev[i, j] + c * laplacian(cur, i, j)


def _leap_ref(prev: np.ndarray, cur: np.ndarray, nxt: np.ndarray, c: float) -> None:
    lap = cur[:-2, 1:-1] + cur[2:, 1:-1] + cur[1:-1, :-2] + cur[1:-1, 2:] - 4 * cur[1:-1, 1:-1]
    nxt[1:-1, 1:-1] = 2 * cur[1:-1, 1:-1] - prev[1:-1, 1:-1] + np.float32(c) * lap


def test_template_fields_one_variant_per_field_and_constant() -> None:
    rng = np.random.default_rng(1)
    ref = [rng.random((5, 4), dtype=np.float32) for _ in range(3)]
    for h, r in zip(heights, ref):
        h.from_numpy(r)
    prev, cur, nxt = 0, 1, 2
    for c in (0.25, 0.25, 0.5):
        leap(heights[prev], heights[cur], heights[nxt], c)
        _leap_ref(ref[prev], ref[cur], ref[nxt], c)
        prev, cur, nxt = cur, nxt, prev
    for h, r in zip(heights, ref):
        np.testing.assert_allclose(h.to_numpy(), r, rtol=1e-5, atol=1e-6)
    assert len(leap._call_cache) == 3        # three (field rotation, c) combinations


def test_template_in_a_graph_and_array_polymorphism() -> None:
    @kl.kernel
    def scale(x: kl.template(), k: kl.template()):
        for i in x:
            x[i] *= k

    a = np.arange(4, dtype=np.float32)
    scale(a, 2.0)                                     # a numpy array: an array parameter
    np.testing.assert_array_equal(a, [0, 2, 4, 6])
    g = kl.GraphBuilder()
    g.dispatch(scale, kl.Arg("x", kl.ndarray(kl.f64, ndim=1)), 3)
    cg = g.compile()
    b = np.ones(3)
    cg.run({"x": b})
    np.testing.assert_array_equal(b, [3, 3, 3])
    with pytest.raises(ArgumentError, match="template.*compile-time value"):
        g.dispatch(scale, kl.Arg("x", kl.ndarray(kl.f64, ndim=1)), kl.Arg("k", kl.f32))


def test_template_argument_computed_at_run_time_is_an_error_with_caret() -> None:
    @kl.func
    def twice(k: kl.template()) -> kl.f32:
        return 2.0 * k

    @kl.kernel
    def bad(x: kl.ndarray(kl.f32, ndim=1)):
        for i in range(x.shape[0]):
            x[i] = twice(x[i])

    with pytest.raises(KernelError) as e:
        bad(np.zeros(2, np.float32))
    msg = str(e.value)
    assert "test_fields.py" in msg and "kl.template()" in msg and "twice(x[i])" in msg and "^" in msg


# -- data-oriented classes ------------------------------------------------------------------------
@kl.data_oriented
class Springs:
    def __init__(self, n: int, k: float) -> None:
        self.n = n
        self.k = k
        self.x = kl.field(kl.f32, shape=n)
        self.energy = kl.field(kl.f32, shape=())

    @kl.kernel
    def stretch(self, by: kl.f32):
        for i in self.x:
            self.x[i] = by * i

    @kl.kernel
    def measure(self):
        self.energy[None] = 0.0
        for i in range(self.n):
            self.energy[None] += 0.5 * self.k * self.x[i] * self.x[i]


def test_data_oriented_kernels_as_methods() -> None:
    s = Springs(4, 2.0)
    s.stretch(0.5)
    s.measure()
    x = 0.5 * np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(s.x.to_numpy(), x)
    assert s.energy[None] == pytest.approx(float((x * x).sum()))
    g = kl.GraphBuilder()
    g.dispatch(s.stretch, kl.Arg("by", kl.f32))
    g.dispatch(s.measure)
    cg = g.compile()
    cg.run({"by": 1.0})
    assert float(cg.fields[s.energy.name]) == pytest.approx(float((np.arange(4) ** 2).sum()))


# -- misuse ---------------------------------------------------------------------------------------
def test_field_index_count_mismatch_points_at_the_line() -> None:
    @kl.kernel
    def wrong():
        for i in range(4):
            grid[i] = 1.0

    with pytest.raises(KernelTypeError) as e:
        wrong()
    msg = str(e.value)
    assert "field 'grid' has 2 dimension(s) but is indexed with 1" in msg
    assert "grid[i] = 1.0" in msg and "^" in msg and "test_fields.py:" in msg


def test_zero_d_field_misuse() -> None:
    @kl.kernel
    def iterate():
        for i in total:
            total[None] += 1.0

    with pytest.raises(KernelError, match="cannot iterate over the 0-d field 'total'"):
        iterate()

    @kl.kernel
    def index():
        total[0] = 1.0

    with pytest.raises(KernelError, match=r"field .total. is 0-d: index it as total\[None\]"):
        index()


def test_two_fields_with_one_name_is_an_error() -> None:
    a = kl.field(kl.f32, shape=2, name="dup")
    b = kl.field(kl.f32, shape=2, name="dup")

    @kl.kernel
    def both():
        for i in a:
            a[i] = b[i]

    with pytest.raises(KernelError, match="two different fields are both named 'dup'"):
        both()


# -- CUDA (the runtime's driver calls, checked against a recording fake driver) --------------------
def test_cuda_module_owns_device_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    import struct

    from kiln.codegen.nvptx import nvptx_available

    why = nvptx_available()
    if why is not None:
        pytest.skip(f"no NVPTX target: {why}")
    sys.path.insert(0, str(Path(__file__).parent))
    import fake_cuda_driver as fake

    from kiln.runtime import cuda

    fake.install(monkeypatch)
    from kiln.codegen import nvptx
    # PTX only: under KILN_DEVICE=cuda the direct call below compiles for the fake GPU, which
    # reads ABI descriptors from PTX text, not from the cubins linked where nvJitLink is installed
    monkeypatch.setattr(nvptx, "DEFAULT_CUBIN_ARCHS", ())
    # a call plan made earlier on a real GPU holds that driver's device: calls under the fake
    # driver start from no plan, and the real one comes back after the test
    monkeypatch.setattr(add_to_grid, "_call_cache", {})
    monkeypatch.setattr(add_to_grid, "_fixed", None)
    _reset()
    add_to_grid(1.0)
    start = grid.to_numpy()
    fake.LOG.clear()          # the direct call's copies, when KILN_DEVICE=cuda sends it to the fake GPU
    g = kl.GraphBuilder()
    g.dispatch(add_to_grid, kl.Arg("a", kl.f32))
    m = kl.Module(targets=["cpu", "cuda"], cuda_archs=[])
    m.add_graph("main", g)
    cm = cuda.load_module(m.compile())
    graph = cm.graphs["main"]
    assert [repr(a) for a in graph.args] == ["a: f32"]
    graph.run({"a": 2.0})
    graph.run({"a": 2.0})
    allocs = [e for e in fake.LOG if e[0] == "htod"]
    # the init blob, copied once per load; the launch's argument block once (the runs are alike)
    assert [e[1] for e in allocs][:1] == [start.nbytes] and len(allocs) == 2
    field = cm.fields["grid"]
    node = next(e for e in fake.LOG if e[0] == "node")
    block = int.from_bytes(fake.slots(node[6], 7)[6], "little")        # a, @grid (5 slots), address
    assert fake.device_bytes(block + 8, 8) == struct.pack("<Q", field.ptr)   # the device array, in place
    np.testing.assert_array_equal(field.to_numpy(), start)   # the fake GPU runs nothing
    field.from_numpy(np.zeros((4, 3)))
    np.testing.assert_array_equal(field.to_numpy(), np.zeros((4, 3)))


def test_exported_kernels_with_templates_and_methods() -> None:
    s = Springs(3, 1.0)
    m = kl.Module()
    m.add_kernel(s.stretch, name="stretch")
    m.add_kernel(leap, heights[0], heights[1], heights[2], 0.5, name="leap")
    cm = m.compile()
    assert [a.name for a in cm.kernels["stretch"].args] == ["by"] and cm.kernels["leap"].args == []
    cm.kernels["stretch"](2.0)
    np.testing.assert_array_equal(cm.fields[s.x.name], [0, 2, 4])
    cm.kernels["leap"]()
    with pytest.raises(ArgumentError, match="is a kl.template\\(\\); pass its value"):
        kl.Module().add_kernel(leap)


def test_argument_errors_do_not_list_hidden_field_parameters() -> None:
    g = kl.GraphBuilder()
    g.dispatch(add_to_grid, kl.Arg("a", kl.f32))
    cg = g.compile()
    with pytest.raises(ArgumentError, match=r"missing argument 'a'; expected a$"):
        cg.run({})
    with pytest.raises(ArgumentError, match=r"unknown argument 'grid'; expected a$"):
        cg.run({"a": 1.0, "grid": np.zeros((4, 3), np.float32)})


def test_direct_cuda_call_stages_the_fields_own_array(monkeypatch: pytest.MonkeyPatch) -> None:
    from kiln.codegen.nvptx import nvptx_available

    why = nvptx_available()
    if why is not None:
        pytest.skip(f"no NVPTX target: {why}")
    sys.path.insert(0, str(Path(__file__).parent))
    import fake_cuda_driver as fake

    fake.install(monkeypatch)
    # PTX only: the fake driver reads ABI descriptors from PTX text, not from cubins (a GPU
    # machine with nvJitLink would otherwise put cubins in the file)
    from kiln.codegen import cuda_link
    monkeypatch.setattr(cuda_link, "nvjitlink_available", lambda: "disabled in this test")

    @kl.kernel
    def bump_grid(a: kl.f32):
        for i, j in grid:
            grid[i, j] += a

    kl.set_device("cuda")
    try:
        bump_grid(1.0)
    finally:
        kl.set_device("cpu")
    copies = [(e[0], e[1]) for e in fake.LOG if e[0] in ("htod", "dtoh")]
    assert copies == [("htod", grid.array.nbytes), ("dtoh", grid.array.nbytes)]   # in and back out
