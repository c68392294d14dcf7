"""Which backbone a run used, from its files, without loading it: part of every LLM method's resume key.

A path says where a backbone is, not what it is: a relative ``runs/scratch`` names another model in another
working directory, and a directory rebuilt in place keeps its name. The identity hashes what is there instead:
every file's name and size, small files (configs, tokenizer) whole, and large ones (weights) by 64 evenly
spaced 64 KiB blocks plus their last block. That reads a few MB of a 28 GB checkpoint, yet two different
trainings, a re-fetch of another release or a weight file cut short never share it. (An adapter checks the
stronger weight fingerprint of :func:`~llm4rec.llm.backbone.model_fingerprint` when it is loaded.) A Hub id
with no local directory is identified by its id and revision.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

META_FILE = "llm4rec.json"  # llm4rec's notes on the directory (when and how it was made), not the model

SMALL_FILE = 4 * 1024 * 1024  # hashed whole up to this size
BLOCK, BLOCKS = 64 * 1024, 64


def file_digest(path: Path, digest) -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}:{size}".encode())
    with path.open("rb") as file:
        if size <= SMALL_FILE:
            digest.update(file.read())
            return
        for index in range(BLOCKS):
            file.seek(index * (size - BLOCK) // (BLOCKS - 1))
            digest.update(file.read(BLOCK))


def backbone_identity(config) -> str:
    """The identity of a BackboneConfig's model (its directory, or its GGUF file)."""
    digest = hashlib.sha256()
    if config.gguf_file:
        file_digest(config.gguf_path(), digest)
        return digest.hexdigest()[:16]
    path = Path(config.model_name_or_path).expanduser()
    if not path.is_dir():
        digest.update(f"hub:{config.model_name_or_path}@{getattr(config, 'revision', None)}".encode())
        return digest.hexdigest()[:16]
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != META_FILE):
        digest.update(str(file.relative_to(path)).encode())
        file_digest(file, digest)
    return digest.hexdigest()[:16]
