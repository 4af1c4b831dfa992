#!/usr/bin/env bash
# One step of the third H200 session of 2026-12-02 (docs/gate-power.md, docs/verdict.md): the stored flow again at
# the code whose recordings profile in a process of their own (6a9b062 and after), so that no comparison is left
# unresolved by a profiled recording. Run on the GPU machine from the project root after
# `source .device-stage/install.sh`, the k-th step carrying .device-stage/ortK:
#   bash benchmarks/h200/session-2026-12-02c.sh 1..9
# 1   the newcomer's flow, stored: the default matrix without onnx-cuda (torch-fp32, torch-fp16, onnx-cpu x
#     RFDETRMedium, SegSmall, KeypointPreview) recorded (3 processes) with --rfdetr-profile (one more process profiles)
# 2   clean check c1 of those 9 cases; a hidden regression inside RF-DETR's forward (benchmarks/hidden_matmuls.py:
#     8 products of 2048 x 2048) on RFDETRMedium torch-fp16, checked WITHOUT --rfdetr-profile against step 1's
#     recording (the shipped default profiles the regression in one more fresh process)
# 3, 4, 5   clean checks c2, c3, c4 of the 9 cases (4 also the machine's facts)
# 6   after onnxruntime-gpu is installed: onnx-cuda recorded (3 processes, --rfdetr-profile), the +10 % memory
#     self-test, and the hidden regression on RFDETRMedium onnx-cuda without --rfdetr-profile
# 7   clean check c5 of the whole default matrix
# 8   clean check c6 of the whole default matrix, when the budget leaves room
# 9   clean check c7 of onnx-cuda alone
# As it ran (benchmarks/results/stored-gate-h200-9/device-calls.json): 1-6, then 9 (the recording took 531 s, not
# the 460 planned, and c5/c6 no longer fitted); 7 and 8 did not run. The code as run was f07930f.
step=$1  # the steps themselves: stored-flow.sh (split out after the runs; what each step does is unchanged)
source benchmarks/h200/stored-flow.sh
run_step c "$step"
finish
