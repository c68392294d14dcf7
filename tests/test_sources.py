"""Source readers on small files in the official formats: ML-100K (GroupLens and RecBole), ML-1M,
Amazon Books 2018, the errors they raise on bad input, and the prepared-dataset store."""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llm4rec.data import store
from llm4rec.data.amazon import AmazonBooksFilters, read_amazon_books
from llm4rec.data.fetch import RECBOLE_MEMBERS, read_recbole_wheel
from llm4rec.data.movielens import ML100K_GENRES, parse_ml100k_recbole, read_ml1m, read_ml100k_official
from llm4rec.errors import ConfigError, DataError
from llm4rec.io import atomic_directory

# ---------------------------------------------------------------------------------------------------------
# Helpers that write the official formats
# ---------------------------------------------------------------------------------------------------------

# (user, item, rating, timestamp) as in u.data
ML100K_RATINGS = [
    (196, 242, 3, 881250949),
    (186, 302, 3, 891717742),
    (22, 377, 1, 878887116),
    (244, 51, 2, 880606923),
    (166, 346, 1, 886397596),
    (298, 474, 4, 884182806),
    (115, 265, 2, 881171488),
    (253, 465, 5, 891628467),
    (305, 451, 3, 886324817),
    (6, 86, 3, 883603013),
    (196, 267, 4, 881251000),
]
# item id -> (title, genres)
ML100K_ITEMS = {
    51: ("Legends of the Fall (1994)", ["Drama", "Romance", "War", "Western"]),
    86: ("Remains of the Day, The (1993)", ["Drama"]),
    242: ("Kolya (1996)", ["Comedy"]),
    265: ("Hunt for Red October, The (1990)", ["Action", "Thriller"]),
    267: ("unknown", ["unknown"]),
    302: ("L.A. Confidential (1997)", ["Crime", "Film-Noir", "Mystery", "Thriller"]),
    346: ("Jackie Brown (1997)", ["Crime", "Drama"]),
    377: ("Heavyweights (1994)", ["Children's", "Comedy"]),
    451: ("Grease (1978)", ["Comedy", "Musical", "Romance"]),
    465: ("Jungle Book, The (1994)", ["Action", "Adventure", "Romance"]),
    474: ("Café (1995)", []),
}


def u_data_text(rows=ML100K_RATINGS, sep="\t") -> str:
    return "".join(sep.join(str(v) for v in row) + "\n" for row in rows)


def u_item_text(items=ML100K_ITEMS) -> str:
    lines = []
    for item_id, (title, genres) in items.items():
        flags = ["1" if g in genres else "0" for g in ML100K_GENRES]
        date = "" if title == "unknown" else "01-Jan-1995"
        url = "" if title == "unknown" else f"http://us.imdb.com/M/title-exact?{item_id}"
        lines.append("|".join([str(item_id), title, date, "", url, *flags]))
    return "\n".join(lines) + "\n"


