"""The C runtime (c/, docs/c-api.md): C programs load files written by the Python compiler and
their results are compared with numpy, natively and, for aarch64, cross-built and run under
qemu-user. The library is built with CMake once per session (into a temporary directory).

Tools: cmake and gcc (native); gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, libgomp1-arm64-cross
and qemu-user (aarch64). `.ci/run` installs them; where they are missing the tests skip with a
message naming the Debian packages.
"""


import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kiln as kl
from kiln.artifact import container
from kiln.errors import ArtifactError
from kiln.runtime.hostcpu import host_arch
from kiln.types import from_numpy

ROOT = Path(__file__).resolve().parent.parent
C_DIR = ROOT / "c"
A64_SYSROOT = Path("/usr/aarch64-linux-gnu")
NATIVE_PACKAGES = "cmake gcc g++"
A64_PACKAGES = "gcc-aarch64-linux-gnu libc6-dev-arm64-cross libgomp1-arm64-cross qemu-user"

#: kiln.h's status codes (checked against the header by test_status_codes_match_header)
STATUS = {"KILN_OK": 0, "KILN_ERR_FORMAT": 3, "KILN_ERR_VERSION": 4, "KILN_ERR_ELF": 5,
          "KILN_ERR_NO_TARGET": 6, "KILN_ERR_MISSING_ARGUMENT": 8, "KILN_ERR_UNKNOWN_ARGUMENT": 9,
          "KILN_ERR_KIND": 10, "KILN_ERR_DTYPE": 11, "KILN_ERR_RANK": 12, "KILN_ERR_SHAPE": 13,
          "KILN_ERR_STRIDES": 14, "KILN_ERR_READ_ONLY": 15, "KILN_ERR_ALIGNMENT": 16,
          "KILN_ERR_SCALAR_RANGE": 17, "KILN_ERR_IO": 2, "KILN_ERR_NOT_FOUND": 7, "KILN_ERR_NO_DEVICE": 21,
          "KILN_ERR_CUDA": 22}


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300, **kw)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class CRuntime:
    """One build of libkiln plus the test driver (c/tests/kiln_case.c)."""

    arch: str               # "x86_64" or "aarch64"
    target: str             # the compile target whose code this runtime runs
    prefix: list[str]       # [] or the qemu command line
    exe: Path
    build: Path
    cc: str                 # the C compiler of this build

    def call(self, *args: str) -> str:
        return _run([*self.prefix, str(self.exe), *args]).stdout

    def run(self, path: Path, graph: str, args: dict[str, Any], tmp: Path,
            threads: int = 0) -> tuple[str, dict[str, np.ndarray]]:
        """Run `graph` of `path` with `args` (numpy arrays, CArray, Python scalars); returns the
        driver's status line and every array as it is after the call."""
        lines = [f"file {path}", f"graph {graph}"] + ([f"threads {threads}"] if threads else [])
        outs: dict[str, tuple[Path, np.ndarray]] = {}
        for name, value in args.items():
            lines.append(_spec_line(name, value, tmp, outs))
        spec = tmp / f"spec_{len(list(tmp.iterdir()))}.txt"
        spec.write_text("\n".join(lines) + "\n")
        status = self.call("run", str(spec)).strip().splitlines()[-1]
        arrays = {name: np.fromfile(p, a.dtype).reshape(a.shape) for name, (p, a) in outs.items()}
        return status, arrays


@dataclass
class CArray:
    """An array argument with driver flags: ro, strided (Fortran order), alias (zero strides), misaligned, null."""

    array: np.ndarray
    flags: str = "-"


def _spec_line(name: str, value: Any, tmp: Path, outs: dict[str, tuple[Path, np.ndarray]]) -> str:
    if isinstance(value, (np.ndarray, CArray)):
        arr, flags = (value.array, value.flags) if isinstance(value, CArray) else (value, "-")
        dt = from_numpy(arr.dtype)
        assert dt is not None
        src, dst = tmp / f"{name}_in.bin", tmp / f"{name}_out.bin"
        np.ascontiguousarray(arr).tofile(src)
        outs[name] = (dst, arr)
        return f"array {name} {dt.name} {arr.ndim} {' '.join(map(str, arr.shape))} {src} {dst} {flags}"
    if isinstance(value, bool):
        return f"scalar {name} bool {int(value)}"
    if isinstance(value, int):
        return f"scalar {name} {'uint' if value > 2**63 - 1 else 'int'} {value}"
    return f"scalar {name} float {float(value)!r}"


def _status(line: str) -> tuple[int, str]:
    if line == "ok":
        return 0, ""
    m = re.match(r"error (\d+) (.*)", line)
    assert m, line
    return int(m.group(1)), m.group(2)


# ------------------------------------------------------------------------------------------ builds

def _cmake_build(build: Path, extra: list[str]) -> Path:
    _run(["cmake", "-S", str(C_DIR), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *extra])
    _run(["cmake", "--build", str(build), "-j2"])
    return build


def _program(cc: str, build: Path, name: str) -> Path:
    """c/tests/<name>.c linked against the static library of `build`."""
    exe = build / name
    _run([cc, "-std=c11", "-O2", "-Wall", "-Werror", "-D_POSIX_C_SOURCE=200809L", f"-I{C_DIR / 'include'}",
          str(C_DIR / "tests" / f"{name}.c"), str(build / "libkiln.a"), "-lm", "-ldl", "-lpthread",
          "-o", str(exe)])
    return exe


#: one build per session, shared by the test modules that import these fixtures
_BUILDS: dict[str, CRuntime] = {}


