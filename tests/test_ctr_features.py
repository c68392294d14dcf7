"""CTR features: growing encoders, OOV, histories of positives strictly before the target, genres."""

import numpy as np
import pandas as pd
import pytest

from llm4rec.ctr.features import OOV, PAD, FeatureConfig, IdEncoder, build_feature_table, padded
from llm4rec.ctr.updates import timeline_features
from llm4rec.data.periods import PeriodConfig, build_timeline
from llm4rec.errors import ConfigError
from tests.conftest import synthetic_dataset


def test_encoder_appends_and_never_renumbers():
    encoder = IdEncoder(10)
    assert encoder.grow(np.array([5, 3, 5, -1])) == 2
    assert encoder.transform(np.array([5, 3, 7, -1])).tolist() == [2, 3, OOV, PAD]
    assert encoder.grow(np.array([7, 3, 0])) == 2
    assert encoder.transform(np.array([5, 3, 7, 0])).tolist() == [2, 3, 4, 5]
    assert encoder.known_codes().tolist() == [5, 3, 7, 0] and encoder.size == 6


def test_padded_keeps_order_and_pads():
    out = padded(np.array([10, 11, 12, 13]), np.array([0, 3, 3, 4]), 2)
    assert out.tolist() == [[10, 11], [-1, -1], [13, -1]]


@pytest.fixture(scope="module")
def timeline():
    return build_timeline(synthetic_dataset(n=1500), PeriodConfig(n_periods=5))


def test_history_is_the_last_positives_strictly_before_the_target(timeline):
    length = 3
    table = timeline_features(timeline, 3.0, FeatureConfig(history_length=length))
    full = timeline.dataset.interactions.sort_values(["timestamp", "user_id", "item_id"], kind="mergesort")
    positives = full[full["label"] == 1]
    for row in range(0, len(timeline.table), 7):
        sample = timeline.table.iloc[row]
        own = positives[(positives["user_id"] == sample["user_id"]) & (positives["timestamp"] < sample["timestamp"])]
        expected = own["item_id"].tolist()[-length:]
        codes = table.history[row]
        assert table.item_names[codes[codes >= 0]].tolist() == expected
        assert table.user_names[table.user[row]] == sample["user_id"]
        assert table.item_names[table.item[row]] == sample["item_id"]


def test_item_genres_come_from_the_item_table(timeline):
    table = timeline_features(timeline, 3.0, FeatureConfig())
    items = timeline.items.set_index("item_id")["genres"]
    for code in range(0, len(table.item_names), 5):
        genres = table.item_genres[code]
        assert table.genre_names[genres[genres >= 0]].tolist() == items[table.item_names[code]]


def test_histories_reach_rows_outside_the_periods():
    dataset = synthetic_dataset(n=1500)
    timeline = build_timeline(dataset, PeriodConfig(n_periods=3, last_n=600))
    table = timeline_features(timeline, 3.0, FeatureConfig(history_length=30))
    # The first sample in periods has earlier positives that are in no period.
    assert (table.history[0] >= 0).sum() > 0


def test_wrong_label_threshold_and_bad_lengths_are_errors(timeline):
    with pytest.raises(ConfigError, match="label_threshold 4"):
        timeline_features(timeline, 4.0, FeatureConfig())
    with pytest.raises(ConfigError, match="features.history_length: must be >= 1"):
        FeatureConfig(history_length=0)
    frame = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [1], "label": [1], "rating": [5.0]})
    with pytest.raises(ValueError, match="history_length must be >= 1"):
        build_feature_table(frame, frame, pd.DataFrame({"item_id": ["i"], "genres": [["g"]]}), history_length=0)


def test_static_split_histories_hold_only_train_rows():
    """A val or test sample's history holds nothing but the user's train-split positives from before it; with
    every row as history source (the old way) some test histories do hold val / test positives."""
    from llm4rec.config import from_dict
    from llm4rec.ctr.config import CtrConfig
    from llm4rec.ctr.random_split import history_source, random_split_samples, split_rows

    dataset = synthetic_dataset(n=3000)
    config = from_dict(CtrConfig, {"data": {"name": "ml-100k"}, "protocol": "random", "models": ["DIN"]})
    interactions, samples = random_split_samples(dataset, config)
    train, val, test = split_rows(len(samples), config.random_split.fractions, seed=0)

    def leaks(table) -> int:
        """Held-out samples whose history holds an item that is not an earlier train positive of the user."""
        is_train = np.zeros(len(samples), dtype=bool)
        is_train[train] = True
        count = 0
        for i in np.concatenate([val, test]):
            allowed = samples[
                is_train
                & (samples["user_id"] == samples["user_id"][i])
                & (samples["timestamp"] < samples["timestamp"][i])
                & (samples["label"] == 1)
            ]
            held = {table.item_names[c] for c in table.history[i] if c >= 0}
            count += not held <= set(allowed["item_id"].astype(str))
        return count

    clean = build_feature_table(samples, history_source(interactions, samples, train), dataset.items, 10, 4)
    leaky = build_feature_table(samples, interactions, dataset.items, 10, 4)
    assert leaks(clean) == 0
    assert leaks(leaky) > 50  # the check can fail: all rows as history source put held-out positives in
    np.testing.assert_array_equal(clean.label, leaky.label)  # labels and ids are untouched, only histories differ
    np.testing.assert_array_equal(clean.item, leaky.item)
