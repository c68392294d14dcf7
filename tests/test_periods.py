import numpy as np
import pandas as pd
import pytest

from llm4rec.data.periods import OUTSIDE, PeriodConfig, assign_periods, build_timeline
from llm4rec.data.tables import RecDataset, canonical_interactions, canonical_items
from llm4rec.errors import ConfigError, DataError
from tests.conftest import synthetic_dataset


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(n=2403)


def test_equal_count_periods_cover_everything_in_time_order(dataset):
    timeline = build_timeline(dataset, PeriodConfig(n_periods=10))
    table = timeline.table
    assert len(table) == 2403 and timeline.dataset is dataset
    sizes = table["period"].value_counts().sort_index()
    assert sizes.index.tolist() == list(range(10))
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 2403
    assert (np.diff(table["timestamp"].to_numpy()) >= 0).all()
    assert (np.diff(table["period"].to_numpy()) >= 0).all()  # period index grows with time
    for t in range(9):
        assert timeline.period(t)["timestamp"].max() <= timeline.period(t + 1)["timestamp"].min()


def test_train_is_first_90_percent_then_val(dataset):
    timeline = build_timeline(dataset, PeriodConfig(n_periods=10))
    for t in range(10):
        part = timeline.period(t)
        n_train = int(len(part) * 0.9)
        assert part["split"].tolist() == ["train"] * n_train + ["val"] * (len(part) - n_train)
        train, val = timeline.period(t, "train"), timeline.period(t, "val")
        assert train["timestamp"].max() <= val["timestamp"].min()
        assert set(train.index).isdisjoint(val.index)
        assert len(train) + len(val) == len(part)


def test_last_n_and_min_history(dataset):
    config = PeriodConfig(n_periods=4, last_n=1000, min_history=5)
    timeline = build_timeline(dataset, config)
    inside = timeline.table
    assert len(inside) == 1000
    assert (inside["n_earlier"] >= 5).all()
    everything = build_timeline(dataset, PeriodConfig(n_periods=4)).table
    eligible = everything[everything["n_earlier"] >= 5]
    key = ["user_id", "item_id", "timestamp"]
    # the most recent eligible samples, with the histories they had in the full timeline
    pd.testing.assert_frame_equal(
        inside[key + ["history_item_ids", "liked_item_ids"]].reset_index(drop=True),
        eligible[key + ["history_item_ids", "liked_item_ids"]].iloc[-1000:].reset_index(drop=True),
    )
    # rows outside the periods still serve as history
    assert inside["history_item_ids"].iloc[0]


def test_time_periods_are_equal_intervals():
    raw = pd.DataFrame(
        {
            "user_id": np.arange(40) % 5,
            "item_id": np.arange(40) % 7,
            "rating": 4,
            "timestamp": [int(pd.Timestamp("2020-01-01", tz="UTC").timestamp()) + day * 86400 for day in range(40)],
        }
    )
    items = pd.DataFrame({"item_id": range(7), "title": [f"B{i}" for i in range(7)]})
    dataset = RecDataset("amazon-books", canonical_interactions(raw, "t"), canonical_items(items, "t"))
    config = PeriodConfig(n_periods=4, mode="time", start="2020-01-05", end="2020-01-25")
    timeline = build_timeline(dataset, config)
    days = (timeline.table["timestamp"] - raw["timestamp"].min()) // 86400
    assert days.tolist() == list(range(4, 24))
    assert timeline.table["period"].tolist() == ((days - 4) // 5).tolist()
    assert assign_periods(raw["timestamp"].to_numpy(), np.ones(40, bool), config).tolist() == (
        [OUTSIDE] * 4 + [d // 5 for d in range(20)] + [OUTSIDE] * 16
    )


def test_too_many_periods_and_empty_periods_are_clear_errors(dataset):
    with pytest.raises(DataError, match="n_periods=2000 is too many"):
        build_timeline(dataset, PeriodConfig(n_periods=2000))
    start = pd.Timestamp(int(dataset.interactions["timestamp"].max()) + 86400, unit="s").strftime("%Y-%m-%d")
    with pytest.raises(DataError, match="period 0 has 0 train"):
        build_timeline(dataset, PeriodConfig(n_periods=3, mode="time", start=start, end="2099-01-01"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_periods": 1}, "at least 2"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"mode": "time", "start": "2020-01-01"}, "needs both start and end"),
        ({"mode": "time", "start": "2020-02-01", "end": "2020-01-01"}, "must be after start"),
        ({"mode": "time", "start": "first of May", "end": "2020-01-01"}, "expected a date"),
        ({"start": "2020-01-01"}, "mode 'time' only"),
        ({"n_periods": 10, "last_n": 5}, "last_n"),
    ],
)
def test_bad_period_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PeriodConfig(**kwargs)


def test_period_index_out_of_range(dataset):
    timeline = build_timeline(dataset, PeriodConfig(n_periods=3))
    with pytest.raises(ConfigError, match="out of range"):
        timeline.period(3)


def test_summary_and_seen_items(dataset):
    timeline = build_timeline(dataset, PeriodConfig(n_periods=5))
    summary = timeline.summary()
    assert [s["index"] for s in summary] == list(range(5))
    assert sum(s["n_train"] + s["n_val"] for s in summary) == len(timeline.table)
    seen = set(timeline.seen_items(1))
    assert seen == set(timeline.period(0)["item_id"]) | set(timeline.period(1)["item_id"])


def test_relabelling_with_another_threshold(dataset):
    timeline = build_timeline(dataset, PeriodConfig(n_periods=3), label_threshold=4)
    assert (timeline.table["label"] == (timeline.table["rating"] > 4)).all()
