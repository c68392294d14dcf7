"""The period protocol: train through period t, test on all of period t + 1.

Any object with a ``name``, ``fit(timeline, period)`` and
``predict_proba(samples)`` is a method (one that may serve another model's
scores says so in ``served_by``, see :mod:`llm4rec.eval.results`): LLM recommenders, CTR models and
incremental strategies all run through :func:`run_protocol` and land in the
same results table. ``fit`` decides which periods it learns from (all of
0..t for full retraining, only t for fine-tuning, ...); it must not look at
periods after t, and it selects checkpoints on period t's val split only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from llm4rec.data.periods import Timeline
from llm4rec.errors import ConfigError, Llm4recError
from llm4rec.eval.results import ResultRow, score

log = logging.getLogger(__name__)


@runtime_checkable
class PeriodMethod(Protocol):
    name: str

    def fit(self, timeline: Timeline, period: int) -> None:
        """Update the model with data of periods up to and including ``period``."""

    def predict_proba(self, samples: pd.DataFrame) -> np.ndarray:
        """P(label = 1) for each row of ``samples`` (rows of the timeline's table)."""


def _check_probabilities(method: str, p, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if len(p) != n:
        raise Llm4recError(f"method {method}: predict_proba returned {len(p)} values for {n} samples")
    bad = int((~np.isfinite(p)).sum())
    if bad:
        raise Llm4recError(
            f"method {method}: {bad} of {n} scores are NaN or infinite, before any metric (a diverged fit: lower the "
            "learning rate, or train in float32)"
        )
    if (p < 0).any() or (p > 1).any():
        raise Llm4recError(f"method {method}: predict_proba must return probabilities in [0, 1]")
    return p


def tested_periods(timeline: Timeline, first_test_period: int = 1, last_test_period: int | None = None) -> range:
    last = timeline.n_periods - 1 if last_test_period is None else last_test_period
    if not 1 <= first_test_period <= last <= timeline.n_periods - 1:
        raise ConfigError(
            f"test periods {first_test_period}..{last} are out of range: with {timeline.n_periods} periods "
            f"a tested period is in 1..{timeline.n_periods - 1} (the model trains on the period before)"
        )
    return range(first_test_period, last + 1)


def tested_samples(timeline: Timeline, period: int, max_samples: int | None = None) -> pd.DataFrame:
    """All rows of ``period``, or ``max_samples`` of them drawn with a seed that is the period index alone:
    every method and every seed is tested on the same rows (kept in time order)."""
    samples = timeline.period(period)
    if max_samples is None or len(samples) <= max_samples:
        return samples
    if max_samples < 1:
        raise ConfigError(f"max_test_samples: must be >= 1 (or None for all), got {max_samples}")
    chosen = np.random.default_rng(period).choice(len(samples), size=max_samples, replace=False)
    return samples.iloc[np.sort(chosen)]


def run_protocol(
    method: PeriodMethod,
    timeline: Timeline,
    first_test_period: int = 1,
    last_test_period: int | None = None,
    seed: int = 0,
    progress: bool = True,
    max_test_samples: int | None = None,
    fit_from: int | None = None,
    reuse: dict[int, ResultRow] | None = None,
    on_result: Callable[[ResultRow, pd.DataFrame, np.ndarray], None] | None = None,
) -> list[ResultRow]:
    """Fit ``method`` through period t and score period t + 1 (all of it, or the same ``max_test_samples``
    rows for every method), for every tested period.

    - ``fit_from``: the first fitted period when it is earlier than ``first_test_period - 1``; the periods
      before that are fitted in turn without being scored (a method kept up to date since pre-training).
    - ``reuse``: tested period -> a result stored earlier. It is returned as it is. The method is still fitted
      through that period (later fits depend on it); it is also scored again, unless the method says
      ``scoring_is_stateless`` (scoring changes nothing the next fit sees), and the new score is dropped.
    - ``on_result(row, samples, p)`` runs after each newly scored period (not for reused ones): a caller
      saves the result before the next period starts.
    """
    periods = tested_periods(timeline, first_test_period, last_test_period)
    first_fit = first_test_period - 1 if fit_from is None else fit_from
    if not 0 <= first_fit <= first_test_period - 1:
        raise ConfigError(f"fit_from: expected a period in 0..{first_test_period - 1}, got {fit_from}")
    reuse = reuse or {}
    from accelerate.utils import set_seed

    set_seed(seed)  # random, numpy and torch (and any accelerator's generators)
    started = time.perf_counter()
    for period in range(first_fit, first_test_period - 1):  # burn-in: fitted, not scored
        method.fit(timeline, period)
    burn_in = time.perf_counter() - started  # counted in the first tested period's seconds
    rows = []
    for tested in tqdm(periods, desc=method.name, unit="period", disable=not progress):
        started = time.perf_counter()
        method.fit(timeline, tested - 1)
        if tested in reuse and getattr(method, "scoring_is_stateless", False):
            rows.append(reuse[tested])
            continue
        samples = tested_samples(timeline, tested, max_test_samples)
        p = _check_probabilities(method.name, method.predict_proba(samples), len(samples))
        if tested in reuse:
            rows.append(reuse[tested])
            continue
        seconds = time.perf_counter() - started + (burn_in if tested == periods[0] else 0.0)
        warm = timeline.warm_mask(samples, trained_through=tested - 1)
        rating_scale = getattr(method, "rating_scale", None)  # the rating task: RMSE against the ratings too
        row = score(
            method.name,
            tested,
            samples["label"].to_numpy(),
            p,
            samples["user_id"].to_numpy(),
            warm,
            seconds,
            seed=seed,
            served_by=getattr(method, "served_by", ""),
            ratings=samples["rating"].to_numpy() if rating_scale is not None else None,
            rating_scale=rating_scale,
        )
        log.info(
            "%s seed %d period %d: AUC %.4f gAUC %.4f LogLoss %.4f (%.1f s)",
            method.name, seed, tested, row.auc, row.gauc, row.logloss, seconds,
        )  # fmt: skip
        rows.append(row)
        if on_result is not None:
            on_result(row, samples, p)
    return rows