def write_ml100k_dir(directory: Path, ratings: str | None = None, items: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if ratings is not None:
        (directory / "u.data").write_bytes(ratings.encode("latin-1"))
    if items is not None:
        (directory / "u.item").write_bytes(items.encode("latin-1"))
    return directory


def write_ml100k_zip(path: Path, members: dict[str, str]) -> Path:
    """``members``: file name -> text, stored under ``ml-100k/`` as in the official zip (latin-1)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ml-100k/", "")
        for name, text in members.items():
            archive.writestr(f"ml-100k/{name}", text.encode("latin-1"))
    return path


RECBOLE_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n"
    "186\t302\t3\t891717742\n"
    "22\t1\t5\t878887116\n"
    "22\t267\t4\t878887117\n"
)
RECBOLE_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "242\tKolya\t1996\tComedy\n"
    "267\tunkonwn\t\tunknown\n"
    "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
)


def write_recbole_wheel(path: Path, inter: str = RECBOLE_INTER, item: str | None = RECBOLE_ITEM) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("recbole/__init__.py", "")
        archive.writestr(RECBOLE_MEMBERS[0], inter)
        if item is not None:
            archive.writestr(RECBOLE_MEMBERS[1], item)
    return path


def write_ml1m_dir(directory: Path, ratings: str, movies: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.dat").write_bytes(ratings.encode("latin-1"))
    (directory / "movies.dat").write_bytes(movies.encode("latin-1"))
    return directory


def write_json_lines(path: Path, records: list[dict]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def review(user: str, asin: str, overall: float, time: int) -> dict:
    """A Books_5 line with the extra fields of the 2018 release, which the reader must ignore."""
    return {
        "overall": overall,
        "verified": True,
        "reviewTime": "01 1, 2015",
        "reviewerID": user,
        "asin": asin,
        "style": {"Format:": " Paperback"},
        "reviewerName": f"name of {user}",
        "reviewText": "A fine book.",
        "summary": "Fine",
        "unixReviewTime": time,
        "vote": "3",
    }


def meta(asin: str, title: str | None, category: list[str] | None = None) -> dict:
    record = {"asin": asin, "description": ["..."], "price": "$9.99", "also_buy": ["x"], "rank": "1,234 in Books"}
    if title is not None:
        record["title"] = title
    if category is not None:
        record["category"] = category
    return record


def write_books(directory: Path, reviews: list[dict], metas: list[dict], gz: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".json.gz" if gz else ".json"
    write_json_lines(directory / f"Books_5{suffix}", reviews)
    write_json_lines(directory / f"meta_Books{suffix}", metas)
    return directory


def assert_canonical(dataset) -> None:
    inter, items = dataset.interactions, dataset.items
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp", "label"]
    assert list(items.columns) == ["item_id", "title", "genres", "year", "brand"]
    assert items["year"].dtype == "Int64"
    assert list(dataset.users.columns) == ["user_id", "age", "gender", "occupation", "zip"]
    for frame, column in [(inter, "user_id"), (inter, "item_id"), (items, "item_id"), (items, "title")]:
        assert pd.api.types.is_string_dtype(frame[column]), (column, frame[column].dtype)
        assert all(isinstance(v, str) for v in frame[column])
    assert inter["rating"].dtype == np.float64
    assert inter["timestamp"].dtype == np.int64
    assert inter["label"].dtype == np.int8
    np.testing.assert_array_equal(inter["label"].to_numpy(), (inter["rating"].to_numpy() > 3).astype(np.int8))
    assert all(isinstance(g, list) and all(isinstance(x, str) for x in g) for g in items["genres"])


def records(frame: pd.DataFrame) -> list[dict]:
    """An item table's id, title and genres (year and brand are checked in tests/test_user_item_features.py)."""
    return frame[["item_id", "title", "genres"]].to_dict("records")


# ---------------------------------------------------------------------------------------------------------
# ML-100K, official files
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def ml100k_official_dir(tmp_path) -> Path:
    return write_ml100k_dir(tmp_path / "ml-100k", u_data_text(), u_item_text())


def test_ml100k_official_directory(ml100k_official_dir):
    dataset = read_ml100k_official(ml100k_official_dir)
    assert dataset.name == "ml-100k"
    assert_canonical(dataset)
    inter = dataset.interactions
    assert inter["user_id"].tolist() == [str(r[0]) for r in ML100K_RATINGS]
    assert inter["item_id"].tolist() == [str(r[1]) for r in ML100K_RATINGS]
    assert inter["rating"].tolist() == [float(r[2]) for r in ML100K_RATINGS]
    assert inter["timestamp"].tolist() == [r[3] for r in ML100K_RATINGS]
    assert inter["label"].tolist() == [int(r[2] > 3) for r in ML100K_RATINGS]
    expected_items = [
        {"item_id": str(i), "title": title, "genres": genres} for i, (title, genres) in ML100K_ITEMS.items()
    ]
    assert records(dataset.items) == expected_items


def test_ml100k_latin1_title_survives(ml100k_official_dir):
    raw = (ml100k_official_dir / "u.item").read_bytes()
    assert b"Caf\xe9 (1995)" in raw  # really latin-1 on disk, not UTF-8
    items = read_ml100k_official(ml100k_official_dir).items.set_index("item_id")
    assert items.loc["474", "title"] == "Café (1995)"
    assert items.loc["474", "genres"] == []


def test_ml100k_genres_follow_flag_order(tmp_path):
    # One item per genre: the i-th flag set must give the i-th genre name.
    items = {i + 1: (f"Movie {i + 1} (1990)", [g]) for i, g in enumerate(ML100K_GENRES)}
    items[100] = ("All (1990)", list(ML100K_GENRES))
    ratings = [(1, i, 4, 100 + i) for i in items]
    directory = write_ml100k_dir(tmp_path / "d", u_data_text(ratings), u_item_text(items))
    got = read_ml100k_official(directory).items.set_index("item_id")["genres"]
    for i, genre in enumerate(ML100K_GENRES):
        assert got[str(i + 1)] == [genre]
    assert got["100"] == ML100K_GENRES


def test_ml100k_official_zip_matches_directory(tmp_path, ml100k_official_dir):
    archive = write_ml100k_zip(
        tmp_path / "ml-100k.zip",
        {"u.data": u_data_text(), "u.item": u_item_text(), "u.genre": "unknown|0\n", "README": "x"},
    )
    from_zip = read_ml100k_official(archive)
    from_dir = read_ml100k_official(ml100k_official_dir)
    assert_canonical(from_zip)
    pd.testing.assert_frame_equal(from_zip.interactions, from_dir.interactions)
    assert records(from_zip.items) == records(from_dir.items)
    assert "Café (1995)" in from_zip.items["title"].tolist()


def test_ml100k_title_whitespace_is_stripped(tmp_path):
    items = {1: ("  Padded Title (1995)  ", ["Drama"])}
    directory = write_ml100k_dir(tmp_path / "d", u_data_text([(1, 1, 4, 10)]), u_item_text(items))
    assert read_ml100k_official(directory).items["title"].tolist() == ["Padded Title (1995)"]


# ---------------------------------------------------------------------------------------------------------
# ML-100K, RecBole atomic files
# ---------------------------------------------------------------------------------------------------------


def check_recbole(dataset) -> None:
    assert dataset.name == "ml-100k"
    assert_canonical(dataset)
    inter = dataset.interactions
    assert inter["user_id"].tolist() == ["196", "186", "22", "22"]
    assert inter["item_id"].tolist() == ["242", "302", "1", "267"]
    assert inter["rating"].tolist() == [3.0, 3.0, 5.0, 4.0]
    assert inter["timestamp"].tolist() == [881250949, 891717742, 878887116, 878887117]
    assert inter["label"].tolist() == [0, 0, 1, 1]
    assert records(dataset.items) == [
        {"item_id": "1", "title": "Toy Story (1995)", "genres": ["Animation", "Children's", "Comedy"]},
        {"item_id": "242", "title": "Kolya (1996)", "genres": ["Comedy"]},
        {"item_id": "267", "title": "unknown", "genres": ["unknown"]},
        {
            "item_id": "302",
            "title": "L.A. Confidential (1997)",
            "genres": ["Crime", "Film-Noir", "Mystery", "Thriller"],
        },
    ]


def test_recbole_parse():
    check_recbole(parse_ml100k_recbole(RECBOLE_INTER, RECBOLE_ITEM, "recbole"))


def test_recbole_float_timestamps_and_crlf():
    inter = RECBOLE_INTER.replace("881250949", "881250949.0").replace("\n", "\r\n")
    check_recbole(parse_ml100k_recbole(inter, RECBOLE_ITEM.replace("\n", "\r\n"), "recbole"))


def test_recbole_wheel(tmp_path):
    wheel = write_recbole_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl")
    dataset = read_recbole_wheel(wheel)
    check_recbole(dataset)
    assert "recbole" in dataset.meta["source"]


def test_recbole_wheel_without_item_file(tmp_path):
    wheel = write_recbole_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl", item=None)
    with pytest.raises(DataError, match=r"recbole-1\.2\.1-py3-none-any\.whl.*ml-100k\.item"):
        read_recbole_wheel(wheel)


def test_recbole_bad_header():
    bad = RECBOLE_INTER.replace("user_id:token\titem_id:token", "item_id:token\tuser_id:token")
    with pytest.raises(DataError, match=r"src/ml-100k\.inter: expected a RecBole atomic header"):
        parse_ml100k_recbole(bad, RECBOLE_ITEM, "src")


def test_recbole_item_row_with_wrong_field_count():
    bad = RECBOLE_ITEM + "5\tCopycat 1995\tCrime\n"
    with pytest.raises(
        DataError, match=r"src/ml-100k\.item: expected 4 tab-separated fields per line .*found 3 on line 6"
    ):
        parse_ml100k_recbole(RECBOLE_INTER, bad, "src")


# ---------------------------------------------------------------------------------------------------------
# ML-1M
# ---------------------------------------------------------------------------------------------------------

ML1M_RATINGS = "1::1193::5::978300760\n1::661::3::978302109\n2::3408::4::978300275\n2::1::2::978299026\n"
ML1M_MOVIES = (
    "1::Toy Story (1995)::Animation|Children's|Comedy\n"
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
    "3408::Erin Brockovich: A True Story, Café (2000)::Drama\n"
)


def test_ml1m(tmp_path):
    directory = write_ml1m_dir(tmp_path / "ml-1m", ML1M_RATINGS, ML1M_MOVIES)
    assert b"Caf\xe9" in (directory / "movies.dat").read_bytes()
    dataset = read_ml1m(directory)
    assert dataset.name == "ml-1m"
    assert_canonical(dataset)
    inter = dataset.interactions
    assert inter["user_id"].tolist() == ["1", "1", "2", "2"]
    assert inter["item_id"].tolist() == ["1193", "661", "3408", "1"]
    assert inter["rating"].tolist() == [5.0, 3.0, 4.0, 2.0]
    assert inter["timestamp"].tolist() == [978300760, 978302109, 978300275, 978299026]
    assert inter["label"].tolist() == [1, 0, 1, 0]
    assert records(dataset.items) == [
        {"item_id": "1", "title": "Toy Story (1995)", "genres": ["Animation", "Children's", "Comedy"]},
        {
            "item_id": "661",
            "title": "James and the Giant Peach (1996)",
            "genres": ["Animation", "Children's", "Musical"],
        },
        {"item_id": "1193", "title": "One Flew Over the Cuckoo's Nest (1975)", "genres": ["Drama"]},
        {"item_id": "3408", "title": "Erin Brockovich: A True Story, Café (2000)", "genres": ["Drama"]},
    ]


def test_ml1m_not_a_directory(tmp_path):
    with pytest.raises(DataError, match=r"expected the ml-1m directory holding ratings\.dat and movies\.dat"):
        read_ml1m(tmp_path / "absent")


def test_ml1m_missing_movies(tmp_path):
    directory = tmp_path / "ml-1m"
    directory.mkdir()
    (directory / "ratings.dat").write_text(ML1M_RATINGS)
    with pytest.raises(DataError, match=r"movies\.dat: file not found"):
        read_ml1m(directory)


# ---------------------------------------------------------------------------------------------------------
# Amazon Books 2018
# ---------------------------------------------------------------------------------------------------------

# b1 and b2 share the title "Alpha"; b5 has no title, b6 an empty one, b7 a blank one; b9 is not in meta.
BOOKS_META = [
    meta("b1", "Alpha", ["Books", "Literature & Fiction"]),
    meta("b2", "Alpha"),
    meta("b3", "Beta", ["Books"]),
    meta("b4", "Gamma", []),
    meta("b5", None, ["Books"]),
    meta("b6", "", ["Books"]),
    meta("b7", "   ", ["Books"]),
]
BOOKS_REVIEWS = [
    # u1: 3 reviews of titled books (+1 untitled) -> kept with min_user_reviews=3
    review("u1", "b1", 5.0, 100),
    review("u1", "b2", 4.0, 101),
    review("u1", "b3", 3.0, 102),
    review("u1", "b5", 5.0, 103),
    # u2: 4 reviews but only 2 of titled books -> dropped (reviews of untitled books do not count)
    review("u2", "b1", 5.0, 200),
    review("u2", "b3", 5.0, 201),
    review("u2", "b6", 5.0, 202),
    review("u2", "b7", 5.0, 203),
    # u3: exactly 3 -> kept
    review("u3", "b2", 2.0, 300),
    review("u3", "b3", 1.0, 301),
    review("u3", "b4", 4.0, 302),
    # u4: 2 -> dropped
    review("u4", "b1", 5.0, 400),
    review("u4", "b4", 5.0, 401),
    # u5: 3 titled (+ b9 unknown to meta) -> kept
    review("u5", "b1", 4.0, 500),
    review("u5", "b2", 3.0, 501),
    review("u5", "b4", 5.0, 502),
    review("u5", "b9", 5.0, 503),
]
# Among u1, u3, u5: Alpha (b1+b2) has 5 interactions, Beta 2, Gamma 2. With u2/u4 Beta and Gamma would have 3.
ALPHA_ROWS = [("u1", "b1", 5.0, 100), ("u1", "b2", 4.0, 101), ("u3", "b2", 2.0, 300), ("u5", "b1", 4.0, 500),
              ("u5", "b2", 3.0, 501)]  # fmt: skip
ALL_KEPT_ROWS = [("u1", "b1", 5.0, 100), ("u1", "b2", 4.0, 101), ("u1", "b3", 3.0, 102), ("u3", "b2", 2.0, 300),
                 ("u3", "b3", 1.0, 301), ("u3", "b4", 4.0, 302), ("u5", "b1", 4.0, 500), ("u5", "b2", 3.0, 501),
                 ("u5", "b4", 5.0, 502)]  # fmt: skip
ITEM_RECORDS = {
    "b1": {"item_id": "b1", "title": "Alpha", "genres": ["Books", "Literature & Fiction"]},
    "b2": {"item_id": "b2", "title": "Alpha", "genres": []},
    "b3": {"item_id": "b3", "title": "Beta", "genres": ["Books"]},
    "b4": {"item_id": "b4", "title": "Gamma", "genres": []},
}


def interaction_rows(dataset) -> list[tuple]:
    inter = dataset.interactions.sort_values(["user_id", "timestamp"])
    return list(inter[["user_id", "item_id", "rating", "timestamp"]].itertuples(index=False, name=None))


@pytest.mark.parametrize("gz", [False, True], ids=["json", "json.gz"])
@pytest.mark.parametrize(
    ("min_titles", "expected_rows", "expected_items"),
    [(3, ALPHA_ROWS, ["b1", "b2"]), (2, ALL_KEPT_ROWS, ["b1", "b2", "b3", "b4"])],
    ids=["titles>=3", "titles>=2"],
)
def test_amazon_books_filters(tmp_path, gz, min_titles, expected_rows, expected_items):
    directory = write_books(tmp_path / "books", BOOKS_REVIEWS, BOOKS_META, gz=gz)
    filters = AmazonBooksFilters(min_user_reviews=3, user_fraction=1.0, min_title_interactions=min_titles, seed=0)
    dataset = read_amazon_books(directory, filters)
    assert dataset.name == "amazon-books"
    assert_canonical(dataset)
    assert interaction_rows(dataset) == expected_rows
    assert dataset.interactions["label"].tolist() == [int(r > 3) for r in dataset.interactions["rating"]]
    assert sorted(records(dataset.items), key=lambda r: r["item_id"]) == [ITEM_RECORDS[i] for i in expected_items]
    suffix = ".json.gz" if gz else ".json"
    assert dataset.meta["files"] == [f"Books_5{suffix}", f"meta_Books{suffix}"]
    assert dataset.meta["filters"] == {
        "min_user_reviews": 3,
        "user_fraction": 1.0,
        "min_title_interactions": min_titles,
        "seed": 0,
    }


def test_amazon_books_no_filters_keeps_every_titled_review(tmp_path):
    directory = write_books(tmp_path / "books", BOOKS_REVIEWS, BOOKS_META)
    dataset = read_amazon_books(directory, AmazonBooksFilters(1, 1.0, 1, 0))
    titled = [r for r in BOOKS_REVIEWS if r["asin"] in ITEM_RECORDS]
    assert len(dataset.interactions) == len(titled)
    assert set(dataset.interactions["user_id"]) == {"u1", "u2", "u3", "u4", "u5"}
    assert set(dataset.items["item_id"]) == set(ITEM_RECORDS)


def test_amazon_books_filters_leaving_nothing(tmp_path):
    directory = write_books(tmp_path / "books", BOOKS_REVIEWS, BOOKS_META)
    with pytest.raises(DataError, match=r"Books_5\.json: no interactions left after the filters"):
        read_amazon_books(directory, AmazonBooksFilters(min_user_reviews=50, user_fraction=1.0))


def fraction_books(directory: Path, n_users: int) -> Path:
    reviews = [review(f"user{u:02d}", "b1", 4.0, 1000 + 2 * u + k) for u in range(n_users) for k in range(2)]
    return write_books(directory, reviews, [meta("b1", "Alpha")])


@pytest.mark.parametrize("n_users", [10, 7])
def test_amazon_books_user_fraction(tmp_path, n_users):
    directory = fraction_books(tmp_path / "books", n_users)

    def users(seed: int) -> set[str]:
        filters = AmazonBooksFilters(min_user_reviews=1, user_fraction=0.5, min_title_interactions=1, seed=seed)
        dataset = read_amazon_books(directory, filters)
        kept = set(dataset.interactions["user_id"])
        # whole users are kept: both reviews of each chosen user
        assert len(dataset.interactions) == 2 * len(kept)
        return kept

    first = users(seed=3)
    assert len(first) == int(n_users * 0.5)
    assert first <= {f"user{u:02d}" for u in range(n_users)}
    assert users(seed=3) == first
    assert len({frozenset(users(seed)) for seed in range(6)}) > 1  # the seed matters


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user_fraction": 0.0}, r"user_fraction must be in \(0, 1\], got 0\.0"),
        ({"user_fraction": 1.5}, r"user_fraction must be in \(0, 1\], got 1\.5"),
        ({"user_fraction": -0.1}, r"user_fraction"),
        ({"min_user_reviews": 0}, r"min_user_reviews must be >= 1, got 0"),
        ({"min_title_interactions": 0}, r"min_title_interactions must be >= 1, got 0"),
    ],
)
def test_amazon_books_invalid_filters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AmazonBooksFilters(**kwargs)


