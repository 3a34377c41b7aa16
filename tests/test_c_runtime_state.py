"""The C runtime's module state and kernels (docs/c-api.md): fields owned by each loaded module
(initial values from the file, persistence across runs, reads and writes through the API), the
kl.random state seeded and advanced exactly as in Python (same file, same stream), and exported
kernels called with named and positional arguments, with the Python runtime's checks and
messages. Natively and, for aarch64, under qemu-user (the builds of tests/test_c_runtime.py)."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_c_runtime as base
from test_c_runtime import STATUS, CRuntime, _both_targets, _spec_line, _status

import kiln as kl

# the C builds of tests/test_c_runtime.py (one per session), as fixtures of this module
c_native, c_aarch64, crt, installed = base.c_native, base.c_aarch64, base.crt, base.installed

# -- fields and kernels of the module under test ------------------------------------------------
heat = kl.field(kl.f32, shape=(4, 3))
steps = kl.field(kl.i64, shape=())
vel = kl.Vector.field(2, kl.f32, shape=3)
F1 = kl.ndarray(kl.f32, ndim=1)


@kl.kernel
def warm(a: kl.f32):
    for i, j in heat:
        heat[i, j] += a * i + j
    steps[None] += 1


@kl.kernel
def heat_total(out: kl.ndarray(kl.f64, ndim=1)):
    for i, j in heat:
        out[0] += heat[i, j]


@kl.kernel
def spin():
    for p in vel:
        vel[p] = kl.Vector([-vel[p][1], vel[p][0]])


@kl.kernel
def draw(out: kl.ndarray(kl.f32, ndim=2)):
    for i, j in kl.ndrange(out.shape[0], out.shape[1]):
        out[i, j] = kl.random(kl.f32)


@kl.kernel
def saxpy(a: kl.f32, x: F1, y: F1):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


SEED = 2 ** 63 + 12345          # above 2**53: the C reader must not round it through a double


def _module(targets: list[str] | None = None) -> kl.Module:
    heat.from_numpy(np.arange(12, dtype=np.float32).reshape(4, 3) * 0.5)   # the file's initial values
    steps[None] = 3
    vel.from_numpy(np.array([[1, 0], [0, 1], [2, 3]], np.float32))
    m = kl.Module(targets=targets or _both_targets(), seed=SEED)
    g = kl.GraphBuilder()
    g.dispatch(warm, kl.Arg("a", kl.f32))
    g.dispatch(heat_total, kl.Arg("out", kl.ndarray(kl.f64, ndim=1), shape=(1,)))
    g.dispatch(spin)
    m.add_graph("main", g)
    r = kl.GraphBuilder()
    r.dispatch(draw, kl.Arg("out", kl.ndarray(kl.f32, ndim=2)))
    r.dispatch(draw, kl.Arg("out", kl.ndarray(kl.f32, ndim=2)))      # two launches in one run
    m.add_graph("random", r)
    m.add_kernel(saxpy, name="saxpy")
    m.add_kernel(warm, name="warm")
    m.add_kernel(draw, kl.ndarray(kl.f32, ndim=2), name="draw")
    return m


@pytest.fixture(scope="module")
def state_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("state") / "state.kiln"
    _module().compile().save(path)
    return path


def _run(crt: CRuntime, path: Path, directives: list[str], args: dict[str, Any], tmp: Path,
         fields: tuple[str, ...] = (), field_in: dict[str, np.ndarray] | None = None
         ) -> tuple[list[str], dict[str, np.ndarray], dict[str, bytes]]:
    """The driver's output lines, the arrays after the runs, and the named fields' bytes."""
    outs: dict[str, tuple[Path, np.ndarray]] = {}
    lines = [f"file {path}", *directives] + [_spec_line(k, v, tmp, outs) for k, v in args.items()]
    for name, value in (field_in or {}).items():
        (tmp / f"field_{name}.in").write_bytes(np.ascontiguousarray(value).tobytes())
        lines.append(f"field_in {name} {tmp / f'field_{name}.in'}")
    lines += [f"field_out {name} {tmp / f'field_{name}.out'}" for name in fields]
    spec = tmp / f"spec_{len(list(tmp.iterdir()))}.txt"
    spec.write_text("\n".join(lines) + "\n")
    out = crt.call("run", str(spec)).strip().splitlines()
    arrays = {k: np.fromfile(p, a.dtype).reshape(a.shape) for k, (p, a) in outs.items()}
    return out, arrays, {name: (tmp / f"field_{name}.out").read_bytes() for name in fields
                         if (tmp / f"field_{name}.out").exists()}


def _rng_line(state: np.ndarray) -> str:
    return "rng " + " ".join(str(int(v)) for v in state)


# -- tests --------------------------------------------------------------------------------------

def test_listing_hides_the_hidden_parameters(crt: CRuntime, state_file: Path) -> None:
    listing = crt.call("list", str(state_file)).splitlines()[1:]
    assert listing == [
        "graph main 2", "arg a scalar f32 0 read", "arg out ndarray f64 1 readwrite 1",
        "graph random 1", "arg out ndarray f32 2 write",
        "kernel draw 1", "arg out ndarray f32 2 write",
        "kernel saxpy 3", "arg a scalar f32 0 none", "arg x ndarray f32 1 read", "arg y ndarray f32 1 readwrite",
        "kernel warm 1", "arg a scalar f32 0 none",
        "field heat f32 2 4 3 element 0 bytes 48", "field steps i64 0 element 0 bytes 8",
        "field vel f32 2 3 2 element 1 bytes 24",
        _rng_line(kl.load_module(state_file).rng_state), "ok"]
    assert listing[-2] == f"rng 12345 {2 ** 31} 0 0"


def test_fields_start_from_the_file_and_persist_like_python(crt: CRuntime, state_file: Path, tmp_path: Path) -> None:
    out, arrays, fields = _run(crt, state_file, ["graph main", "runs 3"], {"a": 0.25, "out": np.zeros(1)}, tmp_path,
                               fields=("heat", "steps", "vel"))
    assert out[-1] == "ok", out
    py = kl.load_module(state_file)
    ref = np.zeros(1)
    for _ in range(3):
        py.graphs["main"].run({"a": 0.25, "out": ref})
    assert int(py.fields["steps"]) == 6
    for name in ("heat", "steps", "vel"):
        assert fields[name] == np.ascontiguousarray(py.fields[name]).tobytes(), name
    np.testing.assert_array_equal(arrays["out"], ref)
    again = kl.load_module(state_file)             # the file is unchanged: a new load starts afresh
    assert int(again.fields["steps"]) == 3


def test_fields_written_through_the_api(crt: CRuntime, state_file: Path, tmp_path: Path) -> None:
    start = np.full((4, 3), 2.0, np.float32)
    out, _arrays, fields = _run(crt, state_file, ["kernel warm"], {"a": 1.0}, tmp_path, fields=("heat", "steps"),
                                field_in={"heat": start, "steps": np.array(40, np.int64)})
    assert out[-1] == "ok", out
    py = kl.load_module(state_file)
    py.fields["heat"][...] = start
    py.fields["steps"][...] = 40
    py.kernels["warm"](1.0)
    assert fields["heat"] == py.fields["heat"].tobytes() and fields["steps"] == py.fields["steps"].tobytes()
    bad, _, _ = _run(crt, state_file, ["kernel warm"], {"a": 1.0}, tmp_path,
                     field_in={"heat": np.zeros(5, np.float32)})
    got, message = _status(bad[-1])
    assert got == STATUS["KILN_ERR_SHAPE"] and "field 'heat' holds 48 bytes, got a buffer of 20" in message
    missing, _, _ = _run(crt, state_file, ["kernel warm"], {"a": 1.0}, tmp_path, fields=("nope",))
    got, message = _status(missing[-1])
    assert got == STATUS["KILN_ERR_NOT_FOUND"] and message == "no field named 'nope'; fields: heat, steps, vel"


def test_random_stream_and_state_match_python(crt: CRuntime, state_file: Path, tmp_path: Path) -> None:
    shape = (37, 5)
    for directives, reseed in ((["graph random", "runs 2"], None), (["graph random", "seed 99"], 99),
                               (["kernel draw", "runs 3"], None)):
        out, arrays, _ = _run(crt, state_file, directives, {"out": np.zeros(shape, np.float32)}, tmp_path)
        assert out[-1] == "ok", out
        py = kl.load_module(state_file)
        if reseed is not None:
            py.seed(reseed)
        runs = int(directives[1].split()[1]) if directives[1].startswith("runs") else 1
        ref = np.zeros(shape, np.float32)
        for _ in range(runs):
            if directives[0] == "graph random":
                py.graphs["random"].run({"out": ref})
            else:
                py.kernels["draw"](ref)
        np.testing.assert_array_equal(arrays["out"], ref, err_msg=str(directives))
        assert out[-2] == _rng_line(py.rng_state), directives
        assert len(np.unique(ref)) > ref.size // 2          # real draws, not a constant


def test_kernels_named_and_positional(crt: CRuntime, state_file: Path, tmp_path: Path) -> None:
    x = np.linspace(0, 1, 50, dtype=np.float32)
    y = np.ones(50, np.float32)
    want = np.float32(3.0) * x + y
    for mode in ([], ["positional"]):
        out, arrays, _ = _run(crt, state_file, ["kernel saxpy", *mode], {"a": 3.0, "x": x, "y": y}, tmp_path)
        assert out[-1] == "ok", (mode, out)
        np.testing.assert_array_equal(arrays["y"], want)


@pytest.mark.parametrize("directives, args, code", [
    (["kernel saxpy"], {"a": 1.0, "x": np.zeros(3, np.float32)}, "KILN_ERR_MISSING_ARGUMENT"),
    (["kernel saxpy"], {"a": 1.0, "x": np.zeros(3, np.float32), "y": np.zeros(3, np.float32), "z": 1.0},
     "KILN_ERR_UNKNOWN_ARGUMENT"),
    (["kernel saxpy", "positional"], {"a": 1.0, "x": np.zeros(3, np.float32), "y": np.zeros(3, np.float32),
                                      "z": 1.0}, "KILN_ERR_UNKNOWN_ARGUMENT"),
    (["kernel saxpy"], {"a": 1.0, "x": np.zeros(3, np.float64), "y": np.zeros(3, np.float32)}, "KILN_ERR_DTYPE"),
    (["kernel warm"], {"a": 1.0, "@heat": np.zeros((4, 3), np.float32)}, "KILN_ERR_UNKNOWN_ARGUMENT"),
    (["kernel nope"], {}, "KILN_ERR_NOT_FOUND"),
])
def test_kernel_argument_errors(c_native: CRuntime, state_file: Path, tmp_path: Path, directives: list[str],
                                args: dict[str, Any], code: str) -> None:
    out, arrays, _ = _run(c_native, state_file, directives, args, tmp_path)
    got, message = _status(out[-1])
    assert got == STATUS[code], out
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, args[k])          # nothing ran
    if code == "KILN_ERR_NOT_FOUND":
        return
    kernel = kl.load_module(state_file).kernels[directives[0].split()[1]]
    with pytest.raises((kl.ArgumentError, kl.ArgumentValueError)) as e:
        if "positional" in directives:
            kernel(*args.values())
        else:
            kernel(**{k.lstrip("@"): v for k, v in args.items()})
    if code == "KILN_ERR_MISSING_ARGUMENT" or "positional" in directives:
        assert message == str(e.value)


def test_two_loads_never_share_a_field(c_native: CRuntime, state_file: Path, tmp_path: Path) -> None:
    """Each run of the driver is a fresh load: the field starts from the file every time."""
    for _ in range(2):
        out, _arrays, fields = _run(c_native, state_file, ["kernel warm"], {"a": 0.0}, tmp_path, fields=("steps",))
        assert out[-1] == "ok" and np.frombuffer(fields["steps"], np.int64)[0] == 4


@kl.kernel
def affine(x: kl.ndarray(kl.vec2, ndim=1), g: kl.vec2, s: kl.f32):
    for i in range(x.shape[0]):
        x[i] = x[i] * s + g


def test_vector_arguments_as_element_scalars(c_native: CRuntime, tmp_path: Path) -> None:
    """A vector argument `g` is passed from C as its scalars `g.0`, `g.1`; a manifest whose groups
    or element shapes are wrong is refused in the Python reader's words."""
    g = kl.GraphBuilder()
    g.dispatch(affine, kl.Arg("x", kl.ndarray(kl.vec2, ndim=1)), kl.Arg("g", kl.vec2), 2.0)
    path = tmp_path / "affine.kiln"
    g.compile(target="x86-64-v2" if c_native.arch == "x86_64" else "aarch64").save(path)
    x = np.random.default_rng(5).random((7, 2), dtype=np.float32)
    out, arrays, _ = _run(c_native, path, ["graph main"], {"x": x, "g.0": 3.0, "g.1": -1.0}, tmp_path)
    assert out[-1] == "ok", out
    ref = x.copy()
    kl.load(path).run({"x": ref, "g": [3.0, -1.0]})
    np.testing.assert_array_equal(arrays["x"], ref)
    for edit, fragment in ((lambda d: d["graphs"]["main"]["params"][2].update(element_shape=[3]),
                            "vector argument 'g' needs"),
                           (lambda d: d["graphs"]["main"]["params"][0].update(element_shape=[5]),
                            "element_shape: expected 1 or 2 sizes in 1..4")):
        bad = _manifest_edit(path, tmp_path, edit)
        got, message = _status(c_native.call("list", str(bad)).strip().splitlines()[-1])
        assert got == STATUS["KILN_ERR_FORMAT"] and fragment in message, message
        with pytest.raises(kl.ArtifactError) as e:
            kl.load(bad)
        assert message == str(e.value)


