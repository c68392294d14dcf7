"""The results schema shared by every runner in llm4rec.

One row per (method, tested period, split, seed), plus a ``mean`` row per
(method, split, seed). Columns: method, period, split, n, auc, gauc, logloss,
auc_warm, auc_cold, seconds, seed. ``auc_warm`` / ``auc_cold`` are the AUC on
test samples whose item does / does not occur in the data available for
training (periods 0..t when testing t + 1); NaN when a group has one class.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from llm4rec.eval import metrics

COLUMNS = ["method", "period", "split", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds", "seed"]
METRIC_COLUMNS = ["auc", "gauc", "logloss", "auc_warm", "auc_cold"]
MEAN = "mean"


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
) -> ResultRow:
    """Compute every metric of the schema for one method on one tested period."""
    warm = np.asarray(warm, dtype=bool)
    return ResultRow(
        method=method,
        period=period,
        split=split,
        n=len(y),
        auc=metrics.auc(y, p),
        gauc=metrics.gauc(y, p, users),
        logloss=metrics.logloss(y, p),
        auc_warm=metrics.auc(y[warm], p[warm]),
        auc_cold=metrics.auc(y[~warm], p[~warm]),
        seconds=seconds,
        seed=seed,
    )


def mean_rows(rows: list[ResultRow]) -> list[ResultRow]:
    """One ``mean`` row per (method, split, seed): metrics averaged over periods (NaNs skipped),
    n and seconds summed."""
    groups: dict[tuple, list[ResultRow]] = {}
    for row in rows:
        if row.period != MEAN:
            groups.setdefault((row.method, row.split, row.seed), []).append(row)
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
                seconds=sum(r.seconds for r in group),
                seed=seed,
                **averaged,
            )
        )
    return out
