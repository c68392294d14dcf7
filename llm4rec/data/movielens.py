"""MovieLens readers: ML-100K (official files or RecBole's atomic files) and ML-1M.

Each returns a :class:`RecDataset` in canonical form. Titles keep the official
"Title (Year)" form for both ML-100K sources so prompts do not depend on where
the data came from. The release year goes into the items' ``year`` column (u.item's
release date, RecBole's ``release_year``, ML-1M's title). The users file (u.user,
ml-100k.user, users.dat) fills the users table; a source without one gets an
empty users table, not an error.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pandas as pd

from llm4rec.data.tables import USER_COLUMNS, RecDataset, canonical_interactions, canonical_items, canonical_users
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

# ML-1M's users.dat codes occupations 0..20 (its README); the names replace the codes.
ML1M_OCCUPATIONS = [
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
]
DATE_YEAR = re.compile(r"(\d{4})\s*$")  # u.item's release date: "01-Jan-1995"
TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")  # "Toy Story (1995)"


def year_of(text: str, pattern: re.Pattern = TITLE_YEAR) -> str:
    """The year ``pattern`` finds at the end of ``text``; "" (unknown) when there is none."""
    found = pattern.search(text)
    return found.group(1) if found else ""


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
    name: str,
    rating_rows: list[list[str]],
    ratings_source: str,
    items: dict[str, list],
    items_source: str,
    user_rows: list[list[str]] | None = None,
    users_source: str = "",
) -> RecDataset:
    """Canonical dataset from split rating lines, item columns (item_id, title, genres, year) and, where the
    source has a users file, its split lines (user_id, age, gender, occupation, zip)."""
    ratings = pd.DataFrame(rating_rows, columns=RATING_FIELDS, dtype=str)
    interactions = canonical_interactions(ratings, ratings_source)
    items_table = canonical_items(pd.DataFrame(items), items_source)
    if user_rows is None:
        return RecDataset(name, interactions, items_table)
    users = pd.DataFrame(user_rows, columns=USER_COLUMNS, dtype=str)
    return RecDataset(
        name, interactions, items_table, users=canonical_users(users, users_source, interactions["user_id"])
    )


def _read_text(path: Path, encoding: str) -> str:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path.read_bytes().decode(encoding)


def parse_ml100k_official(ratings_text: str, items_text: str, source: str, users_text: str | None = None) -> RecDataset:
    """Parse ML-100K's u.data (tab-separated), u.item and u.user ('|'-separated, latin-1) contents.

    The year is the release date's ("01-Jan-1995"), else the title's; ``users_text`` None: no users table.
    """
    ratings = split_lines(ratings_text, "\t", 4, f"{source}/u.data", "user id, item id, rating, timestamp")
    rows = split_lines(items_text, "|", 5 + len(ML100K_GENRES), f"{source}/u.item", "id|title|dates|url|19 genre flags")
    items = {
        "item_id": [r[0] for r in rows],
        "title": [r[1] for r in rows],
        "genres": [[g for g, flag in zip(ML100K_GENRES, r[5:], strict=True) if flag == "1"] for r in rows],
        "year": [year_of(r[2], DATE_YEAR) or year_of(r[1]) for r in rows],
    }
    users = None
    if users_text is not None:
        what = "user id|age|gender|occupation|zip code"
        users = split_lines(users_text, "|", len(USER_COLUMNS), f"{source}/u.user", what)
    return _dataset("ml-100k", ratings, f"{source}/u.data", items, f"{source}/u.item", users, f"{source}/u.user")


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
            users = archive.read(names["u.user"]).decode("latin-1") if "u.user" in names else None
    elif path.is_dir():
        ratings = _read_text(path / "u.data", "latin-1")
        items = _read_text(path / "u.item", "latin-1")
        users = _read_text(path / "u.user", "latin-1") if (path / "u.user").is_file() else None
    else:
        raise DataError(f"{path}: expected the official ml-100k.zip or a directory with u.data and u.item")
    return parse_ml100k_official(ratings, items, str(path), users)


def _atomic_header(text: str, source: str, expected: list[str]) -> None:
    header = text.split("\n", 1)[0].rstrip("\r").split("\t")
    names = [h.split(":")[0] for h in header]
    if names[: len(expected)] != expected:
        raise DataError(f"{source}: expected a RecBole atomic header starting with {expected}, found {header}")


RECBOLE_USER_FIELDS = ["user_id", "age", "gender", "occupation", "zip_code"]


def parse_ml100k_recbole(inter_text: str, item_text: str, source: str, user_text: str | None = None) -> RecDataset:
    """Parse RecBole's ml-100k.inter / ml-100k.item / ml-100k.user atomic files (tab-separated, typed header).

    RecBole stores the year apart from the title and genres space-separated;
    the year is put back as "Title (Year)" to match the official u.item, and kept as the item's year.
    ``user_text`` None: no users table.
    """
    _atomic_header(inter_text, f"{source}/ml-100k.inter", RATING_FIELDS)
    ratings = split_lines(inter_text, "\t", 4, f"{source}/ml-100k.inter", "user, item, rating, timestamp")[1:]
    _atomic_header(item_text, f"{source}/ml-100k.item", ["item_id", "movie_title", "release_year", "class"])
    rows = split_lines(item_text, "\t", 4, f"{source}/ml-100k.item", "item id, title, year, genres")[1:]
    titles, genres, years = [], [], []
    for row in rows:
        title, year = row[1].strip(), row[2].strip()
        if title == "unkonwn":  # RecBole's typo for the official "unknown" placeholder item
            title = "unknown"
        known = re.fullmatch(r"\d{4}", year) is not None  # 1.2.1 has "unkonwn" and "V" here too
        titles.append(f"{title} ({year})" if known else title)
        genres.append(row[3].split())
        years.append(year if known else year_of(title))
    items = {"item_id": [r[0] for r in rows], "title": titles, "genres": genres, "year": years}
    users, users_source = None, f"{source}/ml-100k.user"
    if user_text is not None:
        _atomic_header(user_text, users_source, RECBOLE_USER_FIELDS)
        users = split_lines(user_text, "\t", len(RECBOLE_USER_FIELDS), users_source, "user, age, gender, job, zip")[1:]
    return _dataset("ml-100k", ratings, f"{source}/ml-100k.inter", items, f"{source}/ml-100k.item", users, users_source)


def _ml1m_users(path: Path) -> list[list[str]]:
    """users.dat's lines as (user_id, age, gender, occupation, zip): the file's order is
    UserID::Gender::Age::Occupation::Zip-code, and occupations are codes 0..20 (named here)."""
    rows = split_lines(_read_text(path, "latin-1"), "::", 5, str(path), "UserID::Gender::Age::Occupation::Zip-code")
    out = []
    for number, (user, gender, age, code, zip_code) in enumerate(rows, start=1):
        if code.strip() and not (code.strip().isdigit() and int(code) < len(ML1M_OCCUPATIONS)):
            raise DataError(
                f"{path}: occupation must be a code 0..{len(ML1M_OCCUPATIONS) - 1}, found {code!r} "
                f"(column 'occupation', first in data row {number})"
            )
        out.append([user, age, gender, ML1M_OCCUPATIONS[int(code)] if code.strip() else "", zip_code])
    return out


def read_ml1m(path: str | Path) -> RecDataset:
    """ML-1M from a directory holding the official ratings.dat and movies.dat ('::', latin-1), and users.dat
    where it is there (without it: no users table). The year is the title's "(1995)"."""
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
        "year": [year_of(r[1]) for r in rows],
    }
    users_path = path / "users.dat"
    users = _ml1m_users(users_path) if users_path.is_file() else None
    return _dataset("ml-1m", ratings, str(ratings_path), items, str(movies_path), users, str(users_path))
