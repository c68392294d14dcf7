"""The atomic writers keep the user's umask: what they write gets the mode a plain open(..., "w") or mkdir would."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from llm4rec.io import atomic_directory, atomic_path, write_json, write_text

UMASKS = [0o022, 0o077, 0o002, 0o027]


@pytest.fixture(params=UMASKS, ids=[f"umask-{m:03o}" for m in UMASKS])
def umask(request):
    """Run the test under this umask (process-wide), restoring the old one after."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def plain_file_mode(directory: Path) -> int:
    path = directory / "plain.txt"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("x")
    return mode(path)


def plain_directory_mode(directory: Path) -> int:
    path = directory / "plain-dir"
    path.mkdir()
    return mode(path)


def via_atomic_path(target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text("x", encoding="utf-8")


WRITERS = {
    "atomic_path": via_atomic_path,
    "write_text": lambda target: write_text(target, "x"),
    "write_json": lambda target: write_json(target, {"x": 1}),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_file_writer_gives_plain_mode(tmp_path, umask, writer):
    target = tmp_path / "out" / "written.txt"
    WRITERS[writer](target)
    assert oct(mode(target)) == oct(plain_file_mode(tmp_path))
    assert mode(target) == 0o666 & ~umask
    assert mode(target.parent) == plain_directory_mode(tmp_path)  # the parent it made, too


@pytest.mark.parametrize("writer", list(WRITERS))
def test_file_writer_over_existing_file_keeps_its_mode(tmp_path, umask, writer):
    """Like a plain open(..., "w") of an existing file: its permission bits stay (0o640 is no umask's default)."""
    target = tmp_path / "written.txt"
    target.write_text("old", encoding="utf-8")
    target.chmod(0o640)
    plain = tmp_path / "plain.txt"
    plain.write_text("old", encoding="utf-8")
    plain.chmod(0o640)
    plain.write_text("new", encoding="utf-8")
    WRITERS[writer](target)
    assert oct(mode(target)) == oct(mode(plain)) == oct(0o640)


def test_atomic_directory_gives_plain_mkdir_mode(tmp_path, umask):
    target = tmp_path / "dataset"
    with atomic_directory(target) as tmp:
        (tmp / "table.txt").write_text("x", encoding="utf-8")  # written inside by other code
        (tmp / "sub").mkdir()
        write_json(tmp / "meta.json", {"x": 1})
    plain_dir, plain_file = plain_directory_mode(tmp_path), plain_file_mode(tmp_path)
    assert oct(mode(target)) == oct(plain_dir)
    assert mode(target) == 0o777 & ~umask
    assert oct(mode(target / "sub")) == oct(plain_dir)
    for name in ("table.txt", "meta.json"):
        assert oct(mode(target / name)) == oct(plain_file)


def test_atomic_directory_replacing_a_directory_gives_plain_mkdir_mode(tmp_path, umask):
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "old.txt").write_text("old", encoding="utf-8")
    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new", encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"]  # no temporary or old copy left
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert oct(mode(target)) == oct(plain_directory_mode(tmp_path))


def test_failed_writes_leave_nothing(tmp_path, umask):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "d") as tmp:
        (tmp / "x").write_text("half", encoding="utf-8")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
