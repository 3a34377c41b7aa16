#!/usr/bin/env bash
# One GPU session for issue 16's work: the benchmark table, the math ulp table, the CUDA tests
# (the multi-GPU ones skip with fewer than 2 GPUs: run this on an nvidia-h200-x2 once), then the
# language suite with KILN_DEVICE=cuda, each with a time limit, outputs under OUTDIR (default
# $OUT or /tmp).
#
#   bench/gpu_dev_check.sh [OUTDIR]
#
# libdevice: KILN_LIBDEVICE, else build/libdevice.10.bc when present (build/ is git-ignored: copy
# it there from the nvidia-nvvm wheel on machines without it). build/pylib, when present, is
# added to PYTHONPATH (pytest for machines that lack it).
set -u
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-/tmp/kiln_gpu_check}}
mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${KILN_LIBDEVICE:-}" ] && [ -f build/libdevice.10.bc ]; then export KILN_LIBDEVICE=$PWD/build/libdevice.10.bc; fi
if [ -d build/pylib ]; then export PYTHONPATH=$PYTHONPATH:$PWD/build/pylib; fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -2
echo "KILN_LIBDEVICE=${KILN_LIBDEVICE:-}"
timeout "${BENCH_S:-200}" python3 bench/gpu_bench.py --json "$OUTDIR/bench.json" >"$OUTDIR/bench.txt" 2>&1
echo "bench rc=$?"; tail -n 45 "$OUTDIR/bench.txt"
timeout "${ULP_S:-90}" python3 bench/gpu_math_ulp.py >"$OUTDIR/ulp.txt" 2>&1
echo "ulp rc=$?"; tail -n 16 "$OUTDIR/ulp.txt"
timeout "${TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_nvptx_math.py \
    tests/test_nvptx_emulated.py tests/test_cuda_graph_args.py tests/test_cuda_runtime.py \
    tests/test_cuda_multi_gpu.py >"$OUTDIR/tests.txt" 2>&1
echo "tests rc=$?"; tail -n 12 "$OUTDIR/tests.txt"
# the language suite with direct calls on the GPU (everything the language issue added)
KILN_DEVICE=cuda timeout "${LANG_S:-240}" python3 -m pytest -q -p no:cacheprovider tests/test_language.py \
    tests/test_reductions.py tests/test_vectors.py tests/test_random.py tests/test_fields.py >"$OUTDIR/lang.txt" 2>&1
echo "language on cuda rc=$?"; grep -E "^(FAILED|ERROR)" "$OUTDIR/lang.txt" | head -20; tail -n 2 "$OUTDIR/lang.txt"
