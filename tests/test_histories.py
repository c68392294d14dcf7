import numpy as np
import pandas as pd
import pytest

from llm4rec.data.histories import history_lists, history_positions
from llm4rec.data.tables import canonical_interactions
from tests.conftest import synthetic_interactions


def brute_force(table: pd.DataFrame, length: int, eligible=None) -> list[list[int]]:
    """Positions of the user's strictly earlier rows (table order breaks no ties), last `length`, oldest first."""
    out = []
    for _, row in table.iterrows():
        earlier = table[(table["user_id"] == row["user_id"]) & (table["timestamp"] < row["timestamp"])]
        if eligible is not None:
            earlier = earlier[eligible[earlier.index]]
        positions = earlier.sort_values("timestamp", kind="mergesort").index.to_list()
        out.append(positions[-length:] if length else [])
    return out


def with_histories(table: pd.DataFrame, length: int) -> pd.DataFrame:
    """The table with the history columns build_timeline attaches, for every row."""
    histories = history_positions(table["user_id"].to_numpy(), table["timestamp"].to_numpy(), length)
    out = table.assign(**history_lists(table, histories, np.arange(len(table))))
    out["n_earlier"] = histories.n_earlier
    return out


@pytest.fixture
def table():
    raw = synthetic_interactions(n_users=12, n_items=30, n=400, tie_share=0.4)
    raw = canonical_interactions(raw, "synthetic")
    return raw.sort_values(["timestamp", "user_id", "item_id"], kind="mergesort").reset_index(drop=True)


@pytest.mark.parametrize("length", [0, 1, 3, 10])
def test_positions_match_brute_force(table, length):
    histories = history_positions(table["user_id"].to_numpy(), table["timestamp"].to_numpy(), length)
    assert len(histories) == len(table)
    assert [histories.of(i).tolist() for i in range(len(table))] == brute_force(table, length)
    full = brute_force(table, 10_000)
    assert histories.n_earlier.tolist() == [len(f) for f in full]


def test_positives_only_histories_match_brute_force(table):
    eligible = table["label"].to_numpy() == 1
    histories = history_positions(table["user_id"].to_numpy(), table["timestamp"].to_numpy(), 5, eligible)
    assert [histories.of(i).tolist() for i in range(len(table))] == brute_force(table, 5, eligible)


def test_never_the_target_nor_anything_at_or_after_its_time(table):
    out = with_histories(table, 10)
    ts = table["timestamp"].to_numpy()
    histories = history_positions(table["user_id"].to_numpy(), ts, 10)
    for i in range(len(table)):
        p = histories.of(i)
        assert i not in p
        assert (ts[p] < ts[i]).all()
        assert (table["user_id"].to_numpy()[p] == table["user_id"].iloc[i]).all()
    assert out["history_item_ids"].map(len).max() == 10


def test_liked_and_disliked_split_by_label(table):
    out = with_histories(table, 10)
    histories = history_positions(table["user_id"].to_numpy(), table["timestamp"].to_numpy(), 10)
    items, labels = table["item_id"].to_numpy(), table["label"].to_numpy()
    for i, row in out.iterrows():
        p = histories.of(i)
        assert row["history_item_ids"] == items[p].tolist()
        assert row["liked_item_ids"] == items[p][labels[p] == 1].tolist()
        assert row["disliked_item_ids"] == items[p][labels[p] == 0].tolist()


def test_same_second_ratings_are_not_each_others_history():
    table = canonical_interactions(
        pd.DataFrame(
            {
                "user_id": [1, 1, 1, 1],
                "item_id": [10, 11, 12, 13],
                "rating": [5, 1, 4, 2],
                "timestamp": [100, 200, 200, 300],
            }
        ),
        "hand",
    )
    out = with_histories(table, 10)
    assert out["history_item_ids"].tolist() == [[], ["10"], ["10"], ["10", "11", "12"]]
    assert out["liked_item_ids"].tolist() == [[], ["10"], ["10"], ["10", "12"]]
    assert out["disliked_item_ids"].tolist() == [[], [], [], ["11"]]
    assert out["n_earlier"].tolist() == [0, 1, 1, 3]


def test_negative_length_rejected():
    with pytest.raises(ValueError, match="history length"):
        history_positions(np.array([1]), np.array([1]), -1)
