"""Keeping an LLM recommender up to date over periods: full retraining, fine-tuning and LSAT.

Every method is a :class:`~llm4rec.eval.protocol.PeriodMethod`: ``fit(t)``
uses periods up to t (selecting on period t's val split only) and the
protocol tests it on period t + 1.

- **FR** (full retraining): a fresh LoRA on the train splits of periods 0..t
  plus the val splits of 0..t-1, early-stopped on val_t.

Every fit learns the rows of :meth:`Timeline.training_positions`, the one
row rule the CTR updates follow too: one period t means train_t plus val_{t-1}.
- **FT** (fine-tuning): the previous period's adapter trained further on
  train_t plus val_{t-1}, early-stopped on val_t. The old adapter is the first
  candidate, so when no update raises the val AUC the old one is kept (as the
  LSAT authors' code does). The first FT period starts from FR through t-1.
- **<method>+Reservoir / +MEGG**: FT's and the short-term adapter's fits also learn samples replayed from
  earlier periods (:mod:`llm4rec.llm.replay`).
- **LSAT** (Shi et al., CIKM 2024): a *long-term* adapter trained FR-style on
  periods 0..K-1 and then frozen (or refreshed every R periods), and a
  *short-term* adapter trained on period t alone (train_t plus val_{t-1}). They are combined
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
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.eval import metrics
from llm4rec.llm.ensemble import combine, write_ensemble
from llm4rec.llm.merge import merge_adapters
from llm4rec.llm.score import sigmoid
from llm4rec.llm.session import LoraSession

log = logging.getLogger(__name__)


def _val_sample(rows: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is None or len(rows) <= limit:
        return rows
    return rows.sample(n=limit, random_state=seed).sort_index()


class PeriodAdapters:
    """Which adapter serves each period: FR through t, FT at t, the long- and short-term adapters at t.

    ``config``: the method's view of its LsatConfig (:func:`llm4rec.llm.catalogue.method_view`).
    """

    def __init__(self, session: LoraSession, config) -> None:
        self.session, self.config = session, config
        self.store = session.store
        self.replay = None  # a LoraReplay for <method>+Reservoir / +MEGG (llm4rec.llm.catalogue)

    def full_retrain(self, through: int, role: str = "fr") -> Path:
        """A fresh adapter on periods 0..through (train splits, plus val splits before ``through``)."""
        session, limits = self.session, self.config.samples
        return session.ensure_trained(
            self.store.path(role, through),
            train_rows=session.timeline.training_rows(0, through),
            val_rows=session.timeline.period(through, "val"),
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
        """A fresh adapter on period ``period`` alone (train_t plus val_{t-1}; early-stopped on val_t)."""
        scorer = self.long_term(period) if self.replay is not None and self.replay.selection == "MEGG" else None
        return self._one_period_fit("short", period, scorer=scorer)

    def fine_tuned(self, period: int) -> Path:
        """The adapter of period - 1 (FR-style for the first FT period) trained on train_t + val_{t-1}."""
        first = self.config.first_test_period - 1
        previous = self.full_retrain(period - 1) if period <= first else self.fine_tuned(period - 1)
        return self._one_period_fit("ft", period, start_from=previous, scorer=previous)

    def _one_period_fit(self, role: str, period: int, start_from: Path | None = None, scorer: Path | None = None):
        """A fit on period ``period`` (``samples.recent_fit`` of its rows), plus the rows ``self.replay`` replays
        from earlier periods (then in ``<role>-<selection>/``, its record naming how many of each it learnt);
        ``scorer``: the adapter MEGG's gradients come from."""
        session, limits = self.session, self.config.samples
        rows, cap = session.timeline.training_rows(period, period), limits.recent_fit
        description = {"role": role, "period": period, "periods": [period]}
        if self.replay is not None:
            from llm4rec.llm.replay import sample_positions

            new = rows.iloc[sample_positions(len(rows), cap, session.train_config.seed)]
            plan = self.replay.plan(session, period, new, scorer)
            rows, cap = plan.rows, None
            role = f"{role}-{self.replay.selection.lower()}"
            description = {**description, "role": role, "samples": plan.record(self.replay.selection)}
        if start_from is not None:
            description["start_from"] = str(start_from)
        return session.ensure_trained(
            self.store.path(role, period),
            train_rows=rows,
            val_rows=session.timeline.period(period, "val"),
            max_train_samples=cap,
            max_val_samples=limits.val,
            description=description,
            start_from=start_from,
        )


