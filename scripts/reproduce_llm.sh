#!/usr/bin/env bash
# The LLM-core figures of README.md on ML-100K (build 405 s, LoRA 103 s and two scorings of period 6: about 11 minutes on 2 CPU cores):
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
# Throughput of this architecture (random weights) on these prompts, ours vs the usual Hugging Face way;
# BENCHMARKS.md has the full benchmark.
llm4rec bench score --prompts runs/scratch-ml-100k --arch scratch-llama-tiny --threads 1 --n 256 --batch-sizes 16,64
llm4rec bench train --prompts runs/scratch-ml-100k --arch scratch-llama-tiny --threads 1
