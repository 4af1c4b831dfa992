#!/usr/bin/env bash
# One step of the second H200 session of 2026-12-02 (docs/gate-power.md, docs/verdict.md). Run on the GPU machine from
# the project root after `source .device-stage/install.sh`, the k-th step carrying .device-stage/ortK:
#   bash benchmarks/h200/session-2026-12-02b.sh 1..9
# 1   the newcomer's flow, stored: the default matrix without onnx-cuda (torch-fp32, torch-fp16, onnx-cpu x
#     RFDETRMedium, SegSmall, KeypointPreview) recorded (3 processes) with --rfdetr-profile, so that a later check's
#     regression is diagnosed without asking
# 2   clean check c1 of those 9 cases; a hidden regression inside RF-DETR's forward (benchmarks/hidden_matmuls.py:
#     8 products of 2048 x 2048) on RFDETRMedium torch-fp16, checked WITHOUT --rfdetr-profile against step 1's
#     recording (the regression profiled in one more fresh process, as the shipped default does)
# 3, 4, 5   clean checks c2, c3, c4 of the 9 cases (4 also the machine's facts; 5 also the hidden regression with
#     --rfdetr-profile and no confirmation, for the raw traces)
# 6   after onnxruntime-gpu is installed: a smoke of ONNX Runtime's memory session through PyTorch's allocator; then
#     onnx-cuda recorded (3 processes, --rfdetr-profile) with its memory counted that way, the +10 % memory
#     self-test, and the hidden regression on RFDETRMedium onnx-cuda without --rfdetr-profile
# 7   clean check c5 of the whole default matrix; a hidden memory growth (2 products of 4096 x 4096) on RFDETRMedium
#     onnx-cuda
# 8   clean check c6 of the whole default matrix
# 9   clean check of onnx-cuda alone (when the budget leaves no room for 8)
# As it ran (benchmarks/results/stored-gate-h200-8/device-calls.json): 1, 2, 3, 4, then 5h (step 5's hidden check
# alone: the checks took 113-140 s, not the 100-110 s planned, and c4 no longer fitted), 6, 9, 7h (step 7's hidden
# memory growth alone); 5, 7 and 8 did not run. The code as run was cc9aab0, whose checks profiled a regression in a
# fresh process that never profiled (fixed in 6a9b062) and whose recordings profiled in their first process.
step=$1  # the steps themselves: stored-flow.sh (split out after the runs; what each step does is unchanged)
source benchmarks/h200/stored-flow.sh
run_step b "$step"
finish
