"""User and item features in the canonical tables: the users files of ML-100K (u.user, RecBole's ml-100k.user)
and ML-1M (users.dat) parsed into the typed users table, the items' year and brand, their checks, and the
store's round trip (and its reading of the format before them)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from llm4rec.data import store
from llm4rec.data.amazon import AmazonBooksFilters, read_amazon_books
from llm4rec.data.fetch import RECBOLE_USER_MEMBER, read_recbole_wheel
from llm4rec.data.movielens import parse_ml100k_recbole, read_ml1m, read_ml100k_official
from llm4rec.data.tables import USER_COLUMNS, RecDataset, canonical_items, canonical_users
from llm4rec.errors import DataError
from tests.test_sources import (
    BOOKS_META,
    BOOKS_REVIEWS,
    ML1M_MOVIES,
    ML1M_RATINGS,
    RECBOLE_INTER,
    RECBOLE_ITEM,
    meta,
    u_data_text,
    u_item_text,
    write_books,
    write_ml1m_dir,
    write_ml100k_dir,
    write_ml100k_zip,
    write_recbole_wheel,
)

# The users of tests.test_sources.ML100K_RATINGS, in the official u.user format (user 6 has a Canadian zip).
U_USER = (
    "6|42|M|executive|T8H1N\n22|25|M|writer|40206\n115|31|M|engineer|17110\n166|47|M|educator|55113\n"
    "186|39|F|executive|00000\n196|49|M|writer|55105\n244|28|M|technician|80525\n253|26|F|librarian|22903\n"
    "298|44|M|executive|01581\n305|23|M|programmer|94086\n"
)
RECBOLE_USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "22\t25\tM\twriter\t40206\n186\t39\tF\texecutive\t00000\n196\t49\tM\twriter\t55105\n"
)
ML1M_USERS = "1::F::1::10::48067\n2::M::56::16::70072\n"


def user_records(dataset) -> dict[str, dict]:
    users = dataset.users.set_index("user_id")
    return {u: {c: (None if pd.isna(v) else v) for c, v in row.items()} for u, row in users.to_dict("index").items()}


def assert_typed_users(users: pd.DataFrame) -> None:
    assert list(users.columns) == USER_COLUMNS
    assert users["age"].dtype == "Int64"
    for column in ("user_id", "gender", "occupation", "zip"):
        assert all(isinstance(v, str) or pd.isna(v) for v in users[column]), column
    assert users["user_id"].is_unique


# ---------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------


def test_ml100k_u_user(tmp_path):
    directory = write_ml100k_dir(tmp_path / "ml-100k", u_data_text(), u_item_text())
    (directory / "u.user").write_bytes(U_USER.encode("latin-1"))
    dataset = read_ml100k_official(directory)
    assert_typed_users(dataset.users)
    assert len(dataset.users) == 10
    users = user_records(dataset)
    assert users["6"] == {"age": 42, "gender": "M", "occupation": "executive", "zip": "T8H1N"}
    assert users["186"] == {"age": 39, "gender": "F", "occupation": "executive", "zip": "00000"}  # zip kept as text


def test_ml100k_zip_with_u_user(tmp_path):
    archive = write_ml100k_zip(
        tmp_path / "ml-100k.zip", {"u.data": u_data_text(), "u.item": u_item_text(), "u.user": U_USER}
    )
    assert user_records(read_ml100k_official(archive))["22"]["occupation"] == "writer"


def test_ml100k_without_u_user_has_an_empty_users_table(tmp_path):
    dataset = read_ml100k_official(write_ml100k_dir(tmp_path / "d", u_data_text(), u_item_text()))
    assert_typed_users(dataset.users)
    assert len(dataset.users) == 0


def test_ml100k_year_from_the_release_date_else_the_title(tmp_path):
    items = u_item_text({1: ("Toy Story (1995)", ["Comedy"]), 2: ("No Date (1987)", ["Drama"])})
    items = items.replace("2|No Date (1987)|01-Jan-1995", "2|No Date (1987)|")
    items = items.replace("1|Toy Story (1995)|01-Jan-1995", "1|Toy Story (1995)|22-Nov-1995")
    directory = write_ml100k_dir(tmp_path / "d", u_data_text([(1, 1, 4, 10), (1, 2, 3, 11)]), items)
    got = read_ml100k_official(directory).items.set_index("item_id")["year"]
    assert got.dtype == "Int64"
    assert got.to_dict() == {"1": 1995, "2": 1987}


def test_recbole_user_file_and_release_year():
    dataset = parse_ml100k_recbole(RECBOLE_INTER, RECBOLE_ITEM, "rb", RECBOLE_USER)
    assert_typed_users(dataset.users)
    assert user_records(dataset)["196"] == {"age": 49, "gender": "M", "occupation": "writer", "zip": "55105"}
    years = dataset.items.set_index("item_id")["year"]
    assert years["1"] == 1995 and years["302"] == 1997
    assert pd.isna(years["267"])  # RecBole's "unknown" item has no year


def test_recbole_release_year_that_is_not_a_year_falls_back_to_the_title():
    # recbole 1.2.1 has "V" as item 1412's release_year (its title holds the year) and "unkonwn" for item 267.
    item = RECBOLE_ITEM.replace("1\tToy Story\t1995", "1\tToy Story (1995)\tV").replace(
        "267\tunkonwn\t\t", "267\tunkonwn\tunkonwn\t"
    )
    years = parse_ml100k_recbole(RECBOLE_INTER, item, "rb").items.set_index("item_id")["year"]
    assert years["1"] == 1995
    assert pd.isna(years["267"])


def test_recbole_wheel_user_member(tmp_path):
    wheel = write_recbole_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl")
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr(RECBOLE_USER_MEMBER, RECBOLE_USER)
    assert len(read_recbole_wheel(wheel).users) == 3
    (tmp_path / "bare").mkdir()
    bare = write_recbole_wheel(tmp_path / "bare" / "recbole-1.2.1-py3-none-any.whl")
    assert len(read_recbole_wheel(bare).users) == 0  # a wheel without the member: no users table


def test_ml1m_users_dat(tmp_path):
    directory = write_ml1m_dir(tmp_path / "ml-1m", ML1M_RATINGS, ML1M_MOVIES)
    (directory / "users.dat").write_bytes(ML1M_USERS.encode("latin-1"))
    dataset = read_ml1m(directory)
    assert_typed_users(dataset.users)
    users = user_records(dataset)
    # users.dat's order is UserID::Gender::Age::Occupation::Zip-code; occupation codes are named.
    assert users["1"] == {"age": 1, "gender": "F", "occupation": "K-12 student", "zip": "48067"}
    assert users["2"] == {"age": 56, "gender": "M", "occupation": "self-employed", "zip": "70072"}
    years = dataset.items.set_index("item_id")["year"]
    assert years.to_dict() == {"1": 1995, "661": 1996, "1193": 1975, "3408": 2000}


def test_ml1m_without_users_dat(tmp_path):
    assert len(read_ml1m(write_ml1m_dir(tmp_path / "ml-1m", ML1M_RATINGS, ML1M_MOVIES)).users) == 0


def test_amazon_brand_where_present_and_no_users(tmp_path):
    metas = [dict(m) for m in BOOKS_META]
    metas[0]["brand"] = "  Visit Amazon's Author Page "
    metas[2]["brand"] = ""
    books = write_books(tmp_path / "books", BOOKS_REVIEWS, metas)
    dataset = read_amazon_books(books, AmazonBooksFilters(3, 1.0, 2, 0))
    brands = dataset.items.set_index("item_id")["brand"]
    assert brands["b1"] == "Visit Amazon's Author Page"
    assert pd.isna(brands["b3"]) and pd.isna(brands["b2"])  # empty and absent: unknown
    assert dataset.items["year"].isna().all()
    assert len(dataset.users) == 0 and list(dataset.users.columns) == USER_COLUMNS


def test_amazon_without_any_brand(tmp_path):
    books = write_books(tmp_path / "books", BOOKS_REVIEWS, [meta("b1", "Alpha"), *BOOKS_META[1:]])
    assert read_amazon_books(books, AmazonBooksFilters(3, 1.0, 2, 0)).items["brand"].isna().all()


# ---------------------------------------------------------------------------------------------------------
# Bad input: one-line DataErrors naming the file
# ---------------------------------------------------------------------------------------------------------


def test_u_user_with_a_missing_column(tmp_path):
    directory = write_ml100k_dir(tmp_path / "d", u_data_text(), u_item_text())
    (directory / "u.user").write_text("6|42|M|executive\n")
    with pytest.raises(DataError, match=r"d/u\.user: expected 5 '\|'-separated fields per line .* found 4 on line 1"):
        read_ml100k_official(directory)


def test_recbole_user_header_missing_a_column():
    header = "user_id:token\tage:token\tgender:token\tzip_code:token\n22\t25\tM\t40206\n"
    with pytest.raises(DataError, match=r"rb/ml-100k\.user: expected a RecBole atomic header starting with"):
        parse_ml100k_recbole(RECBOLE_INTER, RECBOLE_ITEM, "rb", header)


def test_users_not_in_the_interactions(tmp_path):
    directory = write_ml100k_dir(tmp_path / "d", u_data_text(), u_item_text())
    (directory / "u.user").write_text(U_USER + "944|30|F|other|12345\n")
    with pytest.raises(DataError, match=r"d/u\.user: 1 user_id\(s\) are not in the interactions \(e\.g\. '944'\)"):
        read_ml100k_official(directory)


def test_ml1m_users_dat_bad_occupation_and_gender(tmp_path):
    directory = write_ml1m_dir(tmp_path / "ml-1m", ML1M_RATINGS, ML1M_MOVIES)
    (directory / "users.dat").write_text("1::F::1::21::48067\n2::M::56::16::70072\n")
    with pytest.raises(DataError, match=r"users\.dat: occupation must be a code 0\.\.20, found '21'"):
        read_ml1m(directory)
    (directory / "users.dat").write_text("1::1::F::10::48067\n")  # age and gender swapped
    with pytest.raises(DataError, match=r"users\.dat: gender must be M or F, found '1' \(column 'gender'"):
        read_ml1m(directory)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("age", "old", r"f\.csv: age must be a whole number \(years\), found 'old' \(column 'age': 1 row"),
        ("age", "200", r"f\.csv: age must be a whole number in 1\.\.120 \(years\), found '200'"),
        ("age", "24.5", r"f\.csv: age must be a whole number in 1\.\.120"),
        ("gender", "X", r"f\.csv: gender must be M or F, found 'X'"),
    ],
)
def test_canonical_users_rejects(column, value, message):
    frame = pd.DataFrame(
        {"user_id": ["1", "2"], "age": ["24", "30"], "gender": ["M", "f"], "occupation": "x", "zip": "1"}
    )
    frame.loc[1, column] = value
    with pytest.raises(DataError, match=message):
        canonical_users(frame, "f.csv")


def test_canonical_users_missing_column_and_empty_cells():
    with pytest.raises(DataError, match=r"f\.csv: missing column\(s\) \['zip'\]; expected user_id, age"):
        canonical_users(pd.DataFrame({"user_id": ["1"], "age": [3], "gender": ["M"], "occupation": ["x"]}), "f.csv")
    users = canonical_users(
        pd.DataFrame({"user_id": ["1"], "age": [""], "gender": [" "], "occupation": [None], "zip": [""]}), "f.csv"
    )
    assert users.drop(columns="user_id").isna().all(axis=None)  # empty cells are unknown features, not errors


def test_item_year_out_of_range():
    with pytest.raises(DataError, match=r"movies\.dat: year must be a whole number in 1800\.\.2100"):
        canonical_items(pd.DataFrame({"item_id": ["1"], "title": ["t"], "year": ["0995"]}), "movies.dat")


def test_interactions_of_users_missing_from_the_users_table_warn(caplog):
    interactions = pd.DataFrame(
        {"user_id": ["1", "2"], "item_id": ["a", "a"], "rating": [4.0, 2.0], "timestamp": [1, 2], "label": [1, 0]}
    )
    items = canonical_items(pd.DataFrame({"item_id": ["a"], "title": ["A"]}), "items")
    users = canonical_users(
        pd.DataFrame({"user_id": ["1"], "age": [20], "gender": ["M"], "occupation": ["x"], "zip": ["1"]}), "u"
    )
    RecDataset("d", interactions, items, users=users)
    assert "1 interaction(s) name 1 user_id(s) missing from the users table (e.g. '2')" in caplog.text


# ---------------------------------------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------------------------------------


def test_store_round_trip_keeps_users_and_item_features(cache, tmp_path):
    directory = write_ml100k_dir(tmp_path / "ml-100k", u_data_text(), u_item_text())
    (directory / "u.user").write_text(U_USER)
    prepared = store.prepare_dataset("ml-100k", path=directory)
    loaded = store.load_dataset("ml-100k")
    pd.testing.assert_frame_equal(loaded.users, prepared.users)
    pd.testing.assert_frame_equal(loaded.items[["year", "brand"]], prepared.items[["year", "brand"]])
    assert_typed_users(loaded.users)


def test_store_reads_the_format_before_features(cache, tmp_path, caplog):
    directory = write_ml100k_dir(tmp_path / "ml-100k", u_data_text(), u_item_text())
    (directory / "u.user").write_text(U_USER)
    prepared = store.prepare_dataset("ml-100k", path=directory)
    stored = cache / "datasets" / "ml-100k"
    (stored / "users.parquet").unlink()
    pd.read_parquet(stored / "items.parquet").drop(columns=["year", "brand"]).to_parquet(stored / "items.parquet")
    meta_json = json.loads((stored / "meta.json").read_text())
    meta_json["format_version"] = store.BEFORE_FEATURES
    (stored / "meta.json").write_text(json.dumps(meta_json))
    loaded = store.load_dataset("ml-100k")
    assert "prepared before user and item features" in caplog.text and "--force" in caplog.text
    pd.testing.assert_frame_equal(loaded.interactions, prepared.interactions)
    assert len(loaded.users) == 0 and loaded.items["year"].isna().all()
    np.testing.assert_array_equal(loaded.items["title"], prepared.items["title"])
