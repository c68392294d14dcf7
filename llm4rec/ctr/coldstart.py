"""The cold-start warm-up protocol (``protocol: coldstart``) of MetaEmb, MWUF and EmerG, on the canonical tables.

Items are split by their number of interactions: **old** items (more than ``coldstart.old_item_min``) and **new**
items (at most that many, and at least 3 K + ``coldstart.min_test``, so every round and the test have samples;
items with fewer are left out, as the papers do). Then, per seed:

1. the base model trains on the old items' samples (the newest ``val_fraction`` of them, in time order, select
   its epoch);
2. **cold**: the new items' test samples are scored before any of their samples is seen (a new item is known by
   its features only: its id gets a fresh row, which MetaEmb fills from the features);
3. **warm-a, warm-b, warm-c**: each new item's samples in time order give K samples per round (its first K, the
   next K, the K after); after each round the method updates on that round's samples and the test samples (every
   new item's samples after its first 3 K) are scored again.

Each round's scores land in the shared results schema with ``period`` = the round (``cold``, ``warm-a``, ...),
AUC and F1 at the mean score (the papers' second metric) among the metrics. Histories (each sample's earlier
positives) never hold a test sample's label: the test rows' labels are zeroed in the history source, as in the
random split.

The warm-up methods (``coldstart.warm_ups``, each ``<Model>-<warm-up>`` in the results):

- ``base``: the model as trained, updating only its item-id embeddings on each round's samples (the papers'
  "base model" row: the warm-up every method shares);
- ``MetaEmb`` (Pan et al., SIGIR 2019): a generator, trained on the old items, maps an item's features to its id
  embedding; a new item starts from the generated embedding, then warms up as ``base``
  (:mod:`llm4rec.ctr.metaemb`);
- the ``EmerG`` model runs its own scheme (:mod:`llm4rec.ctr.emerg_train`): meta-training over the old items'
  tasks, and warm-up rounds that adapt only its item-specific parameters.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from accelerate.utils import set_seed

from llm4rec.ctr.features import FeatureEncoders, FeatureTable, build_feature_table
from llm4rec.ctr.models import build_model
from llm4rec.ctr.models.base import CtrModel
from llm4rec.ctr.train import CtrTrainConfig, fit, predict_proba
from llm4rec.data.tables import RecDataset, apply_label
from llm4rec.devices import resolve_device
from llm4rec.errors import ConfigError
from llm4rec.eval.results import ResultRow, score

log = logging.getLogger(__name__)

ROUNDS = ("cold", "warm-a", "warm-b", "warm-c")
WARM_UPS = ("base", "MetaEmb")


@dataclass
class MetaEmbConfig:
    """MetaEmb's generator training (the paper's defaults where it gives them)."""

    alpha: float = 0.1  # loss = alpha * L_a (cold embedding) + (1 - alpha) * L_b (after one step on batch a)
    cold_lr: float = 1e-3  # the step on the generated embedding with batch a's gradient
    learning_rate: float = 1e-3  # of the generator
    epochs: int = 2  # passes over the old items
    items_per_batch: int = 64  # old items per generator step (each brings 2 K samples: batch a and batch b)

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"coldstart.metaemb.alpha: expected a value in [0, 1], got {self.alpha}")
        for name in ("cold_lr", "learning_rate"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"coldstart.metaemb.{name}: must be > 0, got {getattr(self, name)}")
        if self.epochs < 1 or self.items_per_batch < 1:
            raise ConfigError("coldstart.metaemb.epochs and items_per_batch must be >= 1")


@dataclass
class ColdStartConfig:
    """The warm-up protocol's split and rounds (``protocol: coldstart``)."""

    old_item_min: int = 100  # old items have more interactions than this; new items at most this many
    k: int = 10  # samples of each new item per warm-up round (a, b, c)
    min_test: int = 10  # a new item needs 3 K + min_test samples: the rounds' and at least this many tested
    val_fraction: float = 0.1  # the newest share of the old items' samples: the base model's val split
    warm_ups: list[str] = field(default_factory=lambda: list(WARM_UPS))  # for each model but EmerG
    warm_lr: float = 1e-3  # of a warm-up round's update of the item-id embeddings (EmerG: emerg.warm_lr)
    warm_epochs: int = 1  # passes over a round's samples
    metaemb: MetaEmbConfig = field(default_factory=MetaEmbConfig)

    def __post_init__(self) -> None:
        if self.old_item_min < 1:
            raise ConfigError(f"coldstart.old_item_min: must be >= 1, got {self.old_item_min}")
        if self.k < 1 or self.min_test < 1:
            raise ConfigError(f"coldstart.k and coldstart.min_test: must be >= 1, got {self.k}, {self.min_test}")
        if 3 * self.k + self.min_test > self.old_item_min:
            raise ConfigError(
                f"coldstart.k: K = {self.k} is larger than a new item's samples allow: a new item has at most "
                f"old_item_min = {self.old_item_min} samples, and needs 3 K + min_test = "
                f"{3 * self.k + self.min_test}; lower k or min_test, or raise old_item_min"
            )
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"coldstart.val_fraction: expected a value in (0, 1), got {self.val_fraction}")
        unknown = [w for w in self.warm_ups if w not in WARM_UPS]
        if unknown or not self.warm_ups or len(set(self.warm_ups)) != len(self.warm_ups):
            raise ConfigError(f"coldstart.warm_ups: expected distinct names from {list(WARM_UPS)}, got {self.warm_ups}")
        if self.warm_lr <= 0 or self.warm_epochs < 1:
            raise ConfigError("coldstart.warm_lr must be > 0 and coldstart.warm_epochs >= 1")


