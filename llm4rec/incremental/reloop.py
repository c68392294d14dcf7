"""ReLoop2 as a period method: any base method plus an error memory, served test-then-write.

The base is any method that can give, for a frame of samples, its hidden
vectors and its probabilities (``hidden_and_proba``): every CTR update method
does, and an LLM method can with its hidden states. The memory is
:mod:`llm4rec.incremental.error_memory`.

The online setting of the paper, inside one :meth:`ReLoop2Method.predict_proba`
call: the tested period is scored in chronological mini-batches; each batch is
first scored (base prediction + lambda x the memory's error estimate), and only
then are its labels written into the memory, where they can help later batches.
A sample's own label is therefore never in the memory when it is scored, and
each sample can be scored once only (a second call would find its label there).
The memory is emptied whenever the base model is updated (errors are relative
to one base model), or never (``reset: never``); after an update it can be
filled with the updated model's errors on the period's val split, the newest
labelled data (``prefill_val``).

The memory lives on the host (numpy), whatever device the base runs on: the base hands over the hidden vectors
and probabilities of a whole frame of samples in one copy (``hidden_and_proba``), and the stream's batches
are slices of those host arrays, so streaming never waits on the device batch by batch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from llm4rec.data.periods import Timeline
from llm4rec.errors import DataError
from llm4rec.eval.results import PRETRAINED
from llm4rec.incremental.config import ReLoop2Config
from llm4rec.incremental.error_memory import ErrorMemory, build_memory, compensate


class HiddenStateMethod(Protocol):
    name: str

    def fit(self, timeline: Timeline, period: int) -> None: ...

    def hidden_and_proba(self, samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(hidden vectors (n, H), P(label = 1) (n,)) of the model that serves the next period."""


def reloop2_name(base: str) -> str:
    """``<Model>-ReLoop2`` on IU, ``<base>+ReLoop2`` on anything else."""
    return base[: -len("-IU")] + "-ReLoop2" if base.endswith("-IU") else base + "+ReLoop2"


class ReLoop2Method:
    """``base`` with ReLoop2's error compensation (a PeriodMethod)."""

    def __init__(self, base: HiddenStateMethod, config: ReLoop2Config | None = None, seed: int = 0) -> None:
        self.base, self.config, self.seed = base, config or ReLoop2Config(), seed
        self.name = reloop2_name(base.name)
        self.memory: ErrorMemory | None = None
        self.scored_rows: set[int] = set()  # rows whose labels are in the memory by now
        self.reports = getattr(base, "reports", {})
        self.extra_reports: dict[int, dict] = {}

    @property
    def served_by(self) -> str:
        """When the base serves another method's model, this serves that method with ReLoop2. On the pre-trained
        model the memory still differs from everyone's, so it is this method's own."""
        base = getattr(self.base, "served_by", "")
        return "" if base in ("", PRETRAINED) else reloop2_name(base)

    def fit(self, timeline: Timeline, period: int) -> None:
        self.base.fit(timeline, period)
        if self.memory is not None and self.config.reset == "on_update":
            self.memory.reset()
        if self.config.prefill_val:  # the base's own val sample where it keeps one (the LLM side's samples.val)
            rows_of = getattr(self.base, "prefill_rows", None)
            val = rows_of(timeline, period) if rows_of is not None else timeline.period(period, "val")
            hidden, probability = self.base.hidden_and_proba(val)
            self._memory(hidden.shape[1]).write(hidden, val["label"].to_numpy(), probability)
        base_report = getattr(self.base, "extra_reports", {}).get(period, {})
        self.extra_reports[period] = {**base_report, "memory_after_fit": 0 if self.memory is None else len(self.memory)}

    def _memory(self, dim: int) -> ErrorMemory:
        if self.memory is None:
            self.memory = build_memory(self.config, dim, seed=self.seed)
        return self.memory

    def predict_proba(self, samples: pd.DataFrame) -> np.ndarray:
        """Score ``samples`` as a stream in time order; labels enter the memory only after their batch is scored."""
        rows = samples.index.to_numpy()
        if self.scored_rows.intersection(rows.tolist()):
            raise DataError(f"{self.name}: these samples were scored before and their labels are in the memory")
        hidden, base_probability = self.base.hidden_and_proba(samples)  # the base model is fixed for the period
        memory = self._memory(hidden.shape[1])
        labels = samples["label"].to_numpy()
        order = np.argsort(samples["timestamp"].to_numpy(), kind="stable")
        out = np.empty(len(samples))
        for start in range(0, len(order), self.config.stream_batch_size):
            batch = order[start : start + self.config.stream_batch_size]
            # Each batch is scored first, then its labels are known: test-then-write.
            error = memory.read_then_write(hidden[batch], labels[batch], base_probability[batch])
            out[batch] = compensate(base_probability[batch], error, self.config.weight)
        self.scored_rows.update(rows.tolist())
        return out
