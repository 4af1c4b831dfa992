#!/usr/bin/env bash
# One run of the H200 session of 2026-12-02 (late; docs/pr-gate.md, "Ninth session"): head to head of two checkouts as
# the shipped default now runs it (four pairs at once in one ring, each process preparing on its share of the cores,
# the `turns` preset of 50 calls, 3 s of calls and 1 s of warm-up a scope), several backends of the default matrix a
# run, its three models each. Run on the GPU machine from the project root after `source .device-stage/install.sh`;
# onnxruntime-gpu travels in six parts (.device-stage/ort0..ort5), so onnx-cuda runs from the sixth call on. One call
# may run several:
#   T0=$(date +%s) BUDGET=<device seconds left> RESERVE=<seconds kept for later calls> LIMIT=<seconds for this run> \
#     bash benchmarks/h200/session-2026-12-02g.sh TAG LABEL BACKENDS [PCT ON]
# LABEL: aa (A/A, as declared), or host5 / gpu2 with PCT 5 / 2 and ON host / gpu (the head slowed on purpose).
# Every run: RFDETRMedium, RFDETRSegSmall, RFDETRKeypointPreview (or MODELS); --rfdetr-device=cuda --rfdetr-strict; four pairs and
# no more (--rfdetr-against-max-processes=4: the default grows to eight while a comparison cannot resolve what it
# must, which a device call of 600 s cannot hold); --rfdetr-no-profile (a regressed case is otherwise profiled on both
# sides, about a minute each); stopped by SIGTERM at LIMIT (560 s: the call's 600 less 15 s of grace and the gzip)
# or at the session's budget less RESERVE, whichever comes first, keeping the cases it finished; -vv for the
# parent's progress lines, and the processes and the GPU written down every 10 s (TAG.watch.txt). MAXP=8 lets a run
# grow to eight pairs as the shipped default does (tenth session).
tag=$1 label=$2 backends=$3 pct=${4:-} on=${5:-}
T0=${T0:-$(date +%s)}
source benchmarks/h200/setup.sh
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,temperature.gpu,clocks.sm --format=csv
  python3 -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'onnxruntime', o.__version__, o.get_available_providers())"
  nproc; free -g | head -2; git log --oneline -1 2>/dev/null; } > "$OUT/$tag.txt" 2>&1
room() { local used=$(( $(date +%s) - T0 )); local call=$(( ${LIMIT:-560} - used )) budget=$(( ${BUDGET:-100000} - ${RESERVE:-0} - 30 - used ))
         echo $(( call < budget ? call : budget )); }
r=$(room)
if [ "$r" -lt 60 ]; then echo "no room for $tag: $r s" >> "$OUT/$tag.txt"; exit 0; fi
source benchmarks/h200/watch.sh
watch_processes "$OUT/$tag.watch.txt" & WATCH=$!
inject=(); [ -n "$pct" ] && inject=(--inject "$pct" --inject-on "$on")
python3 benchmarks/pr_gate.py run --processes 4 --tag "$tag" --label "$label" "${inject[@]}" --timeout "$r" \
  --grace 15 -- --rfdetr-device=cuda --rfdetr-strict --rfdetr-models="${MODELS:-RFDETRMedium,RFDETRSegSmall,RFDETRKeypointPreview}" \
  --rfdetr-backends="$backends" --rfdetr-against-max-processes=${MAXP:-4} --rfdetr-no-profile -vv >> "$OUT/$tag.txt" 2>&1
kill $WATCH 2>/dev/null
gzip -f "$OUT/$tag.json" "$OUT/$tag.log" "$OUT/$tag.watch.txt" 2>/dev/null
date -u +%FT%TZ >> "$OUT/$tag.txt"