def test_amazon_books_default_filters_are_the_papers():
    assert AmazonBooksFilters() == AmazonBooksFilters(11, 0.2, 50, 0)


# ---------------------------------------------------------------------------------------------------------
# Bad input: DataError naming the file and what was expected
# ---------------------------------------------------------------------------------------------------------


def test_missing_u_data(tmp_path):
    directory = write_ml100k_dir(tmp_path / "ml-100k", items=u_item_text())
    with pytest.raises(DataError, match=re.escape(str(directory / "u.data")) + ": file not found"):
        read_ml100k_official(directory)


def test_missing_u_item(tmp_path):
    directory = write_ml100k_dir(tmp_path / "ml-100k", ratings=u_data_text())
    with pytest.raises(DataError, match=re.escape(str(directory / "u.item")) + ": file not found"):
        read_ml100k_official(directory)


def test_ml100k_path_that_is_neither_zip_nor_directory(tmp_path):
    not_zip = tmp_path / "ml-100k.zip"
    not_zip.write_text("not a zip")
    with pytest.raises(DataError, match=r"ml-100k\.zip: expected the official ml-100k\.zip or a directory"):
        read_ml100k_official(not_zip)


def test_u_data_comma_separated(tmp_path):
    directory = write_ml100k_dir(tmp_path / "ml-100k", u_data_text(sep=","), u_item_text())
    with pytest.raises(DataError, match=r"ml-100k/u\.data: expected 4 tab-separated fields per line.*found 1"):
        read_ml100k_official(directory)


