"""Data checked on the way in: bad ratings and timestamps stop with one DataError naming the file, the column,
how many rows and an example; exact duplicates and interactions of unknown items give one warning each."""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest

from llm4rec.data.amazon import AmazonBooksFilters, read_amazon_books
from llm4rec.data.movielens import read_ml100k_official
from llm4rec.data.tables import MAX_TIMESTAMP, RecDataset, canonical_interactions, canonical_items
from llm4rec.errors import DataError
from tests.conftest import synthetic_dataset, synthetic_interactions
from tests.test_sources import ML100K_RATINGS, meta, review, u_data_text, u_item_text, write_books, write_ml100k_dir

LOGGER = "llm4rec.data.tables"


def raw_interactions(**columns) -> pd.DataFrame:
    """Five clean interactions of items 10, 11, 12; ``columns`` replaces whole columns."""
    data = {
        "user_id": [1, 1, 2, 2, 3],
        "item_id": [10, 11, 10, 12, 11],
        "rating": [5.0, 3.0, 4.0, 1.0, 2.0],
        "timestamp": [100, 200, 300, 400, 500],
    }
    data.update(columns)
    return pd.DataFrame(data)


def raw_items(ids=(10, 11, 12)) -> pd.DataFrame:
    return pd.DataFrame({"item_id": list(ids), "title": [f"Movie {i}" for i in ids], "genres": [["Drama"]] * len(ids)})


def build(raw: pd.DataFrame, items: pd.DataFrame | None = None) -> RecDataset:
    return RecDataset(
        "ml-100k",
        canonical_interactions(raw, "ratings.csv"),
        canonical_items(raw_items() if items is None else items, "items.csv"),
    )


# ---------------------------------------------------------------------------------------------------------
# Bad values: one DataError naming the source, the column, the count and an example
# ---------------------------------------------------------------------------------------------------------

BIG = 2**63  # one past int64's largest second: a uint64 column, wrapped to a negative int64 by a plain cast

BAD_VALUES = [
    # id, column, values, expected message after "ratings.csv: "
    ("nan-rating", "rating", [np.nan, 3.0, np.nan, 1.0, 2.0], "rating must be a number, found nan (column 'rating': 2 rows, first in data row 1)"),
    ("rating-7-on-1..5", "rating", [5.0, 7.0, 4.0, 7.0, 2.0], "rating must be within the scale 1..5, found 7.0 (column 'rating': 2 rows, first in data row 2)"),
    ("rating-0-on-1..5", "rating", [5.0, 3.0, 0.0, 1.0, 2.0], "rating must be within the scale 1..5, found 0.0 (column 'rating': 1 row, first in data row 3)"),
    ("inf-rating", "rating", [5.0, 3.0, 4.0, 1.0, np.inf], "rating must be within the scale 1..5, found inf (column 'rating': 1 row, first in data row 5)"),
    ("negative-timestamp", "timestamp", [100, -5, 300, 400, 500], "timestamp must be Unix seconds from 1970 on (not negative), found -5 (column 'timestamp': 1 row, first in data row 2)"),
    ("timestamp-beyond-int64", "timestamp", [100, 200, BIG, 400, BIG + 1], f"timestamp must be Unix seconds up to {MAX_TIMESTAMP} (2262-04-11, the last date pandas holds; milliseconds?), found {BIG} (column 'timestamp': 2 rows, first in data row 3)"),
    ("timestamp-1e19-float", "timestamp", [100.0, 200.0, 300.0, 400.0, 1e19], f"timestamp must be Unix seconds up to {MAX_TIMESTAMP} (2262-04-11, the last date pandas holds; milliseconds?), found 1e+19 (column 'timestamp': 1 row, first in data row 5)"),
    ("timestamp-in-milliseconds", "timestamp", [100, 200, 300, 400, 1_600_000_000_000], f"timestamp must be Unix seconds up to {MAX_TIMESTAMP} (2262-04-11, the last date pandas holds; milliseconds?), found 1600000000000 (column 'timestamp': 1 row, first in data row 5)"),
]  # fmt: skip