@dataclass
class ColdStartSplit:
    """Row positions into the samples table: the base model's train / val rows, each round's rows, the test."""

    base_train: np.ndarray
    base_val: np.ndarray
    rounds: dict[str, np.ndarray]  # warm-a, warm-b, warm-c
    test: np.ndarray
    old_items: np.ndarray
    new_items: np.ndarray

    def summary(self) -> dict:
        return {
            "old_items": len(self.old_items), "new_items": len(self.new_items), "base_train": len(self.base_train),
            "base_val": len(self.base_val), **{r: len(rows) for r, rows in self.rounds.items()}, "test": len(self.test),
        }  # fmt: skip


def split_items(samples: pd.DataFrame, config: ColdStartConfig, where: str = "coldstart") -> ColdStartSplit:
    """The old / new item split of ``samples`` (rows sorted by time) and the rounds of every new item."""
    counts = samples["item_id"].value_counts()
    old = np.sort(counts.index[counts.to_numpy() > config.old_item_min].to_numpy())
    needed = 3 * config.k + config.min_test
    new = np.sort(counts.index[(counts.to_numpy() <= config.old_item_min) & (counts.to_numpy() >= needed)].to_numpy())
    if len(old) == 0:
        raise ConfigError(
            f"{where}.old_item_min: no item has more than {config.old_item_min} interactions (the most has "
            f"{int(counts.max())}): no old item to train the base model on; lower it"
        )
    if len(new) == 0:
        raise ConfigError(
            f"{where}.old_item_min: the split leaves no new items: none has between 3 K + min_test = {needed} and "
            f"{config.old_item_min} interactions; raise old_item_min or lower k / min_test"
        )
    item = samples["item_id"].to_numpy()
    is_old, is_new = np.isin(item, old), np.isin(item, new)
    old_rows = np.flatnonzero(is_old)  # in time order
    n_val = max(1, round(config.val_fraction * len(old_rows)))
    rank = samples.groupby("item_id", sort=False).cumcount().to_numpy()  # each item's samples in time order
    rounds = {
        name: np.flatnonzero(is_new & (rank >= i * config.k) & (rank < (i + 1) * config.k))
        for i, name in enumerate(ROUNDS[1:])
    }
    test = np.flatnonzero(is_new & (rank >= 3 * config.k))
    return ColdStartSplit(old_rows[:-n_val], old_rows[-n_val:], rounds, test, old, new)


def coldstart_samples(dataset: RecDataset, label_threshold: float) -> pd.DataFrame:
    """The labelled interactions in time order (ties by user and item, as everywhere)."""
    labelled = apply_label(dataset.interactions, label_threshold)
    order = labelled.sort_values(["timestamp", "user_id", "item_id"], kind="mergesort").index
    return labelled.loc[order].reset_index(drop=True)


def coldstart_features(dataset: RecDataset, samples: pd.DataFrame, split: ColdStartSplit, features) -> FeatureTable:
    """The feature table of ``samples``; histories hold no test sample's label (those are zeroed in the source)."""
    label = samples["label"].to_numpy().copy()
    label[split.test] = 0
    return build_feature_table(
        samples, samples.assign(label=label), dataset.items, features.history_length, features.max_genres,
        dataset.users, features.side_features,
    )  # fmt: skip


def know_items(encoders: FeatureEncoders, table: FeatureTable, rows: np.ndarray) -> None:
    """Let the encoders know the items of ``rows`` and their features (genres, item-side features), not their
    users or labels: what a cold-start system knows of a new item before anyone has interacted with it."""
    items = np.unique(table.item[rows])
    encoders.items.grow(items)
    encoders.genres.grow(table.item_genres[items])
    for name, encoder in encoders.side.items():
        if table.side[name].owner == "item":
            encoder.grow(table.side[name].codes[items])


def item_id_tables(model: CtrModel) -> list[torch.nn.Parameter]:
    """The weights of every embedding table indexed by item id (the field embedding, first-order weights)."""
    return [table.weight for table in model.embedding_tables().values() if table.vocab == "item"]


