"""Train one LoRA adapter on chosen periods, save it, and score the next period.

This is what ``llm4rec train --config`` and ``accelerate launch
scripts/train_lsat.py --config`` run for a single adapter; the config file
is a :class:`LoraRunConfig` in YAML (see configs/llm/).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.config import DataConfig, default_data_config
from llm4rec.errors import ConfigError
from llm4rec.llm.backbone import BackboneConfig
from llm4rec.llm.train import LoraSettings, TrainConfig

log = logging.getLogger(__name__)


def resolve_data_config(data: DataConfig | str) -> DataConfig:
    """A dataset name (its preset), a data config YAML path, or a DataConfig."""
    if isinstance(data, DataConfig):
        return data
    if data.endswith((".yaml", ".yml")):
        from llm4rec.config import load_config

        return load_config(DataConfig, data)
    return default_data_config(data)


@dataclass
class LoraRunConfig:
    backbone: BackboneConfig
    fetch_backbone: str | None = None  # e.g. smollm2-135m: fetched into backbone.model_name_or_path when missing
    data: DataConfig | str = "ml-100k"  # a dataset name (its preset periods), a data YAML path, or a mapping
    template: str | None = None  # built-in (movie, book) or a YAML path; None = the dataset's built-in
    cutoff: int = 512
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    train_periods: list[int] = field(default_factory=lambda: [5])  # their train split trains, their val split selects
    test_period: int | None = None  # default: the period after the last training period
    max_test_samples: int | None = None  # a fixed draw of the test period's rows (the protocol's); None = all
    out: str = "runs/lora"
    score_batch_size: int = 64

    def __post_init__(self) -> None:
        from llm4rec.llm.lsat_config import check_backbone_source

        self.data = resolve_data_config(self.data)
        if not self.train_periods:
            raise ConfigError("train_periods: name at least one period")
        if self.test_period is None:
            self.test_period = max(self.train_periods) + 1
        if self.test_period <= max(self.train_periods):
            raise ConfigError(
                f"test_period {self.test_period} must come after every training period ({self.train_periods})"
            )
        check_backbone_source(self)

    @property
    def first_test_period(self) -> int:
        return self.test_period


def write_predictions(path: str | Path, rows: pd.DataFrame, p: np.ndarray, prompts: list[str]) -> None:
    from llm4rec.io import atomic_path

    table = pd.DataFrame(
        {
            "user_id": rows["user_id"].to_numpy(),
            "item_id": rows["item_id"].to_numpy(),
            "label": rows["label"].to_numpy(),
            "p_yes": p,
            "prompt": prompts,
        }
    )
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def predict_period(
    model,
    backbone,
    timeline,
    rows: pd.DataFrame,
    samples,
    method: str,
    out_csv: str | Path,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    scorer=None,
):
    """Score ``samples`` (tokenized ``rows`` of one period), write ``out_csv`` and return the metrics row.
    Used by ``llm4rec train`` (its test period) and ``llm4rec predict``. ``scorer(sequences) -> P(Yes)``
    replaces the single-model scorer (e.g. an ensemble of two adapters)."""
    from llm4rec.eval.results import score
    from llm4rec.llm.score import score_sequences

    started = time.perf_counter()
    if scorer is None:
        p = score_sequences(
            model, samples["input_ids"], backbone.answer_ids, backbone.tokenizer.pad_token_id,
            batch_size=batch_size, progress=progress,
        )  # fmt: skip
    else:
        p = scorer(samples["input_ids"])
    seconds = time.perf_counter() - started
    period = int(rows["period"].iloc[0]) if len(rows) else 0
    # Warm items occur in the periods before; nothing is warm in period 0.
    warm = timeline.warm_mask(rows, trained_through=period - 1) if period > 0 else np.zeros(len(rows), dtype=bool)
    row = score(method, period, rows["label"].to_numpy(), p, rows["user_id"].to_numpy(), warm, seconds, seed=seed)
    write_predictions(out_csv, rows, p, samples["prompt"])
    return row


def run_lora(config: LoraRunConfig, progress: bool = True) -> dict:
    """Train, save ``<out>/adapter``, score the test period into ``<out>/predictions.csv`` and results files."""
    from accelerate import Accelerator

    from llm4rec.data.config import load_timeline
    from llm4rec.eval.protocol import seed_everything, tested_samples
    from llm4rec.eval.report import markdown_table, write_results
    from llm4rec.io import write_json
    from llm4rec.llm.adapters import save_adapter
    from llm4rec.llm.backbone import load_backbone
    from llm4rec.llm.lsat import ensure_backbone
    from llm4rec.llm.prompts import load_template, template_for_dataset
    from llm4rec.llm.samples import build_samples
    from llm4rec.llm.train import attach_lora, train_lora

    accelerator = Accelerator(mixed_precision=config.train.mixed_precision)  # train_lora accumulates gradients
    timeline = load_timeline(config.data)
    for period in [*config.train_periods, config.test_period]:
        timeline.check_period(period)
    template = load_template(config.template or template_for_dataset(config.data.name))
    ensure_backbone(config, timeline, template, accelerator, progress)
    backbone = load_backbone(config.backbone, template, accelerator.device)

    def tokenized(rows: pd.DataFrame):
        return build_samples(rows, timeline.items, template, backbone.tokenizer, config.cutoff)

    table = timeline.table
    in_training = table["period"].isin(config.train_periods)
    test_rows = tested_samples(timeline, config.test_period, config.max_test_samples)
    with accelerator.main_process_first():  # the first process tokenizes and caches, the others read the cache
        train = tokenized(table[in_training & (table["split"] == "train")])
        val = tokenized(table[in_training & (table["split"] == "val")])
        test = tokenized(test_rows)
    seed_everything(config.train.seed)  # LoRA's A matrices start random: same seed, same adapter
    model = attach_lora(backbone.model, config.lora)
    result = train_lora(
        model, backbone.tokenizer, backbone.answer_ids, train, val, config.train, accelerator, progress,
        fit_name=f"LoRA on periods {config.train_periods}", answer_tokens=backbone.answer_tokens,
    )  # fmt: skip
    model = accelerator.unwrap_model(model)
    out = Path(config.out)
    summary = {
        "dataset": config.data.name,
        "train_periods": config.train_periods,
        "test_period": config.test_period,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "best_val_auc": result.best_val_auc,
        "best_step": result.best_step,
        "steps": result.steps,
        "kept_starting_adapter": result.kept_start,
        "train_seconds": round(result.seconds, 1),
        "train_samples_per_second": round(result.train_samples_per_second, 2),
        "history": result.history,
    }
    if not accelerator.is_main_process:
        return summary
    save_adapter(
        model,
        out / "adapter",
        backbone,
        template,
        config.cutoff,
        {
            "periods": config.train_periods,
            "dataset": config.data.name,
            "lora": asdict(config.lora),
            "training": summary,
        },
    )
    row = predict_period(
        model, backbone, timeline, test_rows, test, f"LoRA-p{'+'.join(map(str, config.train_periods))}",
        out / "predictions.csv", config.score_batch_size, config.train.seed, progress,
    )  # fmt: skip
    write_results([row], out, title=f"LoRA on {config.data.name}")
    summary.update(test=row.to_dict(), score_samples_per_second=round(row.n / row.seconds, 2))
    write_json(out / "summary.json", summary)
    print(markdown_table([row], ["method", "period", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold"]))
    print(f"adapter: {out / 'adapter'}; predictions: {out / 'predictions.csv'}")
    return summary