def _plain_build(cc: str, build: Path) -> Path:
    """libkiln.a without CMake (a machine with only a C compiler): every source compiled, then ar."""
    build.mkdir(parents=True, exist_ok=True)
    sources = sorted((C_DIR / "src").glob("*.c")) + [C_DIR / "third_party" / "cjson" / "cJSON.c"]
    objects = []
    for src in sources:
        obj = build / (src.stem + ".o")
        _run([cc, "-std=c11", "-O2", "-fPIC", "-D_POSIX_C_SOURCE=200809L", f"-I{C_DIR / 'include'}",
              f"-I{C_DIR / 'src'}", f"-I{C_DIR / 'third_party' / 'cjson'}", "-c", str(src), "-o", str(obj)])
        objects.append(str(obj))
    _run(["ar", "rcs", str(build / "libkiln.a"), *objects])
    return build


@pytest.fixture(scope="session")
def c_native(tmp_path_factory: pytest.TempPathFactory) -> CRuntime:
    if "native" in _BUILDS:
        return _BUILDS["native"]
    cc = next((c for c in ("gcc", "cc") if shutil.which(c)), None)
    if cc is None:
        pytest.skip(f"no C compiler (gcc or cc) found: install the Debian packages {NATIVE_PACKAGES}")
    where = tmp_path_factory.mktemp("c-native") / "build"
    # without cmake (a GPU machine may lack it) the library is built with the compiler alone; the
    # install, pkg-config and C++ tests then skip
    build = _cmake_build(where, []) if shutil.which("cmake") else _plain_build(cc, where)
    target = "x86-64-v2" if host_arch() == "x86_64" else "aarch64"
    _BUILDS["native"] = CRuntime(host_arch(), target, [], _program(cc, build, "kiln_case"), build, cc)
    return _BUILDS["native"]


@pytest.fixture(scope="session")
def c_aarch64(tmp_path_factory: pytest.TempPathFactory, c_native: CRuntime) -> CRuntime:
    if host_arch() != "x86_64":
        pytest.skip("the aarch64 cross tests run on x86-64 hosts (an aarch64 host runs them natively)")
    tools = {"aarch64-linux-gnu-gcc": shutil.which("aarch64-linux-gnu-gcc"), "qemu-aarch64": shutil.which("qemu-aarch64"),
             "arm64 libgomp": (A64_SYSROOT / "lib" / "libgomp.so.1").exists() or None}
    missing = [k for k, v in tools.items() if not v]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found: install the Debian packages {A64_PACKAGES}")
    if "aarch64" in _BUILDS:
        return _BUILDS["aarch64"]
    if shutil.which("cmake") is None:
        pytest.skip(f"cmake not found: install the Debian packages {NATIVE_PACKAGES}")
    build = _cmake_build(tmp_path_factory.mktemp("c-aarch64") / "build", [
        "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
        "-DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc", "-DKILN_BUILD_SHARED=OFF"])
    _BUILDS["aarch64"] = CRuntime("aarch64", "aarch64", ["qemu-aarch64", "-L", str(A64_SYSROOT)],
                                  _program("aarch64-linux-gnu-gcc", build, "kiln_case"), build, "aarch64-linux-gnu-gcc")
    return _BUILDS["aarch64"]


@pytest.fixture(params=["native", "aarch64"])
def crt(request: pytest.FixtureRequest) -> CRuntime:
    return request.getfixturevalue("c_native" if request.param == "native" else "c_aarch64")


def _both_targets() -> list[str]:
    """A file that carries code for both architectures (each loader picks its own)."""
    return ["x86-64-v2", "aarch64"]


# ------------------------------------------------------------------------------------------ kernels

