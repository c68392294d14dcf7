"""Prepared datasets on disk: ``$LLM4REC_CACHE/datasets/<name>/`` with
``interactions.parquet``, ``items.parquet``, ``users.parquet`` and ``meta.json``.

Format 2 added the users table and the items' year and brand. A format-1 directory (written before
them) still loads, unchanged, with an empty users table and unknown years and brands, and one warning
saying how to rebuild it; anything else stops with a DataError.

A dataset directory is written whole into a temporary directory and renamed
into place, so an interrupted prepare never leaves a half-written dataset.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from llm4rec.data.amazon import AmazonBooksFilters, read_amazon_books
from llm4rec.data.fetch import fetch_ml100k
from llm4rec.data.movielens import read_ml1m, read_ml100k_official
from llm4rec.data.tables import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    ITEM_FEATURE_COLUMNS,
    USER_COLUMNS,
    RecDataset,
    empty_users,
)
from llm4rec.errors import DataError, brief
from llm4rec.io import atomic_directory

FORMAT_VERSION = 2
BEFORE_FEATURES = 1  # the format without users.parquet and the items' year and brand: still read

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$LLM4REC_CACHE``, else ``$XDG_CACHE_HOME/llm4rec``, else ``~/.cache/llm4rec``."""
    if os.environ.get("LLM4REC_CACHE"):
        return Path(os.environ["LLM4REC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llm4rec"


def dataset_dir(name: str) -> Path:
    return cache_dir() / "datasets" / name


def _read_ml100k(path: Path | None, filters: AmazonBooksFilters | None) -> RecDataset:
    if path is None:
        return fetch_ml100k()
    dataset = read_ml100k_official(path)
    dataset.meta["source"] = str(path)
    return dataset


def _read_ml1m(path: Path | None, filters: AmazonBooksFilters | None) -> RecDataset:
    if path is None:
        raise DataError("ml-1m is read from a local copy: pass --path DIR (the directory holding ratings.dat)")
    dataset = read_ml1m(path)
    dataset.meta["source"] = str(path)
    return dataset


def _read_amazon_books(path: Path | None, filters: AmazonBooksFilters | None) -> RecDataset:
    if path is None:
        raise DataError(
            "amazon-books is read from a local copy: pass --path DIR (holding Books_5.json and meta_Books.json)"
        )
    dataset = read_amazon_books(path, filters)
    dataset.meta["source"] = str(path)
    return dataset


# name -> reader(path or None, Amazon filters or None)
SOURCES: dict[str, Callable[[Path | None, AmazonBooksFilters | None], RecDataset]] = {
    "ml-100k": _read_ml100k,
    "ml-1m": _read_ml1m,
    "amazon-books": _read_amazon_books,
}


def check_name(name: str) -> None:
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; known datasets: {sorted(SOURCES)}")


def save_dataset(dataset: RecDataset) -> Path:
    target = dataset_dir(dataset.name)
    meta = dict(dataset.meta)
    meta.update(
        name=dataset.name,
        format_version=FORMAT_VERSION,
        prepared_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        n_interactions=len(dataset.interactions),
        n_items=len(dataset.items),
    )
    with atomic_directory(target) as tmp:
        dataset.interactions.to_parquet(tmp / "interactions.parquet", index=False)
        dataset.items.to_parquet(tmp / "items.parquet", index=False)
        dataset.users.to_parquet(tmp / "users.parquet", index=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    dataset.meta = meta
    return target


def is_prepared(name: str) -> bool:
    return (dataset_dir(name) / "meta.json").is_file()


def prepare_dataset(
    name: str, path: str | Path | None = None, filters: AmazonBooksFilters | None = None, force: bool = False
) -> RecDataset:
    """Read ``name`` from its source into canonical form and store it in the cache."""
    check_name(name)
    if is_prepared(name) and not force and path is None and filters is None:
        return load_dataset(name)
    dataset = SOURCES[name](Path(path) if path is not None else None, filters)
    save_dataset(dataset)
    return dataset


def load_dataset(name: str, prepare_if_missing: bool = True) -> RecDataset:
    """Load a prepared dataset; ML-100K is fetched on first use, the others must be prepared."""
    check_name(name)
    directory = dataset_dir(name)
    if not is_prepared(name):
        if name == "ml-100k" and prepare_if_missing:
            return prepare_dataset(name)
        raise DataError(f"dataset {name} is not prepared in {directory}; run `llm4rec data prepare {name} --path DIR`")
    rebuild = f"run `llm4rec data prepare {name} --force` (with --path DIR for a local copy) to rebuild it"
    path = directory / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"holds {type(meta).__name__}, not a JSON object")
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"prepared dataset {directory} is damaged ({path.name}: {brief(error)}); {rebuild}") from None
    version = meta.get("format_version")
    if version not in (FORMAT_VERSION, BEFORE_FEATURES):
        raise DataError(
            f"{directory} was written by another llm4rec version; run `llm4rec data prepare {name} --force`"
        )
    stored = [("interactions", INTERACTION_COLUMNS), ("items", ITEM_COLUMNS)]
    if version == FORMAT_VERSION:
        stored = [stored[0], ("items", ITEM_COLUMNS + ITEM_FEATURE_COLUMNS), ("users", USER_COLUMNS)]
    else:
        log.warning(
            "%s was prepared before user and item features (no users table, no years or brands); "
            "run `llm4rec data prepare %s --force` to add them",
            directory,
            name,
        )
    tables = {"users": empty_users()}
    for table, columns in stored:
        path = directory / f"{table}.parquet"
        try:
            tables[table] = pd.read_parquet(path)
            missing = [c for c in columns if c not in tables[table].columns]
            if missing:
                raise ValueError(f"the columns {missing} are missing")
        except (OSError, ValueError) as error:  # pyarrow: ArrowInvalid is a ValueError, ArrowIOError an OSError
            raise DataError(
                f"prepared dataset {directory} is damaged ({path.name}: {brief(error)}); {rebuild}"
            ) from None
    items = tables["items"]
    items["genres"] = [list(g) for g in items["genres"]]
    if version == BEFORE_FEATURES:
        items["year"] = pd.array([pd.NA] * len(items), dtype="Int64")
        items["brand"] = None
    return RecDataset(name, tables["interactions"], items, meta, tables["users"])
