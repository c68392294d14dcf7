"""The LLM runners: one LoRA adapter (``llm4rec train``) and the LSAT comparison over periods (``llm4rec lsat``).

:func:`run_lora` trains one adapter on chosen periods, saves it and scores the
next period; its config is a :class:`LoraRunConfig` in YAML (see configs/llm/).
:func:`run_lsat` runs FR, FT and the LSAT variants (:mod:`llm4rec.llm.lsat`)
through the period protocol. ``accelerate launch scripts/train_lsat.py
--config`` runs ``lsat``, and ``scripts/train_lsat.py train --config`` runs one adapter.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.config import DataConfig, resolve_data_config
from llm4rec.errors import ConfigError, DataError
from llm4rec.llm.backbone import BackboneConfig
from llm4rec.llm.train import LoraSettings, LoraTrainConfig

log = logging.getLogger(__name__)


@dataclass
class LoraRunConfig:
    backbone: BackboneConfig
    fetch_backbone: str | None = None  # e.g. smollm2-135m: fetched into backbone.model_name_or_path when missing
    data: DataConfig | str = "ml-100k"  # a dataset name (its preset periods), a data YAML path, or a mapping
    template: str | None = None  # built-in (movie, book) or a YAML path; None = the dataset's built-in
    cutoff: int = 512
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: LoraTrainConfig = field(default_factory=LoraTrainConfig)
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
    from llm4rec.eval.report import write_predictions
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
    write_predictions(out_csv, rows, p)  # first: with NaN scores they are what there is to look at
    bad = int((~np.isfinite(p)).sum())
    if bad:
        raise DataError(
            f"{method}: {bad} of {len(p)} scores are NaN or infinite (a diverged adapter, or a backbone that does not "
            f"load in this dtype: try --dtype float32); the predictions are in {out_csv}"
        )
    return score(method, period, rows["label"].to_numpy(), p, rows["user_id"].to_numpy(), warm, seconds, seed=seed)


def run_lora(config: LoraRunConfig, progress: bool = True) -> dict:
    """Train, save ``<out>/adapter``, score the test period into ``<out>/predictions.csv`` and results files."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from llm4rec.data.config import load_timeline
    from llm4rec.eval.protocol import tested_samples
    from llm4rec.eval.report import markdown_table, write_run
    from llm4rec.llm.adapters import save_adapter
    from llm4rec.llm.backbone import load_backbone
    from llm4rec.llm.prompts import load_template, template_for_dataset
    from llm4rec.llm.samples import build_samples
    from llm4rec.llm.session import ensure_backbone
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
    set_seed(config.train.seed)  # LoRA's A matrices start random: same seed, same adapter
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
        **result.summary(),
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
    summary.update(test=row.to_dict(), score_samples_per_second=round(row.n / row.seconds, 2))
    write_run(out, [row], title=f"LoRA on {config.data.name}", config=asdict(config), training=summary)
    print(markdown_table([row], ["method", "period", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold"]))
    print(f"adapter: {out / 'adapter'}; predictions: {out / 'predictions.csv'}")
    return summary


def run_lsat(config, progress: bool = True) -> tuple[list, dict]:
    """Run FR, FT and the LSAT variants of an LsatConfig over the tested periods; write results, predictions
    (``predictions/<method>/period_<t>.csv``), plots and adapters to ``config.out``. Returns (result rows, run
    summary); refused while another run writes into ``config.out``."""
    from accelerate import PartialState

    from llm4rec.run_lock import RunLock

    lock = RunLock(config.out, "llm4rec lsat")
    if PartialState().is_main_process:  # one lock for the run, held by its first process
        lock.acquire()
    try:
        return _run_lsat(config, progress)
    finally:
        lock.release()


def _run_lsat(config, progress: bool) -> tuple[list, dict]:
    from llm4rec.data.config import load_timeline
    from llm4rec.eval.protocol import run_protocol
    from llm4rec.eval.report import write_predictions, write_run
    from llm4rec.llm.catalogue import build_methods
    from llm4rec.llm.session import open_session

    started = time.perf_counter()
    timeline = load_timeline(config.data)
    session = open_session(config, timeline, progress)
    out = Path(config.out)
    title = f"LLM update methods on {config.data.name} ({session.backbone.config.name})"
    plot_title = f"{config.data.name}, {Path(session.backbone.config.name).name}"
    methods = build_methods(config, session)
    rows = []
    for method in methods:

        def save_predictions(row, samples, p, name=method.name) -> None:
            if session.is_main:
                write_predictions(out / "predictions" / name / f"period_{row.period}.csv", samples, p)

        rows += run_protocol(
            method, timeline, config.first_test_period, config.last_test_period, config.seed, progress,
            max_test_samples=config.samples.test, on_result=save_predictions,
        )  # fmt: skip
        if session.is_main:  # results so far, so an interrupted run still leaves a table
            write_run(out, rows, title, plot_title)
    summary = {
        "seconds": round(time.perf_counter() - started, 1),
        "methods": [m.name for m in methods],
        "fits": session.fits,
        "weights": {m.name: m.weights for m in methods if hasattr(m, "weights")},
    }
    if session.is_main:
        write_run(out, rows, title, plot_title, config=asdict(config), training=summary)
    return rows, summary
