#!/usr/bin/env bash
# One step of the third H200 session of 2026-12-01 (docs/gate-power.md, docs/pr-gate.md): the stored flow of the
# default matrix but onnx-cuda (recorded in step 1, checked in steps 1, 3 and 5; onnx-cuda, which needs the sixth
# call's onnxruntime-gpu, recorded from 2 processes and checked in step 6) with head-to-head runs taking turns in
# steps 2 and 4. Edited as the session went (what each step ran is in its record and docs/gate-power.md).
# Run on the GPU machine from the project root after `source .device-stage/install.sh`:
#   bash benchmarks/h200/session-2026-12-01c.sh 1..6
step=$1
source benchmarks/h200/setup.sh
mkdir -p "$OUT/pr"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,temperature.gpu,clocks.sm --format=csv; } > "$OUT/step$step.txt"
GM=(python3 benchmarks/gate_matrix.py run --streams 1 --work /tmp/gate-matrix)
NOCUDA=torch-fp32,torch-fp16,onnx-cpu
S=(--rfdetr-device=cuda --rfdetr-strict)
PR=(python3 benchmarks/pr_gate.py run --processes 4 --out "$OUT/pr")
PRCASES=(--rfdetr-models=RFDETRMedium,RFDETRKeypointPreview --rfdetr-backends=torch-fp16 --rfdetr-scopes=device,forward,e2e)
pack() {  # one archive, remade after each phase: a call brings back only so many files, and a cut-off call what is there
  tar -C /tmp/gate-matrix -czf "$OUT/stored.tar.gz" --exclude=cache . 2>/dev/null
}
case $step in
  1) "${GM[@]}" --phase save --backends $NOCUDA --tag s1 -- "${S[@]}"
     "${GM[@]}" --phase check --backends $NOCUDA --tag c1 -- "${S[@]}" ;;
  2) "${PR[@]}" --tag aa-turns-2 --label aa --timeout 400 -- "${S[@]}" "${PRCASES[@]}" ;;
  3) "${GM[@]}" --phase check --backends $NOCUDA --tag c3 -- "${S[@]}" ;;
  4) "${PR[@]}" --tag ab-turns-host5-2 --label host5 --inject 5 --inject-on host --timeout 400 -- "${S[@]}" \
       --rfdetr-models=RFDETRMedium --rfdetr-backends=torch-fp16 --rfdetr-scopes=device,forward,e2e ;;
  5) "${GM[@]}" --phase check --backends $NOCUDA --tag c5 -- "${S[@]}" ;;
  6) "${GM[@]}" --phase save --backends onnx-cuda --processes 2 --tag s6 -- "${S[@]}"; pack
     "${GM[@]}" --phase check --backends onnx-cuda --tag c6 -- "${S[@]}" ;;
esac
pack
date -u +%FT%TZ >> "$OUT/step$step.txt"