def test_u_item_with_too_few_flags(tmp_path):
    items = "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
    directory = write_ml100k_dir(tmp_path / "ml-100k", u_data_text(), items)
    with pytest.raises(DataError, match=r"ml-100k/u\.item: expected 24 '\|'-separated fields per line.*found 8"):
        read_ml100k_official(directory)


def test_empty_u_data(tmp_path):
    directory = write_ml100k_dir(tmp_path / "ml-100k", "\n", u_item_text())
    with pytest.raises(DataError, match=r"ml-100k/u\.data: file is empty"):
        read_ml100k_official(directory)


def test_ratings_dat_comma_separated(tmp_path):
    directory = write_ml1m_dir(tmp_path / "ml-1m", ML1M_RATINGS.replace("::", ","), ML1M_MOVIES)
    with pytest.raises(DataError, match=r"ml-1m/ratings\.dat: expected 4 '::'-separated fields per line.*found 1"):
        read_ml1m(directory)


def test_movies_dat_wrong_separator(tmp_path):
    directory = write_ml1m_dir(tmp_path / "ml-1m", ML1M_RATINGS, ML1M_MOVIES.replace("::", "\t"))
    with pytest.raises(DataError, match=r"ml-1m/movies\.dat: expected 3 '::'-separated fields"):
        read_ml1m(directory)


