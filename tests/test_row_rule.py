"""The one row rule: which rows a fit over periods first..last learns from, on both sides.

``Timeline.training_positions`` is checked against a hand-written selection; then the CTR update (IU, BU,
FR) and the LLM side (FR, FT, LSAT's short-term adapter) are shown to learn exactly those rows, by recording
what each one hands to its trainer while the rule itself is spied on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llm4rec.data.periods import Timeline
from llm4rec.errors import ConfigError
from tests.conftest import tiny_ctr_options

ARRIVING_TIMELINE = {"n": 2000, "n_periods": 5}


def by_hand(timeline: Timeline, first: int, last: int) -> np.ndarray:
    """train_first..train_last plus val_{first-1}..val_{last-1}, written out period by period."""
    table, keep = timeline.table, []
    for period in range(first, last + 1):
        keep.append(np.flatnonzero((table["period"] == period) & (table["split"] == "train")))
    for period in range(max(first - 1, 0), last):
        keep.append(np.flatnonzero((table["period"] == period) & (table["split"] == "val")))
    return np.sort(np.concatenate(keep))


@pytest.mark.parametrize("first, last", [(0, 0), (0, 3), (2, 2), (1, 3), (4, 4)])
def test_training_positions_are_train_splits_plus_the_val_splits_before_them(timeline, first, last):
    got = timeline.training_positions(first, last)
    np.testing.assert_array_equal(got, by_hand(timeline, first, last))
    rows = timeline.table.iloc[got]
    assert not ((rows["period"] == last) & (rows["split"] == "val")).any()  # val_last is left for early stopping
    if first > 0:  # one period t: train_t + val_{t-1}, nothing else
        assert set(map(tuple, rows[["period", "split"]].drop_duplicates().to_numpy())) == (
            {(p, "train") for p in range(first, last + 1)} | {(p, "val") for p in range(first - 1, last)}
        )


def test_training_positions_reject_a_reversed_range(timeline):
    with pytest.raises(ConfigError, match="first <= last"):
        timeline.training_positions(3, 2)


@pytest.fixture
def spied_rule(monkeypatch):
    """Every call of the rule, recorded as (first, last, positions)."""
    calls: list[tuple[int, int, np.ndarray]] = []
    rule = Timeline.training_positions

    def spy(self, first, last):
        positions = rule(self, first, last)
        calls.append((first, last, positions))
        return positions

    monkeypatch.setattr(Timeline, "training_positions", spy)
    return calls


@pytest.mark.parametrize("mode, first_of", [("IU", lambda t: t), ("BU", lambda t: max(0, t - 1)), ("FR", lambda t: 0)])
def test_ctr_updates_learn_the_rule_rows(timeline, features, spied_rule, monkeypatch, mode, first_of):
    from llm4rec.ctr import updates

    options, train = tiny_ctr_options()
    seen: dict[int, np.ndarray] = {}
    method = updates.CtrUpdateMethod("EmbMLP", mode, features, options, train, window=2)
    original = method.train_period

    def record(timeline, period, train_rows, val_rows):
        seen[period] = np.sort(train_rows)
        return original(timeline, period, train_rows, val_rows)

    monkeypatch.setattr(method, "train_period", record)
    for period in range(4):
        method.fit(timeline, period)
    for period in range(1, 4):  # period 0 is the pre-training (a fresh model on period 0)
        np.testing.assert_array_equal(seen[period], by_hand(timeline, first_of(period), period))
    assert [(first, last) for first, last, _ in spied_rule] == [(0, 0)] + [(first_of(t), t) for t in range(1, 4)]


class RecordingSession:
    """What PeriodAdapters hands to training, recorded instead of trained."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline, self.store, self.calls = timeline, self, []

    def path(self, role: str, period: int) -> str:
        return f"{role}/{period}"

    def ensure_trained(self, path, train_rows: pd.DataFrame, **kwargs):
        self.calls.append((path, np.sort(train_rows.index.to_numpy())))
        return path


def test_llm_adapters_learn_the_rule_rows(timeline, spied_rule):
    from llm4rec.config import from_dict
    from llm4rec.llm.lsat import PeriodAdapters
    from llm4rec.llm.lsat_config import LsatConfig

    config = from_dict(
        LsatConfig,
        {"backbone": {"model_name_or_path": "x"}, "long_term": {"periods": 2}, "first_test_period": 3,
         "data": {"name": "ml-100k", "periods": {"n_periods": 5}}},
    )  # fmt: skip
    session = RecordingSession(timeline)
    adapters = PeriodAdapters(session, config)
    adapters.short_term(3)
    adapters.fine_tuned(3)  # FR through 1 (its first period is 2), then FT at 2 and at 3
    adapters.full_retrain(3)
    got = dict(session.calls)
    np.testing.assert_array_equal(got["short/3"], by_hand(timeline, 3, 3))
    np.testing.assert_array_equal(got["ft/3"], by_hand(timeline, 3, 3))
    np.testing.assert_array_equal(got["ft/2"], by_hand(timeline, 2, 2))
    np.testing.assert_array_equal(got["fr/1"], by_hand(timeline, 0, 1))
    np.testing.assert_array_equal(got["fr/3"], by_hand(timeline, 0, 3))
    assert len(spied_rule) == len(session.calls)  # every fit's rows came through the one rule
