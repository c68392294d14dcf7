"""The canonical form every source is turned into.

interactions: user_id (str), item_id (str), rating (float64), timestamp (int64,
              Unix seconds), label (int8, 1 = positive)
items:        item_id (str), title (str), genres (list of str; categories for books),
              year (Int64, release year; <NA> when unknown), brand (str or None)
users:        user_id (str), age (Int64, years; ML-1M's age-group codes 1, 18, .., 56), gender (str "M" / "F"),
              occupation (str), zip (str); every feature may be missing (<NA> / None). Empty where the
              source has no user file (Amazon).

Rows are checked on the way in (see docs/data-checks.md): ratings must be finite and on the
dataset's scale, timestamps whole Unix seconds from 1970 up to the last second pandas can hold;
each violation stops with one DataError naming the file, the column, how many rows and an example.
Exact duplicate interactions are dropped (the first is kept) with one warning; interactions whose
item is missing from the item table are kept (named by their item id) with one warning; so are
interactions of users missing from a non-empty users table (their features are unknown). A users file
naming users absent from the interactions stops with a DataError: it belongs to other ratings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llm4rec.errors import DataError

INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "timestamp", "label"]
ITEM_COLUMNS = ["item_id", "title", "genres"]
ITEM_FEATURE_COLUMNS = ["year", "brand"]  # after ITEM_COLUMNS in every canonical item table
USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip"]
GENDERS = ("M", "F")
AGE_RANGE = (1, 120)  # ML-1M codes its youngest group ("Under 18") as 1
YEAR_RANGE = (1800, 2100)
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


def _text(values: pd.Series) -> list[str | None]:
    """Stripped strings; empty and missing cells become None (an unknown feature)."""
    return [None if pd.isna(v) or str(v).strip() == "" else str(v).strip() for v in values]


def _whole_numbers(frame: pd.DataFrame, column: str, source: str, low: int, high: int, what: str) -> pd.Series:
    """``column`` as nullable Int64: empty cells are <NA>; text, fractions or values outside low..high stop."""
    raw = frame[column]
    empty = np.array([pd.isna(v) or str(v).strip() == "" for v in raw], dtype=bool)
    number = pd.to_numeric(raw.where(~empty, None), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~empty & np.isnan(number)
    if bad.any():
        raise DataError(f"{source}: {column} must be a whole number ({what}), {_rows(frame, column, bad)}")
    bad = ~empty & ((number < low) | (number > high) | (number != np.floor(number)))
    if bad.any():
        raise DataError(
            f"{source}: {column} must be a whole number in {low}..{high} ({what}), {_rows(frame, column, bad)}"
        )
    return pd.Series(pd.array(np.where(empty, np.nan, number), dtype="Int64"))


def canonical_items(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Normalise item_id, title, genres, year, brand; a repeated item_id keeps its first row, with one warning.

    ``year`` and ``brand`` are optional in ``frame`` (missing: unknown for every item); a year that is not a
    whole number in YEAR_RANGE stops with a DataError.
    """
    if "item_id" not in frame.columns or "title" not in frame.columns:
        raise DataError(f"{source}: item table needs item_id and title columns, found {list(frame.columns)}")
    frame = frame.reset_index(drop=True)
    genres = frame["genres"] if "genres" in frame.columns else pd.Series([[]] * len(frame))
    year = (
        _whole_numbers(frame, "year", source, *YEAR_RANGE, "the release year")
        if "year" in frame.columns
        else pd.Series(pd.array([pd.NA] * len(frame), dtype="Int64"))
    )
    brand = _text(frame["brand"]) if "brand" in frame.columns else [None] * len(frame)
    out = pd.DataFrame(
        {
            "item_id": frame["item_id"].astype(str).to_numpy(),
            "title": frame["title"].astype(str).str.strip().to_numpy(),
            "genres": [list(g) for g in genres],
            "year": year.array,
            "brand": pd.Series(brand, dtype=object).to_numpy(),
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


def empty_users() -> pd.DataFrame:
    """The users table of a source without user features: the columns, no rows."""
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype=object),
            "age": pd.Series([], dtype="Int64"),
            **{c: pd.Series([], dtype=object) for c in USER_COLUMNS[2:]},
        }
    )


