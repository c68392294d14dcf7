"""MovieLens readers: ML-100K (official files or RecBole's atomic files) and ML-1M.

Each returns a :class:`RecDataset` in canonical form. Titles keep the official
"Title (Year)" form for both ML-100K sources so prompts do not depend on where
the data came from.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pandas as pd

from llm4rec.data.tables import RecDataset, canonical_interactions, canonical_items
from llm4rec.errors import DataError

# The 19 genre flags of ML-100K's u.item, in file order (also listed in u.genre).
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def split_lines(text: str, sep: str, expected: int, source: str, what: str) -> list[list[str]]:
    """Non-empty lines split by ``sep``; a line with another field count stops with its line number."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != expected:
            shown = {"\t": "tab", "|": "'|'", "::": "'::'"}.get(sep, repr(sep))
            raise DataError(
                f"{source}: expected {expected} {shown}-separated fields per line ({what}), "
                f"found {len(fields)} on line {number}: {line[:80]!r}"
            )
        rows.append(fields)
    if not rows:
        raise DataError(f"{source}: file is empty")
    return rows


RATING_FIELDS = ["user_id", "item_id", "rating", "timestamp"]


def _dataset(
    name: str, rating_rows: list[list[str]], ratings_source: str, items: dict[str, list], items_source: str
) -> RecDataset:
    """Canonical dataset from split rating lines and item columns (item_id, title, genres)."""
    ratings = pd.DataFrame(rating_rows, columns=RATING_FIELDS, dtype=str)
    return RecDataset(
        name, canonical_interactions(ratings, ratings_source), canonical_items(pd.DataFrame(items), items_source)
    )


def _read_text(path: Path, encoding: str) -> str:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path.read_bytes().decode(encoding)


def parse_ml100k_official(ratings_text: str, items_text: str, source: str) -> RecDataset:
    """Parse ML-100K's u.data (tab-separated) and u.item ('|'-separated, latin-1) contents."""
    ratings = split_lines(ratings_text, "\t", 4, f"{source}/u.data", "user id, item id, rating, timestamp")
    rows = split_lines(items_text, "|", 5 + len(ML100K_GENRES), f"{source}/u.item", "id|title|dates|url|19 genre flags")
    items = {
        "item_id": [r[0] for r in rows],
        "title": [r[1] for r in rows],
        "genres": [[g for g, flag in zip(ML100K_GENRES, r[5:], strict=True) if flag == "1"] for r in rows],
    }
    return _dataset("ml-100k", ratings, f"{source}/u.data", items, f"{source}/u.item")


def read_ml100k_official(path: str | Path) -> RecDataset:
    """ML-100K from the official GroupLens zip or from the directory it unpacks to."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = {Path(n).name: n for n in archive.namelist()}
            for needed in ("u.data", "u.item"):
                if needed not in names:
                    raise DataError(f"{path}: zip holds no {needed}; expected the official ml-100k.zip")
            ratings = archive.read(names["u.data"]).decode("latin-1")
            items = archive.read(names["u.item"]).decode("latin-1")
    elif path.is_dir():
        ratings = _read_text(path / "u.data", "latin-1")
        items = _read_text(path / "u.item", "latin-1")
    else:
        raise DataError(f"{path}: expected the official ml-100k.zip or a directory with u.data and u.item")
    return parse_ml100k_official(ratings, items, str(path))


def _atomic_header(text: str, source: str, expected: list[str]) -> None:
    header = text.split("\n", 1)[0].rstrip("\r").split("\t")
    names = [h.split(":")[0] for h in header]
    if names[: len(expected)] != expected:
        raise DataError(f"{source}: expected a RecBole atomic header starting with {expected}, found {header}")


def parse_ml100k_recbole(inter_text: str, item_text: str, source: str) -> RecDataset:
    """Parse RecBole's ml-100k.inter / ml-100k.item atomic files (tab-separated, typed header).

    RecBole stores the year apart from the title and genres space-separated;
    the year is put back as "Title (Year)" to match the official u.item.
    """
    _atomic_header(inter_text, f"{source}/ml-100k.inter", RATING_FIELDS)
    ratings = split_lines(inter_text, "\t", 4, f"{source}/ml-100k.inter", "user, item, rating, timestamp")[1:]
    _atomic_header(item_text, f"{source}/ml-100k.item", ["item_id", "movie_title", "release_year", "class"])
    rows = split_lines(item_text, "\t", 4, f"{source}/ml-100k.item", "item id, title, year, genres")[1:]
    titles, genres = [], []
    for row in rows:
        title, year = row[1].strip(), row[2].strip()
        if title == "unkonwn":  # RecBole's typo for the official "unknown" placeholder item
            title = "unknown"
        titles.append(f"{title} ({year})" if re.fullmatch(r"\d{4}", year) else title)
        genres.append(row[3].split())
    items = {"item_id": [r[0] for r in rows], "title": titles, "genres": genres}
    return _dataset("ml-100k", ratings, f"{source}/ml-100k.inter", items, f"{source}/ml-100k.item")


def read_ml1m(path: str | Path) -> RecDataset:
    """ML-1M from a directory holding the official ratings.dat and movies.dat ('::', latin-1)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: expected the ml-1m directory holding ratings.dat and movies.dat")
    ratings_path, movies_path = path / "ratings.dat", path / "movies.dat"
    ratings = split_lines(
        _read_text(ratings_path, "latin-1"), "::", 4, str(ratings_path), "UserID::MovieID::Rating::Timestamp"
    )
    rows = split_lines(_read_text(movies_path, "latin-1"), "::", 3, str(movies_path), "MovieID::Title::Genres")
    items = {
        "item_id": [r[0] for r in rows],
        "title": [r[1] for r in rows],
        "genres": [r[2].split("|") if r[2] else [] for r in rows],
    }
    return _dataset("ml-1m", ratings, str(ratings_path), items, str(movies_path))