CPP_PROGRAM = r"""
#include <cstdio>
#include <vector>
#include "kiln.hpp"

int main(int, char **argv) {
    kiln::Module m(argv[1]);
    std::vector<float> x(4, 1.0f), y(4, 0.5f);
    int64_t n = 4;
    kiln::Kernel k = m.kernel("saxpy");
    k.call({kiln_arg_f64(nullptr, 2.0), kiln_arg_array_const(nullptr, KILN_F32, x.data(), 1, &n),
            kiln_arg_array("y", KILN_F32, y.data(), 1, &n)});
    std::printf("y0 %g kernels %zu\n", y[0], m.kernels().size());
    m.kernel("warm").call({kiln_arg_f64("a", 0.0)});
    long long steps = 0;
    m.read_field("steps", &steps, sizeof steps);
    kiln_field_info heat = m.field("heat");
    std::printf("steps %lld heat %s %d %zu fields %zu\n", steps, heat.name, heat.ndim, heat.nbytes, m.fields().size());
    m.seed(5);
    std::printf("rng %u %u device %d\n", m.rng_state()[0], m.rng_state()[2], (int)m.device());
    void *mem = m.alloc(sizeof steps);
    long long back = 0;
    m.upload(mem, &steps, sizeof steps);
    m.download(&back, mem, sizeof back);
    m.free(mem);
    std::printf("memory %lld\n", back);
    try {
        m.field("nope");
    } catch (const kiln::Error &e) {
        std::printf("caught %d %s\n", (int)e.code(), e.what());
    }
    try {
        k.call({kiln_arg_f64(nullptr, 2.0), kiln_arg_f64("a", 1.0)});
    } catch (const kiln::Error &e) {
        std::printf("caught %d %s\n", (int)e.code(), e.what());
    }
    return 0;
}
"""


