"""Fast runs of the fuzz harnesses in tests/fuzz/ (long runs: the scripts, with a seed and a count),
and regression tests for what they found."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "fuzz"))

import fuzz_binder
import fuzz_loader

from kiln.errors import ArgumentValueError, ArtifactError

_corpus = functools.lru_cache(maxsize=1)(fuzz_loader.build_corpus)


def _script(name: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-W", "ignore", os.path.join(REPO, "tests", "fuzz", name), *args],
                          capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode in (0, 1), f"crashed ({proc.returncode}): {proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_loader_fuzz_fast() -> None:
    """A few hundred mutated files (in a subprocess: a crash fails the test): each one is refused
    with ArtifactError or loads (and runs, where its code and ABI are the original's)."""
    stats = _script("fuzz_loader.py", "--seed", "11", "--count", "300")
    assert stats["escapes"] == {}, stats["examples"]
    assert stats["outcomes"]["refused"] > 100 and stats["outcomes"].get("ran", 0) > 5, stats


def test_binder_fuzz_fast() -> None:
    stats = fuzz_binder.run(seed=5, count=400, log=lambda s: None)
    assert stats.half_written == 0
    assert stats.escapes == {}, stats.examples
    assert stats.outcomes["ArgumentError"] > 100 and stats.outcomes["ran"] > 10


def test_mutators_keep_checksums_valid() -> None:
    """Manifest and object mutations are re-checksummed, so they reach the readers behind the
    container (what makes the fuzzer useful)."""
    import random

    from kiln.artifact import container
    corpus = _corpus()
    rng = random.Random(3)
    data = corpus["two_graphs"]
    for _ in range(30):
        doc, blobs = fuzz_loader.split(data)
        fuzz_loader.edit_manifest(rng, doc)
        case = fuzz_loader.rebuild(doc, blobs)
        try:
            container.unpack(case)
        except ArtifactError as e:
            assert "checksum" not in str(e)


# ---------------------------------------------------------------------------------------------
# What the loader and binder fuzz runs found (fixed: typed errors now)
# ---------------------------------------------------------------------------------------------


def _cuda_file() -> bytes:
    corpus = _corpus()
    if "with_cuda" not in corpus:
        pytest.skip("cannot build a cuda file here")
    return corpus["with_cuda"]


def _edited(data: bytes, edit) -> bytes:
    doc, blobs = fuzz_loader.split(data)
    edit(doc)
    return fuzz_loader.rebuild(doc, blobs)


CUDA_EDITS = [
    pytest.param(lambda d: d["cuda"].__setitem__("cubins", -1), id="cubins-int"),
    pytest.param(lambda d: d["cuda"].__setitem__("cubins", "xx"), id="cubins-str"),
    pytest.param(lambda d: d["cuda"].__setitem__("block_size", []), id="block_size-list"),
    pytest.param(lambda d: d["cuda"].__setitem__("block_size", "x"), id="block_size-str"),
    pytest.param(lambda d: d["cuda"].__setitem__("block_size", {"k": 256}), id="block_size-dict"),
    pytest.param(lambda d: d["cuda"].__setitem__("ptx", {"k": "cuda.ptx"}), id="ptx-dict"),
    pytest.param(lambda d: d["graphs"]["main"]["dispatches"][0]["bindings"][2].__setitem__("const", 1e308),
                 id="f32-const-1e308"),
]


@pytest.mark.parametrize("edit", CUDA_EDITS)
def test_cuda_section_errors_are_artifact_errors(edit) -> None:
    from kiln.runtime import cuda
    with pytest.raises(ArtifactError):
        cuda.load_bytes(_edited(_cuda_file(), edit))


def test_exported_kernels_of_wrong_type() -> None:
    from kiln.runtime.compiled import load_bytes
    data = _corpus()["two_graphs"]
    with pytest.raises(ArtifactError):
        load_bytes(_edited(data, lambda d: d.__setitem__("exported_kernels", {"k": {}})))


@pytest.mark.parametrize("value", [10**400, -(10**39), 1e39, True])
def test_constant_outside_its_dtype_refused(value) -> None:
    """A constant binding is checked against its dtype when the manifest is read (a huge int
    for a float constant used to raise OverflowError; the loader fuzz, seed 20001, case 114)."""
    from kiln.runtime.compiled import load_bytes

    def edit(doc: dict) -> None:
        const = next(b for b in doc["graphs"]["main"]["dispatches"][0]["bindings"] if "const" in b)
        assert const["dtype"] == "f32"
        const["const"] = value
    with pytest.raises(ArtifactError, match="out of range for f32|expected a f32 value"):
        load_bytes(_edited(_corpus()["two_graphs"], edit))


@pytest.fixture(scope="module")
def binder_graph():
    return fuzz_binder.build()[0]


def _binder_args(**kw: object) -> dict:
    args = fuzz_binder.valid_args(__import__("random").Random(0))
    args.update(kw)
    return args


@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024])
def test_huge_int_for_float_param(binder_graph, value) -> None:
    with pytest.raises(ArgumentValueError):
        binder_graph.run(_binder_args(e_f32=value))


def test_longdouble_beyond_f64(binder_graph) -> None:
    with pytest.raises(ArgumentValueError):
        binder_graph.run(_binder_args(g_f64=np.longdouble("1e4000")))