@kl.kernel
def saxpy(a: kl.f32, x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = a * x[i] + y[i]


@kl.kernel
def total(x: kl.ndarray(kl.f32, ndim=1), out: kl.ndarray(kl.f64, ndim=1)):
    for i in range(x.shape[0]):
        out[0] += x[i]


@kl.kernel
def scale2d(m: kl.ndarray(kl.f64, ndim=2), s: kl.f64, out: kl.ndarray(kl.f64, ndim=2)):
    for i, j in kl.ndrange(m.shape[0], m.shape[1]):
        out[i, j] = kl.sin(m[i, j]) * s + kl.exp(m[j % m.shape[0], i % m.shape[1]] * 0.1)


def _saxpy_graph() -> kl.GraphBuilder:
    x = kl.Arg("x", kl.ndarray(kl.f32, ndim=1), shape=("n",))
    y = kl.Arg("y", kl.ndarray(kl.f32, ndim=1), shape=("n",))
    g = kl.GraphBuilder()
    g.dispatch(saxpy, kl.Arg("a", kl.f32), x, y)
    g.dispatch(total, y, kl.Arg("out", kl.ndarray(kl.f64, ndim=1), shape=(1,)))
    return g


def _save(module_or_graph: Any, path: Path, targets: list[str]) -> Path:
    if isinstance(module_or_graph, kl.GraphBuilder):
        module_or_graph.compile(targets=targets).save(path)
    else:
        module_or_graph.save(path)
    return path


@pytest.fixture(scope="module")
def saxpy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(_saxpy_graph(), tmp_path_factory.mktemp("saxpy") / "saxpy.kiln", _both_targets())


# ------------------------------------------------------------------------------------------ tests

def test_version_and_format(c_native: CRuntime) -> None:
    from kiln._version import KILN_VERSION
    assert c_native.call("version").strip() == (
        f"kiln {KILN_VERSION} format {container.FORMAT_MAJOR}.{container.FORMAT_MINOR}")


def test_status_codes_match_header() -> None:
    header = (C_DIR / "include" / "kiln.h").read_text()
    for name, value in STATUS.items():
        assert re.search(rf"\b{name} = {value},", header), name


def test_cpu_graph_matches_numpy(crt: CRuntime, saxpy_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.random(10_000, dtype=np.float32)
    y = rng.random(10_000, dtype=np.float32)
    status, out = crt.run(saxpy_file, "main", {"a": 2.5, "x": x, "y": y, "out": np.zeros(1)}, tmp_path)
    assert status == "ok"
    want_y = np.float32(2.5) * x + y
    np.testing.assert_array_equal(out["y"], want_y)
    np.testing.assert_allclose(out["out"][0], want_y.astype(np.float64).sum(), rtol=1e-6)
    np.testing.assert_array_equal(out["x"], x)          # read-only arguments stay as they were


def test_api_edge_cases(crt: CRuntime, saxpy_file: Path) -> None:
    """c/tests/api_test.c: NULL handling, every status name, argument order, repeated names, empty
    arrays, explicit strides, thread counts, and four threads running one graph at once."""
    out = _run([*crt.prefix, str(_program(crt.cc, crt.build, "api_test")), str(saxpy_file)]).stdout
    assert out.strip().splitlines()[-1] == "api_test: 0 failures", out


def test_aarch64_only_file(c_aarch64: CRuntime, tmp_path: Path) -> None:
    path = tmp_path / "a64.kiln"
    compiled = _saxpy_graph().compile(target="cortex-a76")
    compiled.save(path)
    doc = container.read_file(str(path)).manifest
    assert [(t["name"], t["arch"], t["cpu"]) for t in doc["targets"]] == [("cpu.aarch64", "aarch64", "cortex-a76")]
    x = np.arange(100, dtype=np.float32)
    status, out = c_aarch64.run(path, "main", {"a": -1.0, "x": x, "y": x.copy(), "out": np.zeros(1)}, tmp_path)
    assert status == "ok"
    np.testing.assert_array_equal(out["y"], np.zeros(100, np.float32))
    # Python on x86-64 refuses it, naming both architectures; the cross-compiled object saves only
    with pytest.raises(ArtifactError, match="compiled for aarch64, this machine is x86_64"):
        kl.load(path)
    with pytest.raises(ArtifactError, match="compiled for aarch64"):
        compiled.run({})
    assert "aarch64" in repr(compiled)


def test_python_picks_its_architecture_from_a_two_arch_file(saxpy_file: Path) -> None:
    g = kl.load(saxpy_file)
    assert g._module.target.name == "cpu" and g._module.target.arch == host_arch()
    blobs = container.read_file(str(saxpy_file)).blobs
    assert sorted(blobs) == ["cpu.aarch64.o", "cpu.o"]
    assert bytes(blobs["cpu.aarch64.o"][18:20]) == (183).to_bytes(2, "little")   # EM_AARCH64


def test_multi_graph_module_listing_and_runs(crt: CRuntime, tmp_path: Path) -> None:
    m = kl.Module(targets=_both_targets())
    m.add_graph("saxpy", _saxpy_graph())
    g2 = kl.GraphBuilder()
    g2.dispatch(scale2d, kl.Arg("m", kl.ndarray(kl.f64, ndim=2), shape=("r", "r")), kl.Arg("s", kl.f64),
                kl.Arg("out", kl.ndarray(kl.f64, ndim=2), shape=("r", 5)))
    m.add_graph("scale", g2)
    path = _save(m, tmp_path / "multi.kiln", [])
    listing = crt.call("list", str(path)).splitlines()
    assert listing[0].startswith(f"arch {crt.arch} ")
    assert listing[1:] == [
        "graph saxpy 4",
        "arg a scalar f32 0 read", "arg x ndarray f32 1 read n", "arg y ndarray f32 1 readwrite n",
        "arg out ndarray f64 1 readwrite 1",
        "graph scale 3",
        "arg m ndarray f64 2 read r r", "arg s scalar f64 0 read", "arg out ndarray f64 2 write r 5",
        "rng 0 0 0 0", "ok"]
    assert crt.call("list", str(path), "memory").splitlines() == listing
    mat = np.random.default_rng(2).random((5, 5))
    status, out = crt.run(path, "scale", {"m": mat, "s": 3.0, "out": np.zeros((5, 5))}, tmp_path)
    assert status == "ok"
    ref = np.zeros((5, 5))
    m.compile().graphs["scale"].run({"m": mat, "s": 3.0, "out": ref})      # the Python runtime, same file
    np.testing.assert_allclose(ref, np.sin(mat) * 3.0 + np.exp(mat.T * 0.1), rtol=1e-12)
    np.testing.assert_allclose(out["out"], ref, rtol=1e-12)
    status, out = crt.run(path, "saxpy", {"a": 1.0, "x": np.ones(3, np.float32), "y": np.ones(3, np.float32),
                                          "out": np.zeros(1)}, tmp_path)
    assert status == "ok" and out["out"][0] == 6.0


DTYPES = ["bool", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f16", "f32", "f64"]


def _dtype_kernel(dt: Any) -> Any:
    if dt is kl.bool_:
        @kl.kernel
        def combine(x: kl.ndarray(dt, ndim=1), a: dt, out: kl.ndarray(dt, ndim=1)):
            for i in range(x.shape[0]):
                out[i] = x[i] ^ a
        return combine

    @kl.kernel
    def combine(x: kl.ndarray(dt, ndim=1), a: dt, out: kl.ndarray(dt, ndim=1)):
        for i in range(x.shape[0]):
            out[i] = x[i] + a
    return combine


@pytest.fixture(scope="module")
def dtype_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    m = kl.Module(targets=_both_targets())
    for name in DTYPES:
        dt = kl.types.SCALARS_BY_NAME[name]
        g = kl.GraphBuilder()
        g.dispatch(_dtype_kernel(dt), kl.Arg("x", kl.ndarray(dt, ndim=1)), kl.Arg("a", dt),
                   kl.Arg("out", kl.ndarray(dt, ndim=1)))
        m.add_graph(f"g_{name}", g)
    return _save(m, tmp_path_factory.mktemp("dtypes") / "dtypes.kiln", [])


def _dtype_case(name: str) -> tuple[np.ndarray, Any, np.ndarray]:
    np_dt = kl.types.SCALARS_BY_NAME[name].np_dtype
    if name == "bool":
        x = np.array([True, False, True, False])
        return x, True, x ^ True
    if np_dt.kind == "f":
        x = np.linspace(-3, 3, 37).astype(np_dt)
        a = 0.1                                        # rounds differently in every float width
        return x, a, (x + np_dt.type(a)).astype(np_dt)
    info = np.iinfo(np_dt)
    x = np.array([info.min, info.min + 1, 0, 1, 7, info.max - 3, info.max], dtype=np_dt)
    a = int(info.max // 3)
    with np.errstate(over="ignore"):
        return x, a, (x + np_dt.type(a)).astype(np_dt)   # wraps like the compiled code


@pytest.mark.parametrize("name", DTYPES)
def test_every_dtype(crt: CRuntime, dtype_file: Path, name: str, tmp_path: Path) -> None:
    x, a, want = _dtype_case(name)
    status, out = crt.run(dtype_file, f"g_{name}", {"x": x, "a": a, "out": np.zeros_like(x)}, tmp_path)
    assert status == "ok"
    ref = np.zeros_like(x)
    kl.load_module(dtype_file).graphs[f"g_{name}"].run({"x": x, "a": a, "out": ref})   # Python runtime
    np.testing.assert_array_equal(ref, want)
    np.testing.assert_array_equal(out["out"], want)


@pytest.mark.parametrize("name, value, code", [
    ("i8", 128, "KILN_ERR_SCALAR_RANGE"), ("i8", -129, "KILN_ERR_SCALAR_RANGE"),
    ("u8", -1, "KILN_ERR_SCALAR_RANGE"), ("u32", 2**32, "KILN_ERR_SCALAR_RANGE"),
    ("i64", 2**63, "KILN_ERR_SCALAR_RANGE"), ("u64", 2**64 - 1, "KILN_OK"),
    ("f16", 70000.0, "KILN_ERR_SCALAR_RANGE"), ("f32", 1e39, "KILN_ERR_SCALAR_RANGE"),
    ("f32", float("inf"), "KILN_OK"), ("i32", 1.5, "KILN_ERR_KIND"), ("f32", True, "KILN_ERR_KIND"),
    ("bool", 1, "KILN_ERR_KIND"), ("f64", 3, "KILN_OK"),
])
def test_scalar_checks_like_python(c_native: CRuntime, dtype_file: Path, name: str, value: Any, code: str,
                                   tmp_path: Path) -> None:
    np_dt = kl.types.SCALARS_BY_NAME[name].np_dtype
    x = np.zeros(3, np_dt)
    out = np.full(3, 1, np_dt)
    status, arrays = c_native.run(dtype_file, f"g_{name}", {"x": x, "a": value, "out": out}, tmp_path)
    got, message = _status(status)
    assert got == STATUS[code], status
    graph = kl.load_module(dtype_file).graphs[f"g_{name}"]
    if code == "KILN_OK":
        graph.run({"x": x, "a": value, "out": out})
        np.testing.assert_array_equal(arrays["out"], out)
        return
    with pytest.raises((kl.ArgumentError, kl.ArgumentValueError)) as e:
        graph.run({"x": x, "a": value, "out": out})
    np.testing.assert_array_equal(arrays["out"], np.full(3, 1, np_dt))      # untouched
    if code == "KILN_ERR_SCALAR_RANGE":
        assert message.split(":")[-1].split("(")[0] == str(e.value).split(":")[-1].split("(")[0]


@pytest.fixture(scope="module")
def heat_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kiln.cli.demo import build_graph
    return _save(build_graph(), tmp_path_factory.mktemp("heat") / "heat.kiln", _both_targets())


def _heat_args(h: int = 16, w: int = 12) -> dict[str, Any]:
    u = np.random.default_rng(3).random((h, w), dtype=np.float32)
    return {"u": u, "v": u.copy(), "alpha": 0.2, "energy": np.zeros(1)}


@pytest.mark.parametrize("change, code, fragment", [
    ({"v": np.zeros((16, 13), np.float32)}, "KILN_ERR_SHAPE",
     "argument 'v': dimension 1 is 13 but shape symbol 'w' is 12 from an earlier argument"),
    ({"energy": np.zeros(2)}, "KILN_ERR_SHAPE", "argument 'energy': dimension 0 must be 1, got shape (2,)"),
    ({"u": np.zeros((16, 12), np.float64)}, "KILN_ERR_DTYPE", "expected dtype f32, got f64"),
    ({"u": np.zeros(16, np.float32)}, "KILN_ERR_RANK", "expected a 2-D array, got 1-D with shape (16,)"),
    ({"alpha": np.zeros(1, np.float32)}, "KILN_ERR_KIND", "argument 'alpha'"),
    ({"u": 1.0}, "KILN_ERR_KIND", "argument 'u'"),
    ({"u": None}, "KILN_ERR_MISSING_ARGUMENT", "missing argument 'u'; expected u, v, alpha, energy"),
    ({"bogus": 1.0}, "KILN_ERR_UNKNOWN_ARGUMENT", "unknown argument 'bogus'; expected u, v, alpha, energy"),
    ({"v": "ro"}, "KILN_ERR_READ_ONLY", "array is read-only but the compiled code writes to it"),
    ({"v": "alias"}, "KILN_ERR_STRIDES", "strides make elements share memory"),
    ({"v": "misaligned"}, "KILN_ERR_ALIGNMENT", "not aligned"),
    ({"v": "null"}, "KILN_ERR_ALIGNMENT", "NULL"),
])
def test_argument_errors(crt: CRuntime, heat_file: Path, change: dict[str, Any], code: str, fragment: str,
                         tmp_path: Path) -> None:
    args = _heat_args()
    for k, v in change.items():
        if v is None:
            del args[k]
        elif isinstance(v, str):
            args[k] = CArray(args[k], v)
        else:
            args[k] = v
    before = {k: (v.array if isinstance(v, CArray) else v).copy() for k, v in args.items()
              if isinstance(v, (np.ndarray, CArray))}
    status, arrays = crt.run(heat_file, "main", args, tmp_path)
    got, message = _status(status)
    assert got == STATUS[code], status
    assert message.startswith("graph 'main': ") and fragment in message, message
    for k, arr in arrays.items():                       # nothing ran: every array as it was
        np.testing.assert_array_equal(arr, before[k])


def test_heat_demo_matches_python_runtime(crt: CRuntime, heat_file: Path, tmp_path: Path) -> None:
    args = _heat_args(40, 33)
    ref = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    kl.load(heat_file).run(ref)
    for threads in (1, 2):
        status, out = crt.run(heat_file, "main", args, tmp_path, threads=threads)
        assert status == "ok"
        np.testing.assert_allclose(out["u"], ref["u"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-9)


def test_fortran_order_arrays_run_in_place(crt: CRuntime, heat_file: Path, tmp_path: Path) -> None:
    """C callers pass any byte strides: u and v given in Fortran order (the driver's "strided"
    flag reads each buffer column-major) give the Python runtime's result on the same views."""
    args = _heat_args(16, 12)
    status, out = crt.run(heat_file, "main", {**args, "u": CArray(args["u"], "strided"),
                                              "v": CArray(args["v"], "strided")}, tmp_path)
    assert status == "ok"
    raw = {k: np.ascontiguousarray(args[k]).ravel().copy() for k in ("u", "v")}
    ref = {**args, **{k: raw[k].reshape(args[k].shape, order="F") for k in raw}}   # views of raw
    kl.load(heat_file).run(ref)
    for k, mem in raw.items():
        np.testing.assert_allclose(out[k].ravel(), mem, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-9)


# ------------------------------------------------------------------------------------------ damaged files

def _damaged_variants(good: bytes) -> dict[str, tuple[bytes, str, str]]:
    """name -> (file bytes, expected status, message fragment)."""
    c = container.unpack(good)
    manifest = {k: v for k, v in c.manifest.items() if k != "blobs"}
    blobs = {k: bytes(v) for k, v in c.blobs.items()}
    body_at = int(c.manifest["blobs"][0]["offset"])  # type: ignore[index]

    def repack(edit: Any) -> bytes:
        import copy
        doc = copy.deepcopy(manifest)
        new_blobs = dict(blobs)
        edit(doc, new_blobs)
        return container.pack(doc, new_blobs)

    def bad_dtype(doc: dict, _b: dict) -> None:
        doc["graphs"]["main"]["params"][0]["dtype"] = "f33"

    def bad_offset(doc: dict, _b: dict) -> None:
        doc["graphs"]["main"]["params"][1]["offset"] = 8

    def bad_kernel(doc: dict, _b: dict) -> None:
        doc["graphs"]["main"]["dispatches"][0]["kernel"] = "nope"

    def bad_entry(doc: dict, _b: dict) -> None:
        doc["graphs"]["main"]["entries"]["cpu"] = "not an identifier"

    def no_targets(doc: dict, _b: dict) -> None:
        doc["targets"] = []

    def missing_field(doc: dict, _b: dict) -> None:
        del doc["graphs"]["main"]["params"][2]["access"]

    def abi_shape(doc: dict, _b: dict) -> None:          # consistent, re-checksummed: only the ABI check sees it
        doc["graphs"]["wave"]["params"][0]["shape"] = [None]

    def abi_entry(doc: dict, _b: dict) -> None:          # the wave graph pointed at main's code
        doc["graphs"]["wave"]["entries"] = dict(doc["graphs"]["main"]["entries"])

    def wrong_machine(_d: dict, b: dict) -> None:          # valid checksums, refused by the ELF checks
        for name in ("cpu.o", "cpu.aarch64.o"):
            b[name] = b[name][:18] + (40).to_bytes(2, "little") + b[name][20:]   # EM_ARM

    def bad_external(_d: dict, b: dict) -> None:        # the "wave" graph calls sinf
        for name in ("cpu.o", "cpu.aarch64.o"):
            assert b"\0sinf\0" in b[name], name
            b[name] = b[name].replace(b"\0sinf\0", b"\0puts\0")

    flipped_manifest = bytearray(good)
    flipped_manifest[100] ^= 0x20
    flipped_blob = bytearray(good)
    flipped_blob[body_at + 200] ^= 0x01
    newer = bytearray(good)
    newer[8:10] = (container.FORMAT_MAJOR + 1).to_bytes(2, "little")
    older = bytearray(good)
    older[8:10] = (1).to_bytes(2, "little")
    return {
        "empty": (b"", "KILN_ERR_FORMAT", "file is empty"),
        "bad magic": (b"PK\3\4" + good[4:], "KILN_ERR_FORMAT", "not a kiln file (bad magic)"),
        "truncated header": (good[:40], "KILN_ERR_FORMAT", "truncated file"),
        "truncated": (good[:-50], "KILN_ERR_FORMAT", "truncated or corrupt file"),
        "newer major": (bytes(newer), "KILN_ERR_VERSION", "upgrade kiln to load it"),
        "older major": (bytes(older), "KILN_ERR_VERSION", "written by an older kiln; recompile it"),
        "manifest flip": (bytes(flipped_manifest), "KILN_ERR_FORMAT", "manifest checksum mismatch"),
        "blob flip": (bytes(flipped_blob), "KILN_ERR_FORMAT", "checksum mismatch in blob"),
        "bad dtype": (repack(bad_dtype), "KILN_ERR_FORMAT", "manifest: graphs.main.params[0].dtype: unknown dtype 'f33'"),
        "bad offset": (repack(bad_offset), "KILN_ERR_FORMAT", "manifest: graphs.main.params[1].offset: expected"),
        "unknown kernel": (repack(bad_kernel), "KILN_ERR_FORMAT", "dispatches[0].kernel: unknown kernel 'nope'"),
        "bad entry": (repack(bad_entry), "KILN_ERR_FORMAT", "entries.cpu: expected a symbol name"),
        "no targets": (repack(no_targets), "KILN_ERR_FORMAT", "the file holds no compiled target"),
        "missing field": (repack(missing_field), "KILN_ERR_FORMAT", "params[2].access: required field is missing"),
        "abi shape": (repack(abi_shape), "KILN_ERR_FORMAT", "graph 'wave': the manifest disagrees with the object's ABI"),
        "abi entry": (repack(abi_entry), "KILN_ERR_FORMAT", "graph 'wave': the manifest disagrees with the object's ABI"),
        "wrong machine": (repack(wrong_machine), "KILN_ERR_ELF", "ELF: e_machine is 40"),
        "bad external": (repack(bad_external), "KILN_ERR_ELF", "external symbol 'puts'"),
    }


@kl.kernel
def wave(x: kl.ndarray(kl.f32, ndim=1), y: kl.ndarray(kl.f32, ndim=1)):
    for i in range(x.shape[0]):
        y[i] = kl.sin(x[i])


def test_damaged_files(crt: CRuntime, tmp_path: Path) -> None:
    from kiln.cli.demo import build_graph
    m = kl.Module(targets=_both_targets())
    m.add_graph("main", build_graph())
    g = kl.GraphBuilder()
    g.dispatch(wave, kl.Arg("x", kl.ndarray(kl.f32, ndim=1)), kl.Arg("y", kl.ndarray(kl.f32, ndim=1)))
    m.add_graph("wave", g)
    good = _save(m, tmp_path / "good.kiln", []).read_bytes()
    for name, (data, code, fragment) in _damaged_variants(good).items():
        path = tmp_path / f"{name.replace(' ', '_')}.kiln"
        path.write_bytes(data)
        got, message = _status(crt.call("list", str(path)).strip().splitlines()[-1])
        assert got == STATUS[code], (name, message)
        assert message.startswith(f"{path}: ") and fragment in message, (name, message)
        if code != "KILN_ERR_ELF":   # the Python loader refuses it with the same words
            with pytest.raises(ArtifactError) as e:
                kl.load_module(path)
            assert str(e.value) == message, name
    got, message = _status(crt.call("list", str(tmp_path / "missing.kiln")).strip())
    assert got == STATUS["KILN_ERR_IO"] and "cannot read" in message


def test_header_check(c_native: CRuntime, heat_file: Path, tmp_path: Path) -> None:
    assert c_native.call("header", str(heat_file)).strip() == "ok"
    newer = bytearray(heat_file.read_bytes())
    newer[8:10] = (container.FORMAT_MAJOR + 1).to_bytes(2, "little")
    (tmp_path / "v3.kiln").write_bytes(bytes(newer))
    got, message = _status(c_native.call("header", str(tmp_path / "v3.kiln")).strip())
    assert got == STATUS["KILN_ERR_VERSION"] and f"format version {container.FORMAT_MAJOR + 1}.0 is newer" in message


# ------------------------------------------------------------------------------------------ tables

def test_c_allow_list_is_the_python_one() -> None:
    from kiln.runtime.elf import ALLOWED_EXTERNAL_SYMBOLS
    text = (C_DIR / "src" / "symbols.c").read_text()
    block = text[text.index("BEGIN ALLOWED_EXTERNAL_SYMBOLS"):text.index("END ALLOWED_EXTERNAL_SYMBOLS")]
    libm = re.findall(r'"([^"]*)"', block[block.index("LIBM_F64"):block.index("OTHERS")])
    others = re.findall(r'"([^"]*)"', block[block.index("OTHERS"):])
    assert set(libm) | {n + "f" for n in libm} | set(others) == ALLOWED_EXTERNAL_SYMBOLS


def test_c_feature_tables_are_the_python_ones() -> None:
    from kiln.runtime.hostcpu import AARCH64_FEATURE_FLAGS, X86_FEATURE_FLAGS
    text = (C_DIR / "src" / "hostcpu.c").read_text()
    tables = re.findall(r"BEGIN FEATURE_FLAGS(.*?)END FEATURE_FLAGS", text, re.DOTALL)
    assert len(tables) == 2
    for block, table in zip(tables, (X86_FEATURE_FLAGS, AARCH64_FEATURE_FLAGS)):
        pairs = re.findall(r'\{"([^"]+)", "([^"]+)"\}', block)
        assert {k: tuple(v.split()) for k, v in pairs} == table


def test_c_relocation_table_covers_the_contract() -> None:
    from kiln.codegen.target import CONTRACT_RELOCATION_TYPES
    text = (C_DIR / "src" / "elf.c").read_text()
    table = set(re.findall(r"\{(EM_X86_64|EM_AARCH64), (\d+), \"R_", text))
    have = {(62 if m == "EM_X86_64" else 183, int(t)) for m, t in table}
    for machine, types in CONTRACT_RELOCATION_TYPES.items():
        assert {(machine, t) for t in types} <= have


# ------------------------------------------------------------------------------------------ install, C++, example

@pytest.fixture(scope="module")
def installed(c_native: CRuntime, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (c_native.build / "CMakeCache.txt").exists():
        pytest.skip(f"cmake not found: install the Debian packages {NATIVE_PACKAGES}")
    prefix = tmp_path_factory.mktemp("prefix")
    _run(["cmake", "--install", str(c_native.build), "--prefix", str(prefix)])
    return prefix


def _pkg_config(prefix: Path, *flags: str) -> list[str]:
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config not found: install the Debian package pkgconf")
    libdir = next(p.parent for p in prefix.rglob("kiln.pc"))
    env = dict(os.environ, PKG_CONFIG_PATH=str(libdir))
    return _run(["pkg-config", *flags, "kiln"], env=env).stdout.split()


def test_install_layout(installed: Path) -> None:
    names = {p.name for p in installed.rglob("*")}
    assert {"kiln.h", "kiln.hpp", "kiln.pc", "libkiln.a", "libkiln.so", "kilnConfig.cmake"} <= names


def test_example_runs_the_demo_file(installed: Path, heat_file: Path, tmp_path: Path) -> None:
    """examples/c/heat.c, built as the README says (pkg-config), on the demo's saved file."""
    exe = tmp_path / "heat"
    _run(["gcc", "-std=c11", "-O2", "-Wall", "-Werror", "-D_POSIX_C_SOURCE=200809L",
          str(ROOT / "examples" / "c" / "heat.c"), *_pkg_config(installed, "--cflags", "--libs"), "-lm",
          "-o", str(exe)])
    libdir = next(p.parent for p in installed.rglob("libkiln.so"))
    out = _run([str(exe), str(heat_file), "2"], env=dict(os.environ, LD_LIBRARY_PATH=str(libdir))).stdout
    assert "kiln demo: OK" in out and "check    max |u - reference| = " in out, out
    static = tmp_path / "heat_static"
    _run(["gcc", "-std=c11", "-O2", "-D_POSIX_C_SOURCE=200809L", str(ROOT / "examples" / "c" / "heat.c"),
          *_pkg_config(installed, "--cflags"), str(libdir / "libkiln.a"), "-lm", "-ldl", "-lpthread",
          "-o", str(static)])
    assert "kiln demo: OK" in _run([str(static), str(heat_file), "1"]).stdout


CPP_PROGRAM = r"""
#include <cstdio>
#include <vector>
#include "kiln.hpp"

int main(int, char **argv) {
    kiln::Module m(argv[1]);
    kiln::Graph g = m.graph("main");
    std::vector<float> x(8, 1.0f), y(8, 2.0f);
    double out = 0;
    int64_t n = 8, one = 1;
    g.run({kiln_arg_f64("a", 3.0), kiln_arg_array_const("x", KILN_F32, x.data(), 1, &n),
           kiln_arg_array("y", KILN_F32, y.data(), 1, &n), kiln_arg_array("out", KILN_F64, &out, 1, &one)});
    std::printf("y0 %g out %g\n", y[0], out);
    try {
        g.run({kiln_arg_f64("a", 3.0)});
    } catch (const kiln::Error &e) {
        std::printf("caught %d %s\n", (int)e.code(), e.what());
    }
    try {
        kiln::Module bad(argv[0]);
    } catch (const kiln::Error &e) {
        std::printf("caught %d\n", (int)e.code());
    }
    kiln::Module moved = std::move(m);
    std::printf("graphs %zu arch %s\n", moved.graphs().size(), moved.arch());
    return 0;
}
"""


def test_cpp_header(installed: Path, saxpy_file: Path, tmp_path: Path) -> None:
    if shutil.which("g++") is None:
        pytest.skip(f"g++ not found: install the Debian packages {NATIVE_PACKAGES}")
    src = tmp_path / "t.cpp"
    src.write_text(CPP_PROGRAM)
    exe = tmp_path / "t"
    libdir = next(p.parent for p in installed.rglob("libkiln.so"))
    _run(["g++", "-std=c++11", "-Wall", "-Wextra", "-pedantic", "-Werror", str(src), *_pkg_config(installed, "--cflags", "--libs"),
          "-o", str(exe)])
    out = _run([str(exe), str(saxpy_file)], env=dict(os.environ, LD_LIBRARY_PATH=str(libdir))).stdout.splitlines()
    assert out[0] == "y0 5 out 40"
    assert out[1].startswith("caught 8 graph 'main': missing arguments 'x', 'y', 'out'")
    assert out[2] == "caught 3"                 # the executable itself is not a kiln file
    assert out[3] == f"graphs 1 arch {host_arch()}"


def test_cpu_features_checked_like_python(c_native: CRuntime, tmp_path: Path) -> None:
    """A file for this exact CPU loads; one needing a feature this CPU lacks is refused, in the
    Python loader's words."""
    from kiln.runtime.hostcpu import AARCH64_FEATURE_FLAGS, X86_FEATURE_FLAGS, missing_features
    host = _save(_saxpy_graph(), tmp_path / "host.kiln", ["host"])
    assert c_native.call("list", str(host)).splitlines()[-1] == "ok"
    table = X86_FEATURE_FLAGS if host_arch() == "x86_64" else AARCH64_FEATURE_FLAGS
    lacking = [f for f in table if missing_features("+" + f)]
    if not lacking:
        pytest.skip("this CPU has every feature kiln knows: nothing to refuse")
    c = container.unpack(host.read_bytes())
    doc = {k: v for k, v in c.manifest.items() if k != "blobs"}
    doc["targets"][0]["features"] += f",+{lacking[0]}"  # type: ignore[index]
    path = tmp_path / "needs.kiln"
    path.write_bytes(container.pack(doc, {k: bytes(v) for k, v in c.blobs.items()}))
    got, message = _status(c_native.call("list", str(path)).strip())
    assert got == STATUS["KILN_ERR_NO_TARGET"], message
    with pytest.raises(ArtifactError) as e:
        kl.load(path)
    assert message == str(e.value)


def test_example_under_qemu(c_aarch64: CRuntime, heat_file: Path, tmp_path: Path) -> None:
    """The same example, cross-built for aarch64 and run under qemu-user on the two-arch file."""
    exe = tmp_path / "heat_a64"
    _run(["aarch64-linux-gnu-gcc", "-std=c11", "-O2", "-Wall", "-Werror", "-D_POSIX_C_SOURCE=200809L",
          f"-I{C_DIR / 'include'}", str(ROOT / "examples" / "c" / "heat.c"), str(c_aarch64.build / "libkiln.a"),
          "-lm", "-ldl", "-lpthread", "-o", str(exe)])
    out = _run([*c_aarch64.prefix, str(exe), str(heat_file), "1"]).stdout
    assert "aarch64 code (generic)" in out and "kiln demo: OK" in out, out


def test_targets_one_per_architecture() -> None:
    from kiln.driver import resolve_targets
    from kiln.driver.compile import _cpu_targets, cpu_target_names
    assert resolve_targets("host", ["x86-64-v2", "cortex-a76", "cuda"]) == (("x86-64-v2", "cortex-a76"), True)
    assert resolve_targets("x86-64-v3", ["cpu", "aarch64"])[0] == ("x86-64-v3", "aarch64")
    assert resolve_targets("host", ["cuda"]) == ((), True)
    with pytest.raises(kl.TargetError, match="both aarch64 targets"):
        _cpu_targets(("aarch64", "neoverse-n1"))
    with pytest.raises(kl.TargetError, match="both aarch64 targets"):
        kl.Module(targets=["aarch64", "neoverse-n1"]).compile()
    with pytest.raises(kl.TargetError, match="unknown target 'arm7'"):
        _cpu_targets(("arm7",))
    assert cpu_target_names("x86_64") == ("cpu", "cpu.o")
    assert cpu_target_names("aarch64") == ("cpu.aarch64", "cpu.aarch64.o")
    from kiln.codegen.target import named_target
    spec = named_target("neoverse-n1")
    assert (spec.arch, spec.triple, spec.cpu) == ("aarch64", "aarch64-unknown-linux-gnu", "neoverse-n1")
    assert "+lse" in spec.features


def test_every_function_is_documented() -> None:
    header = (C_DIR / "include" / "kiln.h").read_text()
    names = set(re.findall(r"KILN_API [^;(]*?\b(kiln_\w+)\(", header))
    names |= set(re.findall(r"static inline kiln_arg (kiln_\w+)\(", header))
    assert len(names) >= 25
    doc = (ROOT / "docs" / "c-api.md").read_text()
    assert sorted(n for n in names if f"`{n}(" not in doc and f"{n}(" not in doc) == []


def _example(name: str) -> Any:
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"kiln_example_{name}", ROOT / "examples" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def example_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The Python examples' graphs (kl.func calls, atomics, u8 and i64 arrays) for both machines."""
    tmp = tmp_path_factory.mktemp("examples")
    return {name: _save(_example(name).build(), tmp / f"{name}.kiln", _both_targets())
            for name in ("particles", "image_filter")}


def test_example_graphs_match_python(crt: CRuntime, example_files: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 5000
    particles = {"x": rng.random(n, dtype=np.float32), "y": rng.random(n, dtype=np.float32),
                 "vx": rng.random(n, dtype=np.float32) - 0.5, "vy": rng.random(n, dtype=np.float32) - 0.5,
                 "dt": 1.0 / 600, "energy": np.zeros(1)}
    h, w = 60, 80
    image = rng.random((h, w), dtype=np.float32)
    filters = {"image": image, "tmp": np.zeros_like(image), "smooth": np.zeros_like(image),
               "mask": np.zeros((h, w), np.uint8), "threshold": 0.05, "edges": np.zeros(1, np.int64)}
    for name, args in (("particles", particles), ("image_filter", filters)):
        ref = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in args.items()}
        kl.load(example_files[name]).run(ref)
        status, out = crt.run(example_files[name], "main", args, tmp_path, threads=2)
        assert status == "ok", (name, status)
        for k, v in out.items():
            if v.dtype.kind == "f":    # FMA contraction and reduction order differ between machines
                np.testing.assert_allclose(v, ref[k], rtol=1e-5, atol=1e-6, err_msg=f"{name}.{k}")
            else:
                np.testing.assert_array_equal(v, ref[k], err_msg=f"{name}.{k}")


def test_mutated_objects_never_crash(crt: CRuntime, saxpy_file: Path, tmp_path: Path) -> None:
    """Hostile objects with valid container checksums: every truncation class and random byte
    flips of this machine's ELF blob are either loaded or refused, never a crash (the driver runs
    them all in one process; a segfault fails the test). Loaded mutants are not run."""
    import random
    c = container.unpack(saxpy_file.read_bytes())
    doc = {k: v for k, v in c.manifest.items() if k != "blobs"}
    blobs = {k: bytes(v) for k, v in c.blobs.items()}
    name = "cpu.o" if crt.arch == "x86_64" else "cpu.aarch64.o"
    blob = blobs[name]
    rng = random.Random(18)
    paths = []
    for i in range(300):
        b = bytearray(blob)
        if i < 60:
            b = b[:rng.randrange(len(b))]
        else:
            for _ in range(rng.choice((1, 2, 4))):
                pos = rng.randrange(64) if rng.random() < 0.2 else rng.randrange(len(b))
                b[pos] ^= rng.choice((0x01, 0x80, 0xFF, rng.randrange(1, 256)))
        path = tmp_path / f"m{i}.kiln"
        path.write_bytes(container.pack(doc, {**blobs, name: bytes(b)}))
        paths.append(str(path))
    out = crt.call("load", *paths).strip()
    loaded, refused = map(int, re.match(r"loaded (\d+) refused (\d+)", out).groups())  # type: ignore[union-attr]
    assert loaded + refused == 300 and refused >= 60, out