def test_cpp_kernels_fields_and_seed(installed: Path, state_file: Path, tmp_path: Path) -> None:
    import os
    import shutil
    if shutil.which("g++") is None:
        pytest.skip(f"g++ not found: install the Debian packages {base.NATIVE_PACKAGES}")
    src, exe = tmp_path / "t.cpp", tmp_path / "t"
    src.write_text(CPP_PROGRAM)
    base._run(["g++", "-std=c++11", "-Wall", "-Wextra", "-pedantic", "-Werror", str(src),
               *base._pkg_config(installed, "--cflags", "--libs"), "-o", str(exe)])
    libdir = next(p.parent for p in installed.rglob("libkiln.so"))
    out = base._run([str(exe), str(state_file)], env=dict(os.environ, LD_LIBRARY_PATH=str(libdir))).stdout
    assert out.splitlines() == [
        "y0 2.5 kernels 3", "steps 4 heat heat 2 48 fields 3", "rng 5 0 device 0", "memory 4",
        "caught 7 no field named 'nope'; fields: heat, steps, vel",
        "caught 9 kernel 'saxpy': argument 'a' given twice"]


# -- CUDA ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cuda_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kiln.codegen.nvptx import nvptx_available
    if nvptx_available() is not None:
        pytest.skip(f"no NVPTX code generation here: {nvptx_available()}")
    import warnings
    path = tmp_path_factory.mktemp("cuda") / "state_cuda.kiln"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # PTX only when nvJitLink is missing: fine
        _module(["x86-64-v2", "cuda"]).compile().save(path)
    return path