def canonical_users(frame: pd.DataFrame, source: str, interaction_users: pd.Series | None = None) -> pd.DataFrame:
    """Check and normalise user_id, age, gender, occupation, zip.

    Empty cells are unknown features (<NA> / None), never errors. An age that is not a whole number in
    AGE_RANGE, or a gender other than M / F (either case), stops with a DataError: both mean the columns are
    not the ones named. With ``interaction_users`` (the interactions' user_id column), a user absent from it
    stops too: the file describes other ratings. A repeated user_id keeps its first row, with one warning.
    """
    missing = [c for c in USER_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; expected {', '.join(USER_COLUMNS)}")
    if len(frame) == 0:
        raise DataError(f"{source}: no users found")
    frame = frame.reset_index(drop=True)
    ids = frame["user_id"]
    empty = (ids.isna() | (ids.astype(str).str.strip() == "")).to_numpy()
    if empty.any():
        raise DataError(f"{source}: user_id is empty in data row {int(np.flatnonzero(empty)[0]) + 1}")
    gender = [g.upper() if g is not None else None for g in _text(frame["gender"])]
    bad = np.array([g is not None and g not in GENDERS for g in gender], dtype=bool)
    if bad.any():
        raise DataError(f"{source}: gender must be M or F, {_rows(frame, 'gender', bad)}")
    out = pd.DataFrame(
        {
            "user_id": ids.astype(str).str.strip().to_numpy(),
            "age": _whole_numbers(frame, "age", source, *AGE_RANGE, "years").array,
            "gender": pd.Series(gender, dtype=object).to_numpy(),
            "occupation": pd.Series(_text(frame["occupation"]), dtype=object).to_numpy(),
            "zip": pd.Series(_text(frame["zip"]), dtype=object).to_numpy(),
        }
    )
    if interaction_users is not None:
        stray = ~out["user_id"].isin(pd.Series(interaction_users).astype(str)).to_numpy()
        if stray.any():
            raise DataError(
                f"{source}: {int(stray.sum())} user_id(s) are not in the interactions (e.g. "
                f"{out['user_id'].to_numpy()[stray][0]!r}); is the users file from another dataset?"
            )
    repeated = out["user_id"].duplicated(keep="first").to_numpy()
    if repeated.any():
        log.warning(
            "%s: dropped %d user row(s) repeating a user_id already in the users table (e.g. %r); "
            "the first row of each user_id is kept",
            source,
            int(repeated.sum()),
            out["user_id"].to_numpy()[repeated][0],
        )
        out = out[~repeated]
    return out.reset_index(drop=True)


@dataclass
class RecDataset:
    """One dataset in canonical form, plus how it was made (``meta``); ``users`` is empty for a source
    without user features."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    meta: dict = field(default_factory=dict)
    users: pd.DataFrame = field(default_factory=empty_users)

    def __post_init__(self) -> None:
        missing = set(INTERACTION_COLUMNS) - set(self.interactions.columns)
        if missing:
            raise DataError(f"dataset {self.name}: interactions lack columns {sorted(missing)}")
        missing = set(ITEM_COLUMNS) - set(self.items.columns)
        if missing:
            raise DataError(f"dataset {self.name}: items lack columns {sorted(missing)}")
        missing = set(USER_COLUMNS) - set(self.users.columns)
        if missing:
            raise DataError(f"dataset {self.name}: users lack columns {sorted(missing)}")
        self._report_missing_items()
        self._report_missing_users()

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

    def _report_missing_users(self) -> None:
        """Interactions of users missing from a non-empty users table are kept (their user features are
        unknown to CTR models); one warning says how many there are."""
        if len(self.users) == 0:
            return
        user_ids = self.interactions["user_id"]
        missing = ~user_ids.isin(self.users["user_id"]).to_numpy()
        if missing.any():
            distinct = user_ids[missing].unique()
            log.warning(
                "dataset %s: %d interaction(s) name %d user_id(s) missing from the users table (e.g. %r); "
                "kept, their user features unknown",
                self.name,
                int(missing.sum()),
                len(distinct),
                distinct[0],
            )
