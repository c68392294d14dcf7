#!/usr/bin/env bash
# The LLM-core figures of README.md on ML-100K (about 13.5 minutes on 2 CPU cores):
# build the offline scratch backbone on periods 0-4, score period 6 with it alone,
# train a LoRA on period 5 (configs/llm/ml-100k-lora.yaml), score period 6 with it, and time both.
set -euo pipefail
cd "$(dirname "$0")/.."
llm4rec data prepare ml-100k
llm4rec backbone build --dataset ml-100k --out runs/scratch-ml-100k
llm4rec predict --model runs/scratch-ml-100k --dataset ml-100k --period 6 --out runs/scratch-ml-100k-p6.csv -q
llm4rec train --config configs/llm/ml-100k-lora.yaml
llm4rec predict --model runs/scratch-ml-100k --adapter runs/lora-ml-100k-p5/adapter --dataset ml-100k \
    --period 6 --out runs/lora-ml-100k-p5-p6.csv -q
python scripts/bench_llm.py --model runs/scratch-ml-100k --n 1024
