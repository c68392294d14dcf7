"""CTR features from the canonical tables: user id, item id, item genres, the last N positive items, and the
user and item features named in ``features.side_features`` (none by default; :mod:`llm4rec.ctr.side_features`).

Ids are interned once per dataset into *codes* (positions in a sorted list of
all ids); that interning is bookkeeping, not knowledge. What a model may know
is held by an :class:`IdEncoder`: it maps the codes it has been grown with to
embedding indices and every other code to the out-of-vocabulary index. It only
ever appends, so a model trained through period t keeps its rows when the
encoder grows on period t + 1, and ids first seen at test time score through
the OOV row.

Embedding index layout, for every vocabulary: 0 = padding (empty history or
genre slot, never trained), 1 = OOV, 2.. = known ids in order of first sight.
A side feature whose value is missing for a user or item takes the OOV index: unknown, like an unseen value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from llm4rec.ctr.side_features import SIDE_FEATURES, SideField, side_field
from llm4rec.data.histories import history_positions
from llm4rec.data.tables import empty_users
from llm4rec.errors import ConfigError, DataError

PAD, OOV = 0, 1
VOCABULARIES = ("user", "item", "genre")


@dataclass
class FeatureConfig:
    history_length: int = 30  # the user's last N positive items strictly before the target
    max_genres: int = 8  # genres / categories kept per item (ML-100K items have at most 6)
    # User / item features added as fields, from SIDE_FEATURES (age, gender, occupation, zip, year, brand).
    # [] (the default) keeps the fields above exactly; it joins resume keys only when set, so results of the
    # default keep theirs.
    side_features: list[str] = field(default_factory=list, metadata={"keyed_when_set": True})

    def __post_init__(self) -> None:
        if self.history_length < 1:
            raise ConfigError(
                f"features.history_length: must be >= 1 (the user's last N positive items), got {self.history_length}"
            )
        if self.max_genres < 1:
            raise ConfigError(f"features.max_genres: must be >= 1, got {self.max_genres}")
        unknown = [name for name in self.side_features if name not in SIDE_FEATURES]
        if unknown:
            raise ConfigError(f"features.side_features: unknown feature(s) {unknown}; available: {list(SIDE_FEATURES)}")
        if len(set(self.side_features)) != len(self.side_features):
            raise ConfigError(f"features.side_features: a feature is listed twice in {self.side_features}")


class IdEncoder:
    """Code -> embedding index; grows by appending, never renumbers."""

    def __init__(self, n_codes: int) -> None:
        self.index_of = np.full(n_codes, OOV, dtype=np.int64)
        self.size = 2  # padding + OOV
        self._codes: list[np.ndarray] = []  # codes in index order, for vocabulary()

    def grow(self, codes: np.ndarray) -> int:
        """Give an index to every code not known yet (in order of first appearance); returns how many."""
        codes = np.asarray(codes).reshape(-1)
        codes = codes[codes >= 0]
        new = pd.unique(codes[self.index_of[codes] == OOV])
        self.index_of[new] = np.arange(self.size, self.size + len(new))
        self.size += len(new)
        self._codes.append(new)
        return len(new)

    def transform(self, codes: np.ndarray, missing: int = PAD) -> np.ndarray:
        """Embedding indices: known codes -> their index, unknown -> OOV, -1 (padding; a side feature's
        missing value) -> ``missing``."""
        codes = np.asarray(codes)
        return np.where(codes >= 0, self.index_of[np.maximum(codes, 0)], missing)

    def known_codes(self) -> np.ndarray:
        """Codes in index order (index 2 first)."""
        return np.concatenate(self._codes) if self._codes else np.empty(0, dtype=np.int64)


@dataclass
class FeatureTable:
    """Every sample's features as codes (-1 = none), computed once per dataset.

    ``history[i]`` holds the codes of the user's last positive items strictly
    before sample i's timestamp, oldest first, right-padded with -1;
    ``item_genres[c]`` the genre codes of item code c.
    """

    user: np.ndarray
    item: np.ndarray
    history: np.ndarray
    label: np.ndarray
    item_genres: np.ndarray
    user_names: np.ndarray
    item_names: np.ndarray
    genre_names: np.ndarray
    rating: np.ndarray | None = None  # each sample's rating, the target of the rating task (None: not given)
    side: dict[str, SideField] = field(default_factory=dict)  # features.side_features, by name

    def __len__(self) -> int:
        return len(self.user)

    def new_encoders(self) -> FeatureEncoders:
        return FeatureEncoders(
            IdEncoder(len(self.user_names)),
            IdEncoder(len(self.item_names)),
            IdEncoder(len(self.genre_names)),
            {name: IdEncoder(len(side.names)) for name, side in self.side.items()},
        )

    def side_codes(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Side feature ``name``'s token codes for samples ``rows`` (-1: unknown for that user or item)."""
        side = self.side[name]
        return side.codes[(self.user if side.owner == "user" else self.item)[rows]]


