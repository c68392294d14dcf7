"""Typed config of a CTR run (`llm4rec ctr --config FILE`), loaded with :func:`llm4rec.config.load_config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llm4rec.config import check_seed, check_seeds
from llm4rec.ctr.catalogue import UPDATE_MODES, check_method, method_names, parse_method
from llm4rec.ctr.coldstart import ColdStartConfig
from llm4rec.ctr.emerg_train import EmergTrainConfig
from llm4rec.ctr.features import FeatureConfig
from llm4rec.ctr.models import check_model_name
from llm4rec.ctr.models.base import ModelOptions
from llm4rec.ctr.train import CtrTrainConfig
from llm4rec.data.config import DataConfig
from llm4rec.devices import check_device
from llm4rec.errors import ConfigError
from llm4rec.incremental.config import IncrementalConfig

# The models run when a config names none (DCNv2 is available by name).
DEFAULT_MODELS = ["MF", "EmbMLP", "WideDeep", "DeepFM", "DCN", "NFM", "DIN"]


@dataclass
class RandomSplitConfig:
    """The static RecBole benchmark protocol: drop some ratings, shuffle, split train/val/test."""

    drop_ratings: list[float] = field(default_factory=lambda: [3.0])
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train, val, test

    def __post_init__(self) -> None:
        if len(self.fractions) != 3 or any(f <= 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
            raise ConfigError(
                f"random_split.fractions: expected three positive fractions (train, val, test) summing to 1, "
                f"got {self.fractions}"
            )


@dataclass
class CtrConfig:
    data: DataConfig = field(default_factory=DataConfig)
    protocol: Literal["periods", "random", "coldstart"] = "periods"
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    updates: list[str] = field(default_factory=lambda: list(UPDATE_MODES))  # periods only; [] if incremental runs
    incremental: IncrementalConfig = field(default_factory=IncrementalConfig)  # periods only
    window: int = 3  # BU-w: train on the last w periods
    pretrain_periods: int = 3  # K: pre-train on periods 0..K-1, test periods K..last
    last_test_period: int | None = None
    random_split: RandomSplitConfig = field(default_factory=RandomSplitConfig)
    coldstart: ColdStartConfig = field(default_factory=ColdStartConfig)  # protocol: coldstart (llm4rec.ctr.coldstart)
    emerg: EmergTrainConfig = field(
        default_factory=EmergTrainConfig
    )  # EmerG's meta-learning in the cold-start protocol
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelOptions = field(default_factory=ModelOptions)
    train: CtrTrainConfig = field(default_factory=CtrTrainConfig)
    seed: int = 0
    seeds: list[int] | None = None  # several runs, one per seed (results carry a seed column); None: [seed]
    # torch CPU threads; 0 keeps torch's default. These models are small: one thread avoids the
    # per-op threading overhead, which costs several-fold on a busy 2-core machine.
    threads: int = 1
    # Where models, feature tensors, training, every strategy and scoring run (llm4rec.devices): auto (CUDA when
    # available, else the CPU), cpu, cuda or cuda:N. Results are the same on any device, so it is keyed apart.
    device: str = "auto"

    def __post_init__(self) -> None:
        check_device(self.device, "device")
        if not self.models:
            raise ConfigError(f"models: name at least one model; available: {DEFAULT_MODELS + ['DCNv2']}")
        for name in self.models:
            check_model_name(name, where="models")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models: a model is listed twice in {self.models}")
        unknown = [u for u in self.updates if u not in UPDATE_MODES]
        if unknown or not (self.updates or self.incremental.methods):
            raise ConfigError(f"updates: expected a non-empty list drawn from {list(UPDATE_MODES)}, got {self.updates}")
        if len(set(self.updates)) != len(self.updates):
            raise ConfigError(f"updates: a mode is listed twice in {self.updates}")
        strategies = [check_method(m, "incremental.methods") for m in self.incremental.methods]
        if len(set(self.incremental.methods)) != len(self.incremental.methods):
            raise ConfigError(f"incremental.methods: a method is listed twice in {self.incremental.methods}")
        check_seed(self.seed, "seed")
        if self.seeds is not None:
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise ConfigError(f"seeds: expected a non-empty list of distinct seeds, got {self.seeds}")
            check_seeds(self.seeds, "seeds")
            if self.seed != 0:
                raise ConfigError(f"seed ({self.seed}) and seeds ({self.seeds}): give one of them")
        if self.protocol != "periods" and self.incremental.methods:
            raise ConfigError(
                f"incremental.methods apply to protocol 'periods' only ({self.protocol}: no periods to update over)"
            )
        if self.window < 1:
            raise ConfigError(f"window: BU-w needs w >= 1, got {self.window}")
        if self.threads < 0:
            raise ConfigError(f"threads: must be >= 0 (0 = torch's default), got {self.threads}")
        n_periods = self.data.periods.n_periods
        if not 1 <= self.pretrain_periods <= n_periods - 1:
            raise ConfigError(
                f"pretrain_periods: with {n_periods} periods, K must be in 1..{n_periods - 1} "
                f"(pre-train on periods 0..K-1, test from period K), got {self.pretrain_periods}"
            )
        if self.train.task != "ctr":
            self._check_task([*(parse_method(u, windowed=False) for u in self.updates), *strategies])
        for check in dict.fromkeys(m.base.check for m in strategies if m.base.check is not None):
            check(self)  # what a method needs of the config beyond its sections' own checks

    def _check_task(self, methods: list) -> None:
        task = self.train.task
        if self.protocol != "periods":
            raise ConfigError(f"train.task: {task!r} runs over periods only (protocol: periods)")
        refused = [m.name for m in methods if task not in m.tasks]
        if refused:
            able = [name for name in method_names(windowed=False) if task in parse_method(name, windowed=False).tasks]
            raise ConfigError(f"train.task: {task!r} cannot be fitted by {refused}; methods that can: {able}")

    @property
    def first_test_period(self) -> int:
        return self.pretrain_periods

    @property
    def run_seeds(self) -> list[int]:
        return list(self.seeds) if self.seeds is not None else [self.seed]
