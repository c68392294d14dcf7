"""The static sanity setting (RecBole's CTR benchmark protocol): drop the ratings that are neither like nor
dislike (3 on MovieLens), label the rest, shuffle, split 8:1:1, train once, test once.

No time order is kept between the splits, so this measures the models, not
how they age. Histories are still the user's positive items strictly before
each sample in time, drawn from the train split only: a val or test row's
label never enters any history (with all rows as history, a test sample's
history held positives of other test and val rows, which lifted DIN above
DeepFM). Rows land in the shared schema with period "random".
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from llm4rec.ctr.config import CtrConfig
from llm4rec.ctr.features import FeatureTable, build_feature_table
from llm4rec.ctr.models import build_model
from llm4rec.ctr.train import TrainReport, fit, predict_proba
from llm4rec.data.tables import RecDataset, apply_label
from llm4rec.devices import resolve_device
from llm4rec.errors import DataError
from llm4rec.eval.results import ResultRow, score

PERIOD = "random"
log = logging.getLogger(__name__)


def split_rows(n: int, fractions: list[float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded shuffle of 0..n-1 cut into train / val / test by ``fractions``."""
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.floor(np.cumsum(fractions)[:2] * n).astype(np.int64)
    train, val, test = np.split(order, cuts)
    if min(len(train), len(val), len(test)) == 0:
        raise DataError(f"random split: {n} samples are too few for fractions {fractions}")
    return np.sort(train), np.sort(val), np.sort(test)


def random_split_samples(dataset: RecDataset, config: CtrConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(all interactions labelled, the samples that remain after dropping ``drop_ratings``).

    The samples keep, as column ``source_row``, their row number in the interactions."""
    interactions = apply_label(dataset.interactions, config.data.label_threshold)
    keep = ~interactions["rating"].isin(config.random_split.drop_ratings).to_numpy()
    samples = interactions[keep].reset_index(drop=True).assign(source_row=np.flatnonzero(keep))
    return interactions, samples


def history_source(interactions: pd.DataFrame, samples: pd.DataFrame, train: np.ndarray) -> pd.DataFrame:
    """The interactions with every label but the train split's set to 0: histories hold positives only, so
    no val or test row can enter one (the rows stay, so every sample is still found by user and time)."""
    label = np.zeros(len(interactions), dtype=interactions["label"].dtype)
    rows = samples["source_row"].to_numpy()[train]
    label[rows] = interactions["label"].to_numpy()[rows]
    return interactions.assign(label=label)


def run_random_split(
    dataset: RecDataset, config: CtrConfig, seed: int | None = None, progress: bool = True
) -> tuple[list[ResultRow], dict[str, TrainReport]]:
    """Every model of ``config`` trained and tested once on the split ``seed`` (default ``config.seed``) draws;
    the seed also initialises the models (on the CPU, then moved to ``config.device``) and shuffles their
    batches."""
    seed = config.seed if seed is None else seed
    device = resolve_device(config.device, "device")
    interactions, samples = random_split_samples(dataset, config)
    train, val, test = split_rows(len(samples), config.random_split.fractions, seed)
    table: FeatureTable = build_feature_table(
        samples,
        history_source(interactions, samples, train),
        dataset.items,
        config.features.history_length,
        config.features.max_genres,
        dataset.users,
        config.features.side_features,
    )
    users = samples["user_id"].to_numpy()[test]
    warm = np.isin(table.item[test], table.item[train])
    rows, reports = [], {}
    for name in tqdm(config.models, desc="random split", unit="model", disable=not progress):
        set_seed(seed)
        started = time.perf_counter()
        encoders = table.new_encoders()
        encoders.grow(table, train)  # ids of the train split only; val / test ids unseen there are OOV
        model = build_model(name, encoders.vocab_sizes(), config.model).to(device)
        reports[name] = fit(
            model,
            encoders.encode(table, train, device),
            encoders.encode(table, val, device),
            config.train,
            seed=seed,
        )
        p = predict_proba(model, encoders.encode(table, test, device), config.train.eval_batch_size)
        seconds = time.perf_counter() - started
        row = score(name, PERIOD, table.label[test].astype(int), p, users, warm, seconds, seed=seed)
        log.info("%s random split: AUC %.4f gAUC %.4f LogLoss %.4f", name, row.auc, row.gauc, row.logloss)
        rows.append(row)
    return rows, reports