def bad_value_sources(tmp_path: Path, column: str, value: str):
    """(reader thunk, file name) pairs where ``column`` of the first rating is ``value``."""
    position = {"rating": 2, "timestamp": 3}[column]
    rows = [list(map(str, r)) for r in ML100K_RATINGS]
    rows[0][position] = value
    ml100k = write_ml100k_dir(tmp_path / "ml-100k", u_data_text(rows), u_item_text())
    ml1m_rows = [line.split("::") for line in ML1M_RATINGS.splitlines()]
    ml1m_rows[0][position] = value
    ml1m = write_ml1m_dir(tmp_path / "ml-1m", "".join("::".join(r) + "\n" for r in ml1m_rows), ML1M_MOVIES)
    inter_lines = RECBOLE_INTER.splitlines()
    fields = inter_lines[1].split("\t")
    fields[position] = value
    inter_lines[1] = "\t".join(fields)
    inter = "\n".join(inter_lines) + "\n"
    return [
        (lambda: read_ml100k_official(ml100k), "ml-100k/u.data"),
        (lambda: read_ml1m(ml1m), "ml-1m/ratings.dat"),
        (lambda: parse_ml100k_recbole(inter, RECBOLE_ITEM, "wheel"), "wheel/ml-100k.inter"),
    ]


