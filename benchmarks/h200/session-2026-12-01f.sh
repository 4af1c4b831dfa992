#!/usr/bin/env bash
# One step of the sixth H200 session of 2026-12-01 (docs/gate-power.md): a newcomer's stored flow under the
# stored rule as it is now (session term for work on the CPU, capped thresholds, NVML memory rule, strict
# coverage), none of which had run live before. Steps 1-5 before onnxruntime-gpu is installed: the default matrix
# but onnx-cuda recorded (step 1, three processes) and checked once a step; step 6, after the six-part install:
# onnx-cuda recorded, a +10 % memory growth of the onnx-cuda cases checked (A/B), then the whole default matrix
# checked twice. Run on the GPU machine from the project root after `source .device-stage/install.sh`:
#   bash benchmarks/h200/session-2026-12-01f.sh 1..6
step=$1
source benchmarks/h200/setup.sh
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,temperature.gpu,clocks.sm --format=csv;
  python3 -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'onnxruntime', o.__version__)"
  nproc; } > "$OUT/step$step.txt" 2>&1
GM=(python3 benchmarks/gate_matrix.py run --streams 1 --work /tmp/gate-matrix --timeout 560)
NOCUDA=torch-fp32,torch-fp16,onnx-cpu
S=(--rfdetr-device=cuda --rfdetr-strict)
pack() {  # one archive, remade after each phase: a call brings back only so many files, and a cut-off call what is there
  tar -C /tmp/gate-matrix -czf "$OUT/.stored.tar.gz" --exclude=cache . 2>/dev/null && mv "$OUT/.stored.tar.gz" "$OUT/stored.tar.gz"
  date -u +%FT%TZ >> "$OUT/step$step.txt"
}
case $step in
  1) "${GM[@]}" --phase save --backends $NOCUDA --tag s1 -- "${S[@]}"; pack
     "${GM[@]}" --phase check --backends $NOCUDA --tag c1 -- "${S[@]}" ;;
  2|3|4|5) "${GM[@]}" --phase check --backends $NOCUDA --tag c$step -- "${S[@]}" ;;
  6) "${GM[@]}" --phase save --backends onnx-cuda --tag s6 -- "${S[@]}"; pack
     "${GM[@]}" --phase check --backends onnx-cuda --inject 10 --tag m6 -- "${S[@]}" --rfdetr-inject-on=memory; pack
     "${GM[@]}" --phase check --tag c6 -- "${S[@]}"; pack
     "${GM[@]}" --phase check --tag c7 -- "${S[@]}" ;;
esac
pack
