#!/usr/bin/env bash
# The matrix on the H200 machine. Run from the project root there; results go to $OUT.
#   bash benchmarks/h200/matrix.sh save    record every backend of the three default models (-n 0)
#   bash benchmarks/h200/matrix.sh check   check the default matrix against it, two xdist workers (one per GPU)
set -u
mode=$1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTEST_ADDOPTS="-p pytest_rfdetr_latency.plugin ${PYTEST_ADDOPTS:-}"
export RFDETR_LATENCY_CACHE_DIR=${RFDETR_LATENCY_CACHE_DIR:-/tmp/rfdetr-latency-cache}
base=/tmp/h200-baselines
common=(latency -p no:cacheprovider -W ignore -rs --rfdetr-baseline-dir=$base --durations=0)
start=$(date +%s.%N)
if [ "$mode" = save ]; then
  timeout 560 python3 -m pytest "${common[@]}" --save-baseline \
    --rfdetr-backends=torch-fp32,torch-tf32,torch-fp16,torch-bf16,onnx-cpu,onnx-cuda,onnx-tensorrt \
    --rfdetr-report="$OUT/matrix-save-n0.json" --junitxml="$OUT/matrix-save-n0.xml" 2>&1 | tail -75
else
  timeout 400 python3 -m pytest "${common[@]}" --rfdetr-latency -n 2 \
    --rfdetr-report="$OUT/matrix-check-n2.json" --junitxml="$OUT/matrix-check-n2.xml" 2>&1 | tail -45
fi
echo "wall $(python3 -c "import time; print(round(time.time() - $start, 1))") s"
cp $base/*.json "$OUT/" 2>/dev/null
true
