"""One cold start, run as a fresh process by bench/run.py: `python cold.py PEER`.

Loads the 10-kernel chain (bench/coldstart/chain_*.py, or the saved .kiln graph) from the peer's
warm cache, runs it once on 16 zeros and prints `RESULT <sum> <llvmlite-imported> <numba-imported>`.
Cache locations come from the environment set by run.py (BENCH_CACHE, NUMBA_CACHE_DIR,
WARP_CACHE_PATH).
"""

import os
import sys


def main() -> None:
    peer = sys.argv[1]
    cache = os.environ["BENCH_CACHE"]
    import numpy as np

    y = np.zeros(16, dtype=np.float32)
    if peer in ("kiln", "kiln-mcjit"):
        if peer == "kiln-mcjit":
            os.environ["KILN_LOADER"] = "mcjit"
        import time

        import kiln as kl
        import kiln.runtime.compiled

        t0 = time.perf_counter()
        graph = kl.load(os.path.join(cache, "chain10.kiln"))
        print("LOAD", repr(1e3 * (time.perf_counter() - t0)), flush=True)
        graph.run({"y": y})
    elif peer == "taichi":
        import taichi as ti

        ti.init(arch=ti.cpu, offline_cache=True, offline_cache_file_path=os.path.join(cache, "taichi"),
                log_level=ti.ERROR, cpu_max_num_threads=os.cpu_count())
        import chain_taichi

        chain_taichi.run_chain(y)
        ti.sync()
    elif peer == "warp":
        import warp as wp

        wp.config.log_level = wp.LOG_WARNING
        wp.init()
        import chain_warp

        ya = wp.array(y, dtype=wp.float32, device="cpu", copy=False)
        chain_warp.run_chain(ya)
        wp.synchronize_device("cpu")
    elif peer == "numba":
        import chain_numba

        chain_numba.run_chain(y)
    else:
        raise SystemExit(f"unknown peer {peer!r}")
    print("RESULT", repr(float(y.astype(np.float64).sum())), int("llvmlite" in sys.modules),
          int("numba" in sys.modules), flush=True)


if __name__ == "__main__":
    main()
