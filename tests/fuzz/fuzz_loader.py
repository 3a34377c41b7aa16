"""Loader fuzz harness: mutate valid .kiln files and check that every load ends in ArtifactError
or in a successful load (and run, where the code and its ABI are unchanged).

    PYTHONPATH=$PWD python tests/fuzz/fuzz_loader.py --seed 1 --count 20000 [--out DIR]
        [--loader elf|mcjit]

Mutations (each case applies one, on a random file of a small corpus compiled at start-up):
- bytes: flips, random overwrites, truncation, insertion/deletion anywhere in the file (the
  checksums then mostly catch it);
- manifest: the JSON parsed, one node edited (type swapped, huge/negative/fractional numbers,
  10**400, key deleted or added, wrong nesting, empty values), re-serialised and re-checksummed
  (so the damage reaches the manifest reader, the cuda section reader and the linker);
- object: bytes of the ELF blob's structural parts (header, section table, symbols, strings,
  relocations) flipped or set to edge values, blob and manifest re-checksummed (so the damage
  reaches the ELF loader, or the MCJIT fallback with --loader mcjit);
- signature: signed files with flipped bytes loaded with trusted_keys.

Each file is loaded for the CPU (kiln.runtime.compiled.load_bytes) and, when it has a cuda
section, parsed for the GPU (kiln.runtime.cuda.load_bytes, no driver needed). Outcomes are
counted by kind; an exception other than ArtifactError is an "escape", counted by type and
innermost kiln source line, and its file saved to --out for a reproducer. Exit status 1 if any
escape happened. A crash (segfault) kills the process: run it under a supervisor (the pytest
wrapper in tests/test_fuzz_loader.py runs it in a subprocess).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

import kiln as kl
from kiln.types import SCALARS_BY_NAME

Doc = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------


@kl.kernel
def axpb(x: kl.ndarray(kl.f32, ndim=1), a: kl.f32, b: kl.f32):
    for i in range(x.shape[0]):
        x[i] = kl.sin(a * x[i]) + b


@kl.kernel
def mix(img: kl.ndarray(kl.u8, ndim=2), out: kl.ndarray(kl.i32, ndim=2), k: kl.i16):
    for i, j in kl.ndrange(img.shape[0], img.shape[1]):
        out[i, j] = kl.i32(img[i, j]) * kl.i32(k) // 3


@kl.kernel
def total(x: kl.ndarray(kl.f64, ndim=1), acc: kl.ndarray(kl.f64, ndim=1)):
    for i in range(x.shape[0]):
        acc[0] += x[i]


def build_corpus() -> dict[str, bytes]:
    """A few valid files: scalars and arrays of several dtypes, constants, shape constraints,
    exported kernels, an atomic reduction, and one file with a cuda target (PTX only)."""
    g = kl.GraphBuilder()
    x = kl.Arg("x", kl.ndarray(kl.f32, ndim=1), shape=("n",))
    g.dispatch(axpb, x, 2.0, 1.0)
    g.dispatch(axpb, x, kl.Arg("a", kl.f32), 0.5)
    m = kl.Module(target="x86-64-v2")
    m.add_graph("main", g)
    h = kl.GraphBuilder()
    h.dispatch(mix, kl.Arg("img", kl.ndarray(kl.u8, ndim=2), shape=("h", "w")),
               kl.Arg("out", kl.ndarray(kl.i32, ndim=2), shape=("h", "w")), kl.Arg("k", kl.i16))
    h.dispatch(total, kl.Arg("x", kl.ndarray(kl.f64, ndim=1), shape=(None,)),
               kl.Arg("acc", kl.ndarray(kl.f64, ndim=1), shape=(1,)))
    m.add_graph("other", h)
    m.add_kernel(total, kl.ndarray(kl.f64, ndim=1), kl.ndarray(kl.f64, ndim=1), name="total")
    corpus = {"two_graphs": m.compile().to_bytes()}
    c = kl.GraphBuilder()
    c.dispatch(axpb, kl.Arg("x", kl.ndarray(kl.f32, ndim=1)), kl.Arg("a", kl.f32), 0.25)
    try:
        from kiln.driver import compile_program
        mc = kl.Module(target="x86-64-v2", targets=["cpu", "cuda"], cuda_archs=[])
        mc.add_graph("main", c)
        corpus["with_cuda"] = compile_program(mc.compile_request())
    except Exception as e:  # noqa: BLE001 - a corpus without CUDA is still useful
        print(f"(no cuda file in the corpus: {type(e).__name__}: {e})", file=sys.stderr)
    return corpus


def sign_corpus(corpus: dict[str, bytes]) -> tuple[dict[str, bytes], list[bytes]]:
    """Signed copies of the corpus and the trusted public key (empty if cryptography is absent)."""
    try:
        from kiln.signing import generate_key, sign_bytes
        keys = generate_key()
    except Exception:  # noqa: BLE001 - cryptography not installed
        return {}, []
    return {f"{k}_signed": sign_bytes(v, keys.private) for k, v in corpus.items()}, [keys.public]


# ---------------------------------------------------------------------------------------------
# File surgery
# ---------------------------------------------------------------------------------------------


def split(data: bytes) -> tuple[Doc, dict[str, bytes]]:
    m_len = struct.unpack_from("<Q", data, 24)[0]
    doc = json.loads(data[64:64 + m_len])
    blobs = {e["name"]: data[e["offset"]:e["offset"] + e["size"]] for e in doc.pop("blobs")}
    return doc, blobs


def rebuild(doc: Any, blobs: dict[str, bytes]) -> bytes:
    """Serialise with every checksum recomputed (pack fills the blob table)."""
    from kiln.artifact import container
    if not isinstance(doc, dict):
        doc = {"not an object": doc}
    return container.pack(doc, blobs)


EDGE_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, 10**400, -10**400]


def _replacements(rng: random.Random, value: Any) -> list[Any]:
    """Values of a wrong type, size or shape for `value`."""
    out: list[Any] = [None, True, False, 0, -1, 1.5, float(rng.choice([1e308, -1e308, 5e-324])), "",
                      "x" * rng.randint(1, 5), [], {}, [value], {"k": value}, rng.choice(EDGE_INTS)]
    if isinstance(value, bool):
        out += [1, "true"]
    elif isinstance(value, int):
        out += [str(value), float(value), -value - 1, value + rng.choice([1, 2**32, 10**400]),
                rng.choice(EDGE_INTS)]
    elif isinstance(value, float):
        out += [int(value) if abs(value) < 1e300 else 0, str(value), rng.choice(EDGE_INTS)]
    elif isinstance(value, str):
        out += [value.upper(), value + "x", value[:-1], "\u0000" + value, "../" + value, "f33", "i64",
                "ndarray", "scalar", "read", "write", "readwrite", "cuda", "cpu", value * 2]
    elif isinstance(value, list):
        out += [value[:-1], value + value[-1:], value[::-1], [[v] for v in value], dict(enumerate(value))]
    elif isinstance(value, dict):
        out += [list(value.values()), list(value.items()), {k: None for k in value}]
    return out


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every node below the root."""
    out: list[tuple[Any, ...]] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        out.append(path + (k,))
        out += _nodes(v, path + (k,))
    return out


