"""The canonical form every source is turned into.

interactions: user_id (str), item_id (str), rating (float64), timestamp (int64,
              Unix seconds), label (int8, 1 = positive)
items:        item_id (str), title (str), genres (list of str; categories for books)

Rows are checked on the way in (see docs/data-checks.md): ratings must be finite and on the
dataset's scale, timestamps whole Unix seconds from 1970 up to the last second pandas can hold;
each violation stops with one DataError naming the file, the column, how many rows and an example.
Exact duplicate interactions are dropped (the first is kept) with one warning; interactions whose
item is missing from the item table are kept (named by their item id) with one warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llm4rec.errors import DataError

INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "timestamp", "label"]
ITEM_COLUMNS = ["item_id", "title", "genres"]
DEFAULT_LABEL_THRESHOLD = 3.0
# Every source read today (MovieLens 100K/1M, Amazon Books 2018) rates on 1..5 stars.
DEFAULT_RATING_SCALE = (1.0, 5.0)
# The last Unix second pandas can hold as a date (datetime64[ns]: 2262-04-11 23:47:16 UTC); far
# below int64's limit, so a timestamp past it is never silently wrapped by the int64 cast.
MAX_TIMESTAMP = int(pd.Timestamp.max.timestamp())
DUPLICATE_KEY = ["user_id", "item_id", "rating", "timestamp"]

log = logging.getLogger(__name__)


def _shown(value) -> str:
    """``repr`` of a cell, as a plain Python value (``7.0``, not ``np.float64(7.0)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _rows(frame: pd.DataFrame, column: str, bad: np.ndarray) -> str:
    """An example of the rows flagged in ``bad`` and how many there are, for a DataError."""
    first = int(np.flatnonzero(bad)[0])
    count = int(bad.sum())
    rows = "row" if count == 1 else "rows"
    return (
        f"found {_shown(frame[column].iloc[first])} (column {column!r}: {count} {rows}, first in data row {first + 1})"
    )


def apply_label(interactions: pd.DataFrame, threshold: float = DEFAULT_LABEL_THRESHOLD) -> pd.DataFrame:
    """Set ``label = rating > threshold`` (LSAT/TALLRec: a rating above 3 is a like)."""
    out = interactions.copy()
    out["label"] = (out["rating"].to_numpy() > threshold).astype(np.int8)
    return out


def canonical_interactions(
    frame: pd.DataFrame,
    source: str,
    threshold: float = DEFAULT_LABEL_THRESHOLD,
    rating_scale: tuple[float, float] | None = DEFAULT_RATING_SCALE,
) -> pd.DataFrame:
    """Check and normalise user_id, item_id, rating, timestamp; add the label.

    ``source`` names the file the rows came from, for error messages. Ratings must be finite and
    within ``rating_scale`` (inclusive; None: any finite rating), timestamps whole Unix seconds in
    0..MAX_TIMESTAMP; a row breaking either stops with a DataError. Exact duplicate rows (same
    user_id, item_id, rating and timestamp) are dropped, the first kept, with one warning.
    """
    missing = [c for c in ("user_id", "item_id", "rating", "timestamp") if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; expected user_id, item_id, rating, timestamp")
    if len(frame) == 0:
        raise DataError(f"{source}: no interactions found")
    for column in ("user_id", "item_id"):
        ids = frame[column]
        empty = ids.isna() | (ids.astype(str).str.strip() == "")
        if empty.any():
            raise DataError(f"{source}: {column} is empty in data row {int(np.flatnonzero(empty)[0]) + 1}")
    rating = pd.to_numeric(frame["rating"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(rating)
    if bad.any():
        raise DataError(f"{source}: rating must be a number, {_rows(frame, 'rating', bad)}")
    if rating_scale is not None:
        low, high = rating_scale
        bad = ~((rating >= low) & (rating <= high))  # also catches inf and -inf
        if bad.any():
            raise DataError(
                f"{source}: rating must be within the scale {low:g}..{high:g}, {_rows(frame, 'rating', bad)}"
            )
    timestamp = pd.to_numeric(frame["timestamp"], errors="coerce")
    if timestamp.isna().any():
        bad = timestamp.isna().to_numpy()
        raise DataError(f"{source}: timestamp must be Unix seconds (an integer), {_rows(frame, 'timestamp', bad)}")
    # Range checks come before the int64 cast, which would silently wrap a value past int64.
    seconds = timestamp.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = seconds < 0
    if bad.any():
        raise DataError(
            f"{source}: timestamp must be Unix seconds from 1970 on (not negative), {_rows(frame, 'timestamp', bad)}"
        )
    bad = seconds > MAX_TIMESTAMP
    if bad.any():
        raise DataError(
            f"{source}: timestamp must be Unix seconds up to {MAX_TIMESTAMP} (2262-04-11, the last date pandas "
            f"holds; milliseconds?), {_rows(frame, 'timestamp', bad)}"
        )
    bad = seconds != np.floor(seconds)
    if bad.any():
        raise DataError(f"{source}: timestamp must be whole Unix seconds, {_rows(frame, 'timestamp', bad)}")
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(str).to_numpy(),
            "item_id": frame["item_id"].astype(str).to_numpy(),
            "rating": rating,
            "timestamp": timestamp.astype(np.int64).to_numpy(),
        }
    )
    duplicated = out.duplicated(DUPLICATE_KEY, keep="first").to_numpy()
    if duplicated.any():
        count = int(duplicated.sum())
        log.warning(
            "%s: dropped %d exact duplicate interaction(s) (same user_id, item_id, rating and timestamp; "
            "the first of each is kept)",
            source,
            count,
        )
        out = out[~duplicated].reset_index(drop=True)
    return apply_label(out, threshold)


def canonical_items(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Normalise item_id, title, genres; a repeated item_id keeps its first row, with one warning."""
    if "item_id" not in frame.columns or "title" not in frame.columns:
        raise DataError(f"{source}: item table needs item_id and title columns, found {list(frame.columns)}")
    genres = frame["genres"] if "genres" in frame.columns else pd.Series([[]] * len(frame))
    out = pd.DataFrame(
        {
            "item_id": frame["item_id"].astype(str).to_numpy(),
            "title": frame["title"].astype(str).str.strip().to_numpy(),
            "genres": [list(g) for g in genres],
        }
    )
    repeated = out["item_id"].duplicated(keep="first").to_numpy()
    if repeated.any():
        log.warning(
            "%s: dropped %d item row(s) repeating an item_id already in the item table (e.g. %r); "
            "the first row of each item_id is kept",
            source,
            int(repeated.sum()),
            out["item_id"].to_numpy()[repeated][0],
        )
        out = out[~repeated]
    return out.reset_index(drop=True)


@dataclass
class RecDataset:
    """One dataset in canonical form, plus how it was made (``meta``)."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = set(INTERACTION_COLUMNS) - set(self.interactions.columns)
        if missing:
            raise DataError(f"dataset {self.name}: interactions lack columns {sorted(missing)}")
        missing = set(ITEM_COLUMNS) - set(self.items.columns)
        if missing:
            raise DataError(f"dataset {self.name}: items lack columns {sorted(missing)}")
        self._report_missing_items()

    def _report_missing_items(self) -> None:
        """Interactions whose item is not in the item table are kept (prompts then name the item by its id,
        CTR features give it no genres), as before these checks; one warning says how many there are."""
        item_ids = self.interactions["item_id"]
        missing = ~item_ids.isin(self.items["item_id"]).to_numpy()
        if missing.any():
            distinct = item_ids[missing].unique()
            log.warning(
                "dataset %s: %d interaction(s) name %d item_id(s) missing from the item table (e.g. %r); "
                "kept, each named by its item_id",
                self.name,
                int(missing.sum()),
                len(distinct),
                distinct[0],
            )