@pytest.mark.parametrize("value", ["yesterday", "2015-01-01"])
def test_non_numeric_timestamp(tmp_path, value):
    for read, name in bad_value_sources(tmp_path, "timestamp", value):
        with pytest.raises(DataError, match=re.escape(name) + r": timestamp must be Unix seconds.*" + value):
            read()


def test_non_numeric_rating(tmp_path):
    for read, name in bad_value_sources(tmp_path, "rating", "five"):
        with pytest.raises(DataError, match=re.escape(name) + r": rating must be a number, found 'five'"):
            read()


def test_books_directory_without_reviews(tmp_path):
    directory = tmp_path / "books"
    directory.mkdir()
    write_json_lines(directory / "meta_Books.json", BOOKS_META)
    (directory / "Books.json").write_text("{}\n")  # the full (non 5-core) file is not accepted
    expected = re.escape(str(directory)) + r": found neither Books_5\.json nor Books_5\.json\.gz"
    with pytest.raises(DataError, match=expected):
        read_amazon_books(directory, AmazonBooksFilters(1, 1.0, 1))


def test_books_directory_without_meta(tmp_path):
    directory = tmp_path / "books"
    directory.mkdir()
    write_json_lines(directory / "Books_5.json", BOOKS_REVIEWS)
    with pytest.raises(DataError, match=r"books: found neither meta_Books\.json nor meta_Books\.json\.gz"):
        read_amazon_books(directory, AmazonBooksFilters(1, 1.0, 1))


def test_books_path_not_a_directory(tmp_path):
    path = write_json_lines(tmp_path / "Books_5.json", BOOKS_REVIEWS)
    with pytest.raises(DataError, match=r"Books_5\.json: expected a directory holding Books_5\.json"):
        read_amazon_books(path)


@pytest.mark.parametrize("gz", [False, True], ids=["json", "json.gz"])
def test_books_malformed_json(tmp_path, gz):
    directory = write_books(tmp_path / "books", BOOKS_REVIEWS, BOOKS_META, gz=gz)
    name = "Books_5.json.gz" if gz else "Books_5.json"
    good = json.dumps(review("u1", "b1", 5.0, 1))
    broken = good + "\n" + '{"reviewerID": "u2", "asin": "b1", "overall": \n'
    if gz:
        with gzip.open(directory / name, "wt") as handle:
            handle.write(broken)
    else:
        (directory / name).write_text(broken)
    with pytest.raises(DataError, match=re.escape(name) + r": not valid JSON lines with fields \['reviewerID'"):
        read_amazon_books(directory, AmazonBooksFilters(1, 1.0, 1))


def test_books_review_field_of_wrong_type(tmp_path):
    reviews = [review("u1", "b1", 5.0, 1)]
    reviews[0]["unixReviewTime"] = "01 1, 2015"
    directory = write_books(tmp_path / "books", reviews, BOOKS_META)
    with pytest.raises(DataError, match=r"Books_5\.json: not valid JSON lines"):
        read_amazon_books(directory, AmazonBooksFilters(1, 1.0, 1))


