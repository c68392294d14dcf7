"""Atomic file writes: write to a temporary sibling, then rename over the target.

A crash or Ctrl-C mid-write leaves the old file (or nothing), never half a file. A temporary directory left by
a writer that was killed outright is removed by the next writer of the same target.

What is written keeps the permissions a plain ``open(path, "w")`` or ``mkdir`` would give: the
temporary sibling is created with the same requested mode as those (0o666 for a file, 0o777 for a
directory), so the kernel applies the process umask (and any default ACL) itself. Nothing reads or
changes the umask, which is process-wide and could not be swapped safely while other threads create
files. A file written over an existing one keeps that file's permission bits, as a plain
``open(path, "w")`` would.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def _create_file(path: Path) -> None:
    os.close(os.open(path, _FILE_FLAGS, 0o666))  # the mode open(path, "w") asks for; the umask applies


def _create_directory(path: Path) -> None:
    os.mkdir(path, 0o777)  # the mode Path.mkdir() asks for; the umask applies


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (as any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def remove_stale_temporaries(target: Path) -> int:
    """Remove the temporary siblings of ``target`` that a killed writer left (their pid no longer runs); returns
    how many. Siblings of writers still running, and ones not named by this module, are left alone."""
    removed = 0
    for path in target.parent.glob(f".{target.name}.*.tmp"):
        pid = path.name[len(target.name) + 2 :].split("-", 1)[0]
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def _temporary_sibling(target: Path, create: Callable[[Path], None]) -> Path:
    """Create a fresh ``.<name>.<pid>-<random>.tmp`` next to ``target`` with ``create``; the name never exists
    before. The pid tells a later writer whether the temporary was left by a killed run."""
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{target.parent}: could not create a temporary file for {target.name}")


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _temporary_sibling(target, _create_file)
    try:
        with contextlib.suppress(FileNotFoundError):
            existing = target.stat()
            if stat.S_ISREG(existing.st_mode):  # overwriting keeps the old file's permissions
                os.chmod(tmp_path, stat.S_IMODE(existing.st_mode) & 0o777)
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | Path, data) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``target`` whole. Temporary directories that a
    killed writer of the same target left behind (a ``data prepare`` or a backbone build stopped by SIGKILL) are
    removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = _temporary_sibling(target, _create_directory)
    try:
        yield tmp
        if target.exists():
            # Move the old copy aside first so the swap never leaves no copy at all.
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
