#!/usr/bin/env bash
# A first look at the GPU paths on the H200: device facts, then the torch backends (strict FP32, TF32, FP16, bf16,
# inductor) and ONNX Runtime (CPU, and CUDA when onnxruntime-gpu is installed) for RFDETRMedium, recorded then
# checked; then two gate-power processes. Run from the project root on the GPU machine; results go to $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTEST_ADDOPTS="-p pytest_rfdetr_latency.plugin ${PYTEST_ADDOPTS:-}"
export RFDETR_LATENCY_CACHE_DIR=${RFDETR_LATENCY_CACHE_DIR:-/tmp/rfdetr-latency-cache}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.limit --format=csv
common=(-p no:cacheprovider -W ignore -rs --rfdetr-models=RFDETRMedium)
start=$(date +%s)
timeout 240 python3 -m pytest latency "${common[@]}" --save-baseline \
  --rfdetr-backends=torch-fp32,torch-tf32,torch-fp16,torch-bf16,onnx-cpu,onnx-cuda \
  --rfdetr-report="$OUT/smoke-save.json" 2>&1 | tail -32
echo "save wall $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout 150 python3 -m pytest latency "${common[@]}" --rfdetr-latency --rfdetr-backends=torch-fp32,torch-fp16 \
  --rfdetr-report="$OUT/smoke-check.json" 2>&1 | tail -14
echo "check wall $(( $(date +%s) - start )) s"
timeout 120 python3 -m pytest latency "${common[@]}" --save-baseline --rfdetr-backends=torch-compile \
  --rfdetr-report="$OUT/smoke-compile.json" 2>&1 | tail -6
timeout 100 python3 benchmarks/gate_power.py run --processes 2 --gpus 0 --raw "$OUT/smoke-gate.json" \
  --max-seconds 60 2>&1 | tail -3
true
