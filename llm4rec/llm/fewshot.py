"""TALLRec's few-shot protocol on a chronological period: LoRA on K samples, beside zero-shot and references.

``llm4rec fewshot --config configs/llm/ml-100k-fewshot.yaml`` trains, for every
K in ``shots`` and every seed, a fresh LoRA on K samples drawn (by that seed)
from the train split of ``train_period``, early-stopped on its val split, and
tests it on ``test_period`` (TALLRec's Table 1: 16, 64 and 256 samples). Beside
them on the same tested samples: the backbone alone (zero-shot), item
popularity over periods 0..train_period, and any number of other backbones
alone (``reference_backbones``, e.g. the scratch backbone). Every row is a
period method of :mod:`llm4rec.eval.protocol`, so it lands in the usual result
files; LoRA rows are mean ± std over seeds. Adapters are kept in
``OUT/adapters/shots-<K>-seed-<s>/`` and reused on a rerun with the same recipe.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.config import check_seeds
from llm4rec.data.config import DataConfig
from llm4rec.errors import ConfigError
from llm4rec.llm.backbone import BackboneConfig
from llm4rec.llm.lsat_config import ScratchBuildConfig, check_backbone_source
from llm4rec.llm.train import LoraSettings, LoraTrainConfig

log = logging.getLogger(__name__)


@dataclass
class FewShotConfig:
    backbone: BackboneConfig
    fetch_backbone: str | None = None  # e.g. smollm2-135m: fetched into backbone.model_name_or_path when missing
    build_backbone: ScratchBuildConfig | None = None
    data: DataConfig | str = "ml-100k"
    template: str | None = None
    cutoff: int = 512
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: LoraTrainConfig = field(default_factory=LoraTrainConfig)  # train.seed is replaced by each seed of `seeds`
    epochs_by_shots: dict[int, int] = field(default_factory=dict)  # K -> epochs (default: train.epochs)
    shots: list[int] = field(default_factory=lambda: [16, 64, 256])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    train_period: int = 5  # the K samples come from its train split; its val split selects; tested: the next one
    val_samples: int | None = 128
    test_samples: int | None = 600  # the same rows of test_period for every row of the table (null: all)
    zero_shot: bool = True
    popularity: bool = True
    reference_backbones: list[str] = field(default_factory=list)  # directories, each scored alone
    score_batch_size: int = 32
    out: str = "runs/fewshot"

    def __post_init__(self) -> None:
        from llm4rec.data.config import resolve_data_config

        self.data = resolve_data_config(self.data)
        if not self.shots or any(k < 1 for k in self.shots) or len(set(self.shots)) != len(self.shots):
            raise ConfigError(f"shots: expected distinct sample counts >= 1, got {self.shots}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected distinct seeds, got {self.seeds}")
        check_seeds(self.seeds, "seeds")
        unknown = sorted(set(self.epochs_by_shots) - set(self.shots))
        if unknown or any(e < 1 for e in self.epochs_by_shots.values()):
            raise ConfigError(
                f"epochs_by_shots: keys must be among shots {self.shots} and epochs >= 1, got {self.epochs_by_shots}"
            )
        n_periods = self.data.periods.n_periods
        if not 0 <= self.train_period < n_periods - 1:
            raise ConfigError(
                f"train_period: expected a period in 0..{n_periods - 2} (the next one is tested), got {self.train_period}"
            )
        check_backbone_source(self)

    @property
    def test_period(self) -> int:
        return self.train_period + 1

    @property
    def first_test_period(self) -> int:
        return self.test_period


class ZeroShot:
    """A backbone alone, no adapter (the session's base model with its adapters switched off)."""

    scoring_is_stateless = True

    def __init__(self, name: str, session) -> None:
        self.name, self.session = name, session

    def fit(self, timeline, period: int) -> None:
        pass

    def predict_proba(self, samples: pd.DataFrame) -> np.ndarray:
        import contextlib

        from peft import PeftModel

        from llm4rec.llm.score import score_sequences

        session, backbone = self.session, self.session.backbone
        model = session.model
        plain = model.disable_adapter() if isinstance(model, PeftModel) else contextlib.nullcontext()
        with plain:
            return score_sequences(
                model, session.samples(samples)["input_ids"], backbone.answer_ids, backbone.tokenizer.pad_token_id,
                session.score_batch_size, progress=session.progress,
            )  # fmt: skip


class FewShotLora:
    """A fresh LoRA on ``shots`` samples of period t's train split, early-stopped on val_t."""

    scoring_is_stateless = True

    def __init__(self, session, shots: int, seed: int, epochs: int, val_samples: int | None) -> None:
        self.session, self.shots, self.seed, self.epochs, self.val_samples = session, shots, seed, epochs, val_samples
        self.name = f"LoRA-{shots}"
        self.path: Path | None = None

    def fit(self, timeline, period: int) -> None:
        session = self.session
        self.path = session.ensure_trained(
            session.store.path(f"shots-{self.shots}-seed-{self.seed}", period),
            train_rows=session.timeline.period(period, "train"),
            val_rows=session.timeline.period(period, "val"),
            max_train_samples=self.shots,
            max_val_samples=self.val_samples,
            description={"role": f"few-shot {self.shots}", "period": period, "periods": [period], "seed": self.seed},
            train_changes={"seed": self.seed, "epochs": self.epochs},
        )

    def predict_proba(self, samples: pd.DataFrame) -> np.ndarray:
        from llm4rec.llm.score import sigmoid

        return sigmoid(self.session.margins([self.path], samples)[0])


def run_fewshot(config: FewShotConfig, progress: bool = True) -> list:
    """Every row of the few-shot table on the same tested samples; results and adapters in ``config.out``."""
    from llm4rec.baselines.popularity import ItemPopularity
    from llm4rec.data.config import load_timeline
    from llm4rec.eval.protocol import run_protocol
    from llm4rec.eval.report import write_run
    from llm4rec.llm.session import open_session

    started = time.perf_counter()
    timeline = load_timeline(config.data)
    session = open_session(config, timeline, progress)
    backbone_name = Path(session.backbone.config.name).name
    out = Path(config.out)
    rows: list = []

    def run(method, seed: int = 0) -> None:
        rows.extend(
            run_protocol(
                method,
                timeline,
                config.test_period,
                config.test_period,
                seed,
                progress,
                max_test_samples=config.test_samples,
                fit_from=config.train_period,
            )  # fmt: skip
        )
        if session.is_main:
            write_run(out, rows, title=f"Few-shot LoRA on {config.data.name} ({backbone_name})")

    if config.zero_shot:
        run(ZeroShot(f"{backbone_name} zero-shot", session))
    for shots in config.shots:
        for seed in config.seeds:
            epochs = config.epochs_by_shots.get(shots, config.train.epochs)
            run(FewShotLora(session, shots, seed, epochs, config.val_samples), seed)
    if config.popularity:
        run(ItemPopularity())
    for directory in config.reference_backbones:
        run(ZeroShot(f"{Path(directory).name} alone", _reference_session(config, directory, timeline, progress)))
    if session.is_main:
        training = {"seconds": round(time.perf_counter() - started, 1), "fits": session.fits}
        write_run(out, rows, f"Few-shot LoRA on {config.data.name} ({backbone_name})", config=asdict(config),
                  training=training)  # fmt: skip
    return rows


def _reference_session(config: FewShotConfig, directory: str, timeline, progress: bool):
    """A scoring-only session of another backbone (its own tokenizer, so its own tokenized samples)."""
    from dataclasses import replace

    from llm4rec.llm.scratch import check_backbone_directory
    from llm4rec.llm.session import open_session

    check_backbone_directory(directory, config.data.name, config.test_period)
    other = replace(config, backbone=BackboneConfig(directory), fetch_backbone=None, build_backbone=None)
    return open_session(other, timeline, progress)
