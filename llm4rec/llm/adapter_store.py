"""The adapters of a run on disk, each keyed by a hash of the recipe that produced it.

A recipe is everything that decides an adapter's weights: the base model's
fingerprint, the template, the data config, the LoRA and training settings,
the periods it learnt from and selected on, the adapter it started from.
Before training, the store looks for an adapter with the same key: in its
own directory (a rerun of the same command) or elsewhere in the store (the
LSAT long-term adapter and the full-retraining adapter through the same
period are one recipe), and reuses it. A changed setting changes the key, so
a stale adapter is never picked up.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from llm4rec.io import atomic_directory
from llm4rec.llm.backbone import META_FILE


def recipe_key(recipe: dict) -> str:
    """A stable hash of a JSON-able recipe."""
    text = json.dumps(recipe, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def stored_key(path: str | Path) -> str | None:
    """The recipe key recorded in an adapter directory's ``llm4rec.json``, if any."""
    meta = Path(path) / META_FILE
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, not JSON, not UTF-8: not a stored adapter, trained again
        return None
    return data.get("recipe_key") if isinstance(data, dict) else None


class AdapterStore:
    """``root/<role>/period_<t>/``: peft adapter directories written by :func:`llm4rec.llm.adapters.save_adapter`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, role: str, period: int) -> Path:
        return self.root / role / f"period_{period}"

    def find(self, key: str, wanted: Path) -> Path | None:
        """``wanted`` when it holds the adapter of ``key``; else a copy of another stored adapter with that key
        placed at ``wanted``; else None (it must be trained)."""
        if stored_key(wanted) == key:
            return wanted
        if self.root.is_dir():
            for meta in sorted(self.root.rglob(META_FILE)):
                if meta.parent != wanted and stored_key(meta.parent) == key:
                    with atomic_directory(wanted) as tmp:
                        shutil.copytree(meta.parent, tmp, dirs_exist_ok=True)
                    return wanted
        return None
