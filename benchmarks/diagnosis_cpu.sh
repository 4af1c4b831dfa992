#!/usr/bin/env bash
# --rfdetr-profile on the CPU (docs/verdict.md, "Why it got slower"): RFDETRNano, torch-fp32 and onnx-cpu, recorded
# with profiles, then checked with a 150 % slowdown injected, then onnx-cpu checked with a hidden chain of matrix
# products inside RF-DETR's forward (benchmarks/hidden_matmuls.py, its own export), then torch-fp32 checked with the
# slowdown and without --rfdetr-profile (the regression profiled in one more fresh process); keeps the baseline file,
# the checks' JSON reports and logs under OUT (default benchmarks/results/diagnosis-cpu).
#   bash benchmarks/diagnosis_cpu.sh [OUT]
set -euo pipefail
out=$(realpath -m "${1:-benchmarks/results/diagnosis-cpu}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
base=(--pyargs pytest_rfdetr_latency.suite -p no:cacheprovider -q --rfdetr-device=cpu --rfdetr-models=RFDETRNano
      --rfdetr-backends=torch-fp32,onnx-cpu --rfdetr-images=2
      --rfdetr-sampling=quick,min-blocks=4,max-seconds=1,warmup-seconds=0.5)
args=("${base[@]}" --rfdetr-profile)
cd "$work"
{ date -u +%FT%TZ; uname -m; echo "$(nproc) cores"; python -c "import platform; from importlib.metadata import version
print('python', platform.python_version(), *(f'{d} {version(d)}' for d in ('torch', 'onnxruntime', 'rfdetr')))"
} > "$out/machine.txt"
python -m pytest "${args[@]}" --save-baseline > "$out/record.log" 2>&1
set +e
python -m pytest "${args[@]}" --rfdetr-latency --rfdetr-tolerance=100% --rfdetr-inject-slowdown=150% \
  --rfdetr-report="$out/check-report.json" > "$out/check.log" 2>&1
echo "check exit code $? (1 expected: both cases regressed on purpose)" >> "$out/machine.txt"
mkdir -p hidden && cp "$OLDPWD/benchmarks/hidden_matmuls.py" hidden/  # alone on the path: benchmarks/ shadows packages
PYTHONPATH="$work/hidden" HIDDEN_MATMULS=8,768 python -m pytest "${args[@]}" -p hidden_matmuls --rfdetr-latency \
  --rfdetr-backends=onnx-cpu --rfdetr-cache-dir="$work/hidden-cache" --rfdetr-report="$out/hidden-report.json" \
  > "$out/hidden.log" 2>&1
echo "hidden check exit code $? (1 expected when the products' time clears the threshold)" >> "$out/machine.txt"
python -m pytest "${base[@]}" --rfdetr-latency --rfdetr-backends=torch-fp32 --rfdetr-tolerance=100% \
  --rfdetr-inject-slowdown=150% --rfdetr-report="$out/auto-report.json" > "$out/auto.log" 2>&1
echo "check without --rfdetr-profile exit code $? (1 expected; its regression profiled in a fresh process)" \
  >> "$out/machine.txt"
cp latency_baselines/*.json "$out/"
gzip -9f "$out/check-report.json" "$out/hidden-report.json" "$out/auto-report.json"