def update_only(model: torch.nn.Module, parameters: list[torch.nn.Parameter], train, config: CtrTrainConfig,
                learning_rate: float, epochs: int, seed: int) -> None:  # fmt: skip
    """Train ``parameters`` of ``model`` alone on ``train`` (every epoch kept: a warm-up round has no val)."""
    chosen = {id(p) for p in parameters}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    try:
        fit(model, train, None, dataclasses.replace(config, epochs=epochs), seed=seed, learning_rate=learning_rate)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class WarmUpRun:
    """One ``<Model>-<warm-up>`` (or EmerG) through the protocol for one seed: base fit, then the rounds."""

    def __init__(self, model_name: str, warm_up: str, table: FeatureTable, split: ColdStartSplit, config,
                 seed: int, device) -> None:  # fmt: skip
        self.model_name, self.warm_up, self.table, self.split = model_name, warm_up, table, split
        self.config, self.coldstart, self.seed, self.device = config, config.coldstart, seed, device
        self.name = model_name if model_name == "EmerG" else f"{model_name}-{warm_up}"
        self.trained_rows: list[np.ndarray] = []  # every row a fit learnt from, in order (what the tests check)

    def encode(self, rows: np.ndarray):
        return self.encoders.encode(self.table, rows, self.device)

    def _grow(self) -> None:
        self.model.grow(self.encoders.vocab_sizes())

    def fit_base(self) -> None:
        split, config = self.split, self.config
        self.encoders = self.table.new_encoders()
        self.encoders.grow(self.table, split.base_train)
        self.model = build_model(self.model_name, self.encoders.vocab_sizes(), config.model).to(self.device)
        self.trained_rows.append(split.base_train)
        if self.model_name == "EmerG":
            from llm4rec.ctr.emerg_train import meta_train

            self.report = meta_train(self.model, self.encode(split.base_train), config.emerg,
                                     val=self.encode(split.base_val), seed=self.seed)  # fmt: skip
        else:
            self.report = fit(self.model, self.encode(split.base_train), self.encode(split.base_val), config.train,
                              seed=self.seed)  # fmt: skip
        know_items(self.encoders, self.table, split.test)  # the new items exist (features only, no labels)
        self._grow()
        if self.warm_up == "MetaEmb":
            from llm4rec.ctr.metaemb import MetaEmbGenerator

            self.generator = MetaEmbGenerator(self.model, self.coldstart.metaemb, seed=self.seed).to(self.device)
            self.generator.train_on(self.model, self.encode(split.base_train), self.coldstart.k, self.config.train,
                                    seed=self.seed)  # fmt: skip
            new_items = self.encoders.items.transform(np.unique(self.table.item[split.test]))
            self.generator.initialise(
                self.model, torch.as_tensor(new_items, device=self.device), self.encode(split.test)
            )

    def warm(self, round_name: str) -> None:
        rows = self.split.rounds[round_name]
        self.trained_rows.append(rows)
        self.encoders.grow(self.table, rows)  # the round's users are known from now on
        self._grow()
        train = self.encode(rows)
        if self.model_name == "EmerG":
            from llm4rec.ctr.emerg_train import warm_up

            warm_up(self.model, train, self.config.emerg)  # its item-specific rows (emerg.warm_lr, warm_steps)
            return
        update_only(self.model, item_id_tables(self.model), train, self.config.train, self.coldstart.warm_lr,
                    self.coldstart.warm_epochs, self.seed)  # fmt: skip

    def predict(self) -> np.ndarray:
        return predict_proba(self.model, self.encode(self.split.test), self.config.train.eval_batch_size)


def run_coldstart(
    dataset: RecDataset, config, seed: int | None = None, progress: bool = True
) -> tuple[list[ResultRow], dict]:
    """Every (model, warm-up) of ``config`` through the protocol for ``seed``: result rows (one per round) and a
    report (the split's sizes, each base fit's training)."""
    from tqdm.auto import tqdm

    seed = config.seed if seed is None else seed
    device = resolve_device(config.device, "device")
    samples = coldstart_samples(dataset, config.data.label_threshold)
    split = split_items(samples, config.coldstart)
    table = coldstart_features(dataset, samples, split, config.features)
    y, users = table.label[split.test].astype(int), samples["user_id"].to_numpy()[split.test]
    runs = [
        (model, warm_up)
        for model in config.models
        for warm_up in (["own"] if model == "EmerG" else config.coldstart.warm_ups)
    ]
    rows, report = [], {"split": split.summary(), "fits": {}}
    for model, warm_up in tqdm(runs, desc=f"cold start (seed {seed})", unit="method", disable=not progress):
        set_seed(seed)
        run = WarmUpRun(model, warm_up, table, split, config, seed, device)
        started = time.perf_counter()
        run.fit_base()
        for round_name in ROUNDS:
            if round_name != "cold":
                run.warm(round_name)
            p = run.predict()
            seconds, started = time.perf_counter() - started, time.perf_counter()
            warm = np.zeros(len(y), dtype=bool) if round_name == "cold" else np.ones(len(y), dtype=bool)
            row = score(run.name, round_name, y, p, users, warm, seconds, seed=seed, with_f1=True)
            log.info("%s seed %d %s: AUC %.4f F1 %.4f", run.name, seed, round_name, row.auc, row.f1)
            rows.append(row)
        report["fits"][run.name] = run.report.to_dict() if hasattr(run.report, "to_dict") else run.report
    return rows, report
