"""Output ensemble of two LoRA adapters: P = w * P_long + (1 - w) * P_short (or the same on logits).

Both adapters stay loaded in one PeftModel; their answer margins come from
:func:`llm4rec.llm.score.score_margins` (one mixed-adapter pass, or one pass per
adapter), and this module only combines them.

An ensemble on disk is a manifest (``llm4rec.json`` of kind ``lora-ensemble``)
naming the two adapter directories and the weight; ``llm4rec predict
--adapter DIR`` scores it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from llm4rec.errors import ConfigError, brief
from llm4rec.llm.backbone import META_FILE
from llm4rec.llm.merge import check_weight
from llm4rec.llm.score import score_margins, sigmoid

COMBINES = ("probability", "logit")
ENSEMBLE_KIND = "lora-ensemble"


def combine(
    long_margin: np.ndarray,
    short_margin: np.ndarray,
    weight: float,
    how: Literal["probability", "logit"] = "probability",
) -> np.ndarray:
    """The ensemble's P(Yes) from the two adapters' answer margins; ``weight`` goes to the long-term adapter."""
    weight = check_weight(weight, "ensemble weight")
    if how == "probability":
        return weight * sigmoid(long_margin) + (1.0 - weight) * sigmoid(short_margin)
    if how == "logit":
        return sigmoid(weight * long_margin + (1.0 - weight) * short_margin)
    raise ConfigError(f"ensemble combine: expected one of {list(COMBINES)}, got {how!r}")


def score_ensemble(
    model,
    sequences: list[list[int]],
    answer_ids: tuple[int, int],
    pad_id: int,
    adapters: tuple[str, str] = ("long", "short"),
    weight: float = 0.5,
    how: Literal["probability", "logit"] = "probability",
    passes: Literal["one", "two"] = "one",
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """P(Yes) of the output ensemble of ``adapters`` = (long, short) with weight ``weight`` on the long one."""
    margins = score_margins(model, sequences, answer_ids, pad_id, adapters, passes, batch_size, device, progress)
    return combine(margins[0], margins[1], weight, how)


@dataclass
class EnsembleManifest:
    """An ensemble on disk: two adapter directories (relative to the manifest's directory) and the weight."""

    long: str
    short: str
    weight: float
    combine: str = "probability"
    kind: str = ENSEMBLE_KIND

    def __post_init__(self) -> None:
        check_weight(self.weight, "ensemble weight")
        if self.combine not in COMBINES:
            raise ConfigError(f"ensemble combine: expected one of {list(COMBINES)}, got {self.combine!r}")

    def adapter_paths(self, directory: str | Path) -> tuple[Path, Path]:
        directory = Path(directory)
        return (directory / self.long).resolve(), (directory / self.short).resolve()


def write_ensemble(directory: str | Path, long_dir: str | Path, short_dir: str | Path, weight: float,
                   how: str = "probability", extra: dict | None = None) -> Path:  # fmt: skip
    """Write ``directory/llm4rec.json`` naming both adapters by paths relative to ``directory``."""
    import os

    from llm4rec.io import write_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = EnsembleManifest(
        long=os.path.relpath(Path(long_dir).resolve(), directory.resolve()),
        short=os.path.relpath(Path(short_dir).resolve(), directory.resolve()),
        weight=float(weight),
        combine=how,
    )
    write_json(directory / META_FILE, {**asdict(manifest), **(extra or {})})
    return directory


def read_ensemble(directory: str | Path) -> EnsembleManifest | None:
    """The manifest in ``directory``, or None when the directory holds something else (e.g. a peft adapter)."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ConfigError(f"{path}: not valid JSON ({brief(error)}); train or copy the adapter again") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: holds a JSON {type(meta).__name__}, not an object; train or copy the adapter again")
    if meta.get("kind") != ENSEMBLE_KIND:
        return None
    from llm4rec.config import from_dict

    names = {"long", "short", "weight", "combine", "kind"}
    return from_dict(EnsembleManifest, {k: v for k, v in meta.items() if k in names}, where=str(path))
