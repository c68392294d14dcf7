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
def ml100k_dir(tmp_path) -> Path:
    """A small dataset in the official ML-100K file format."""
    return write_ml100k_official(tmp_path / "ml-100k", synthetic_interactions())
