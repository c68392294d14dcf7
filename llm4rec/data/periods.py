"""Chronological periods (the LSAT protocol).

All interactions are sorted by time. The rows that enter periods (optionally
only the last ``last_n``, or only those inside [start, end)) are cut into
``n_periods`` periods of equal count or of equal time span. Inside a period
the first ``1 - val_fraction`` of rows in time are its train split and the
rest its val split. A model trained through period t is tested on all of
period t + 1. Rows in no period still serve as history for later rows, but
nothing trains or tests on them, so the timeline's table leaves them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

import numpy as np
import pandas as pd

from llm4rec.data.histories import history_lists, history_positions
from llm4rec.data.tables import RecDataset, apply_label
from llm4rec.errors import ConfigError, DataError

OUTSIDE = -1


def _parse_date(value: str, option: str) -> int:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"periods.{option}: expected a date like 2014-03-01, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class PeriodConfig:
    """How the timeline is cut. ``mode: count`` = equal-count periods, ``time`` = equal time spans."""

    n_periods: int = 10
    mode: Literal["count", "time"] = "count"
    last_n: int | None = None  # count mode: only the last N eligible samples enter periods
    start: str | None = None  # time mode: first instant (UTC date), inclusive
    end: str | None = None  # time mode: last instant (UTC date), exclusive
    val_fraction: float = 0.1
    min_history: int = 0  # only samples with at least this many earlier interactions enter periods

    def __post_init__(self) -> None:
        if self.n_periods < 2:
            raise ConfigError(f"periods.n_periods: need at least 2 (train on t, test on t+1), got {self.n_periods}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"periods.val_fraction: expected a value in (0, 1), got {self.val_fraction}")
        if self.last_n is not None and self.last_n < self.n_periods:
            raise ConfigError(f"periods.last_n: must be >= n_periods ({self.n_periods}), got {self.last_n}")
        if self.min_history < 0:
            raise ConfigError(f"periods.min_history: must be >= 0, got {self.min_history}")
        if self.mode == "time":
            if self.start is None or self.end is None:
                raise ConfigError("periods: mode 'time' needs both start and end dates")
            if _parse_date(self.end, "end") <= _parse_date(self.start, "start"):
                raise ConfigError(f"periods: end ({self.end}) must be after start ({self.start})")
            if self.last_n is not None:
                raise ConfigError("periods.last_n applies to mode 'count' only")
        elif self.start is not None or self.end is not None:
            raise ConfigError("periods.start/end apply to mode 'time' only")


def assign_periods(timestamps: np.ndarray, eligible: np.ndarray, config: PeriodConfig) -> np.ndarray:
    """Period index per row of a time-sorted table (``OUTSIDE`` for rows in no period)."""
    period = np.full(len(timestamps), OUTSIDE, dtype=np.int64)
    candidates = np.flatnonzero(eligible)
    if config.mode == "count":
        if config.last_n is not None:
            candidates = candidates[-config.last_n :]
        if len(candidates) < config.n_periods * 2:
            raise DataError(
                f"periods.n_periods={config.n_periods} is too many for {len(candidates)} samples: "
                "each period needs at least 2 (one train, one val)"
            )
        # Equal counts; when the count does not divide, sizes differ by at most one.
        bounds = np.floor(np.arange(config.n_periods + 1) * len(candidates) / config.n_periods).astype(np.int64)
        period[candidates] = np.searchsorted(bounds, np.arange(len(candidates)), side="right") - 1
    else:
        start, end = _parse_date(config.start, "start"), _parse_date(config.end, "end")
        edges = np.linspace(start, end, config.n_periods + 1)
        ts = timestamps[candidates]
        inside = (ts >= start) & (ts < end)
        index = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, config.n_periods - 1)
        period[candidates[inside]] = index[inside]
    return period


def assign_splits(period: np.ndarray, val_fraction: float) -> np.ndarray:
    """'train' for the first (1 - val_fraction) of each period's rows in time order, 'val' for the rest."""
    split = np.full(len(period), "", dtype=object)
    for index in np.unique(period[period != OUTSIDE]):
        rows = np.flatnonzero(period == index)
        n_train = int(len(rows) * (1 - val_fraction))
        split[rows[:n_train]] = "train"
        split[rows[n_train:]] = "val"
    return split


