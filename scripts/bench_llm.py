"""Scoring and LoRA-training throughput of a backbone on real prompts (samples/s).

    python scripts/bench_llm.py --model runs/scratch-ml-100k [--dataset ml-100k] [--period 6] [--n 1024]
        [--batch-sizes 16,64] [--device cuda] [--dtype bfloat16]

Scoring: one forward pass per length-sorted, left-padded batch (llm4rec.llm.score).
Training: LoRA r=8 on q_proj/v_proj, answer-token loss, one epoch over --n samples, no evaluation.
"""

from __future__ import annotations

import argparse
import time

import torch

from llm4rec.data.config import default_data_config, load_timeline
from llm4rec.llm.backbone import BackboneConfig, load_backbone
from llm4rec.llm.prompts import load_template, template_for_dataset
from llm4rec.llm.samples import build_samples
from llm4rec.llm.score import score_sequences
from llm4rec.llm.train import LoraSettings, TrainConfig, attach_lora, train_lora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="backbone directory or Hugging Face id")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--period", type=int, default=6)
    parser.add_argument("--n", type=int, default=1024, help="samples to score and to train on")
    parser.add_argument("--batch-sizes", default="16,64", help="scoring batch sizes, comma-separated")
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    config = default_data_config(args.dataset)
    timeline = load_timeline(config)
    template = load_template(template_for_dataset(config.name))
    backbone = load_backbone(BackboneConfig(args.model, dtype=args.dtype), template, args.device)
    rows = timeline.period(args.period).head(args.n)
    data = build_samples(rows, timeline.items, template, backbone.tokenizer)
    lengths = data["length"]
    print(
        f"{args.model} on {args.device} ({torch.get_num_threads()} CPU threads), {backbone.model.dtype}: "
        f"{len(data)} prompts of {args.dataset} period {args.period}, mean {sum(lengths) / len(lengths):.0f} tokens"
    )
    pad = backbone.tokenizer.pad_token_id
    score_sequences(backbone.model, data["input_ids"][:32], backbone.answer_ids, pad, 32, args.device)  # warm-up
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        score_sequences(backbone.model, data["input_ids"], backbone.answer_ids, pad, batch_size, args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        print(f"scoring   batch {batch_size:>4}: {len(data) / (time.perf_counter() - started):9.1f} samples/s")
    model = attach_lora(backbone.model, LoraSettings())
    train_config = TrainConfig(
        epochs=1, batch_size=args.train_batch_size, eval_at_start=False, max_val_samples=32, patience=1
    )
    result = train_lora(
        model, backbone.tokenizer, backbone.answer_ids, data, data.select(range(32)), train_config, progress=False
    )
    print(
        f"training  batch {args.train_batch_size:>4}: {result.train_samples_per_second:9.1f} samples/s (LoRA r=8, q/v)"
    )


if __name__ == "__main__":
    main()