@dataclass
class FeatureEncoders:
    users: IdEncoder
    items: IdEncoder
    genres: IdEncoder
    side: dict[str, IdEncoder] = field(default_factory=dict)

    def grow(self, table: FeatureTable, rows: np.ndarray) -> None:
        """Learn the ids of samples ``rows`` (users, items, their genres, the items in their histories, and the
        side features' values)."""
        self.users.grow(table.user[rows])
        self.items.grow(table.item[rows])
        self.items.grow(table.history[rows])
        self.genres.grow(table.item_genres[table.item[rows]])
        for name, encoder in self.side.items():
            encoder.grow(table.side_codes(name, rows))

    def vocab_sizes(self) -> dict[str, int]:
        sizes = {"user": self.users.size, "item": self.items.size, "genre": self.genres.size}
        return sizes | {name: encoder.size for name, encoder in self.side.items()}

    def encode(
        self, table: FeatureTable, rows: np.ndarray, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        """Tensors for samples ``rows``: user, item (B,), genres (B, G), history (B, L), label (B,) and one (B,) per
        side feature, on ``device``
        (None: the CPU). They are built on the host from numpy and copied once here, so the trainer's batches
        are slices of device tensors, with no host copy per batch."""
        rows = np.asarray(rows, dtype=np.int64)
        items = table.item[rows]
        tensors = {
            "user": torch.from_numpy(self.users.transform(table.user[rows])),
            "item": torch.from_numpy(self.items.transform(items)),
            "genres": torch.from_numpy(self.genres.transform(table.item_genres[items])),
            "history": torch.from_numpy(self.items.transform(table.history[rows])),
            "label": torch.from_numpy(table.label[rows].astype(np.float32)),
        }
        for name, encoder in self.side.items():
            tensors[name] = torch.from_numpy(encoder.transform(table.side_codes(name, rows), missing=OOV))
        return tensors if device is None else {name: value.to(device) for name, value in tensors.items()}


# Which vocabulary indexes each encoded field (see FeatureEncoders.encode); a side feature's is its own.
FIELD_VOCABULARY = {"user": "user", "item": "item", "history": "item", "genres": "genre"} | {
    name: name for name in SIDE_FEATURES
}


def known_by(tensors: dict[str, torch.Tensor], vocab_sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    """``tensors`` as an encoder of ``vocab_sizes`` would have encoded them: indices it did not have yet -> OOV.

    Encoders only append, so an index >= an earlier vocabulary size is exactly an id that earlier encoder did
    not know. This scores data "as of" an earlier period: a teacher or a past model in a sequence sees later
    ids the way it saw them when it served, through the OOV row.
    """
    out = dict(tensors)
    for name, vocab in FIELD_VOCABULARY.items():
        if name in out:
            index = out[name]
            out[name] = torch.where(index >= vocab_sizes[vocab], torch.full_like(index, OOV), index)
    return out


def padded(values: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """CSR lists (``values[offsets[i]:offsets[i+1]]``) as a (n, width) matrix, right-padded with -1."""
    lengths = np.minimum(np.diff(offsets), width)
    out = np.full((len(lengths), width), -1, dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = values[offsets[:-1][rows] + cols]
    return out


def _codes(values: pd.Series | np.ndarray, names: np.ndarray) -> np.ndarray:
    return pd.Index(names).get_indexer(np.asarray(values, dtype=object))


def _item_genre_matrix(items: pd.DataFrame, item_names: np.ndarray, max_genres: int) -> tuple[np.ndarray, np.ndarray]:
    exploded = items[["item_id", "genres"]].explode("genres").dropna(subset=["genres"])
    exploded = exploded[exploded["item_id"].isin(item_names)]
    genre_names = np.sort(exploded["genres"].astype(str).unique()).astype(object)
    item_codes = _codes(exploded["item_id"], item_names)
    order = np.argsort(item_codes, kind="stable")  # group by item, keep each item's genre order
    item_codes = item_codes[order]
    genre_codes = _codes(exploded["genres"].astype(str).to_numpy()[order], genre_names)
    offsets = np.searchsorted(item_codes, np.arange(len(item_names) + 1))
    return padded(genre_codes, offsets, max_genres), genre_names


def build_feature_table(
    samples: pd.DataFrame,
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    history_length: int = 30,
    max_genres: int = 8,
    users: pd.DataFrame | None = None,
    side_features: list[str] | tuple[str, ...] = (),
) -> FeatureTable:
    """Features of ``samples`` (rows with user_id, item_id, timestamp, label).

    ``interactions`` is the whole labelled dataset the samples come from: a
    sample's history is drawn from it (so rows outside any period still serve
    as history), positives only, strictly earlier in time. Computed in one
    vectorised pass; call it once per dataset, not per period. ``side_features``
    are read from ``users`` (the canonical users table) and ``items``; one known
    for no user or item at all stops with a ConfigError (the dataset lacks it).
    """
    if history_length < 1:
        raise DataError(f"history_length must be >= 1, got {history_length}")
    # The order build_timeline uses, so ties inside a history come out the same way.
    full = interactions.sort_values(["timestamp", "user_id", "item_id"], kind="mergesort").reset_index(drop=True)
    user_names = np.sort(full["user_id"].astype(str).unique()).astype(object)
    item_names = np.union1d(full["item_id"].astype(str).unique(), items["item_id"].astype(str).unique()).astype(object)
    item_genres, genre_names = _item_genre_matrix(items, item_names, max_genres)

    full_items = _codes(full["item_id"], item_names)
    histories = history_positions(
        full["user_id"].to_numpy(), full["timestamp"].to_numpy(), history_length, eligible=full["label"].to_numpy() == 1
    )
    # A history depends on (user, timestamp) only, so any full-table row of the same user and second will do.
    keys = full[["user_id", "timestamp"]].assign(position=np.arange(len(full)))
    keys = keys.drop_duplicates(["user_id", "timestamp"])
    found = samples[["user_id", "timestamp"]].merge(keys, how="left", on=["user_id", "timestamp"])["position"]
    if found.isna().any():
        raise DataError("CTR features: some samples are not rows of the dataset they were said to come from")
    position = found.to_numpy(dtype=np.int64)
    starts, stops = histories.offsets[position], histories.offsets[position + 1]
    offsets = np.r_[0, np.cumsum(stops - starts)]
    flat = histories.positions[np.repeat(starts - offsets[:-1], stops - starts) + np.arange(offsets[-1])]
    history = padded(full_items[flat], offsets, history_length)

    users = empty_users() if users is None else users
    side = {}
    for name in side_features:
        owner = SIDE_FEATURES[name].owner
        side[name] = side_field(
            name, users if owner == "user" else items, user_names if owner == "user" else item_names
        )
        if not len(side[name].names):
            raise ConfigError(
                f"features.side_features: {name!r} is known for no {owner} of this dataset (its "
                f"{owner}s table lacks it: Amazon has no users table; a dataset prepared before user and item "
                "features gains them with `llm4rec data prepare NAME --force`)"
            )
    return FeatureTable(
        user=_codes(samples["user_id"].astype(str), user_names),
        item=_codes(samples["item_id"].astype(str), item_names),
        history=history.astype(np.int32),  # 30 columns per sample: halve the memory
        label=samples["label"].to_numpy(dtype=np.float32),
        item_genres=item_genres,
        user_names=user_names,
        item_names=item_names,
        genre_names=genre_names,
        rating=samples["rating"].to_numpy(dtype=np.float32) if "rating" in samples else None,
        side=side,
    )
