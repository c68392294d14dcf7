"""Held-out AUC of one LoRA fit on SmolLM2 per setting: how the configs' LoRA dropout and learning rate were chosen.

    python scripts/lora_settings_auc.py --backbone runs/smollm2-135m --seeds 0,1 \\
        --settings 256:2:0.001:0.0,256:2:0.001:0.05          # dropout 0 against 0.05 (BENCHMARKS.md)
    python scripts/lora_settings_auc.py --backbone runs/smollm2-135m --seeds 0 \\
        --settings 192:1:0.001:0,192:1:0.003:0,192:1:0.01:0  # the learning rate of the default experiment

Each setting is SAMPLES:EPOCHS:LR:DROPOUT. A fresh LoRA (r 8, alpha 16, q/v) on that many seeded samples of
period 5's train split, early-stopped on 128 samples of period 5's val split (the ``val_auc`` column, the
one a config choice may read), scored on 300 samples of period 6's val split (``heldout_auc``). No tested
period of the default experiment (8, 9) is read. One JSON line per (seed, setting) on stdout.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="runs/smollm2-135m", help="a fetched backbone directory")
    parser.add_argument("--dtype", default="fastest", help="backbone.dtype (default fastest)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--settings", required=True, help="SAMPLES:EPOCHS:LR:DROPOUT, comma-separated")
    args = parser.parse_args()

    from llm4rec.data.config import default_data_config, load_timeline
    from llm4rec.eval import metrics
    from llm4rec.llm.backbone import BackboneConfig, load_backbone
    from llm4rec.llm.prompts import load_template, template_for_dataset
    from llm4rec.llm.samples import build_samples
    from llm4rec.llm.score import score_sequences
    from llm4rec.llm.train import LoraSettings, LoraTrainConfig, attach_lora, train_lora

    data = default_data_config("ml-100k")
    timeline = load_timeline(data)
    template = load_template(template_for_dataset(data.name))
    settings = []
    for text in args.settings.split(","):
        n, epochs, lr, dropout = text.split(":")
        settings.append((int(n), int(epochs), float(lr), float(dropout)))

    for seed in (int(s) for s in args.seeds.split(",")):
        for n, epochs, lr, dropout in settings:
            backbone = load_backbone(BackboneConfig(args.backbone, dtype=args.dtype), template)
            tokenizer = backbone.tokenizer

            def samples(period: int, split: str, limit: int, draw: int, tokenizer=tokenizer):
                rows = timeline.period(period, split)
                rows = rows.sample(n=min(limit, len(rows)), random_state=draw).sort_index()
                return build_samples(rows, timeline.items, template, tokenizer)

            heldout = samples(6, "val", 300, 0)
            train, val = samples(5, "train", n, seed), samples(5, "val", 128, seed)
            torch.manual_seed(seed)
            model = attach_lora(backbone.model, LoraSettings(dropout=dropout))
            config = LoraTrainConfig(epochs=epochs, batch_size=16, learning_rate=lr, patience=2, eval_at_start=False,
                                     eval_batch_size=16, seed=seed)  # fmt: skip
            started = time.perf_counter()
            result = train_lora(model, tokenizer, backbone.answer_ids, train, val, config, progress=False)
            seconds = time.perf_counter() - started
            p = score_sequences(model, heldout["input_ids"], backbone.answer_ids, tokenizer.pad_token_id,
                                batch_size=16)  # fmt: skip
            record = {
                "seed": seed, "samples": n, "epochs": epochs, "lr": lr, "dropout": dropout,
                "val_auc": round(result.best_val_auc, 4),
                "heldout_auc": round(metrics.auc(np.asarray(heldout["label"]), p), 4),
                "train_samples_per_s": round(result.train_samples_per_second, 2), "fit_seconds": round(seconds, 1),
            }  # fmt: skip
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
