"""Item popularity: each item's smoothed positive rate in everything seen so far.

    p(item) = (positives(item) + m * prior) / (interactions(item) + m)

with ``prior`` the overall positive rate of the training data and ``m`` the
smoothing strength (pseudo-interactions). Items never seen get the prior.
It ignores the user entirely, so it is the floor any personalised method
must clear, and it exercises the protocol end to end in a second.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from llm4rec.data.periods import Timeline
from llm4rec.errors import ConfigError


class ItemPopularity:
    def __init__(self, smoothing: float = 10.0, name: str = "Popularity") -> None:
        if smoothing < 0:
            raise ConfigError(f"popularity smoothing must be >= 0, got {smoothing}")
        self.smoothing = smoothing
        self.name = name
        self.prior = 0.5
        self.rates: pd.Series = pd.Series(dtype=float)

    def fit(self, timeline: Timeline, period: int) -> None:
        seen = timeline.through(period)  # full retraining on periods 0..period
        self.prior = float(seen["label"].mean())
        stats = seen.groupby("item_id")["label"].agg(["sum", "count"])
        self.rates = (stats["sum"] + self.smoothing * self.prior) / (stats["count"] + self.smoothing)

    def predict_proba(self, samples: pd.DataFrame) -> np.ndarray:
        return samples["item_id"].map(self.rates).fillna(self.prior).to_numpy(dtype=np.float64)
