#!/usr/bin/env bash
# Reproduce the ML-100K statistics and the item-popularity reference table quoted in README.md.
set -euo pipefail
out="${1:-runs/popularity-ml-100k}"
llm4rec data prepare ml-100k
llm4rec data stats ml-100k --json > "$(mkdir -p "$out" && echo "$out")/stats.json"
llm4rec popularity --dataset ml-100k --out "$out"
echo "stats: $out/stats.json; results: $out/results.md"
