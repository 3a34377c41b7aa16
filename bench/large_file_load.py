"""Time and peak memory of loading a large (~50 MiB) .kiln file, container and ELF loader apart.

The file holds one object with a big constant table (.rodata, copied into the image) and a
function with many call sites and constant loads (hundreds of thousands of relocations), the two
things that grow with program size. The object is generated once with llvmlite and cached.

    PYTHONPATH=$PWD python bench/large_file_load.py [--calls N] [--rodata-mib M]

Each measurement runs in a fresh child process (peak RSS from /proc/self/status VmHWM).
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, time
def peak_mib():   # VmHWM: this process's peak RSS (ru_maxrss would include the parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from kiln.artifact import container
from kiln.runtime.elf import load_elf_object
path, what = sys.argv[1], sys.argv[2]
base = peak_mib()
t0 = time.perf_counter()
data = container.read_bytes(path)
c = container.unpack(data, source=path)
t1 = time.perf_counter()
if what == "load":
    obj = load_elf_object(c.blobs["cpu.o"])
t2 = time.perf_counter()
peak = peak_mib()
print(f"{len(data) / 2**20:.1f} MiB file: read+unpack {t1 - t0:.3f} s, ELF load {t2 - t1:.3f} s, "
      f"peak RSS above start {peak - base:.0f} MiB")
"""


def big_object(calls: int, rodata_mib: int) -> bytes:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    table = bytes((k * 2654435761 >> 13) & 0xFF for k in range(rodata_mib << 20))
    lines = ["declare float @sinf(float)",
             f"@table = internal constant [{len(table)} x i8] c\"" + "".join(f"\\{b:02X}" for b in table) + "\"",
             "@kiln_rt_num_threads = global i32 1"]
    per_function = 500
    for f in range(max(1, calls // per_function)):
        lines.append(f"define float @kiln_kernel_big{f}(float %x0) {{")
        for k in range(per_function):
            const = struct.unpack("<Q", struct.pack("<d", 1.0 + (f * per_function + k) / 2**24))[0]
            const &= ~0x1FFFFFFF       # exactly representable as f32
            lines.append(f"  %s{k} = call float @sinf(float %x{k})")
            lines.append(f"  %x{k + 1} = fmul float %s{k}, 0x{const:016X}")
        lines += [f"  ret float %x{per_function}", "}"]
    lines.append("define ptr @kiln_kernel_table() { ret ptr @table }")
    mod = llvm.parse_assembly("\n".join(lines))
    tm = llvm.Target.from_default_triple().create_target_machine(opt=0, reloc="pic", codemodel="small")
    mod.triple = tm.triple
    return tm.emit_object(mod)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300_000)
    ap.add_argument("--rodata-mib", type=int, default=24)
    args = ap.parse_args()
    cache = os.path.join(tempfile.gettempdir(), f"kiln_big_{args.calls}_{args.rodata_mib}.kiln")
    if not os.path.exists(cache):
        from kiln.artifact import container
        obj = big_object(args.calls, args.rodata_mib)
        doc = {"format": "kiln", "note": "loader benchmark: not a runnable module"}
        container.write_bytes(cache, container.pack(doc, {"cpu.o": obj}))
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    for what in ("unpack", "load"):
        out = subprocess.run([sys.executable, "-c", CHILD, cache, what], env=env, text=True,
                             capture_output=True, check=False)
        print(f"{what:7s}", (out.stdout + out.stderr).strip())


if __name__ == "__main__":
    main()