def edit_manifest(rng: random.Random, doc: Doc) -> str:
    """One random edit of the manifest document, in place; returns its description."""
    paths = _nodes(doc)
    path = rng.choice(paths)
    parent: Any = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    value = parent[key]
    op = rng.random()
    if op < 0.15 and isinstance(parent, dict):
        del parent[key]
        return f"delete {path}"
    if op < 0.22 and isinstance(parent, dict):
        parent[rng.choice(["extra", "blobs", "cuda", "shape", "arg", "const", str(key) + "_"])] = value
        return f"add key beside {path}"
    if op < 0.28 and isinstance(parent, list):
        parent.append(value if rng.random() < 0.5 else rng.choice(_replacements(rng, value)))
        return f"append to {path[:-1]}"
    if op < 0.32 and isinstance(parent, dict) and isinstance(key, str):
        parent[key + rng.choice(["", "x"])] = parent.pop(key)
        return f"rename {path}"
    new = rng.choice(_replacements(rng, value))
    parent[key] = new
    return f"set {path} = {str(new)[:40]}"


def _elf_regions(blob: bytes, strings_only: bool = False) -> list[tuple[int, int]]:
    """[start, end) ranges of the object's structural bytes (as far as they can be read); with
    `strings_only`, its string tables alone."""
    regions = [] if strings_only else [(0, 64)]
    try:
        e_shoff = struct.unpack_from("<Q", blob, 0x28)[0]
        e_shnum = struct.unpack_from("<H", blob, 0x3C)[0]
        if not strings_only:
            regions.append((e_shoff, e_shoff + 64 * e_shnum))
        for i in range(e_shnum):
            _n, typ, _f, _a, off, size = struct.unpack_from("<IIQQQQ", blob, e_shoff + 64 * i)
            if typ in ((3,) if strings_only else (2, 3, 4)):
                regions.append((off, off + size))
    except struct.error:
        pass
    return [(a, min(b, len(blob))) for a, b in regions if a < min(b, len(blob))]


