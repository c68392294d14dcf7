"""Keeping a CTR model up to date over periods: IU, BU-w and FR as period methods for run_protocol.

The first ``fit`` (period K - 1) pre-trains a fresh model on periods 0..K-1 in every mode.
After that, ``fit(timeline, t)``:

- IU (incremental update): fine-tune the current model on period t only;
- BU-w (batch update): fine-tune the current model on periods t-w+1..t;
- FR (full retraining): train a fresh model on periods 0..t.

Training data follow the timeline's one row rule, the LLM side's too
(:meth:`Timeline.training_positions`): the train splits of those periods plus
the val splits of the period before each (already used for their own model
selection, so now just data; IU at t learns train_t plus val_{t-1}); early
stopping watches period t's val split, never a test period.
Encoders grow on every id of periods 0..t, then the model gains rows for the
new ids; ids first seen in period t + 1 score through the OOV row.

Everything runs on one device (``device``, resolved by :mod:`llm4rec.devices`): models are built on the CPU,
so their random initialisation is the CPU's whatever the device, then moved; the tensors of a set of rows are
copied there once per :meth:`CtrUpdateMethod.encode`; scores come back to the host once per call.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from llm4rec.ctr.features import FeatureConfig, FeatureTable, build_feature_table
from llm4rec.ctr.models import CtrModel, build_model, check_model_name
from llm4rec.ctr.models.base import ModelOptions
from llm4rec.ctr.train import CtrTrainConfig, TrainReport, fit, predict_proba, rescaled_ratings, take
from llm4rec.data.periods import Timeline
from llm4rec.data.tables import apply_label
from llm4rec.devices import resolve_device
from llm4rec.errors import ConfigError, DataError
from llm4rec.eval.results import PRETRAINED

MODES = ("IU", "BU", "FR")


def timeline_features(timeline: Timeline, label_threshold: float, features: FeatureConfig) -> FeatureTable:
    """The feature table of every timeline sample (histories drawn from the whole dataset)."""
    table = timeline.table
    if not np.array_equal(table["label"].to_numpy() == 1, table["rating"].to_numpy() > label_threshold):
        raise ConfigError(f"label_threshold {label_threshold:g} is not the one the timeline was labelled with")
    interactions = apply_label(timeline.dataset.interactions, label_threshold)
    return build_feature_table(
        table,
        interactions,
        timeline.items,
        features.history_length,
        features.max_genres,
        timeline.dataset.users,
        features.side_features,
    )


def method_name(model: str, mode: str, window: int) -> str:
    return f"{model}-{'BU' + str(window) if mode == 'BU' else mode}"


class CtrUpdateMethod:
    """One CTR model, kept up to date period by period in one update mode (a PeriodMethod).

    Incremental-learning strategies (:mod:`llm4rec.incremental`) subclass it and
    override its hooks: :meth:`train_period` (what one period's training does),
    :meth:`serving_model` (which model scores the next period) and ``name``.
    """

    def __init__(
        self,
        model: str,
        mode: str,
        features: FeatureTable,
        options: ModelOptions | None = None,
        train: CtrTrainConfig | None = None,
        window: int = 3,
        seed: int = 0,
        device: torch.device | str | None = "cpu",
    ) -> None:
        check_model_name(model)
        if mode not in MODES:
            raise ConfigError(f"update mode {mode!r} is unknown; available: {list(MODES)}")
        if window < 1:
            raise ConfigError(f"window: BU-w needs w >= 1, got {window}")
        self.model_name, self.mode, self.window, self.seed = model, mode, window, seed
        self.device = resolve_device(device, "device")  # None / "auto": accelerate's choice
        self.name = method_name(model, mode, window)
        self.features = features
        self.options = options or ModelOptions()
        self.train_config = train or CtrTrainConfig()
        self.encoders = features.new_encoders()
        self.model: CtrModel | None = None
        self.grown_through = -1
        self.previous_vocab: dict[str, int] | None = None  # vocabulary sizes before the current fit grew them
        self.reports: dict[int, TrainReport] = {}  # fitted period -> what training did
        self.extra_reports: dict[int, dict] = {}  # fitted period -> what a strategy's own training did
        self.pretrain_period: int | None = None  # K - 1: the fit every method of this model and seed shares

    def _check_table(self, timeline: Timeline) -> None:
        if len(timeline.table) != len(self.features):
            raise DataError(f"{self.name}: the feature table was built for another timeline")

    @property
    def served_by(self) -> str:
        """Which model the last fit serves when it is not this method's own: the pre-trained model that every
        method of this model and seed starts from (see ``ResultRow.served_by``), after a fit at the pre-training
        period (``pretrain_period``, set by the catalogue: K - 1). FR fitted there is that model too; FR first
        fitted later (no burn-in) is not. Without a pre-training period: after the first fit."""
        if self.pretrain_period is None:
            return PRETRAINED if len(self.reports) == 1 else ""
        return PRETRAINED if self.reports and max(self.reports) == self.pretrain_period else ""

    @property
    def pretraining(self) -> bool:
        """True while the first fit runs (a fresh model on periods 0..K-1): nothing earlier to keep up with."""
        return not self.reports

    def fit(self, timeline: Timeline, period: int) -> None:
        self._check_table(timeline)
        periods = timeline.table["period"].to_numpy()
        is_train = timeline.table["split"].to_numpy() == "train"
        self.previous_vocab = None if self.model is None else self.encoders.vocab_sizes()
        # Ids of everything up to period t are known by now; the encoders only ever append.
        self.encoders.grow(self.features, np.flatnonzero((periods > self.grown_through) & (periods <= period)))
        self.grown_through = max(self.grown_through, period)
        if self.model is None or self.mode == "FR":
            first = 0
            self.model = self.new_model()
        else:
            first = period if self.mode == "IU" else max(0, period - self.window + 1)
            self.model.grow(self.encoders.vocab_sizes())
        train_rows = timeline.training_positions(first, period)
        val_rows = np.flatnonzero((periods == period) & ~is_train)
        self.reports[period] = self.train_period(timeline, period, train_rows, val_rows)

    def new_model(self) -> CtrModel:
        """A fresh model for the encoders' vocabulary, initialised on the CPU (torch's CPU random stream, so a
        seed gives the same initial weights on every device) and moved to the method's device."""
        return build_model(self.model_name, self.encoders.vocab_sizes(), self.options).to(self.device)

    def train_period(
        self, timeline: Timeline, period: int, train_rows: np.ndarray, val_rows: np.ndarray
    ) -> TrainReport:
        """Train ``self.model`` (already grown for period t's ids) on ``train_rows``, stopping on ``val_rows``.
        :meth:`on_epoch_end` sees the model after each epoch (MEGG keeps its penultimate-epoch snapshot)."""
        return fit(
            self.model,
            self.encode(train_rows),
            self.encode(val_rows),
            self.train_config,
            self.fit_seed(period),
            on_epoch_end=self.on_epoch_end,
        )

    def on_epoch_end(self, epoch: int, model: torch.nn.Module) -> None:
        """Called by the trainer after each epoch of :meth:`train_period`; nothing by default."""

    def encode(self, rows: np.ndarray) -> dict:
        """The model's tensors of ``rows``, on the method's device; for the rating task the label is the rating
        rescaled to [0, 1]."""
        tensors = self.encoders.encode(self.features, rows, self.device)
        if self.train_config.task == "rating":
            ratings = self.features.rating[np.asarray(rows, dtype=np.int64)]
            label = rescaled_ratings(ratings, self.train_config.rating_scale)
            tensors["label"] = torch.from_numpy(label).to(self.device)
        return tensors

    @property
    def rating_scale(self) -> tuple[float, float] | None:
        """The rating task's scale (the protocol then scores RMSE on it); None for the CTR task."""
        return self.train_config.rating_scale if self.train_config.task == "rating" else None

    def fit_seed(self, period: int) -> int:
        """The shuffling seed of period t's training: differs by seed and by period."""
        return self.seed * 1_000_003 + period

    def serving_model(self) -> CtrModel:
        """The model that scores the next period (the trained model itself; ASMG and SML serve a generated one)."""
        if self.model is None:
            raise DataError(f"{self.name}: predict_proba before fit")
        return self.model

    def sample_rows(self, samples: pd.DataFrame) -> np.ndarray:
        """Row numbers of ``samples`` in the timeline table, checked against the features built for it."""
        rows = samples.index.to_numpy()
        # Samples are rows of the timeline's table (index 0..n-1): check they are the rows we built features for.
        if len(rows) and (
            rows.min() < 0
            or rows.max() >= len(self.features)
            or not np.array_equal(
                self.features.user_names[self.features.user[rows]], samples["user_id"].astype(str).to_numpy()
            )
        ):
            raise DataError(f"{self.name}: samples must be rows of the timeline table the features were built from")
        return rows

    def predict_proba(self, samples: pd.DataFrame) -> np.ndarray:
        model = self.serving_model()
        return predict_proba(model, self.encode(self.sample_rows(samples)), self.train_config.eval_batch_size)

    @torch.no_grad()
    def hidden_and_proba(self, samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(last hidden vectors (n, H), P(label = 1) (n,)) of the serving model: what ReLoop2's memory reads."""
        model = self.serving_model()
        tensors = self.encode(self.sample_rows(samples))
        was_training = model.training
        model.eval()
        hidden, probability = [], []
        n, size = len(tensors["label"]), self.train_config.eval_batch_size
        for start in range(0, n, size):
            batch = take(tensors, torch.arange(start, min(start + size, n), device=self.device))
            h, extra = model.parts(batch)
            hidden.append(h.double())
            probability.append(torch.sigmoid(model.output(h).squeeze(-1) + extra).double())
        model.train(was_training)
        if not hidden:
            return np.empty((0, model.hidden_dim)), np.empty(0)
        return torch.cat(hidden).cpu().numpy(), torch.cat(probability).cpu().numpy()  # one copy each
