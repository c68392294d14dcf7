"""Shared fixtures: small synthetic datasets in canonical form and in the official ML-100K format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llm4rec.data.movielens import ML100K_GENRES
from llm4rec.data.tables import RecDataset, canonical_interactions, canonical_items


def synthetic_interactions(n_users=40, n_items=60, n=2400, seed=0, tie_share=0.3) -> pd.DataFrame:
    """Random ratings where some items are better liked than others; ~tie_share of timestamps repeat."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, n_users + 1, n)
    items = rng.integers(1, n_items + 1, n)
    quality = rng.normal(0, 1, n_items + 1)
    rating = np.clip(np.round(3 + quality[items] + rng.normal(0, 1, n)), 1, 5)
    timestamps = 880_000_000 + np.sort(rng.integers(0, 10_000_000, n))
    ties = rng.random(n) < tie_share
    timestamps[1:][ties[1:]] = timestamps[:-1][ties[1:]]  # same second as the previous rating
    return pd.DataFrame({"user_id": users, "item_id": items, "rating": rating, "timestamp": timestamps})


def synthetic_dataset(name="ml-100k", **kwargs) -> RecDataset:
    raw = synthetic_interactions(**kwargs)
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, raw["item_id"].max() + 1),
            "title": [f"Movie {i} (1995)" for i in range(1, raw["item_id"].max() + 1)],
            "genres": [["Drama"] if i % 2 else ["Comedy", "Romance"] for i in range(1, raw["item_id"].max() + 1)],
        }
    )
    return RecDataset(name, canonical_interactions(raw, "synthetic"), canonical_items(items, "synthetic"))


def write_ml100k_official(directory: Path, raw: pd.DataFrame) -> Path:
    """Write ``raw`` as the official u.data / u.item files (tab- and '|'-separated, latin-1)."""
    directory.mkdir(parents=True, exist_ok=True)
    raw[["user_id", "item_id", "rating", "timestamp"]].astype(int).to_csv(
        directory / "u.data", sep="\t", header=False, index=False
    )
    lines = []
    for item in range(1, int(raw["item_id"].max()) + 1):
        flags = ["0"] * len(ML100K_GENRES)
        flags[1 + item % 5] = "1"
        lines.append("|".join([str(item), f"Movie {item} (1995)", "01-Jan-1995", "", "http://x"] + flags))
    (directory / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return directory


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """An empty llm4rec cache for every test: tests never read or write the user's cache."""
    path = tmp_path / "cache"
    monkeypatch.setenv("LLM4REC_CACHE", str(path))
    return path


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread is several times faster than two on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def ml100k_dir(tmp_path) -> Path:
    """A small dataset in the official ML-100K file format."""
    return write_ml100k_official(tmp_path / "ml-100k", synthetic_interactions())


# ---------------------------------------------------------------- LLM side: a planted task and a tiny backbone


def planted_dataset(n_items=40, n=1600, seed=0, noise=0.1) -> RecDataset:
    """Odd items are called "Sunny N" and liked, even ones "Gloomy N" and disliked (``noise`` of labels flipped).
    Every user rates one item, so prompts have no history and differ only in the target title: a task a LoRA on
    a tiny backbone learns in a few dozen steps."""
    rng = np.random.default_rng(seed)
    items = rng.integers(1, n_items + 1, n)
    liked = (items % 2 == 1) ^ (rng.random(n) < noise)
    raw = pd.DataFrame(
        {
            "user_id": np.arange(1, n + 1),
            "item_id": items,
            "rating": np.where(liked, 5.0, 1.0),
            "timestamp": 880_000_000 + np.arange(n) * 60,
        }
    )
    titles = pd.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1),
            "title": [f"{'Sunny' if i % 2 else 'Gloomy'} {i}" for i in range(1, n_items + 1)],
            "genres": [["Drama"]] * n_items,
        }
    )
    return RecDataset("ml-100k", canonical_interactions(raw, "planted"), canonical_items(titles, "planted"))


@pytest.fixture(scope="session")
def planted_timeline():
    from llm4rec.data.periods import PeriodConfig, build_timeline

    return build_timeline(planted_dataset(), PeriodConfig(n_periods=4), history_length=5, label_threshold=3.0)


