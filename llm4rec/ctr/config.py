"""Typed config of a CTR run (`llm4rec ctr --config FILE`), loaded with :func:`llm4rec.config.load_config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llm4rec.data.config import DataConfig
from llm4rec.errors import ConfigError
from llm4rec.incremental.config import IncrementalConfig, check_sequence_length

# The models run when a config names none (DCNv2 is available by name).
DEFAULT_MODELS = ["MF", "EmbMLP", "WideDeep", "DeepFM", "DCN", "NFM", "DIN"]
UPDATE_MODES = ["IU", "BU", "FR"]


@dataclass
class FeatureConfig:
    history_length: int = 30  # the user's last N positive items strictly before the target
    max_genres: int = 8  # genres / categories kept per item (ML-100K items have at most 6)

    def __post_init__(self) -> None:
        if self.history_length < 1:
            raise ConfigError(
                f"features.history_length: must be >= 1 (the user's last N positive items), got {self.history_length}"
            )
        if self.max_genres < 1:
            raise ConfigError(f"features.max_genres: must be >= 1, got {self.max_genres}")


@dataclass
class ModelOptions:
    """Sizes shared by all models; each model reads the ones it uses."""

    embedding_dim: int = 16
    mlp: list[int] | None = None  # hidden sizes of the deep part; None: each model's own default
    dropout: float = 0.0
    cross_layers: int = 2  # DCN / DCNv2
    attention_mlp: list[int] = field(default_factory=lambda: [36])  # DIN's activation unit

    def __post_init__(self) -> None:
        if not 1 <= self.embedding_dim <= 1024:
            raise ConfigError(f"model.embedding_dim: must be an integer in 1..1024, got {self.embedding_dim}")
        for name in ("mlp", "attention_mlp"):
            sizes = getattr(self, name)
            if sizes is None:
                continue
            if not sizes or any(s < 1 for s in sizes):
                raise ConfigError(
                    f"model.{name}: expected a non-empty list of positive layer sizes such as [64, 32], got {sizes}"
                )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout: expected a value in [0, 1), got {self.dropout}")
        if self.cross_layers < 1:
            raise ConfigError(f"model.cross_layers: must be >= 1, got {self.cross_layers}")


@dataclass
class TrainConfig:
    epochs: int = 10  # at most; early stopping on the val split's AUC usually ends sooner
    patience: int = 1  # epochs without a better val AUC before stopping
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    eval_batch_size: int = 8192

    def __post_init__(self) -> None:
        for name in ("epochs", "patience", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate: must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay: must be >= 0, got {self.weight_decay}")


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
    protocol: Literal["periods", "random"] = "periods"
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    updates: list[str] = field(default_factory=lambda: list(UPDATE_MODES))  # periods only; [] if incremental runs
    incremental: IncrementalConfig = field(default_factory=IncrementalConfig)  # periods only
    window: int = 3  # BU-w: train on the last w periods
    pretrain_periods: int = 3  # K: pre-train on periods 0..K-1, test periods K..last
    last_test_period: int | None = None
    random_split: RandomSplitConfig = field(default_factory=RandomSplitConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelOptions = field(default_factory=ModelOptions)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    seeds: list[int] | None = None  # several runs, one per seed (results carry a seed column); None: [seed]
    # torch CPU threads; 0 keeps torch's default. These models are small: one thread avoids the
    # per-op threading overhead, which costs several-fold on a busy 2-core machine.
    threads: int = 1

    def __post_init__(self) -> None:
        from llm4rec.ctr.models import check_model_name

        if not self.models:
            raise ConfigError(f"models: name at least one model; available: {DEFAULT_MODELS + ['DCNv2']}")
        for name in self.models:
            check_model_name(name, where="models")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models: a model is listed twice in {self.models}")
        unknown = [u for u in self.updates if u not in UPDATE_MODES]
        if unknown or not (self.updates or self.incremental.methods):
            raise ConfigError(f"updates: expected a non-empty list drawn from {UPDATE_MODES}, got {self.updates}")
        if len(set(self.updates)) != len(self.updates):
            raise ConfigError(f"updates: a mode is listed twice in {self.updates}")
        if self.seeds is not None:
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise ConfigError(f"seeds: expected a non-empty list of distinct seeds, got {self.seeds}")
            if self.seed != 0:
                raise ConfigError(f"seed ({self.seed}) and seeds ({self.seeds}): give one of them")
        if self.protocol == "random" and (self.incremental.methods or self.seeds is not None):
            raise ConfigError("incremental.methods and seeds apply to protocol 'periods' only (random: one seed)")
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
        if self.protocol == "periods" and self.incremental.uses_asmg():
            last = n_periods - 1 if self.last_test_period is None else self.last_test_period
            # One model per fit, at periods K-1 .. last-1.
            check_sequence_length(self.incremental.asmg, last - self.pretrain_periods + 1, self.pretrain_periods - 1)

    @property
    def first_test_period(self) -> int:
        return self.pretrain_periods

    @property
    def run_seeds(self) -> list[int]:
        return list(self.seeds) if self.seeds is not None else [self.seed]