def best_weight(val_auc_by_weight: dict[float, float]) -> float:
    """The weight with the best val AUC; ties go to the weight nearest 0.5 (the least committed)."""
    return max(val_auc_by_weight, key=lambda w: (val_auc_by_weight[w], -abs(w - 0.5)))


class AdapterMethod:
    """A period method scored through the session from the adapters it serves (:meth:`serving_paths`), whose
    answer margins :meth:`probabilities` turns into P(Yes). ``hidden_and_proba`` gives the same probabilities
    with the final hidden states the margins were read from (one pass): what ReLoop2's error memory needs."""

    name: str
    scoring_is_stateless = True  # fits read stored adapters, never the scores: a resumed run may skip scoring
    passes = "one"

    def __init__(self, adapters: PeriodAdapters) -> None:
        self.adapters = adapters

    def prepare(self, period: int) -> None:
        raise NotImplementedError

    def serving_paths(self) -> list[Path]:
        return [self.path]

    def fit_records(self) -> dict[str, dict]:
        """What each serving adapter's fit learnt (its directory -> samples trained on, and for a replaying fit
        how many were new and how many replayed): read from the adapters' own records."""
        from llm4rec.llm.adapters import read_adapter_meta

        records = {}
        for path in self.serving_paths():
            meta = read_adapter_meta(path)
            training = meta.get("training", {})
            records[str(path)] = {
                "n_train": training.get("n_train"),
                **({"samples": meta["samples"]} if "samples" in meta else {}),
            }
        return records

    def probabilities(self, margins: np.ndarray) -> np.ndarray:
        """P(Yes) from the [len(serving_paths), n] answer margins."""
        return sigmoid(margins[0])

    def score(self, samples: pd.DataFrame) -> np.ndarray:
        return self.probabilities(self.adapters.session.margins(self.serving_paths(), samples, self.passes))

    def hidden_and_proba(self, samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(hidden vectors [n, H x adapters], P(Yes) [n]): each serving adapter's last-layer hidden state at the
        scored position, side by side, and the probabilities read from them in the same forward pass."""
        margins, hidden = self.adapters.session.margins_and_hidden(self.serving_paths(), samples)
        return np.concatenate(list(hidden), axis=1), self.probabilities(margins)

    def prefill_rows(self, timeline, period: int) -> pd.DataFrame:
        """The val_t rows a fit selects on (``samples.val`` of them): what an error memory may be filled with."""
        config = self.adapters.config
        return _val_sample(timeline.period(period, "val"), config.samples.val, config.seed)

    def fit(self, timeline, period: int) -> None:
        self.prepare(period)

    def predict_proba(self, samples: pd.DataFrame) -> np.ndarray:
        return self.score(samples)


class SingleAdapterMethod(AdapterMethod):
    """FR, FT, LSAT-long or LSAT-short: one adapter per period, scored as it is."""

    def __init__(self, name: str, adapters: PeriodAdapters, choose) -> None:
        super().__init__(adapters)
        self.name, self.choose = name, choose

    def prepare(self, period: int) -> None:
        self.path = self.choose(period)


class EnsembleMethod(AdapterMethod):
    """LSAT-ensemble: w P_long + (1 - w) P_short, w chosen on val_t; saved as a manifest."""

    name = "LSAT-ensemble"

    def __init__(self, adapters: PeriodAdapters) -> None:
        super().__init__(adapters)
        self.settings = adapters.config.ensemble
        self.passes = self.settings.passes
        self.weights: dict[int, dict] = {}  # period -> chosen weight and the val AUC of each candidate

    def serving_paths(self) -> list[Path]:
        return [self.long, self.short]

    def probabilities(self, margins: np.ndarray) -> np.ndarray:
        return combine(margins[0], margins[1], self.weight, self.settings.combine)

    def prepare(self, period: int) -> None:
        self.long, self.short = self.adapters.long_term(period), self.adapters.short_term(period)
        session, config = self.adapters.session, self.adapters.config
        if self.settings.weight is not None:
            self.weight, by_weight = self.settings.weight, {}
        else:
            val = _val_sample(session.timeline.period(period, "val"), config.samples.val, config.seed)
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
        from llm4rec.llm.score import score_margins

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
            val = _val_sample(session.timeline.period(period, "val"), config.samples.val, config.seed)
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

    # Scored from the saved directory (AdapterMethod.score): exactly what `llm4rec predict --adapter` loads.
