"""Fetching MovieLens-100K, the one dataset small and free enough to embed.

Order: the official GroupLens zip (short timeout); where that host is
unreachable, the copy that ships inside the ``recbole==1.2.1`` wheel on PyPI,
fetched and read by :mod:`llm4rec.pypi` (nothing from the wheel is installed
or imported).
"""

from __future__ import annotations

import logging
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from llm4rec.data.movielens import parse_ml100k_recbole, read_ml100k_official
from llm4rec.data.tables import RecDataset
from llm4rec.errors import DataError
from llm4rec.pypi import download_wheel, open_wheel

log = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_MEMBERS = ("recbole/dataset_example/ml-100k/ml-100k.inter", "recbole/dataset_example/ml-100k/ml-100k.item")
# The wheel's user features (recbole 1.2.1 ships it); read where present, else the dataset has no users table.
RECBOLE_USER_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.user"


def fetch_grouplens(workdir: Path, timeout: float = 10.0) -> RecDataset:
    target = workdir / "ml-100k.zip"
    with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout) as response:  # noqa: S310 (fixed https URL)
        target.write_bytes(response.read())
    dataset = read_ml100k_official(target)
    dataset.meta["source"] = GROUPLENS_URL
    return dataset


def read_recbole_wheel(wheel: Path) -> RecDataset:
    with open_wheel(wheel, RECBOLE_MEMBERS) as archive:
        inter, item = (archive.read(m).decode("utf-8") for m in RECBOLE_MEMBERS)
        has_users = RECBOLE_USER_MEMBER in archive.namelist()
        user = archive.read(RECBOLE_USER_MEMBER).decode("utf-8") if has_users else None
    dataset = parse_ml100k_recbole(inter, item, f"{wheel.name}:recbole/dataset_example/ml-100k", user)
    dataset.meta["source"] = f"PyPI {RECBOLE_REQUIREMENT} wheel (recbole/dataset_example/ml-100k)"
    return dataset


def fetch_recbole_wheel(workdir: Path, timeout: float = 300.0) -> RecDataset:
    return read_recbole_wheel(download_wheel(RECBOLE_REQUIREMENT, workdir, timeout))


def fetch_ml100k(grouplens_timeout: float = 10.0) -> RecDataset:
    """Fetch ML-100K (GroupLens first, then the RecBole wheel); raise DataError if both fail."""
    with tempfile.TemporaryDirectory(prefix="llm4rec-fetch-") as tmp:
        workdir = Path(tmp)
        try:
            return fetch_grouplens(workdir, timeout=grouplens_timeout)
        except (urllib.error.URLError, TimeoutError, OSError, DataError) as error:
            log.info("GroupLens unreachable (%s); taking ML-100K from the %s wheel", error, RECBOLE_REQUIREMENT)
        try:
            return fetch_recbole_wheel(workdir)
        except DataError as error:
            raise DataError(
                f"could not fetch ML-100K: {GROUPLENS_URL} is unreachable and {error}. "
                "Download ml-100k.zip by hand and run `llm4rec data prepare ml-100k --path ml-100k.zip`."
            ) from None