# ---------------------------------------------------------------------------------------------
# What the MCJIT fuzz run found (fixed: refused before LLVM sees them)
# ---------------------------------------------------------------------------------------------


def _pc32_entry(blob: bytes) -> tuple[int, int, int]:
    """(file offset of a PC32 relocation entry against a defined symbol, its r_offset, the file
    offset of the relocated section)."""
    from kiln.runtime import elf
    info = elf.inspect_elf_object(blob)
    for r, target in info.relocs:
        for j, (off, rinfo, _add) in enumerate(elf._relocation_entries(blob, r).tolist()):
            if rinfo & 0xFFFFFFFF == 2 and info.symbols[rinfo >> 32].shndx not in (0, elf.SHN_ABS):
                return r.offset + 24 * j, off, info.sections[target].offset
    raise AssertionError("no PC32 relocation")


def _mcjit_in_child(blob: bytes) -> str:
    """Load with MCJIT in a subprocess (an LLVM assertion would kill pytest)."""
    code = ("import sys; from kiln.runtime.mcjit import load_mcjit_object; from kiln.errors import "
            "ArtifactError\ntry:\n    load_mcjit_object(sys.stdin.buffer.read()); print('loaded')\n"
            "except ArtifactError as e:\n    print('refused:', e)")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.decode().strip()


def test_mcjit_pc32_placeholder_and_null_symbol_refused() -> None:
    """RuntimeDyld adds the bytes already at a PC32 place to the addend, and relocates against the
    null symbol as address 0: both used to abort the process with an LLVM assertion."""
    import struct

    from kiln.runtime.elf import load_elf_object
    _doc, blobs = fuzz_loader.split(_corpus()["two_graphs"])
    blob = blobs["cpu.o"]
    entry, r_offset, section = _pc32_entry(blob)
    placeholder = bytearray(blob)
    struct.pack_into("<i", placeholder, section + r_offset, 0x7FFFFF00)
    assert "cannot reach" in _mcjit_in_child(bytes(placeholder))
    load_elf_object(bytes(placeholder)).close()        # kiln's loader writes the whole field
    null = bytearray(blob)
    struct.pack_into("<I", null, entry + 12, 0)           # r_info's symbol index -> 0
    assert "unnamed symbol" in _mcjit_in_child(bytes(null))     # the null symbol has no name
    with pytest.raises(ArtifactError, match="undefined"):
        load_elf_object(bytes(null))


def test_mcjit_symbol_edits_refused() -> None:
    """A relocated symbol moved into an unallocated section, or stripped of its name, made
    RuntimeDyld abort (out-of-reach PC32); both are refused before LLVM sees the object."""
    import struct

    from kiln.runtime import elf
    _doc, blobs = fuzz_loader.split(_corpus()["two_graphs"])
    blob = blobs["cpu.o"]
    info = elf.inspect_elf_object(blob)
    symtab = next(s for s in info.sections if s.type == elf.SHT_SYMTAB)
    local = next(s for s in info.symbols if s.name.startswith(".LCPI"))
    entry = symtab.offset + 24 * local.index
    moved = bytearray(blob)
    struct.pack_into("<H", moved, entry + 6, symtab.index)      # st_shndx -> .symtab
    assert "not allocatable" in _mcjit_in_child(bytes(moved))
    unnamed = bytearray(blob)
    struct.pack_into("<I", unnamed, entry, 0)                   # st_name -> ""
    assert "unnamed symbol" in _mcjit_in_child(bytes(unnamed))


def test_mcjit_name_emptied_in_the_string_table_refused() -> None:
    """A one-byte edit of the string table that turns a relocated local symbol's name into ""
    (st_name still non-zero) made RuntimeDyld resolve it by that empty name, to address 0, and
    abort the process (`isInt<32>(RealOffset)`): 12 of 1,500 string-table mutations did. The
    strict inspection refuses it; kiln's own loader, which resolves locals by index, loads it."""
    from kiln.runtime import elf
    _doc, blobs = fuzz_loader.split(_corpus()["two_graphs"])
    blob = blobs["cpu.o"]
    info = elf.inspect_elf_object(blob)
    symtab = next(s for s in info.sections if s.type == elf.SHT_SYMTAB)
    strtab = info.sections[symtab.link]
    relocated = {int(i) >> 32 for r, _t in info.relocs for _o, i, _a in elf._relocation_entries(blob, r).tolist()}
    local = next(s for s in info.symbols if s.name.startswith(".LCPI") and s.index in relocated)
    st_name = int.from_bytes(blob[symtab.offset + 24 * local.index:][:4], "little")
    emptied = bytearray(blob)
    emptied[strtab.offset + st_name] = 0                         # ".LCPI14_0" -> ""
    assert "unnamed symbol" in _mcjit_in_child(bytes(emptied))
    elf.load_elf_object(bytes(emptied)).close()


@pytest.mark.parametrize("value", [1e39, -1e39, float("inf"), float("nan")])
def test_float_constant_beyond_its_type_refused_when_compiling(value: float) -> None:
    """The loader refuses a constant binding outside its dtype (the f32-const-1e308 edit above),
    so the compiler refuses to write one, with the binder's error for the same value."""
    import kiln as kl
    g = kl.GraphBuilder()
    g.dispatch(fuzz_loader.axpb, kl.Arg("x", kl.ndarray(kl.f32, ndim=1)), value, 1.0)
    with pytest.raises(ArgumentValueError, match="out of range for f32"):
        g.compile()