def mutate_object(rng: random.Random, blob: bytes, strings_only: bool = False) -> tuple[bytes, str]:
    b = bytearray(blob)
    regions = _elf_regions(blob, strings_only)
    for _ in range(rng.choice([1, 1, 1, 2, 4])):
        a, e = rng.choice(regions)
        pos = rng.randrange(a, e)
        r = rng.random()
        if r < 0.5:
            b[pos] ^= 1 << rng.randrange(8)
        elif r < 0.8:
            width = rng.choice([1, 2, 4, 8])
            val = rng.choice([0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, (1 << 64) - 1, 1 << 63, 0x7FFFFFFF, 24, 64])
            b[pos:pos + width] = (val & ((1 << (8 * width)) - 1)).to_bytes(width, "little")[:len(b) - pos]
        else:
            b[pos] = rng.randrange(256)
    return bytes(b[:len(blob)]), f"object bytes in {regions[:1]}..."


def mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    b = bytearray(data)
    r = rng.random()
    if r < 0.3:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b), "bit flips"
    if r < 0.5:
        cut = rng.randrange(len(b))
        return bytes(b[:cut]), f"truncate at {cut}"
    if r < 0.65:
        pos = rng.randrange(len(b))
        return bytes(b[:pos] + rng.randbytes(rng.randint(1, 16)) + b[pos:]), f"insert at {pos}"
    if r < 0.8:
        pos = rng.randrange(len(b))
        return bytes(b[:pos] + b[pos + rng.randint(1, 16):]), f"delete at {pos}"
    pos = rng.randrange(64)           # the header
    b[pos:pos + 8] = rng.randbytes(8)
    return bytes(b[:len(data)]), f"header bytes at {pos}"


# ---------------------------------------------------------------------------------------------
# Running one case
# ---------------------------------------------------------------------------------------------


def _kiln_frame(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.sep + "kiln" + os.sep in f.filename]
    if not frames:
        return "?"
    f = frames[-1]
    return f"{f.filename.split(os.sep + 'kiln' + os.sep, 1)[1]}:{f.lineno}"


def _args_for(params: Any, rng: random.Random) -> dict[str, Any]:
    """Arguments matching the declared parameters (sizes honouring the shape constraints)."""
    sizes: dict[str, int] = {}
    args: dict[str, Any] = {}
    for p in params:
        lay = p.layout
        dtype = SCALARS_BY_NAME[lay.dtype].np_dtype
        if lay.kind == "scalar":
            args[lay.name] = dtype.type(1)
            continue
        shape = []
        for d in (p.shape or (None,) * lay.ndim):
            if isinstance(d, int):
                shape.append(d)
            elif isinstance(d, str):
                shape.append(sizes.setdefault(d, rng.randint(1, 9)))
            else:
                shape.append(rng.randint(1, 9))
        args[lay.name] = np.ones(shape, dtype)
    return args


def try_load(data: bytes, runnable: bool, rng: random.Random, loader: str,
             trusted: list[bytes] | None) -> str:
    """'refused', 'loaded' or 'ran'; raises whatever escaped."""
    from kiln.errors import ArtifactError, CudaError
    from kiln.runtime import compiled
    os.environ["KILN_LOADER"] = loader
    try:
        module = compiled.load_bytes(data, trusted_keys=trusted)
    except ArtifactError:
        outcome = "refused"
    else:
        outcome = "loaded"
        if runnable:
            for g in module.graphs.values():
                g.run(_args_for(g.info.params, rng))
            for k in module.kernels.values():
                k.run(_args_for(k.info.params, rng))
            outcome = "ran"
        del module
    if b'"cuda":{' in data[:1 << 16]:
        from kiln.runtime import cuda
        try:
            cuda.load_bytes(data)
        except ArtifactError:
            pass
        except CudaError as e:          # the right answer for a file without a cuda target
            if "has no cuda target" not in str(e):
                raise
    return outcome


def same_abi(case: bytes, data: bytes) -> bool:
    """Whether a mutated file declares the same code and ABI as the original: only such files
    are run (a consistent manifest edit can disagree with the code, and binding the manifest to
    the code is future work), and never files whose object changed (their code is arbitrary)."""
    from kiln.artifact.container import unpack
    from kiln.artifact.manifest import Manifest
    try:
        a, b = unpack(case), unpack(data)
        ma = Manifest.from_json(a.manifest, set(a.blobs))
        mb = Manifest.from_json(b.manifest, set(b.blobs))
    except Exception:  # noqa: BLE001 - not loadable: nothing to run
        return False
    blobs_a = {n: bytes(v) for n, v in a.blobs.items()}
    blobs_b = {n: bytes(v) for n, v in b.blobs.items()}
    return (ma.kernels == mb.kernels and ma.graphs == mb.graphs and ma.targets == mb.targets
            and ma.exported_kernels == mb.exported_kernels and blobs_a == blobs_b)


class Stats:
    def __init__(self) -> None:
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.by_mutation: collections.Counter[str] = collections.Counter()
        self.escapes: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}

    def as_json(self) -> dict[str, Any]:
        return {"files": sum(self.outcomes.values()), "outcomes": dict(self.outcomes),
                "mutations": dict(self.by_mutation), "escapes": dict(self.escapes),
                "examples": self.examples}


