#!/usr/bin/env bash
# One step of the sixth H200 session of 2026-12-02 (docs/gate-power.md, "Session 11"): the stored flow as the shipped
# rule now judges it (the spread between sessions of GPU work added, scopes.SESSION_NOISE_ON_GPU, never run on a GPU
# before), its clean checks spread over at least 20 minutes (issue 20; session 10 made six over 19.5 after a failed
# start). Run on the GPU machine from the project root after `source .device-stage/install.sh`; onnxruntime-gpu travels
# in five parts (.device-stage/ort0..ort4), the k-th step carrying ort(k-1), so that onnx-cuda is installed by step 5:
#   BUDGET=<the session's device seconds left before this call> bash benchmarks/h200/session-2026-12-02f.sh 1..6
# 1   the default matrix without onnx-cuda (torch-fp32, torch-fp16, onnx-cpu x RFDETRMedium, SegSmall,
#     KeypointPreview) recorded (3 processes, nothing profiled), then clean check c1 of those 9 cases
# 2, 3, 4   clean checks c2, c3, c4 of the 9 cases (4 also the machine's facts)
# 5   onnx-cuda recorded (3 processes) once onnxruntime-gpu is installed, then clean check c5 of the whole default
#     matrix (12 cases) in one run
# 6   clean checks until the session's device time is spent: the largest that fits what is left (the whole matrix,
#     the 9 cases, or onnx-cuda alone), so that the last check ends as late as the budget allows
# Nothing is injected: the +10 % memory self-test was measured in session 10 and the memory rule has not changed since.
step=$1
source benchmarks/h200/stored-flow.sh
NINE=(--backends torch-fp32,torch-fp16,onnx-cpu)
# Seconds this call may still use: its own 600 (less a margin for packing), and the session's device time left when
# it began (BUDGET; 45 s kept for the call's start and for bringing its files back, or they are lost).
room() { local call=$(( 585 - SECONDS )) budget=$(( ${BUDGET:-100000} - 45 - SECONDS ))
         echo $(( call < budget ? call : budget )); }
fill() {  # clean checks one after another, each the largest that fits, while one fits
  local n=$1
  while :; do
    local r; r=$(room)
    if [ "$r" -ge 300 ]; then check "c$n" --timeout "$r"
    elif [ "$r" -ge 170 ]; then check "c$n" "${NINE[@]}" --timeout "$r"
    elif [ "$r" -ge 75 ]; then check "c$n" --backends onnx-cuda --timeout "$r"
    else echo "no room for another check: $r s" >> "$OUT/step$step.txt"; break; fi
    n=$((n + 1))
  done
}
case $step in
  1) "${GM[@]}" --phase save "${NINE[@]}" --tag s1 -- "${S[@]}"; pack
     check c1 "${NINE[@]}" --timeout "$(room)" ;;
  2) check c2 "${NINE[@]}" --timeout "$(room)" ;;
  3) check c3 "${NINE[@]}" --timeout "$(room)" ;;
  4) check c4 "${NINE[@]}" --timeout "$(room)"
     { lscpu; free -g; nvidia-smi; } >> "$OUT/step4.txt" 2>&1 ;;
  5) "${GM[@]}" --phase save --backends onnx-cuda --tag s5 -- "${S[@]}"; pack
     [ "$(room)" -ge 300 ] && check c5 --timeout "$(room)" ;;
  6) fill "${2:-6}" ;;
esac
finish
