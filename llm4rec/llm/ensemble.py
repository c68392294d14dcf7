"""Output ensemble of two LoRA adapters: P = w * P_long + (1 - w) * P_short (or the same on logits).

Both adapters stay loaded in one PeftModel. Their answer margins
(logit(Yes) - logit(No) at the last prompt position; P(Yes) = sigmoid of it,
the same as the softmax over the two answer logits) come either from

- ``passes="two"``: one scoring pass per adapter (``set_adapter`` between), or
- ``passes="one"``: one pass over each batch stacked once per adapter, with
  peft's mixed-adapter batches (``adapter_names``): the base weights are read
  once per step for both adapters.

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

from llm4rec.errors import ConfigError
from llm4rec.llm.backbone import META_FILE
from llm4rec.llm.merge import check_weight
from llm4rec.llm.score import answer_margin, in_input_order, iter_last_token_logits

COMBINES = ("probability", "logit")
PASSES = ("one", "two")
ENSEMBLE_KIND = "lora-ensemble"


@torch.inference_mode()
def score_margins(
    model,
    sequences: list[list[int]],
    answer_ids: tuple[int, int],
    pad_id: int,
    adapters: tuple[str, ...] | list[str],
    passes: Literal["one", "two"] = "one",
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """[len(adapters), len(sequences)] answer margins of each adapter of PeftModel ``model``, in input order.

    Batches go through :func:`~llm4rec.llm.score.iter_last_token_logits`: length-sorted, left-padded, the
    prompts' shared prefix computed once (per adapter) and continued by every batch."""
    if passes not in PASSES:
        raise ConfigError(f"ensemble passes: expected one of {list(PASSES)}, got {passes!r}")
    missing = [a for a in adapters if a not in model.peft_config]
    if missing:
        raise ConfigError(f"adapters {missing} are not loaded; loaded: {sorted(model.peft_config)}")
    if not sequences:
        return np.empty((len(adapters), 0))
    was_training, active = model.training, model.active_adapter
    model.eval()  # peft refuses mixed-adapter batches in training mode

    def margins(names: list[str] | None, desc: str) -> np.ndarray:
        copies = len(names) if names else 1
        batches, values = [], []
        for batch, logits in iter_last_token_logits(
            model, sequences, pad_id, batch_size, device, adapters=names, progress=progress, desc=desc,
            token_ids=answer_ids,
        ):  # fmt: skip
            batches.append(batch)
            values.append(answer_margin(logits).view(copies, len(batch)))
        return in_input_order(batches, values, len(sequences))

    try:
        if passes == "one":
            return margins(list(adapters), "scoring (mixed adapters)")
        rows = []
        for name in adapters:
            model.set_adapter(name)
            rows.append(margins(None, f"scoring ({name})")[0])
        return np.stack(rows)
    finally:
        model.set_adapter(active)
        model.train(was_training)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """P(Yes) from answer margins (scipy's expit: no overflow for large margins)."""
    from scipy.special import expit

    return expit(x)


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
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON: {error}") from None
    if meta.get("kind") != ENSEMBLE_KIND:
        return None
    from llm4rec.config import from_dict

    names = {"long", "short", "weight", "combine", "kind"}
    return from_dict(EnsembleManifest, {k: v for k, v in meta.items() if k in names}, where=str(path))
