#!/usr/bin/env bash
# One GPU session for issue 16's code-generation work: the benchmark table, the math ulp table,
# then the CUDA tests, each with a time limit, outputs under OUTDIR (default $OUT or /tmp).
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
timeout "${TESTS_S:-150}" python3 -m pytest -q -x -p no:cacheprovider tests/test_cuda.py tests/test_nvptx_math.py \
    tests/test_nvptx_emulated.py >"$OUTDIR/tests.txt" 2>&1
echo "tests rc=$?"; tail -n 12 "$OUTDIR/tests.txt"