@pytest.fixture(scope="module")
def ptx_file(cuda_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file without cubins (where nvJitLink built some): the fake drivers load PTX only."""
    def ptx_only(doc: dict) -> None:
        doc["cuda"]["cubins"] = {}
        for t in doc["targets"]:
            if t["kind"] == "cuda":
                t["blobs"] = [doc["cuda"]["ptx"]]
    return _manifest_edit(cuda_file, tmp_path_factory.mktemp("ptx"), ptx_only)


@pytest.fixture(scope="module")
def fake_libcuda(c_native: CRuntime) -> Path:
    """c/tests/fake_libcuda.c as a shared library (device memory is host memory, nothing runs)."""
    lib = c_native.build / "fake_libcuda.so"
    if not lib.exists():
        base._run([c_native.cc, "-std=c11", "-O2", "-Wall", "-Werror", "-D_POSIX_C_SOURCE=200809L", "-shared",
                   "-fPIC", "-fvisibility=hidden", str(base.C_DIR / "tests" / "fake_libcuda.c"), "-o", str(lib)])
    return lib


def _launches(log: Path) -> list[tuple[str, int, int, list[str]]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("launch "):
            _, entry, grid, block, _stream, *slots = line.split()
            out.append((entry, int(grid), int(block), slots))
    return out


def _kernel_params(path: Path, entry: str) -> list[dict[str, Any]]:
    from kiln.artifact.container import read_file
    doc = read_file(str(path)).manifest
    kname = next(k for k, ls in doc["cuda"]["launches"].items() if any(ln["entry"] == entry for ln in ls))
    return list(doc["kernels"][kname]["params"])


def _block_slots(path: Path, entry: str) -> int:
    """The entry's parameters: an array's pointer, extents and strides (kiln.abi), a scalar's slot,
    then the block's device address when the launch takes it (CudaLaunch.block_ptr)."""
    from kiln.artifact.container import read_file
    launches = read_file(str(path)).manifest["cuda"]["launches"]
    block_ptr = any(ln.get("block_ptr", False) for ls in launches.values() for ln in ls if ln["entry"] == entry)
    return sum(1 + 2 * p["ndim"] for p in _kernel_params(path, entry)) + block_ptr


def _pointer_slots(path: Path, entry: str) -> set[int]:
    """The slots of an entry's argument block that hold array pointers (they differ per process)."""
    return {p["offset"] // 8 for p in _kernel_params(path, entry) if p["kind"] == "ndarray"}


def _masked(path: Path, entry: str, slots: list[str]) -> list[str]:
    pointers = _pointer_slots(path, entry)
    return ["ptr" if k in pointers else s for k, s in enumerate(slots)]


@pytest.mark.parametrize("what", ["graph main", "graph random", "kernel saxpy"])
def test_cuda_launches_match_the_python_runtime(c_native: CRuntime, ptx_file: Path, fake_libcuda: Path,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    """With the same fake driver on both sides (tests/fake_cuda_driver.py, c/tests/fake_libcuda.c:
    cc 9.0, 4 SMs, occupancy 2), libkiln makes the launches kiln.runtime.cuda makes: same entries
    in the same order, grids, blocks and argument slots (array pointers aside)."""
    import fake_cuda_driver as fake
    n = 400_000                     # 100,000 groups of 4 (vector access): over the wave cap
    args: dict[str, Any] = {
        "graph main": {"a": 0.5, "out": np.zeros(1)},
        "graph random": {"out": np.zeros((37, 5), np.float32)},
        "kernel saxpy": {"a": 2.0, "x": np.ones(n, np.float32), "y": np.zeros(n, np.float32)}}[what]
    log = tmp_path / "fake.log"
    out, _arrays, fields = _run(c_native, ptx_file, [what, "runs 2", f"cuda {fake_libcuda}", f"fake_cuda 9 0 0 {log}"],
                                args, tmp_path, fields=("heat",))
    assert out[0] == "image ptx sm_80 (driver JIT)" and out[-1] == "ok", out
    assert fields["heat"] == (np.arange(12, dtype=np.float32) * 0.5).tobytes()    # on the "device", from the file
    c_launches = _launches(log)
    fake.install(monkeypatch)
    py_launches: list[tuple[str, int, int, list[str]]] = []

    def launch(f: str, gx: int, _gy: int, _gz: int, bx: int, *rest: Any) -> tuple[int]:
        import ctypes
        params = rest[4]
        n = _block_slots(ptx_file, f)
        ptrs = (ctypes.c_void_p * max(1, n)).from_address(params) if n else []
        slots = [f"{int.from_bytes(ctypes.string_at(ptrs[k], 8), 'little'):016x}" for k in range(n)]
        py_launches.append((f, gx, bx, slots))
        return (0,)

    monkeypatch.setattr(fake, "cuLaunchKernel", launch)    # every slot, in libkiln's log format
    from kiln.runtime import cuda
    m = cuda.load_module(ptx_file)
    kind, name = what.split()
    for _ in range(2):
        if kind == "graph":
            m.graphs[name].run(args, use_graph=False)
        else:
            m.kernels[name](*args.values())
    assert len(c_launches) == len(py_launches) > 0
    for (entry, grid, block, slots), (f, gx, bx, py_slots) in zip(c_launches, py_launches):
        assert (entry, grid, block) == (f, gx, bx)
        assert _masked(ptx_file, entry, slots) == _masked(ptx_file, entry, py_slots)
    if what == "kernel saxpy":
        assert c_launches[0][1] == 4 * 2 * 16            # capped at 16 waves of 4 SMs x 2 blocks


def _manifest_edit(path: Path, tmp: Path, edit: Any) -> Path:
    from kiln.artifact import container
    c = container.unpack(path.read_bytes())
    doc = {k: v for k, v in c.manifest.items() if k != "blobs"}
    edit(doc)
    out = tmp / f"edited_{len(list(tmp.iterdir()))}.kiln"
    out.write_bytes(container.pack(doc, {k: bytes(v) for k, v in c.blobs.items()}))
    return out


def test_cuda_load_errors(c_native: CRuntime, ptx_file: Path, fake_libcuda: Path, tmp_path: Path) -> None:
    def load(path: Path, *directives: str) -> tuple[int, str]:
        out, _, _ = _run(c_native, path, ["kernel warm", *directives], {"a": 1.0}, tmp_path)
        return _status(out[-1])

    got, message = load(ptx_file, f"cuda {tmp_path / 'no' / 'libcuda.so.1'}")
    assert got == STATUS["KILN_ERR_NO_DEVICE"] and "no CUDA driver on this machine (" in message
    got, message = load(ptx_file, f"cuda {fake_libcuda}", "fake_cuda 7 5 0")
    assert got == STATUS["KILN_ERR_NO_DEVICE"], message
    assert message.endswith("no code in this file runs on this GPU (sm_75); the file holds PTX for sm_80+. "
                            "Recompile with cuda_archs=['sm_75', ...]")
    got, message = load(ptx_file, f"cuda {fake_libcuda}", "fake_cuda 9 0 100")
    assert got == STATUS["KILN_ERR_NO_DEVICE"] and "no CUDA GPU is visible on this machine" in message

    def writes_a(doc: dict) -> None:                     # consistent, re-checksummed: only the ABI check sees it
        doc["kernels"]["warm__f32"]["params"][0]["access"] = "read"
    edited = _manifest_edit(ptx_file, tmp_path, writes_a)
    got, message = load(edited, f"cuda {fake_libcuda}", "fake_cuda 9 0 0")
    assert got == STATUS["KILN_ERR_FORMAT"]
    assert "kernel 'warm__f32': the manifest disagrees with the PTX's ABI descriptor" in message
    got, message = load(_manifest_edit(ptx_file, tmp_path, lambda d: d.pop("cuda")), f"cuda {fake_libcuda}")
    assert got == STATUS["KILN_ERR_FORMAT"] and message.endswith("manifest: cuda: the launch table is missing")
    got, message = load(_manifest_edit(ptx_file, tmp_path, lambda d: d["cuda"].update(block_size=0)))
    assert got == STATUS["KILN_ERR_FORMAT"] and message.endswith("manifest: cuda.block_size: 0 is out of range (1..1024)")


def _real_gpu() -> str | None:
    """None when libcuda.so.1 loads and sees a GPU, else why not."""
    import ctypes
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return f"no libcuda.so.1 ({e})"
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return "libcuda.so.1 sees no GPU"
    return None


def test_cuda_graphs_on_a_real_gpu(c_native: CRuntime, cuda_file: Path, tmp_path: Path) -> None:
    """The C runtime on a GPU (libcuda.so.1), compared with numpy and with the Python CPU runtime on
    the same file: fields, a reduction, the random stream and an exported kernel."""
    why = _real_gpu()
    if why is not None:
        pytest.skip(why)
    py = kl.load_module(cuda_file)
    out, arrays, fields = _run(c_native, cuda_file, ["graph main", "runs 2", "cuda libcuda.so.1"],
                               {"a": 0.5, "out": np.zeros(1)}, tmp_path, fields=("heat", "steps", "vel"))
    assert out[-1] == "ok", out
    ref = np.zeros(1)
    for _ in range(2):
        py.graphs["main"].run({"a": 0.5, "out": ref})
    for name in ("heat", "steps", "vel"):
        np.testing.assert_array_equal(np.frombuffer(fields[name], py.fields[name].dtype).reshape(py.fields[name].shape),
                                      py.fields[name], err_msg=name)
    np.testing.assert_allclose(arrays["out"], ref, rtol=1e-12)
    out, arrays, _ = _run(c_native, cuda_file, ["graph random", "runs 2", "cuda libcuda.so.1"],
                          {"out": np.zeros((300, 7), np.float32)}, tmp_path)
    assert out[-1] == "ok", out
    ref = np.zeros((300, 7), np.float32)
    for _ in range(2):
        py.graphs["random"].run({"out": ref})
    np.testing.assert_array_equal(arrays["out"], ref)
    assert out[-2] == _rng_line(py.rng_state)
    x = np.linspace(-1, 1, 200_001, dtype=np.float32)
    out, arrays, _ = _run(c_native, cuda_file, ["kernel saxpy", "positional", "cuda libcuda.so.1"],
                          {"a": 3.0, "x": x, "y": np.ones_like(x)}, tmp_path)
    assert out[-1] == "ok", out
    np.testing.assert_allclose(arrays["y"], np.float32(3.0) * x + 1, rtol=1e-6, atol=1e-6)


def test_heat_example_on_a_real_gpu(c_native: CRuntime, tmp_path: Path) -> None:
    """examples/c/heat.c with its device argument: the demo's graph on the GPU, checked against
    the example's own C reference."""
    why = _real_gpu()
    if why is not None:
        pytest.skip(why)
    import warnings

    from kiln.cli.demo import build_graph
    path = tmp_path / "heat_cuda.kiln"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_graph().compile(targets=["x86-64-v2" if c_native.arch == "x86_64" else "aarch64", "cuda"]).save(path)
    exe = tmp_path / "heat"
    base._run([c_native.cc, "-std=c11", "-O2", "-D_POSIX_C_SOURCE=200809L", f"-I{base.C_DIR / 'include'}",
               str(base.ROOT / "examples" / "c" / "heat.c"), str(c_native.build / "libkiln.a"), "-lm", "-ldl",
               "-lpthread", "-o", str(exe)])
    out = base._run([str(exe), str(path), "3", "cuda"]).stdout
    assert "nvptx64 code" in out and "kiln demo: OK" in out, out


def _first_launch(doc: dict, kernel: str) -> dict:
    return doc["cuda"]["launches"][kernel][0]


CUDA_DAMAGE = {
    "block size": lambda d: d["cuda"].update(block_size=4096),
    "ptx blob": lambda d: d["cuda"].update(ptx="cpu.o"),
    "cubin blob": lambda d: d["cuda"].update(cubins={"sm_90": "nope"}),
    "math": lambda d: d["cuda"].update(math="fast"),
    "missing kernel": lambda d: d["cuda"]["launches"].pop("saxpy__f32_f32a1_f32a1"),
    "unknown kernel": lambda d: d["cuda"]["launches"].update(ghost=[]),
    "no launch": lambda d: d["cuda"]["launches"].update(saxpy__f32_f32a1_f32a1=[]),
    "entry": lambda d: _first_launch(d, "saxpy__f32_f32a1_f32a1").update(entry="not a symbol"),
    "mode": lambda d: _first_launch(d, "saxpy__f32_f32a1_f32a1").update(mode="grid"),
    "waves": lambda d: _first_launch(d, "saxpy__f32_f32a1_f32a1").update(waves=2000),
    "count on single": lambda d: d["cuda"]["launches"]["warm__f32"][1].update(count=[]),
    "count dim": lambda d: _first_launch(d, "saxpy__f32_f32a1_f32a1").update(count=[[["const", 0]]]),
    "op": lambda d: _first_launch(d, "saxpy__f32_f32a1_f32a1").update(count=[[["pow", 1], ["const", 1],
                                                                                ["const", 1]]]),
    "operands": lambda d: _first_launch(d, "saxpy__f32_f32a1_f32a1").update(count=[[["+", ["const", 1]],
                                                                                     ["const", 1], ["const", 1]]]),
    "shape dim": lambda d: _first_launch(d, "saxpy__f32_f32a1_f32a1").update(count=[[["const", 0], ["shape", "x", 1],
                                                                                      ["const", 1]]]),
    "arg kind": lambda d: _first_launch(d, "saxpy__f32_f32a1_f32a1").update(count=[[["const", 0], ["arg", "x"],
                                                                                     ["const", 1]]]),
    "no cuda target": lambda d: d.update(targets=[t for t in d["targets"] if t["kind"] == "cpu"]),
}


@pytest.mark.parametrize("name", sorted(CUDA_DAMAGE))
def test_cuda_section_checked_like_python(c_native: CRuntime, ptx_file: Path, tmp_path: Path, name: str) -> None:
    """Every reader validates a present `cuda` section (docs/format.md): the C loader refuses each
    damaged one with the Python reader's message, even when it loads the CPU code."""
    bad = _manifest_edit(ptx_file, tmp_path, CUDA_DAMAGE[name])
    got, message = _status(c_native.call("list", str(bad)).strip().splitlines()[-1])
    with pytest.raises(kl.ArtifactError) as e:
        kl.load_module(bad)
    assert got == STATUS["KILN_ERR_FORMAT"] and message == str(e.value), (message, str(e.value))


STATE_DAMAGE = {
    "field dtype": lambda d: d["fields"]["heat"].update(dtype="f128"),
    "field shape": lambda d: d["fields"]["heat"].update(shape=[4, 0]),
    "field name": lambda d: d["fields"].update({"2x": d["fields"].pop("vel")}),
    "field init": lambda d: d["fields"]["heat"].update(init="nope"),
    "field rank": lambda d: d["fields"]["heat"].update(shape=[12]),
    "field dims": lambda d: d["fields"]["vel"].update(shape=[1] * 8),
    "hidden name": lambda d: d["graphs"]["main"]["params"][2].update(name="@cold"),
    "field binding": lambda d: d["graphs"]["main"]["dispatches"][0]["bindings"][1].update(field="vel"),
    "unknown field binding": lambda d: d["graphs"]["main"]["dispatches"][0]["bindings"][1].update(field="nope"),
    "seed negative": lambda d: d.update(random_seed=-1),
    "seed too large": lambda d: d.update(random_seed=2 ** 64),
    "seed float": lambda d: d.update(random_seed=1.5),
    "exported": lambda d: d["exported_kernels"].update(saxpy="ghost"),
}


@pytest.mark.parametrize("name", sorted(STATE_DAMAGE))
def test_fields_and_seed_checked_like_python(c_native: CRuntime, state_file: Path, tmp_path: Path, name: str) -> None:
    bad = _manifest_edit(state_file, tmp_path, STATE_DAMAGE[name])
    got, message = _status(c_native.call("list", str(bad)).strip().splitlines()[-1])
    with pytest.raises(kl.ArtifactError) as e:
        kl.load_module(bad)
    assert got == STATUS["KILN_ERR_FORMAT"], message
    if name != "seed float":         # cJSON keeps numbers as doubles: "a number" where Python says "float"
        assert message == str(e.value), (message, str(e.value))
