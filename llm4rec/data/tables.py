"""The canonical form every source is turned into.

interactions: user_id (str), item_id (str), rating (float64), timestamp (int64,
              Unix seconds), label (int8, 1 = positive)
items:        item_id (str), title (str), genres (list of str; categories for books)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llm4rec.errors import DataError

INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "timestamp", "label"]
ITEM_COLUMNS = ["item_id", "title", "genres"]
DEFAULT_LABEL_THRESHOLD = 3.0


def apply_label(interactions: pd.DataFrame, threshold: float = DEFAULT_LABEL_THRESHOLD) -> pd.DataFrame:
    """Set ``label = rating > threshold`` (LSAT/TALLRec: a rating above 3 is a like)."""
    out = interactions.copy()
    out["label"] = (out["rating"].to_numpy() > threshold).astype(np.int8)
    return out


def canonical_interactions(
    frame: pd.DataFrame, source: str, threshold: float = DEFAULT_LABEL_THRESHOLD
) -> pd.DataFrame:
    """Check and normalise user_id, item_id, rating, timestamp; add the label.

    ``source`` names the file the rows came from, for error messages.
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
    rating = pd.to_numeric(frame["rating"], errors="coerce")
    if rating.isna().any():
        bad = frame["rating"][rating.isna()].iloc[0]
        raise DataError(f"{source}: rating must be a number, found {bad!r}")
    timestamp = pd.to_numeric(frame["timestamp"], errors="coerce")
    if timestamp.isna().any():
        bad = frame["timestamp"][timestamp.isna()].iloc[0]
        raise DataError(f"{source}: timestamp must be Unix seconds (an integer), found {bad!r}")
    if (timestamp != np.floor(timestamp)).any():
        bad = timestamp[timestamp != np.floor(timestamp)].iloc[0]
        raise DataError(f"{source}: timestamp must be whole Unix seconds, found {bad!r}")
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(str).to_numpy(),
            "item_id": frame["item_id"].astype(str).to_numpy(),
            "rating": rating.astype(np.float64).to_numpy(),
            "timestamp": timestamp.astype(np.int64).to_numpy(),
        }
    )
    return apply_label(out, threshold)


def canonical_items(frame: pd.DataFrame, source: str) -> pd.DataFrame:
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
    return out.drop_duplicates("item_id", keep="first").reset_index(drop=True)


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