@pytest.fixture(scope="session")
def movie_template():
    from llm4rec.llm.prompts import load_template

    return load_template("movie")


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory, movie_template) -> Path:
    """A scratch-llama-tiny backbone (built once per session), pre-trained on the planted task's prompts but with
    random labels: it learns the prompt format and the two answers, not which titles are liked, so a LoRA has
    something to learn."""
    from llm4rec.data.periods import PeriodConfig, build_timeline
    from llm4rec.llm.scratch import build_scratch_backbone

    random_labels = build_timeline(
        planted_dataset(noise=0.5), PeriodConfig(n_periods=4), history_length=5, label_threshold=3.0
    )
    out = tmp_path_factory.mktemp("backbone") / "scratch"
    # Four epochs: with two, whether a LoRA then learns the task within three epochs depended on the CPU's
    # floating-point kernels (an AMD EPYC: yes; an Intel Xeon with AMX: not for LoRA seed 0, test AUC 0.41);
    # with four, LoRA seeds 0, 1, 2 reached test AUC 0.90-0.92 on the Xeon.
    build_scratch_backbone(
        random_labels, movie_template, str(out), periods=[0], max_samples=320, epochs=4, progress=False
    )
    return out


@pytest.fixture
def backbone(tiny_backbone_dir, movie_template):
    """The session's tiny backbone, loaded afresh for each test (tests attach LoRAs to it)."""
    from llm4rec.llm.backbone import BackboneConfig, load_backbone

    return load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)


def period_samples(backbone, timeline, template, period, split):
    """The tokenised LLM samples of one period's split."""
    from llm4rec.llm.samples import build_samples

    return build_samples(timeline.period(period, split), timeline.items, template, backbone.tokenizer)


# ---------------------------------------------------------------- CLI: a prepared dataset, torch's thread count


@pytest.fixture
def prepared(ml100k_dir):
    """The small ML-100K copy prepared into the test's cache by `llm4rec data prepare`."""
    from llm4rec.cli import main

    assert main(["data", "prepare", "ml-100k", "--path", str(ml100k_dir)]) == 0


@pytest.fixture
def prepared_quietly(prepared, capsys):
    """`prepared`, with what the command printed read off: the test's capsys holds only its own commands' output."""
    capsys.readouterr()


@pytest.fixture
def restore_threads():
    """Puts torch's thread count back after a test whose command sets it."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- CTR side: ids that keep arriving, tiny models


def arriving_dataset(n=4000, seed=0) -> RecDataset:
    """Users and items keep arriving over time (so every period brings new ids); item quality drives ratings."""
    rng = np.random.default_rng(seed)
    position = np.arange(n)
    n_items = 20 + position * 100 // n  # the catalogue grows from 20 to 120 items
    users = rng.integers(0, 10 + position * 60 // n) + 1
    items = (rng.random(n) * n_items).astype(int) + 1
    quality = rng.normal(0, 1.2, 200)
    rating = np.clip(np.round(3 + quality[items] + rng.normal(0, 0.7, n)), 1, 5)
    raw = pd.DataFrame({"user_id": users, "item_id": items, "rating": rating, "timestamp": 1_000_000 + position * 60})
    catalogue = pd.DataFrame(
        {"item_id": np.arange(1, 200), "title": "x", "genres": [["A"] if i % 3 else ["B", "C"] for i in range(1, 200)]}
    )
    return RecDataset("ml-100k", canonical_interactions(raw, "arriving"), canonical_items(catalogue, "arriving"))


@pytest.fixture(scope="module")
def timeline(request):
    """The arriving dataset's timeline, built once per test module. A module sets its size with
    ``ARRIVING_TIMELINE = {"n": ..., "n_periods": ...}`` (default: 2000 interactions in 4 periods); a module with
    its own ``timeline`` fixture uses that one instead."""
    from llm4rec.data.periods import PeriodConfig, build_timeline

    size = {"n": 2000, "n_periods": 4, **getattr(request.module, "ARRIVING_TIMELINE", {})}
    return build_timeline(arriving_dataset(n=size["n"]), PeriodConfig(n_periods=size["n_periods"]))


@pytest.fixture(scope="module")
def features(request, timeline):
    """The CTR feature table of ``timeline`` (positives: ratings >= 3), with the module's ``HISTORY_LENGTH``
    (default 6)."""
    from llm4rec.ctr.features import FeatureConfig
    from llm4rec.ctr.updates import timeline_features

    return timeline_features(timeline, 3.0, FeatureConfig(history_length=getattr(request.module, "HISTORY_LENGTH", 6)))


def tiny_ctr_options(**model):
    """Model sizes (``model`` overrides them) and a two-epoch training config: CTR models that train in seconds."""
    from llm4rec.ctr.models.base import ModelOptions
    from llm4rec.ctr.train import CtrTrainConfig

    options = ModelOptions(**{"embedding_dim": 4, "mlp": [8, 4], **model})
    return options, CtrTrainConfig(epochs=2, patience=1, batch_size=256, learning_rate=0.01)