def test_books_meta_without_titles(tmp_path):
    directory = write_books(tmp_path / "books", BOOKS_REVIEWS, [meta("b1", None), meta("b2", None)])
    with pytest.raises(DataError, match=r"meta_Books\.json: no line has the field 'title'"):
        read_amazon_books(directory, AmazonBooksFilters(1, 1.0, 1))


def test_zip_without_u_item(tmp_path):
    archive = write_ml100k_zip(tmp_path / "ml-100k.zip", {"u.data": u_data_text(), "u.genre": "unknown|0\n"})
    with pytest.raises(DataError, match=r"ml-100k\.zip: zip holds no u\.item; expected the official ml-100k\.zip"):
        read_ml100k_official(archive)


def test_zip_without_u_data(tmp_path):
    archive = write_ml100k_zip(tmp_path / "ml-100k.zip", {"u.item": u_item_text()})
    with pytest.raises(DataError, match=r"ml-100k\.zip: zip holds no u\.data"):
        read_ml100k_official(archive)


def test_zip_with_comma_separated_u_data(tmp_path):
    archive = write_ml100k_zip(tmp_path / "ml-100k.zip", {"u.data": u_data_text(sep=","), "u.item": u_item_text()})
    with pytest.raises(DataError, match=r"ml-100k\.zip/u\.data: expected 4 tab-separated fields"):
        read_ml100k_official(archive)


