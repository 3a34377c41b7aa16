#!/usr/bin/env bash
# Everything this project checks on a GPU, in ONE short device call (a session's device time is
# scarce): the CUDA test groups run side by side (they are compile-bound, the machine has 16
# cores), then the benchmarks (and the math ulp table of docs/cuda.md) run alone so that nothing
# else competes with their timings. The two-GPU tests skip with one GPU: run this on a machine
# with two once.
#
#   bench/device_session.sh [OUTDIR]        # on the GPU machine, from the repository root
#
# libdevice: KILN_LIBDEVICE, else build/libdevice.10.bc (git-ignored; copy it there from the
# nvidia-nvvm wheel). build/pylib, when present, is added to PYTHONPATH (pytest, for machines
# without it). Time limits per group: TESTS_S (default 170 s), BENCH_S (150 s), ULP_S (90 s),
# MPM_S (60 s).
set -u
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-/tmp/kiln_device_session}}
mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${KILN_LIBDEVICE:-}" ] && [ -f build/libdevice.10.bc ]; then export KILN_LIBDEVICE=$PWD/build/libdevice.10.bc; fi
if [ -d build/pylib ]; then export PYTHONPATH=$PYTHONPATH:$PWD/build/pylib; fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -2
T=${TESTS_S:-170}
PYTEST="python3 -m pytest -q -rs -p no:cacheprovider"
# 1. the CUDA runtime and code generator on the real driver
timeout "$T" $PYTEST tests/test_cuda.py tests/test_cuda_runtime.py tests/test_cuda_graph_args.py \
    tests/test_cuda_multi_gpu.py tests/test_nvptx_math.py tests/test_print.py >"$OUTDIR/cuda.txt" 2>&1 &
# 2. the language suite with direct calls on the GPU (what the language issue added)
KILN_DEVICE=cuda timeout "$T" $PYTEST tests/test_language.py tests/test_vectors.py tests/test_random.py \
    >"$OUTDIR/lang1.txt" 2>&1 &
KILN_DEVICE=cuda timeout "$T" $PYTEST tests/test_reductions.py tests/test_fields.py tests/test_structfor.py \
    tests/test_debug_mode.py >"$OUTDIR/lang2.txt" 2>&1 &
# 3. the Taichi ports and the C runtime on the GPU
timeout "$T" $PYTEST tests/test_taichi_examples.py -k cuda >"$OUTDIR/ports.txt" 2>&1 &
timeout "$T" $PYTEST tests/test_c_runtime_state.py -k "real_gpu" >"$OUTDIR/c_cuda.txt" 2>&1 &
wait
for f in cuda lang1 lang2 ports c_cuda; do
    echo "== $f"; grep -E "^(FAILED|ERROR|SKIPPED)" "$OUTDIR/$f.txt" | head -12; tail -n 1 "$OUTDIR/$f.txt"
done
# 4. benchmarks, alone
timeout "${BENCH_S:-150}" python3 bench/gpu_bench.py --json "$OUTDIR/bench.json" >"$OUTDIR/bench.txt" 2>&1
echo "== gpu_bench rc=$?"; tail -n 60 "$OUTDIR/bench.txt"
timeout "${ULP_S:-90}" python3 bench/gpu_math_ulp.py >"$OUTDIR/ulp.txt" 2>&1
echo "== gpu_math_ulp rc=$?"; tail -n 16 "$OUTDIR/ulp.txt"
timeout "${MPM_S:-60}" python3 bench/mpm88_bench.py --substeps 50 --repeats 3 >"$OUTDIR/mpm88.txt" 2>&1
echo "== mpm88_bench rc=$?"; tail -n 20 "$OUTDIR/mpm88.txt"
