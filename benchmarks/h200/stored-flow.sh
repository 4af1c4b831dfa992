#!/usr/bin/env bash
# The steps of the stored-flow H200 sessions (session-2026-12-02b.sh and session-2026-12-02c.sh say which ran when):
# sourced by them with $step set, on the GPU machine from the project root after `source .device-stage/install.sh`.
source benchmarks/h200/setup.sh
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,temperature.gpu,clocks.sm --format=csv;
  python3 -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'onnxruntime', o.__version__, o.get_available_providers())"
  nproc; git log -1 --format=%H 2>/dev/null; } > "$OUT/step$step.txt" 2>&1
S=(--rfdetr-device=cuda --rfdetr-strict)
GM=(python3 benchmarks/gate_matrix.py run --streams 1 --work /tmp/gate-matrix --timeout 540)
STORED=/tmp/gate-matrix/s0/baselines
mkdir -p /tmp/diag "$OUT/diag"
hidden() {  # hidden TAG HIDDEN_MATMULS [pytest args...]: a check of step 1's or 6's recording with a hidden change
  local tag=$1 spec=$2; shift 2
  local start=$(date +%s)
  mkdir -p /tmp/hidden && cp benchmarks/hidden_matmuls.py /tmp/hidden/  # alone: benchmarks/ would shadow packages
  (cd /tmp/diag && HIDDEN_MATMULS=$spec PYTHONPATH="/tmp/hidden:${PYTHONPATH:-}" timeout 400 python3 -m pytest \
     --pyargs pytest_rfdetr_latency.suite -p no:cacheprovider -q -p hidden_matmuls --rfdetr-latency "${S[@]}" \
     --rfdetr-baseline-dir=$STORED --rfdetr-cache-dir=/tmp/diag/cache-$spec --rfdetr-models=RFDETRMedium "$@" \
     --rfdetr-report="$OUT/diag/$tag.json" > "$OUT/diag/$tag.log" 2>&1)
  echo "$tag exit $? $(( $(date +%s) - start )) s" >> "$OUT/diag/runs.txt"
  mkdir -p /tmp/traces && cp -r "$OUT"/diag/*-traces /tmp/traces/ 2>/dev/null && rm -rf "$OUT"/diag/*-traces
}
pack() {  # one archive of the stored flow, remade after each phase (a cut-off call brings back what is there)
  tar -C /tmp/gate-matrix -czf "$OUT/.stored.tar.gz" --exclude=cache --exclude='*-traces' . 2>/dev/null && mv "$OUT/.stored.tar.gz" "$OUT/stored.tar.gz"
  date -u +%FT%TZ >> "$OUT/step$step.txt"
}
check() { "${GM[@]}" --phase check --tag "$1" "${@:2}" -- "${S[@]}"; pack; }
smoke() {  # ONNX Runtime's memory session through PyTorch's allocator, once, before onnx-cuda is recorded
  onnx=$(find /tmp/gate-matrix/cache -name '*.onnx' | head -1)
  python3 - "$onnx" > "$OUT/ort-memory-smoke.txt" 2>&1 <<'PY'
import sys, numpy as np, onnxruntime as ort, torch
from pathlib import Path
from pytest_rfdetr_latency.measure.backends import ort_memory
path = sys.argv[1]
inputs = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()
feeds = {i.name: np.random.rand(*[d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32) for i in inputs}
peaks = {}
def phase(name):
    torch.cuda.synchronize(); peaks[name] = torch.cuda.max_memory_allocated() / 2**20; torch.cuda.reset_peak_memory_stats()
ort_memory.window(ort, Path(path), 0, feeds)(phase)
print(path, "phases MiB", peaks)
PY
}
run_step() {  # run_step SESSION STEP: a step of session b (second of 2026-12-02) or c (third)
  local session=$1
  case $2 in
    1) "${GM[@]}" --phase save --backends torch-fp32,torch-fp16,onnx-cpu --tag s1 -- "${S[@]}" --rfdetr-profile ;;
    2) check c1 --backends torch-fp32,torch-fp16,onnx-cpu
       hidden torch-hidden 8,2048 --rfdetr-backends=torch-fp16 ;;
    3) check c2 --backends torch-fp32,torch-fp16,onnx-cpu ;;
    4) check c3 --backends torch-fp32,torch-fp16,onnx-cpu
       { lscpu; free -g; nvidia-smi; } >> "$OUT/step4.txt" 2>&1 ;;
    5) check c4 --backends torch-fp32,torch-fp16,onnx-cpu
       [ "$session" = b ] && run_step b 5h ;;
    5h) hidden torch-hidden-profiled 8,2048 --rfdetr-backends=torch-fp16 --rfdetr-profile --rfdetr-confirm=0 ;;
    6) smoke
       local smoked=$?; echo "ort-memory smoke exit $smoked" >> "$OUT/step6.txt"
       if [ $smoked = 0 ]; then
         "${GM[@]}" --phase save --backends onnx-cuda --tag s6 -- "${S[@]}" --rfdetr-profile; pack
         "${GM[@]}" --phase check --backends onnx-cuda --inject 10 --tag m6 -- "${S[@]}" --rfdetr-inject-on=memory; pack
         hidden onnx-hidden 8,2048 --rfdetr-backends=onnx-cuda
       fi ;;
    7) check c5
       [ "$session" = b ] && run_step b 7h ;;
    7h) hidden onnx-memory 2,4096 --rfdetr-backends=onnx-cuda ;;
    8) check c6 ;;
    9) check c7 --backends onnx-cuda ;;
  esac
}
finish() {  # the last archive of the step, its traces, and its notes bundled (few files come back)
  pack
  date -u +%FT%TZ >> "$OUT/step$step.txt"
  [ -d /tmp/traces ] && tar -C /tmp/traces -czf "$OUT/traces.tar.gz" .
  (cd "$OUT" && shopt -s nullglob && tar czf "bundle$step.tar.gz" --remove-files diag ./*.log ./*.json ./*.txt)  # few
  # files back; nullglob: a glob that matches nothing is left out, not passed on (which made every call end with rc 2)
}
