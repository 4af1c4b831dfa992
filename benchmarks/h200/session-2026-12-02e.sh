#!/usr/bin/env bash
# One step of the fifth H200 session of 2026-12-02 (docs/pr-gate.md, "Seventh session"): head to head of two
# checkouts as the shipped default now runs it (up to four pairs at once, their processes preparing together and
# taking turns in one ring: lockstep.py), one backend of the default matrix a run, three models each. Run on the GPU
# machine from the project root after `source .device-stage/install.sh`. onnxruntime-gpu travels in five parts
# (.device-stage/ort0..ort4: 50.0 MB with base/ in the first call, 51.4 MB alone in the next four), the k-th step
# carrying ort(k-1), so that onnx-cuda runs from step 5:
#   bash benchmarks/h200/session-2026-12-02e.sh 1..6
#   bash benchmarks/h200/session-2026-12-02e.sh x TAG LABEL BACKEND [PCT ON]   (another run of the same kind)
# 1   A/A, torch-fp16            2   +2 % GPU work on the head, torch-fp32    3   +5 % host work on the head, torch-fp16
# 4   A/A, torch-fp32            5   A/A, onnx-cuda (device, iobinding, forward, e2e, memory)
# 6   +5 % host work on the head, onnx-cuda
# Every run: RFDETRMedium, RFDETRSegSmall, RFDETRKeypointPreview; --rfdetr-device=cuda --rfdetr-strict; 4 pairs,
# up to MAX (8, the default) while a comparison cannot resolve what it must; stopped at the call's 600 s less a
# margin; -vv for the parent's progress lines, and the processes and the GPU written down every 10 s (watchN.txt).
# As it ran (benchmarks/results/pr-gate-h200/ring-calls.json, code cd64886): step 1 with MAX=8 stopped at 569 s with no
# report and nothing in its log (-q), so from then on MAX=4 and the watch; step 1 again (305.5 s, exit 0); step 3, run
# under a call limit of 480 s to fit the budget left while left() assumed 600, was stopped there while it profiled its
# third regressed case. Steps 2, 4, 5 and 6 did not run (the session's device time was spent).
step=$1
source benchmarks/h200/setup.sh
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,temperature.gpu,clocks.sm --format=csv
  python3 -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'onnxruntime', o.__version__, o.get_available_providers())"
  nproc; free -g | head -2; } > "$OUT/step$step.txt" 2>&1
left() { echo $(( 580 - SECONDS )); }
source benchmarks/h200/watch.sh
watch_processes "$OUT/watch$step.txt" & WATCH=$!
h2h() {  # h2h TAG LABEL BACKEND [PCT ON]
  local inject=(); [ -n "${4:-}" ] && inject=(--inject "$4" --inject-on "$5")
  python3 benchmarks/pr_gate.py run --processes 4 --tag "$1" --label "$2" "${inject[@]}" --timeout "$(left)" -- \
    --rfdetr-device=cuda --rfdetr-strict --rfdetr-models=RFDETRMedium,RFDETRSegSmall,RFDETRKeypointPreview \
    --rfdetr-backends="$3" --rfdetr-against-max-processes="${MAX:-8}" -vv >> "$OUT/step$step.txt" 2>&1
  gzip -f "$OUT/$1.json" "$OUT/$1.log" 2>/dev/null
}
case $step in
  1) h2h aa-ring-fp16-1 aa torch-fp16 ;;
  2) h2h ab-ring-gpu2-fp32-1 gpu2 torch-fp32 2 gpu ;;
  3) h2h ab-ring-host5-fp16-1 host5 torch-fp16 5 host ;;
  4) h2h aa-ring-fp32-1 aa torch-fp32 ;;
  5) h2h aa-ring-cuda-1 aa onnx-cuda ;;
  6) h2h ab-ring-host5-cuda-1 host5 onnx-cuda 5 host ;;
  x) shift; h2h "$@" ;;
esac
kill $WATCH; gzip -f "$OUT/watch$step.txt"
date -u +%FT%TZ >> "$OUT/step$step.txt"
