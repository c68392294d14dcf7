"""The reservoir of past samples that replay draws from, and the selection rules that need no model.

Shared by both sides: the CTR side's replay (:mod:`llm4rec.incremental.replay`) and replay in LoRA updates
(:mod:`llm4rec.llm.replay`) keep their past samples here, as row numbers (numpy, on the host: bookkeeping, seeded
by the method's own generator). No torch, no model: what a sample is belongs to the caller.
"""

from __future__ import annotations

import math

import numpy as np

from llm4rec.incremental.config import ReplayConfig


class Reservoir:
    """A uniform sample of at most ``capacity`` of every row seen: reservoir sampling (Vitter's Algorithm R).

    The first C rows fill it; row number i > C (1-based, counting every row ever offered) replaces a slot
    chosen uniformly with probability C / i. So after n rows each of them is in it with the same probability
    C / n, whatever its period, and it never holds more than C. numpy has no streaming reservoir (its
    ``choice`` samples a whole array at once), so Algorithm R is written here by hand, vectorised over a
    period's rows: row i's draw j, uniform in 0..i-1 (j < C: it takes slot j), does not depend on the
    other rows, so a period's draws are made at once; where several of its rows take the same slot, the
    last one keeps it, as one row at a time would. The distribution is exactly Algorithm R's.
    """

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity, self.rng = capacity, rng
        self.rows = np.empty(0, dtype=np.int64)
        self.n_seen = 0

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        n_fill = min(len(rows), self.capacity - len(self.rows))  # until full, every row seen is kept
        kept = np.concatenate([self.rows, rows[:n_fill]])  # a new array: ``rows`` handed out earlier never change
        rest = rows[n_fill:]
        number = self.n_seen + n_fill + 1 + np.arange(len(rest))  # 1-based, over every row ever offered
        self.n_seen += len(rows)
        if len(rest):
            slot = self.rng.integers(0, number)  # uniform in 0..i-1: below C with probability C / i
            hit = slot < self.capacity
            slot, incoming = slot[hit], rest[hit]
            last = len(slot) - 1 - np.unique(slot[::-1], return_index=True)[1]  # each slot's last taker
            kept[slot[last]] = incoming[last]
        self.rows = kept


class FractionReservoir:
    """A uniform sample of every row seen, holding ``fraction`` of them (``reservoir: fraction``).

    Each period adds ``fraction`` of its rows drawn uniformly, so every row ever seen has the same chance to
    be in the reservoir whatever its period, and the reservoir's size stays a fraction of the data seen.
    """

    def __init__(self, fraction: float, rng: np.random.Generator) -> None:
        self.fraction, self.rng = fraction, rng
        self.rows = np.empty(0, dtype=np.int64)
        self.n_seen = 0

    def add(self, rows: np.ndarray) -> None:
        self.n_seen += len(rows)
        wanted = min(len(rows), max(0, round(self.fraction * self.n_seen) - len(self.rows)))
        self.rows = np.concatenate([self.rows, self.rng.choice(rows, size=wanted, replace=False)])


def build_reservoir(replay: ReplayConfig, rng: np.random.Generator) -> Reservoir | FractionReservoir:
    """The reservoir ``replay.reservoir`` names, drawing from ``rng`` (the method's seeded one)."""
    if replay.reservoir == "fraction":
        return FractionReservoir(replay.reservoir_fraction, rng)
    return Reservoir(replay.reservoir_capacity, rng)


def spmf_probabilities(scores: np.ndarray) -> np.ndarray:
    """exp(rank / N) normalised, rank 0 = the highest score: the lowest-scored positives are drawn first."""
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores))
    rank[order] = np.arange(len(scores))
    weights = np.exp(rank / max(len(scores), 1))
    return weights / weights.sum()


def keep_both_ends(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ceil(n/2) highest and floor(n/2) lowest scores (all of them when n >= len(scores))."""
    if n >= len(scores):
        return np.arange(len(scores))
    order = np.argsort(scores, kind="stable")
    n_high = math.ceil(n / 2)
    return np.concatenate([order[len(order) - n_high :], order[: n - n_high]])