def run(seed: int, count: int, out_dir: str | None = None, loader: str = "elf",
        log: Callable[[str], None] = print, save_current: bool = False, fork: bool = False,
        strings_only: bool = False) -> Stats:
    rng = random.Random(seed)
    corpus = build_corpus()
    signed, trusted = sign_corpus(corpus)
    stats = Stats()
    names = sorted(corpus)
    for i in range(count):
        name = rng.choice(names)
        data = corpus[name]
        kind = "object" if strings_only else rng.choices(["bytes", "manifest", "object", "signature"], [2, 5, 4, 1])[0]
        runnable, keys = False, None
        if kind == "bytes":
            case, what = mutate_bytes(rng, data)
        elif kind == "manifest":
            doc, blobs = split(data)
            what = edit_manifest(rng, doc)
            case = rebuild(doc, blobs)
            runnable = same_abi(case, data)
        elif kind == "object":
            doc, blobs = split(data)
            obj_name = next(n for n in blobs if n.endswith(".o"))
            blobs[obj_name], what = mutate_object(rng, blobs[obj_name], strings_only)
            case = rebuild(doc, blobs)
        else:
            if not signed:
                continue
            case, what = mutate_bytes(rng, signed[name + "_signed"])
            keys = trusted
        stats.by_mutation[kind] += 1
        if (i + 1) % 500 == 0:      # partial counts survive an interrupted long run
            log(f"progress {json.dumps({'files': i + 1, 'outcomes': dict(stats.outcomes)})}")
        if out_dir and save_current:    # what to reproduce if this case kills the process
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "current.kiln"), "wb") as f:
                f.write(case)
        try:
            if fork:
                outcome = _in_child(case, runnable, random.Random(rng.random()), loader, keys)
            else:
                outcome = try_load(case, runnable, rng, loader, keys)
        except Exception as e:  # noqa: BLE001 - this is what the harness looks for
            where = e.where if isinstance(e, _ChildEscape) else _kiln_frame(e)
            sig = f"{type(e).__name__ if not isinstance(e, _ChildEscape) else e.kind} at {where}"
            stats.escapes[sig] += 1
            stats.outcomes["escaped"] += 1
            if sig not in stats.examples:
                stats.examples[sig] = f"case {i} ({name}, {kind}: {what}): {str(e)[:200]}"
                log(f"ESCAPE {sig}: {stats.examples[sig]}")
                if out_dir:
                    os.makedirs(out_dir, exist_ok=True)
                    fname = sig.replace(" ", "_").replace("/", "_").replace(":", "_")
                    with open(os.path.join(out_dir, fname + ".kiln"), "wb") as f:
                        f.write(case)
            continue
        stats.outcomes[outcome] += 1
        if outcome.startswith("crashed") and out_dir:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, f"crash_{i}.kiln"), "wb") as f:
                f.write(case)
    return stats


class _ChildEscape(Exception):
    def __init__(self, kind: str, where: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.where = kind, where


def _in_child(case: bytes, runnable: bool, rng: random.Random, loader: str,
              keys: list[bytes] | None) -> str:
    """try_load in a forked child, so that a crash (LLVM's RuntimeDyld aborts on some objects)
    is counted as 'crashed (signal N)' instead of ending the run."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            result = {"outcome": try_load(case, runnable, rng, loader, keys)}
        except Exception as e:  # noqa: BLE001 - reported to the parent
            result = {"kind": type(e).__name__, "where": _kiln_frame(e), "message": str(e)[:200]}
        os.write(write_fd, json.dumps(result).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) or not data:
        return f"crashed (signal {os.WTERMSIG(status) if os.WIFSIGNALED(status) else '?'})"
    result = json.loads(data)
    if "outcome" in result:
        return str(result["outcome"])
    raise _ChildEscape(result["kind"], result["where"], result["message"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--out", default=None, help="folder for reproducer files of escapes")
    ap.add_argument("--loader", choices=["elf", "mcjit"], default="elf")
    ap.add_argument("--save-current", action="store_true",
                    help="write each case to OUT/current.kiln before loading it (to reproduce a crash)")
    ap.add_argument("--fork", action="store_true",
                    help="load each case in a forked child: count crashes instead of stopping")
    ap.add_argument("--strings", action="store_true",
                    help="mutate only the objects' string tables (symbol and section names)")
    args = ap.parse_args(argv)
    stats = run(args.seed, args.count, args.out, args.loader, log=lambda s: print(s, file=sys.stderr),
                save_current=args.save_current, fork=args.fork, strings_only=args.strings)
    print(json.dumps(stats.as_json()))
    return 1 if stats.escapes or any(k.startswith("crashed") for k in stats.outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
