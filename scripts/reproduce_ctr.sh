#!/usr/bin/env bash
# Reproduce the CTR tables of docs/ctr.md: both ML-100K settings and the CPU throughput benchmark.
set -euo pipefail
out="${1:-runs}"
llm4rec data prepare ml-100k
time llm4rec ctr --config configs/ctr/ml-100k.yaml --out "$out/ctr-ml-100k"
time llm4rec ctr --config configs/ctr/ml-100k-random-split.yaml --out "$out/ctr-ml-100k-random-split"
llm4rec bench ctr | tee "$out/bench_ctr_cpu.md"
echo "results: $out/ctr-ml-100k/results.md, $out/ctr-ml-100k-random-split/results.md, $out/bench_ctr_cpu.md"
