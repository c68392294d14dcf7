"""Amazon Books (2018 release): Books_5.json(.gz) reviews + meta_Books.json(.gz) titles.

Both files are JSON lines. pyarrow's multi-threaded reader parses only the
fields we keep, which matters: Books_5 holds about 27 million reviews.
The LSAT filters are applied in the order of the LSAT preprocessing: drop
reviews of books without a title, keep users with at least
``min_user_reviews`` reviews, keep a seeded ``user_fraction`` of those users,
then keep books whose title has at least ``min_title_interactions``
interactions among them.
Categories become the items' genres and ``brand`` (where a record has one) their brand; Amazon has
no user features, so the users table is empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pajson

from llm4rec.config import check_seed
from llm4rec.data.tables import RecDataset, canonical_interactions, canonical_items
from llm4rec.errors import ConfigError, DataError, brief

REVIEW_FIELDS = {"reviewerID": pa.string(), "asin": pa.string(), "overall": pa.float64(), "unixReviewTime": pa.int64()}
META_FIELDS = {"asin": pa.string(), "title": pa.string(), "category": pa.list_(pa.string()), "brand": pa.string()}


@dataclass
class AmazonBooksFilters:
    """The LSAT sampling of Amazon Books; defaults are the paper's."""

    min_user_reviews: int = 11
    user_fraction: float = 0.2
    min_title_interactions: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_user_reviews < 1:
            raise ConfigError(f"min_user_reviews must be >= 1, got {self.min_user_reviews}")
        if not 0 < self.user_fraction <= 1:
            raise ConfigError(f"user_fraction must be in (0, 1], got {self.user_fraction}")
        if self.min_title_interactions < 1:
            raise ConfigError(f"min_title_interactions must be >= 1, got {self.min_title_interactions}")
        check_seed(self.seed, "seed (of the user sample, --seed)")


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.json", directory / f"{stem}.json.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory}: found neither {stem}.json nor {stem}.json.gz")


def _check_utf8(table: pa.Table, path: Path) -> None:
    """pyarrow reads bytes that are not UTF-8 into string columns unchecked (pandas then fails to decode them):
    find the first such field and record."""
    for name in table.column_names:
        before = 0
        for chunk in table.column(name).chunks:
            try:
                chunk.validate(full=True)
            except pa.ArrowInvalid as error:
                index = re.search(r"string index (\d+)", str(error))
                flat = pa.types.is_string(chunk.type)  # a list column's index counts its strings, not records
                record = f"record {before + int(index.group(1)) + 1}" if index and flat else "a record"
                raise DataError(
                    f"{path}: {record} has a {name!r} that is not valid UTF-8 text; the file is damaged or not "
                    "the official UTF-8 release: download it again"
                ) from None
            before += len(chunk)


def _read_json_lines(path: Path, fields: dict[str, pa.DataType], required: list[str]) -> pd.DataFrame:
    schema = pa.schema(list(fields.items()))
    packed = "a damaged or truncated gzip file, or not gzip at all" if path.suffix == ".gz" else "unreadable"
    try:
        table = pajson.read_json(
            path,
            read_options=pajson.ReadOptions(block_size=64 << 20),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise DataError(
            f"{path}: not valid JSON lines with fields {list(fields)} ({brief(error)}); download it again"
        ) from None
    except (OSError, EOFError) as error:  # zlib / gzip: "incorrect header check", "Truncated compressed stream"
        raise DataError(f"{path}: cannot be read, {packed} ({brief(error)}); download it again") from None
    _check_utf8(table, path)
    frame = table.to_pandas()
    for name in required:
        if name not in frame.columns or frame[name].isna().all():
            raise DataError(f"{path}: no line has the field {name!r}; expected fields {list(fields)}")
    return frame


def read_amazon_books(path: str | Path, filters: AmazonBooksFilters | None = None) -> RecDataset:
    """Read and filter Amazon Books from a directory holding the two official files."""
    filters = filters or AmazonBooksFilters()
    directory = Path(path)
    if not directory.is_dir():
        raise DataError(f"{directory}: expected a directory holding Books_5.json(.gz) and meta_Books.json(.gz)")
    reviews_path, meta_path = _find(directory, "Books_5"), _find(directory, "meta_Books")
    reviews = _read_json_lines(reviews_path, REVIEW_FIELDS, list(REVIEW_FIELDS))
    meta = _read_json_lines(meta_path, META_FIELDS, ["asin", "title"])

    meta = meta.dropna(subset=["asin", "title"])
    meta["title"] = meta["title"].str.strip()  # before counting, so "Dune" and "Dune " pool
    meta = meta[meta["title"] != ""].drop_duplicates("asin")
    reviews = reviews.dropna(subset=list(REVIEW_FIELDS))
    reviews = reviews[reviews["asin"].isin(meta["asin"])]
    counts = reviews["reviewerID"].value_counts()
    users = np.sort(counts.index[counts >= filters.min_user_reviews].to_numpy().astype(str))
    rng = np.random.default_rng(filters.seed)
    kept_users = rng.choice(users, size=int(len(users) * filters.user_fraction), replace=False)
    reviews = reviews[reviews["reviewerID"].isin(kept_users)]
    title_of = meta.set_index("asin")["title"]
    title_counts = reviews["asin"].map(title_of).value_counts()
    popular = title_counts.index[title_counts >= filters.min_title_interactions]
    reviews = reviews[reviews["asin"].map(title_of).isin(popular)]
    if reviews.empty:
        raise DataError(
            f"{reviews_path}: no interactions left after the filters {filters}; "
            "lower min_user_reviews / min_title_interactions or raise user_fraction"
        )
    interactions = canonical_interactions(
        reviews.rename(
            columns={"reviewerID": "user_id", "asin": "item_id", "overall": "rating", "unixReviewTime": "timestamp"}
        ),
        str(reviews_path),
    )
    meta = meta[meta["asin"].isin(interactions["item_id"])]
    items = canonical_items(
        pd.DataFrame(
            {
                "item_id": meta["asin"],
                "title": meta["title"],
                "genres": [list(c) if c is not None else [] for c in meta["category"]],
                "brand": meta["brand"],
            }
        ),
        str(meta_path),
    )
    meta_info = {"filters": vars(filters).copy(), "files": [reviews_path.name, meta_path.name]}
    return RecDataset("amazon-books", interactions, items, meta_info)