# ---------------------------------------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------------------------------------


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM4REC_CACHE", str(tmp_path / "c"))
    assert store.dataset_dir("ml-1m") == tmp_path / "c" / "datasets" / "ml-1m"
    monkeypatch.delenv("LLM4REC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.cache_dir() == tmp_path / "xdg" / "llm4rec"


def test_prepare_then_load_round_trip(cache, ml100k_official_dir):
    prepared = store.prepare_dataset("ml-100k", path=ml100k_official_dir)
    directory = cache / "datasets" / "ml-100k"
    assert sorted(p.name for p in directory.iterdir()) == [
        "interactions.parquet",
        "items.parquet",
        "meta.json",
        "users.parquet",
    ]
    assert sorted(p.name for p in directory.parent.iterdir()) == ["ml-100k"]  # no temp dirs left
    assert store.is_prepared("ml-100k")

    loaded = store.load_dataset("ml-100k")
    assert loaded.name == "ml-100k"
    assert_canonical(loaded)
    pd.testing.assert_frame_equal(loaded.interactions, prepared.interactions)
    pd.testing.assert_frame_equal(loaded.items.drop(columns="genres"), prepared.items.drop(columns="genres"))
    assert all(type(g) is list for g in loaded.items["genres"])
    assert loaded.items["genres"].tolist() == prepared.items["genres"].tolist()
    assert records(loaded.items) == records(read_ml100k_official(ml100k_official_dir).items)

    on_disk = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    assert on_disk == loaded.meta
    assert on_disk["name"] == "ml-100k"
    assert on_disk["format_version"] == store.FORMAT_VERSION
    assert on_disk["n_interactions"] == len(ML100K_RATINGS)
    assert on_disk["n_items"] == len(ML100K_ITEMS)
    assert on_disk["source"] == str(ml100k_official_dir)


def test_prepare_again_without_path_loads_the_cache(cache, ml100k_official_dir, monkeypatch):
    store.prepare_dataset("ml-100k", path=ml100k_official_dir)

    def no_reading(*args, **kwargs):
        raise AssertionError("the source must not be read again")

    monkeypatch.setitem(store.SOURCES, "ml-100k", no_reading)
    again = store.prepare_dataset("ml-100k")
    assert len(again.interactions) == len(ML100K_RATINGS)


def test_prepare_ml1m_and_books(cache, tmp_path):
    ml1m = write_ml1m_dir(tmp_path / "ml-1m", ML1M_RATINGS, ML1M_MOVIES)
    store.prepare_dataset("ml-1m", path=ml1m)
    assert records(store.load_dataset("ml-1m").items) == records(read_ml1m(ml1m).items)

    books = write_books(tmp_path / "books", BOOKS_REVIEWS, BOOKS_META, gz=True)
    filters = AmazonBooksFilters(3, 1.0, 3, 0)
    store.prepare_dataset("amazon-books", path=books, filters=filters)
    loaded = store.load_dataset("amazon-books")
    assert interaction_rows(loaded) == ALPHA_ROWS
    assert loaded.meta["filters"] == vars(filters)
    assert sorted(p.name for p in (cache / "datasets").iterdir()) == ["amazon-books", "ml-1m"]


def test_load_unprepared_ml1m(cache):
    with pytest.raises(DataError, match=r"dataset ml-1m is not prepared in .*`llm4rec data prepare ml-1m --path DIR`"):
        store.load_dataset("ml-1m")


def test_load_unprepared_ml100k_without_fetching(cache):
    with pytest.raises(DataError, match=r"llm4rec data prepare ml-100k"):
        store.load_dataset("ml-100k", prepare_if_missing=False)


def test_prepare_local_sources_without_path(cache):
    with pytest.raises(DataError, match=r"ml-1m is read from a local copy: pass --path DIR"):
        store.prepare_dataset("ml-1m")
    with pytest.raises(DataError, match=r"amazon-books is read from a local copy: pass --path DIR"):
        store.prepare_dataset("amazon-books")


@pytest.mark.parametrize("call", [store.load_dataset, store.prepare_dataset])
def test_unknown_dataset(cache, call):
    with pytest.raises(
        DataError, match=r"unknown dataset 'ml-10m'; known datasets: \['amazon-books', 'ml-100k', 'ml-1m'\]"
    ):
        call("ml-10m")


def test_load_other_format_version(cache, ml100k_official_dir):
    store.prepare_dataset("ml-100k", path=ml100k_official_dir)
    meta_path = cache / "datasets" / "ml-100k" / "meta.json"
    meta_json = json.loads(meta_path.read_text())
    meta_json["format_version"] = store.FORMAT_VERSION + 1
    meta_path.write_text(json.dumps(meta_json))
    with pytest.raises(DataError, match=r"another llm4rec version; run `llm4rec data prepare ml-100k --force`"):
        store.load_dataset("ml-100k")


def failing_to_parquet(monkeypatch) -> None:
    """Make DataFrame.to_parquet write its file, then fail (as a full disk would)."""
    original = pd.DataFrame.to_parquet

    def write_then_fail(self, path, *args, **kwargs):
        original(self, path, *args, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", write_then_fail)


def test_failed_prepare_leaves_nothing(cache, ml100k_official_dir, monkeypatch):
    failing_to_parquet(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        store.prepare_dataset("ml-100k", path=ml100k_official_dir)
    parent = cache / "datasets"
    assert list(parent.iterdir()) == []
    assert not store.is_prepared("ml-100k")


def test_failed_prepare_keeps_the_old_copy(cache, ml100k_official_dir, tmp_path, monkeypatch):
    before = store.prepare_dataset("ml-100k", path=ml100k_official_dir)
    smaller = write_ml100k_dir(tmp_path / "smaller", u_data_text(ML100K_RATINGS[:3]), u_item_text())
    with monkeypatch.context() as patch:
        failing_to_parquet(patch)
        with pytest.raises(OSError):
            store.prepare_dataset("ml-100k", path=smaller, force=True)
    parent = cache / "datasets"
    assert [p.name for p in parent.iterdir()] == ["ml-100k"]
    pd.testing.assert_frame_equal(store.load_dataset("ml-100k").interactions, before.interactions)


def test_forced_prepare_replaces_the_old_copy(cache, ml100k_official_dir, tmp_path):
    store.prepare_dataset("ml-100k", path=ml100k_official_dir)
    smaller = write_ml100k_dir(tmp_path / "smaller", u_data_text(ML100K_RATINGS[:3]), u_item_text())
    store.prepare_dataset("ml-100k", path=smaller, force=True)
    assert len(store.load_dataset("ml-100k").interactions) == 3
    assert [p.name for p in (cache / "datasets").iterdir()] == ["ml-100k"]


def test_atomic_directory_on_error(tmp_path):
    target = tmp_path / "parent" / "dataset"
    with pytest.raises(RuntimeError, match="interrupted"), atomic_directory(target) as tmp:
        assert tmp.parent == target.parent and tmp.is_dir()
        (tmp / "half.parquet").write_bytes(b"PAR1")
        raise RuntimeError("interrupted")
    assert list(target.parent.iterdir()) == []


def test_atomic_directory_replaces_whole(tmp_path):
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"]


# Regressions: missing ids, malformed later lines, titles pooled after stripping.


@pytest.mark.parametrize("column", [0, 1], ids=["user_id", "item_id"])
def test_u_data_with_missing_id_is_rejected(tmp_path, column):
    rows = [list(map(str, r)) for r in ML100K_RATINGS]
    rows[1][column] = ""
    directory = write_ml100k_dir(tmp_path / "ml-100k", u_data_text(rows), u_item_text())
    with pytest.raises(DataError, match=r"u\.data"):
        read_ml100k_official(directory)


def test_u_item_short_later_line_is_a_data_error(tmp_path):
    items = u_item_text() + "999|Broken (1999)|01-Jan-1999||http://x|0|1\n"
    directory = write_ml100k_dir(tmp_path / "ml-100k", u_data_text(), items)
    with pytest.raises(DataError, match=r"u\.item"):
        read_ml100k_official(directory)


def test_books_titles_pooled_after_stripping(tmp_path):
    # "Dune" has 1 review, "Dune " 2: both are the book "Dune" with 3 >= 2 interactions, so both stay.
    reviews = [review("u1", "b1", 5.0, 1), review("u2", "b2", 4.0, 2), review("u3", "b2", 4.0, 3)]
    directory = write_books(tmp_path / "books", reviews, [meta("b1", "Dune"), meta("b2", "Dune ")])
    dataset = read_amazon_books(directory, AmazonBooksFilters(1, 1.0, 2, 0))
    assert sorted(dataset.items["item_id"]) == ["b1", "b2"]
    assert set(dataset.items["title"]) == {"Dune"}
