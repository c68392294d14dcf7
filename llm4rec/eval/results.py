"""The results schema shared by every runner in llm4rec.

One row per (method, tested period, split, seed), plus a ``mean`` row per
(method, split, seed). Columns: method, period, split, n, auc, gauc, logloss,
auc_warm, auc_cold, seconds, seed, served_by. ``auc_warm`` / ``auc_cold`` are
the AUC on test samples whose item does / does not occur in the data available
for training (periods 0..t when testing t + 1); NaN when a group has one class.

``served_by`` says which model scored a period when it was not the method's
own: :data:`PRETRAINED` (the model every method of a CTR run starts from, so
all of them score that period alike), or the name of the method whose model
served (ASMG's warm-up and SML's first period serve plain IU). The mean rows
average the *compared periods* only (:func:`compared_periods`): a period where
some method serves the pre-trained model is one where the methods do not differ.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from llm4rec.eval import metrics

COLUMNS = [
    "method", "period", "split", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds", "seed", "served_by",
    "rmse", "f1",
]  # fmt: skip
METRIC_COLUMNS = ["auc", "gauc", "logloss", "auc_warm", "auc_cold", "rmse", "f1"]
OPTIONAL_METRICS = ("rmse", "f1")  # shown only where some row has one (the rating task; the cold-start protocol)
SUMMARY_COLUMNS = [*METRIC_COLUMNS, "seconds"]  # what across_seeds aggregates
MEAN = "mean"
PRETRAINED = "pre-trained"  # served_by: the model pre-trained before the first update, the same for every method


@dataclass
class ResultRow:
    method: str
    period: int | str  # tested period index, or "mean"
    split: str
    n: int
    auc: float
    gauc: float
    logloss: float
    auc_warm: float
    auc_cold: float
    seconds: float
    seed: int = 0
    served_by: str = ""  # "" (the method's own model), PRETRAINED, or the method whose model served
    rmse: float = float("nan")  # the rating task's RMSE on the rating scale; NaN for the CTR task
    f1: float = float("nan")  # the cold-start protocol's F1 at the mean score (metrics.f1_at_mean); NaN elsewhere

    def to_dict(self) -> dict:
        """JSON-ready: NaN becomes None."""
        out = asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict) -> ResultRow:
        names = {f.name for f in fields(cls)}
        values = {k: (float("nan") if v is None else v) for k, v in data.items() if k in names}
        return cls(**values)


def score(
    method: str,
    period: int,
    y: np.ndarray,
    p: np.ndarray,
    users: np.ndarray,
    warm: np.ndarray,
    seconds: float,
    split: str = "test",
    seed: int = 0,
    served_by: str = "",
    ratings: np.ndarray | None = None,
    rating_scale: tuple[float, float] | None = None,
    with_f1: bool = False,
) -> ResultRow:
    """Compute every metric of the schema for one method on one tested period.

    For the rating task (``rating_scale`` given), ``p`` is the predicted rating rescaled to [0, 1]: RMSE compares
    it, mapped back onto the scale, with ``ratings``; the AUC columns rank the like / dislike label ``y`` by it."""
    warm = np.asarray(warm, dtype=bool)
    error = float("nan")
    if rating_scale is not None:
        low, high = rating_scale
        error = metrics.rmse(np.asarray(ratings, dtype=np.float64), low + (high - low) * np.asarray(p))
    return ResultRow(
        method=method,
        period=period,
        split=split,
        n=len(y),
        auc=metrics.auc(y, p),
        gauc=metrics.gauc(y, p, users),
        logloss=metrics.logloss(y, p) if rating_scale is None else float("nan"),  # p is no probability there
        auc_warm=metrics.auc(y[warm], p[warm]),
        auc_cold=metrics.auc(y[~warm], p[~warm]),
        seconds=seconds,
        seed=seed,
        served_by=served_by,
        rmse=error,
        f1=metrics.f1_at_mean(y, p) if with_f1 else float("nan"),
    )


def compared_periods(rows: list[ResultRow]) -> list:
    """The tested periods the mean rows average: all but those where some row was served by the pre-trained
    model (there every method of that model and seed scores alike, so the period compares nothing). When
    that leaves nothing (a single tested period), all of them."""
    tested = list(dict.fromkeys(r.period for r in rows if r.period != MEAN))
    shared = {r.period for r in rows if r.period != MEAN and r.served_by == PRETRAINED}
    return [p for p in tested if p not in shared] or tested


def mean_rows(rows: list[ResultRow], periods: list | None = None) -> list[ResultRow]:
    """One ``mean`` row per (method, split, seed): metrics averaged over ``periods`` (default: the
    :func:`compared_periods`; NaNs skipped), n summed over them; seconds summed over every tested period (the
    method's whole cost)."""
    periods = set(compared_periods(rows) if periods is None else periods)
    groups: dict[tuple, list[ResultRow]] = {}
    seconds: dict[tuple, float] = {}
    for row in rows:
        if row.period == MEAN:
            continue
        key = (row.method, row.split, row.seed)
        seconds[key] = seconds.get(key, 0.0) + row.seconds
        if row.period in periods:
            groups.setdefault(key, []).append(row)
    out = []
    for (method, split, seed), group in groups.items():
        averaged = {}
        for column in METRIC_COLUMNS:
            values = np.array([getattr(r, column) for r in group], dtype=float)
            averaged[column] = float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")
        out.append(
            ResultRow(
                method=method,
                period=MEAN,
                split=split,
                n=sum(r.n for r in group),
                seconds=seconds[(method, split, seed)],
                seed=seed,
                **averaged,
            )
        )
    return out


@dataclass
class SeedSummary:
    """One (method, period, split) over seeds: each metric's mean and sample standard deviation (ddof = 1).

    ``period`` is a tested period or ``"mean"`` (then each seed's value is its mean over the periods).
    ``std`` is NaN with a single seed; NaN values of a seed (one-class groups) are skipped.
    """

    method: str
    period: int | str
    split: str
    seeds: list[int]
    n: int  # samples per seed (the first seed's; the same for every seed under the protocol)
    mean: dict[str, float]
    std: dict[str, float]

    def to_dict(self) -> dict:
        def clean(values: dict[str, float]) -> dict:
            return {k: (None if math.isnan(v) else v) for k, v in values.items()}

        return {
            "method": self.method,
            "period": self.period,
            "split": self.split,
            "seeds": self.seeds,
            "n": self.n,
            "mean": clean(self.mean),
            "std": clean(self.std),
        }


def _mean_and_std(values: list[float]) -> tuple[float, float]:
    array = np.array(values, dtype=float)
    array = array[~np.isnan(array)]
    if len(array) == 0:
        return float("nan"), float("nan")
    return float(array.mean()), (float(array.std(ddof=1)) if len(array) > 1 else float("nan"))


def across_seeds(rows: list[ResultRow]) -> list[SeedSummary]:
    """Rows grouped by (method, period, split), first-seen order, each metric averaged over the seeds.

    Pass mean rows (see :func:`with_means`) for the usual "mean over periods, then mean ± std over seeds".
    """
    groups: dict[tuple, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault((row.method, row.period, row.split), []).append(row)
    out = []
    for (method, period, split), group in groups.items():
        stats = {column: _mean_and_std([getattr(r, column) for r in group]) for column in SUMMARY_COLUMNS}
        out.append(
            SeedSummary(
                method=method,
                period=period,
                split=split,
                seeds=sorted({r.seed for r in group}),
                n=group[0].n,
                mean={c: m for c, (m, _) in stats.items()},
                std={c: s for c, (_, s) in stats.items()},
            )
        )
    return out
