"""User and item features as CTR fields: which column of the canonical tables each one reads, and the token
(category) a value becomes.

A side feature is one categorical field with a vocabulary of its own, named like the feature; models embed
it like the id and genre fields (:class:`llm4rec.ctr.models.base.FieldEmbeddings`). Tokens are coarse on
purpose, so that a new user or item shares rows with old ones: ages fall into ML-1M's seven age groups (its
users.dat codes exactly those, so ML-100K's exact ages and ML-1M's codes give the same tokens), years into
decades, zip codes into their first character (a US ZIP code's first digit is its national area, a Canadian
postcode's first letter its province). A user or item whose value is missing gets the unknown (OOV) index.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

AGE_GROUPS = (18, 25, 35, 45, 50, 56)  # lower bounds of ML-1M's groups after "Under 18"
AGE_GROUP_NAMES = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")


def age_group(age) -> str:
    return AGE_GROUP_NAMES[bisect.bisect_right(AGE_GROUPS, int(age))]


def decade(year) -> str:
    return f"{int(year) // 10 * 10}s"


def zip_region(code) -> str:
    return str(code)[0].upper()


@dataclass(frozen=True)
class SideFeature:
    """``owner``: whose table holds it (``users`` keyed by user_id, ``items`` by item_id); ``column`` of that
    table; ``token``: a known value -> its category."""

    owner: Literal["user", "item"]
    column: str
    token: Callable[[object], str] = str


# Name (in ``features.side_features`` and as a batch field / vocabulary) -> feature, in field order.
SIDE_FEATURES: dict[str, SideFeature] = {
    "age": SideFeature("user", "age", age_group),
    "gender": SideFeature("user", "gender"),
    "occupation": SideFeature("user", "occupation"),
    "zip": SideFeature("user", "zip", zip_region),
    "year": SideFeature("item", "year", decade),
    "brand": SideFeature("item", "brand"),
}


def side_fields(names) -> list[str]:
    """The side features among ``names`` (e.g. a model's vocabulary names), in :data:`SIDE_FEATURES` order."""
    return [name for name in SIDE_FEATURES if name in names]


@dataclass
class SideField:
    """One side feature of a feature table: ``codes[c]`` is the token code of user (or item) code c, -1 where
    the value is unknown; ``names`` the tokens, sorted."""

    owner: Literal["user", "item"]
    codes: np.ndarray
    names: np.ndarray


def side_field(name: str, table: pd.DataFrame, ids: np.ndarray) -> SideField:
    """Feature ``name`` for each of ``ids`` (the feature table's user or item names) from ``table`` (the
    canonical users or items; an id it lacks, or a table without the column, is unknown)."""
    feature = SIDE_FEATURES[name]
    key = f"{feature.owner}_id"
    if feature.column in table.columns and len(table):
        rows = table.assign(**{key: table[key].astype(str)}).drop_duplicates(key)
        values = rows.set_index(key)[feature.column].reindex(ids)
    else:
        values = pd.Series([None] * len(ids), dtype=object)
    tokens = np.array([None if pd.isna(v) else feature.token(v) for v in values], dtype=object)
    known = np.array([t is not None for t in tokens], dtype=bool)
    names = np.sort(np.unique(tokens[known].astype(str))).astype(object)
    codes = np.full(len(ids), -1, dtype=np.int64)
    codes[known] = pd.Index(names).get_indexer(tokens[known])
    return SideField(feature.owner, codes, names)
