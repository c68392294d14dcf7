"""User histories: for every interaction, the same user's previous interactions.

"Previous" means strictly earlier in time: interactions sharing the target's
timestamp are left out, because their order within one second is unknowable
(MovieLens users rate many films in the same second) and keeping them could
leak an interaction logged after the target. The target itself and anything
later never appear. Histories cross period borders: a user's history at the
start of period t comes from periods before t.

The work is vectorised (one sort, prefix counts, one gather) and histories
are held in CSR form (flat positions + offsets), so a million rows take a
couple of seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Histories:
    """Row i's history is ``positions[offsets[i]:offsets[i + 1]]`` (table positions, oldest first)."""

    positions: np.ndarray
    offsets: np.ndarray
    n_earlier: np.ndarray  # interactions of the user strictly before row i (uncapped, all rows count)

    def of(self, row: int) -> np.ndarray:
        return self.positions[self.offsets[row] : self.offsets[row + 1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(start, stop)`` for every pair, without a Python loop."""
    sizes = stops - starts
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    return np.repeat(starts - first, sizes) + np.arange(sizes.sum())


def history_positions(
    users: np.ndarray, timestamps: np.ndarray, length: int, eligible: np.ndarray | None = None
) -> Histories:
    """Each row's previous ``length`` eligible rows of the same user, strictly earlier in time.

    ``eligible`` (bool per row) restricts which rows may appear in histories
    (for example positives only); ``n_earlier`` ignores it and the length cap.
    """
    if length < 0:
        raise ValueError(f"history length must be >= 0, got {length}")
    n = len(users)
    user_codes, _ = pd.factorize(np.asarray(users))
    timestamps = np.asarray(timestamps)
    eligible = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    # Group rows by user, then time; ties keep table order (the sort is stable).
    order = np.lexsort((np.arange(n), timestamps, user_codes))
    u, t, ok = user_codes[order], timestamps[order], eligible[order]
    index = np.arange(n)
    new_user = np.r_[True, u[1:] != u[:-1]]
    new_moment = new_user | np.r_[True, t[1:] != t[:-1]]
    user_start = np.maximum.accumulate(np.where(new_user, index, 0))
    moment_start = np.maximum.accumulate(np.where(new_moment, index, 0))
    # cum[k] = number of eligible rows among the first k rows of the grouped order.
    cum = np.r_[0, np.cumsum(ok)]
    hi_sorted = cum[moment_start]  # eligible rows of this user strictly before this moment
    lo_sorted = np.maximum(cum[user_start], hi_sorted - length)
    lo, hi, n_earlier = (np.empty(n, dtype=np.int64) for _ in range(3))
    lo[order], hi[order], n_earlier[order] = lo_sorted, hi_sorted, moment_start - user_start
    eligible_rows = order[np.flatnonzero(ok)]  # table positions, in grouped order
    positions = eligible_rows[_ranges(lo, hi)] if n else np.empty(0, dtype=np.int64)
    return Histories(positions, np.r_[0, np.cumsum(hi - lo)], n_earlier)


def _lists(values: np.ndarray, offsets: np.ndarray) -> list[list]:
    # One conversion to Python objects, then cheap list slicing per row.
    flat = values.tolist()
    return [flat[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]


def history_lists(table: pd.DataFrame, histories: Histories, rows: np.ndarray) -> dict[str, list[list]]:
    """History columns for the table positions ``rows``.

    history_item_ids: the previous interactions' items, oldest first, and history_labels their labels;
    liked_item_ids / disliked_item_ids: the same split by label (order kept).
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts, stops = histories.offsets[rows], histories.offsets[rows + 1]
    picked = histories.positions[_ranges(starts, stops)]
    offsets = np.r_[0, np.cumsum(stops - starts)]
    items = table["item_id"].to_numpy()[picked]
    labels = table["label"].to_numpy()[picked]
    liked = labels == 1
    liked_offsets = np.r_[0, np.cumsum(liked)][offsets]
    disliked_offsets = offsets - liked_offsets
    return {
        "history_item_ids": _lists(items, offsets),
        "history_labels": _lists(labels, offsets),
        "liked_item_ids": _lists(items[liked], liked_offsets),
        "disliked_item_ids": _lists(items[~liked], disliked_offsets),
    }
