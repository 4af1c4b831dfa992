#!/usr/bin/env bash
# A first look at the GPU paths on the H200: device facts, then the torch backends (strict FP32, TF32, FP16, bf16,
# inductor) and ONNX Runtime (CPU, and CUDA when onnxruntime-gpu is installed) for RFDETRMedium, recorded then
# checked. Run from the project root on the GPU machine; results go to $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export RFDETR_LATENCY_CACHE_DIR=${RFDETR_LATENCY_CACHE_DIR:-/tmp/rfdetr-latency-cache}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.limit --format=csv
python3 -c "import torch, pynvml; pynvml.nvmlInit(); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).uuid)"
common=(-p no:cacheprovider -W ignore -rs --rfdetr-models=RFDETRMedium)
start=$(date +%s)
timeout 300 python3 -m pytest latency "${common[@]}" --save-baseline \
  --rfdetr-backends=torch-fp32,torch-tf32,torch-fp16,torch-bf16,onnx-cpu,onnx-cuda \
  --rfdetr-report="$OUT/smoke-save.json" 2>&1 | tail -45
echo "save wall $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout 200 python3 -m pytest latency "${common[@]}" --rfdetr-latency \
  --rfdetr-backends=torch-fp32,torch-fp16,onnx-cpu --rfdetr-report="$OUT/smoke-check.json" 2>&1 | tail -25
echo "check wall $(( $(date +%s) - start )) s"
timeout 150 python3 -m pytest latency "${common[@]}" --rfdetr-latency --rfdetr-backends=torch-compile \
  --rfdetr-report="$OUT/smoke-compile.json" 2>&1 | tail -12
timeout 150 python3 benchmarks/gate_power.py run --processes 2 --gpus 0 --raw "$OUT/smoke-gate.json" \
  --max-seconds 100 2>&1 | tail -4
cp latency_baselines/*.json "$OUT/" 2>/dev/null
true
