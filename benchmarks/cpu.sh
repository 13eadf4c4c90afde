#!/usr/bin/env bash
# The CPU figures of BENCHMARKS.md: each line prints one JSON object (ours vs baseline,
# interleaved in one process).  Usage: bash benchmarks/cpu.sh [THREADS] > results.jsonl
# THREADS (default 1): CPU threads of both contenders; on a CPU shared with other work,
# fewer threads than cores gives steadier ratios.  Needs the onnx extra for the
# onnxruntime / int8 rows.  Takes about 30 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
T="${1:-1}"
B=".venv/bin/python -m resnetlab.cli bench"
R="--threads $T --repeats 5 --warmup 1 --min-time 2 --json"
for bs in 16 1; do
  $B infer --model resnet50 --batch-size "$bs" $R
  $B infer --model resnet50 --batch-size "$bs" $R --runtime onnxruntime
  $B infer --model resnet50 --batch-size "$bs" $R --quantize int8
done
$B infer --model resnet50 --batch-size 16 $R --compile
$B infer --model cifar_resnet20 --batch-size 128 $R --quantize int8
$B train --model cifar_resnet20 $R
$B train compile=true --model cifar_resnet20 $R