@pytest.mark.parametrize(("column", "values", "message"), [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_bad_value_is_one_data_error(column, values, message):
    with pytest.raises(DataError) as error:
        canonical_interactions(raw_interactions(**{column: values}), "ratings.csv")
    assert str(error.value) == f"ratings.csv: {message}"
    assert "\n" not in str(error.value)


def test_rating_scale_is_a_parameter():
    raw = raw_interactions(rating=[10.0, 0.5, 7.0, 1.0, 2.0])
    assert canonical_interactions(raw, "r", rating_scale=(0.5, 10))["rating"].tolist() == [10.0, 0.5, 7.0, 1.0, 2.0]
    assert canonical_interactions(raw, "r", rating_scale=None)["label"].tolist() == [1, 0, 1, 0, 0]
    with pytest.raises(DataError, match=re.escape("scale 0.5..5, found 10.0 (column 'rating': 2 rows")):
        canonical_interactions(raw, "r", rating_scale=(0.5, 5))


def test_bad_rating_in_u_data_names_the_file(tmp_path):
    rows = [list(r) for r in ML100K_RATINGS]
    rows[3][2] = 7
    directory = write_ml100k_dir(tmp_path / "ml-100k", u_data_text(rows), u_item_text())
    with pytest.raises(DataError) as error:
        read_ml100k_official(directory)
    assert str(error.value) == (
        f"{directory}/u.data: rating must be within the scale 1..5, found '7' (column 'rating': 1 row, first in data row 4)"
    )


def test_timestamp_beyond_int64_in_u_data_names_the_file(tmp_path):
    rows = [list(r) for r in ML100K_RATINGS]
    rows[0][3] = BIG
    directory = write_ml100k_dir(tmp_path / "ml-100k", u_data_text(rows), u_item_text())
    with pytest.raises(DataError, match=re.escape(f"u.data: timestamp must be Unix seconds up to {MAX_TIMESTAMP}")):
        read_ml100k_official(directory)


# ---------------------------------------------------------------------------------------------------------
# Warnings: one line each, with the count
# ---------------------------------------------------------------------------------------------------------


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_exact_duplicates_are_dropped_first_kept_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    raw = raw_interactions()
    # rows 0 and 2 repeated (row 0 twice), and a near-duplicate of row 1 with another rating, which stays
    near = raw.iloc[[1]].assign(rating=4.0)
    raw = pd.concat([raw, raw.iloc[[0, 2, 0]], near], ignore_index=True)
    dataset = build(raw)
    assert warnings_of(caplog) == [
        "ratings.csv: dropped 3 exact duplicate interaction(s) (same user_id, item_id, rating and timestamp; "
        "the first of each is kept)"
    ]
    expected = canonical_interactions(pd.concat([raw_interactions(), near], ignore_index=True), "clean")
    pd.testing.assert_frame_equal(dataset.interactions, expected)


def test_duplicate_line_in_books_5_is_dropped_with_one_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    reviews = [review("u1", "b1", 5.0, 1_400_000_000), review("u1", "b2", 2.0, 1_400_000_100)]
    directory = write_books(tmp_path / "books", reviews + reviews[:1], [meta("b1", "Dune"), meta("b2", "Emma")])
    filters = AmazonBooksFilters(min_user_reviews=1, user_fraction=1.0, min_title_interactions=1)
    dataset = read_amazon_books(directory, filters)
    assert warnings_of(caplog) == [
        f"{directory}/Books_5.json: dropped 1 exact duplicate interaction(s) (same user_id, item_id, rating and "
        "timestamp; the first of each is kept)"
    ]
    assert dataset.interactions["item_id"].tolist() == ["b1", "b2"]


def test_interactions_of_missing_items_are_kept_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    raw = raw_interactions(item_id=[10, 11, 13, 12, 13])
    dataset = build(raw, raw_items([10, 11]))
    assert warnings_of(caplog) == [
        "dataset ml-100k: 3 interaction(s) name 2 item_id(s) missing from the item table (e.g. '13'); "
        "kept, each named by its item_id"
    ]
    assert dataset.interactions["item_id"].tolist() == ["10", "11", "13", "12", "13"]


def test_repeated_item_id_keeps_the_first_row_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    items = pd.concat([raw_items(), raw_items([11]).assign(title="Other")], ignore_index=True)
    dataset = build(raw_interactions(), items)
    assert warnings_of(caplog) == [
        "items.csv: dropped 1 item row(s) repeating an item_id already in the item table (e.g. '11'); "
        "the first row of each item_id is kept"
    ]
    assert dataset.items["title"].tolist() == ["Movie 10", "Movie 11", "Movie 12"]


# ---------------------------------------------------------------------------------------------------------
# Clean data: unchanged, and no warning
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"n": 3000}, {"n_users": 12, "n_items": 30, "n": 400, "tie_share": 0.4}])
def test_clean_synthetic_data_is_unchanged_and_quiet(caplog, kwargs):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    raw = synthetic_interactions(**kwargs)
    got = canonical_interactions(raw, "synthetic")
    expected = pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(str).to_numpy(),
            "item_id": raw["item_id"].astype(str).to_numpy(),
            "rating": raw["rating"].astype(np.float64).to_numpy(),
            "timestamp": raw["timestamp"].astype(np.int64).to_numpy(),
            "label": (raw["rating"].to_numpy() > 3).astype(np.int8),
        }
    )
    pd.testing.assert_frame_equal(got, expected)
    assert len(synthetic_dataset(**kwargs).interactions) == len(raw)
    assert warnings_of(caplog) == []
