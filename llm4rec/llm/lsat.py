"""Keeping an LLM recommender up to date over periods: full retraining, fine-tuning and LSAT.

Every method is a :class:`~llm4rec.eval.protocol.PeriodMethod`: ``fit(t)``
uses periods up to t (selecting on period t's val split only) and the
protocol tests it on period t + 1.

- **FR** (full retraining): a fresh LoRA on the train splits of periods 0..t
  plus the val splits of 0..t-1, early-stopped on val_t.
- **FT** (fine-tuning): the previous period's adapter trained further on
  train_t plus val_{t-1}, early-stopped on val_t. The old adapter is the first
  candidate, so when no update raises the val AUC the old one is kept (as the
  LSAT authors' code does). The first FT period starts from FR through t-1.
- **LSAT** (Shi et al., CIKM 2024): a *long-term* adapter trained FR-style on
  periods 0..K-1 and then frozen (or refreshed every R periods), and a
  *short-term* adapter trained on period t alone. They are combined
  - by an output ensemble, P = w P_long + (1 - w) P_short (``LSAT-ensemble``), or
  - by task arithmetic into one adapter (``LSAT-ta-<mode>``, :mod:`llm4rec.llm.merge`),
  with w chosen on val_t over a grid (or fixed). ``LSAT-long`` and
  ``LSAT-short`` report each adapter alone, so the gain of combining shows.

Adapters live in ``OUT/adapters/``: ``fr/``, ``ft/``, ``long/``, ``short/``
(``period_<t>/`` each: the last period the adapter learnt from),
``merged/<mode>/period_<t>/`` (normal peft adapters) and
``ensemble/period_<t>/`` (a manifest naming the long and short adapters and
w). Each is keyed by its recipe, so a rerun reuses what is done.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.eval import metrics
from llm4rec.llm.ensemble import combine, sigmoid, write_ensemble
from llm4rec.llm.lsat_config import LsatConfig
from llm4rec.llm.merge import merge_adapters
from llm4rec.llm.session import LoraSession

log = logging.getLogger(__name__)


def _val_sample(rows: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is None or len(rows) <= limit:
        return rows
    return rows.sample(n=limit, random_state=seed).sort_index()


class PeriodAdapters:
    """Which adapter serves each period: FR through t, FT at t, the long- and short-term adapters at t."""

    def __init__(self, session: LoraSession, config: LsatConfig) -> None:
        self.session, self.config = session, config
        self.store = session.store

    def full_retrain(self, through: int, role: str = "fr") -> Path:
        """A fresh adapter on periods 0..through (train splits, plus val splits before ``through``)."""
        session, limits = self.session, self.config.samples
        return session.ensure_trained(
            self.store.path(role, through),
            train_rows=session.training_rows(0, through),
            val_rows=session.rows([through], "val"),
            max_train_samples=limits.history_fit,
            max_val_samples=limits.val,
            description={"role": role, "period": through, "periods": list(range(through + 1))},
        )

    def long_term(self, period: int) -> Path:
        """The long-term adapter serving after period ``period``: FR through K-1, or through the latest refresh."""
        last_history = self.config.long_term.periods - 1
        refresh = self.config.long_term.refresh_every
        through = last_history if refresh == 0 else last_history + (period - last_history) // refresh * refresh
        return self.full_retrain(through, role="long")

    def short_term(self, period: int) -> Path:
        """A fresh adapter on period ``period`` alone (its train split; early-stopped on its val split)."""
        session, limits = self.session, self.config.samples
        return session.ensure_trained(
            self.store.path("short", period),
            train_rows=session.rows([period], "train"),
            val_rows=session.rows([period], "val"),
            max_train_samples=limits.recent_fit,
            max_val_samples=limits.val,
            description={"role": "short", "period": period, "periods": [period]},
        )

    def fine_tuned(self, period: int) -> Path:
        """The adapter of period - 1 (FR-style for the first FT period) trained on train_t + val_{t-1}."""
        session, limits = self.session, self.config.samples
        first = self.config.first_test_period - 1
        previous = self.full_retrain(period - 1) if period <= first else self.fine_tuned(period - 1)
        return session.ensure_trained(
            self.store.path("ft", period),
            train_rows=session.update_rows(period),
            val_rows=session.rows([period], "val"),
            max_train_samples=limits.recent_fit,
            max_val_samples=limits.val,
            description={"role": "ft", "period": period, "periods": [period], "start_from": str(previous)},
            start_from=previous,
        )


def best_weight(val_auc_by_weight: dict[float, float]) -> float:
    """The weight with the best val AUC; ties go to the weight nearest 0.5 (the least committed)."""
    return max(val_auc_by_weight, key=lambda w: (val_auc_by_weight[w], -abs(w - 0.5)))


class AdapterMethod:
    """A period method scored through the session; remembers its predictions of every tested period."""

    name: str
    scoring_is_stateless = True  # fits read stored adapters, never the scores: a resumed run may skip scoring

    def __init__(self, adapters: PeriodAdapters) -> None:
        self.adapters = adapters
        self.period = -1
        self.predictions: dict[int, pd.DataFrame] = {}  # tested period -> user_id, item_id, label, p_yes

    def prepare(self, period: int) -> None:
        raise NotImplementedError

    def score(self, samples: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def fit(self, timeline, period: int) -> None:
        self.period = period
        self.prepare(period)

    def predict_proba(self, samples: pd.DataFrame) -> np.ndarray:
        p = self.score(samples)
        self.predictions[self.period + 1] = samples[["user_id", "item_id", "label"]].assign(p_yes=p)
        return p


class SingleAdapterMethod(AdapterMethod):
    """FR, FT, LSAT-long or LSAT-short: one adapter per period, scored as it is."""

    def __init__(self, name: str, adapters: PeriodAdapters, choose) -> None:
        super().__init__(adapters)
        self.name, self.choose = name, choose

    def prepare(self, period: int) -> None:
        self.path = self.choose(period)

    def score(self, samples: pd.DataFrame) -> np.ndarray:
        return sigmoid(self.adapters.session.margins([self.path], samples)[0])


class EnsembleMethod(AdapterMethod):
    """LSAT-ensemble: w P_long + (1 - w) P_short, w chosen on val_t; saved as a manifest."""

    name = "LSAT-ensemble"

    def __init__(self, adapters: PeriodAdapters) -> None:
        super().__init__(adapters)
        self.settings = adapters.config.ensemble
        self.weights: dict[int, dict] = {}  # period -> chosen weight and the val AUC of each candidate

    def prepare(self, period: int) -> None:
        self.long, self.short = self.adapters.long_term(period), self.adapters.short_term(period)
        session, config = self.adapters.session, self.adapters.config
        if self.settings.weight is not None:
            self.weight, by_weight = self.settings.weight, {}
        else:
            val = _val_sample(session.rows([period], "val"), config.samples.val, config.seed)
            margins = session.margins([self.long, self.short], val, self.settings.passes)
            y = val["label"].to_numpy()
            by_weight = {
                w: metrics.auc(y, combine(margins[0], margins[1], w, self.settings.combine)) for w in self.settings.grid
            }
            self.weight = best_weight(by_weight)
        self.weights[period] = {"weight": self.weight, "val_auc_by_weight": by_weight}
        self.path = session.store.root / "ensemble" / f"period_{period}"  # the manifest `llm4rec predict` loads
        if session.is_main:
            write_ensemble(
                self.path,
                self.long,
                self.short,
                self.weight,
                self.settings.combine,
                {"period": period, "val_auc_by_weight": {str(w): a for w, a in by_weight.items()}},
            )

    def score(self, samples: pd.DataFrame) -> np.ndarray:
        margins = self.adapters.session.margins([self.long, self.short], samples, self.settings.passes)
        return combine(margins[0], margins[1], self.weight, self.settings.combine)


class TaskArithmeticMethod(AdapterMethod):
    """LSAT-ta-<mode>: one merged adapter, w chosen on val_t; saved as a normal peft adapter."""

    def __init__(self, adapters: PeriodAdapters, mode: str) -> None:
        super().__init__(adapters)
        self.mode = mode
        self.name = f"LSAT-ta-{mode}"
        self.settings = adapters.config.task_arithmetic
        self.weights: dict[int, dict] = {}

    def _merge(self, long_name: str, short_name: str, weight: float, merged_name: str) -> None:
        s = self.settings
        merge_adapters(self.adapters.session.model, long_name, short_name, weight, self.mode, merged_name,
                       density=s.density, svd_rank=s.svd_rank, seed=s.seed)  # fmt: skip

    def prepare(self, period: int) -> None:
        from llm4rec.llm.adapter_store import recipe_key
        from llm4rec.llm.adapters import read_adapter_meta, save_adapter
        from llm4rec.llm.ensemble import score_margins

        session, config = self.adapters.session, self.adapters.config
        long, short = self.adapters.long_term(period), self.adapters.short_term(period)
        self.path = session.store.root / "merged" / self.mode / f"period_{period}"
        key = recipe_key(
            {"mode": self.mode, "long": session.stored_recipe(long), "short": session.stored_recipe(short),
             "weight": self.settings.weight, "grid": self.settings.grid, "density": self.settings.density,
             "svd_rank": self.settings.svd_rank, "merge_seed": self.settings.seed, "val": config.samples.val,
             "seed": config.seed}
        )  # fmt: skip
        if session.store.find(key, self.path) is not None:
            self.weights[period] = {**read_adapter_meta(self.path)["merge"], "reused": True}
            return
        long_name, short_name = session.load(long), session.load(short)
        by_weight = {}
        if self.settings.weight is not None:
            weight = self.settings.weight
        else:
            val = _val_sample(session.rows([period], "val"), config.samples.val, config.seed)
            samples, y = session.samples(val), val["label"].to_numpy()
            for w in self.settings.grid:
                self._merge(long_name, short_name, w, "candidate")
                margin = score_margins(session.model, samples["input_ids"], session.backbone.answer_ids,
                                       session.backbone.tokenizer.pad_token_id, ["candidate"], "two",
                                       session.score_batch_size)[0]  # fmt: skip
                by_weight[w] = metrics.auc(y, margin)
            weight = best_weight(by_weight)
        self._merge(long_name, short_name, weight, "merged")
        if "candidate" in session.model.peft_config:
            session.model.delete_adapter("candidate")
        self.weights[period] = {"weight": weight, "val_auc_by_weight": by_weight}
        if session.is_main:
            extra = {
                "recipe_key": key,
                "kind": "lora-adapter",
                "merge": {
                    "mode": self.mode,
                    "weight": weight,
                    "long": str(long),
                    "short": str(short),
                    "val_auc_by_weight": {str(w): a for w, a in by_weight.items()},
                },
                "period": period,
            }
            save_adapter(session.model, self.path, session.backbone, session.template, session.cutoff, extra)
        session.model.set_adapter(long_name)
        session.model.delete_adapter("merged")
        session.wait()
        session.forget_margins(self.path)

    def score(self, samples: pd.DataFrame) -> np.ndarray:
        # Scored from the saved directory: exactly what a user loads with `llm4rec predict --adapter`.
        return sigmoid(self.adapters.session.margins([self.path], samples)[0])


def build_methods(config: LsatConfig, adapters: PeriodAdapters) -> list:
    """The configured methods in run order (their names: ``config.method_names()``)."""
    methods: list = []
    for family in config.methods:
        if family == "FR":
            methods.append(SingleAdapterMethod("FR", adapters, adapters.full_retrain))
        elif family == "FT":
            methods.append(SingleAdapterMethod("FT", adapters, adapters.fine_tuned))
        else:
            methods.append(SingleAdapterMethod("LSAT-long", adapters, adapters.long_term))
            methods.append(SingleAdapterMethod("LSAT-short", adapters, adapters.short_term))
            methods.append(EnsembleMethod(adapters))
            methods += [TaskArithmeticMethod(adapters, mode) for mode in config.task_arithmetic.modes]
    return methods


def write_predictions(directory: Path, predictions: dict[int, pd.DataFrame]) -> None:
    """``directory/period_<t>.csv``: user_id, item_id, label, p_yes of every tested sample."""
    from llm4rec.io import atomic_path

    directory.mkdir(parents=True, exist_ok=True)
    for period, table in predictions.items():
        with atomic_path(directory / f"period_{period}.csv") as tmp:
            table.to_csv(tmp, index=False)


def ensure_backbone(config: LsatConfig, timeline, template, accelerator, progress: bool) -> None:
    """Fetch (``fetch_backbone``) or build (``build_backbone``) the backbone named by the config when its directory
    does not exist yet; refuse a scratch backbone pre-trained on a tested period."""
    from llm4rec.llm.scratch import check_backbone_directory

    if not config.backbone.model_name_or_path:  # a GGUF file alone
        return
    path = Path(config.backbone.model_name_or_path)
    if path.is_dir():
        check_backbone_directory(path, config.data.name, config.first_test_period)
    fetch, build = getattr(config, "fetch_backbone", None), getattr(config, "build_backbone", None)
    if path.exists() or (build is None and fetch is None):
        return
    if fetch is not None:
        if accelerator.is_main_process:
            from llm4rec.llm.fetch import fetch_backbone

            log.info("fetching %s into %s (first run only)", fetch, path)
            fetch_backbone(fetch, path, progress)
        accelerator.wait_for_everyone()
        return
    if accelerator.is_main_process:
        from llm4rec.llm.scratch import build_scratch_backbone

        log.info("building %s at %s (first run only)", build.preset, path)
        build_scratch_backbone(
            timeline, template, str(path), build.preset, build.periods, build.seed, config.cutoff, progress,
            max_samples=build.max_samples, epochs=build.epochs,
        )  # fmt: skip
    accelerator.wait_for_everyone()


def open_session(
    config: LsatConfig, timeline, progress: bool = True, build_progress: bool | None = None
) -> LoraSession:
    """The backbone (built first when the config says so) in a LoRA session whose adapters live in ``config.out``.

    ``build_progress``: a progress bar for the backbone's build (default: ``progress``).
    """
    from dataclasses import asdict

    from accelerate import Accelerator

    from llm4rec.llm.adapter_store import AdapterStore
    from llm4rec.llm.backbone import load_backbone
    from llm4rec.llm.prompts import load_template, template_for_dataset

    accelerator = Accelerator(mixed_precision=config.train.mixed_precision)  # train_lora accumulates gradients
    template = load_template(config.template or template_for_dataset(config.data.name))
    ensure_backbone(config, timeline, template, accelerator, progress if build_progress is None else build_progress)
    backbone = load_backbone(config.backbone, template, accelerator.device)
    return LoraSession(
        backbone, template, timeline, AdapterStore(Path(config.out) / "adapters"), config.lora, config.train,
        data_recipe=asdict(config.data), cutoff=config.cutoff, score_batch_size=config.score_batch_size,
        accelerator=accelerator, progress=progress,
    )  # fmt: skip


def run_lsat(config: LsatConfig, progress: bool = True) -> tuple[list, dict]:
    """Run FR, FT and the LSAT variants over the tested periods; write results, plots and adapters to ``config.out``.

    Returns (result rows, run summary).
    """
    from dataclasses import asdict

    from llm4rec.data.config import load_timeline
    from llm4rec.eval.protocol import run_protocol
    from llm4rec.eval.report import write_results
    from llm4rec.io import write_json

    started = time.perf_counter()
    timeline = load_timeline(config.data)
    session = open_session(config, timeline, progress)
    accelerator, backbone = session.accelerator, session.backbone
    out = Path(config.out)
    methods = build_methods(config, PeriodAdapters(session, config))
    rows = []
    for method in methods:
        rows += run_protocol(
            method, timeline, config.first_test_period, config.last_test_period, config.seed, progress,
            max_test_samples=config.samples.test,
        )  # fmt: skip
        if accelerator.is_main_process:  # results so far, so an interrupted run still leaves a table
            write_predictions(out / "predictions" / method.name, method.predictions)
            write_results(rows, out, title=f"LLM update methods on {config.data.name} ({backbone.config.name})")
    seconds = time.perf_counter() - started
    summary = {
        "seconds": round(seconds, 1),
        "methods": [m.name for m in methods],
        "fits": session.fits,
        "weights": {m.name: m.weights for m in methods if hasattr(m, "weights")},
    }
    if accelerator.is_main_process:
        from llm4rec.eval.plots import plot_mean_metric, plot_metric_per_period
        from llm4rec.eval.report import with_means

        rows = with_means(rows)
        title = f"{config.data.name}, {Path(backbone.config.name).name}"
        plot_metric_per_period(rows, out / "auc_per_period.png", title=f"{title}: AUC per period")
        plot_mean_metric(rows, out / "auc_mean.png", title=f"{title}: mean AUC over periods")
        write_json(out / "config.json", asdict(config))
        write_json(out / "training.json", summary)
    return rows, summary