@dataclass
class Timeline:
    """A dataset cut into periods, with every sample's history attached.

    ``table`` holds the samples of all periods sorted by time, with the
    canonical columns plus ``period``, ``split`` ('train' / 'val'),
    ``history_item_ids``, ``history_labels``, ``liked_item_ids``, ``disliked_item_ids`` and
    ``n_earlier`` (see :mod:`llm4rec.data.histories`). ``dataset`` is the
    whole dataset the periods were cut from.
    """

    name: str
    table: pd.DataFrame
    items: pd.DataFrame
    config: PeriodConfig
    dataset: RecDataset

    @property
    def n_periods(self) -> int:
        return self.config.n_periods

    def check_period(self, index: int) -> None:
        if not 0 <= index < self.n_periods:
            raise ConfigError(f"period {index} is out of range: {self.name} has periods 0..{self.n_periods - 1}")

    def period(self, index: int, split: Literal["train", "val", "all"] = "all") -> pd.DataFrame:
        """Rows of one period; ``all`` is what a model trained through ``index - 1`` is tested on."""
        self.check_period(index)
        mask = self.table["period"].to_numpy() == index
        if split != "all":
            mask &= self.table["split"].to_numpy() == split
        return self.table[mask]

    def training_positions(self, first: int, last: int) -> np.ndarray:
        """Positions in ``table`` of what a fit over periods first..last learns from, the one row rule of both
        sides: the train splits of periods first..last plus the val splits of periods first-1..last-1.

        A val split selects the model of its own period and is plain data after that, so the fit at ``last``
        also learns val_{first-1} (the newest rows before train_first in time) and every val split up to
        val_{last-1}; period ``last``'s val split is left for early stopping. One period (first = last = t):
        train_t plus val_{t-1}, what fine-tuning, IU and the short-term adapter learn; periods 0..t: all of
        them but val_t, what full retraining learns.
        """
        self.check_period(last)
        if not 0 <= first <= last:
            raise ConfigError(f"training periods {first}..{last}: expected 0 <= first <= last")
        period, split = self.table["period"].to_numpy(), self.table["split"].to_numpy()
        is_train = split == "train"
        trains = (period >= first) & (period <= last) & is_train
        vals = (period >= first - 1) & (period <= last - 1) & ~is_train
        return np.flatnonzero(trains | vals)

    def training_rows(self, first: int, last: int) -> pd.DataFrame:
        """The rows of :meth:`training_positions`."""
        return self.table.iloc[self.training_positions(first, last)]

    def through(self, index: int) -> pd.DataFrame:
        """All rows of periods 0..index (train and val)."""
        self.check_period(index)
        return self.table[self.table["period"].to_numpy() <= index]

    def seen_items(self, through: int) -> np.ndarray:
        """Item ids occurring in periods 0..through: the warm items when testing period through + 1."""
        return self.through(through)["item_id"].unique()

    def warm_mask(self, samples: pd.DataFrame, trained_through: int) -> np.ndarray:
        """True where a sample's item occurs in periods 0..trained_through (warm), False where cold."""
        return samples["item_id"].isin(self.seen_items(trained_through)).to_numpy()

    def summary(self) -> list[dict]:
        rows = []
        for index in range(self.n_periods):
            part = self.period(index)
            rows.append(
                {
                    "index": index,
                    "start": _iso(part["timestamp"].min()),
                    "end": _iso(part["timestamp"].max()),
                    "n_train": int((part["split"] == "train").sum()),
                    "n_val": int((part["split"] == "val").sum()),
                    "positive_rate": round(float(part["label"].mean()), 4),
                }
            )
        return rows


def build_timeline(
    dataset: RecDataset,
    periods: PeriodConfig,
    history_length: int = 10,
    label_threshold: float | None = None,
) -> Timeline:
    """Sort, label, find histories, and cut ``dataset`` into periods."""
    interactions = dataset.interactions
    if label_threshold is not None:
        interactions = apply_label(interactions, label_threshold)
    # Ties in time are broken by user then item so the order (and every cut) is reproducible.
    table = interactions.sort_values(["timestamp", "user_id", "item_id"], kind="mergesort").reset_index(drop=True)
    histories = history_positions(table["user_id"].to_numpy(), table["timestamp"].to_numpy(), history_length)
    period = assign_periods(table["timestamp"].to_numpy(), histories.n_earlier >= periods.min_history, periods)
    rows = np.flatnonzero(period != OUTSIDE)
    samples = table.iloc[rows].copy()
    for name, values in history_lists(table, histories, rows).items():
        samples[name] = values
    samples["n_earlier"] = histories.n_earlier[rows]
    samples["period"] = period[rows]
    samples["split"] = assign_splits(period[rows], periods.val_fraction)
    for index in range(periods.n_periods):
        counts = samples.loc[samples["period"] == index, "split"].value_counts()
        if counts.get("train", 0) == 0 or counts.get("val", 0) == 0:
            raise DataError(
                f"{dataset.name}: period {index} has {counts.get('train', 0)} train and {counts.get('val', 0)} val "
                f"samples; every period needs both. Use fewer periods (periods.n_periods) or, in time mode, "
                "a start/end range that the data covers"
            )
    return Timeline(dataset.name, samples.reset_index(drop=True), dataset.items, periods, dataset)
