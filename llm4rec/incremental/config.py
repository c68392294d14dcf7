"""Typed settings of the incremental-learning methods (the ``incremental:`` section of a CTR config).

Each dataclass checks its own fields and names the field and what was expected
in the error. No torch here: the CLI loads configs without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from llm4rec.errors import ConfigError

MAX_SKETCH_BITS = 24  # 2^24 buckets x K arrays x 3 float64 sums: beyond this a sketch no longer fits in memory


def check_sequence_length(meta: AsmgConfig, n_models: int, first_update: int) -> None:
    """ASMG's sequence holds the incrementally updated models only (Eq. 2 starts at the first one, not at the
    pre-trained model), one per update from period ``first_update`` on, ``n_models`` in all. It trains its
    generator once per update after the first, on up to k models: it needs k + 1 models to train once on a
    full sequence, and ``warm_up`` trainings before it serves at all."""
    k, warm_up = meta.sequence_length, meta.warm_up_trainings
    if k + 1 > n_models:
        raise ConfigError(
            f"incremental.asmg.sequence_length: k = {k} needs k + 1 = {k + 1} incrementally updated models, but "
            f"updating from period {first_update} gives only {n_models} (one per updated period); "
            f"use k <= {max(n_models - 1, 0)} or test more periods"
        )
    if warm_up > n_models - 1:
        raise ConfigError(
            f"incremental.asmg.warm_up: {warm_up} generator trainings before serving, but updating from period "
            f"{first_update} gives only {max(n_models - 1, 0)}: the generator would never serve"
        )


def _check_fraction(where: str, value: float) -> None:
    if not 0 < value <= 1:
        raise ConfigError(f"{where}: expected a value in (0, 1], got {value}")


@dataclass
class ReplayConfig:
    """Reservoir, SPMF and MEGG: a uniform reservoir of past samples, and how much of it each period replays."""

    # `capacity`: a fixed-size uniform sample of every sample seen (reservoir sampling);
    # `fraction`: a growing one holding `reservoir_fraction` of them.
    reservoir: Literal["capacity", "fraction"] = "capacity"
    # 0.2 of ML-100K's 100,000 ratings; the ASMG paper tunes 0.1-0.5 of the dataset.
    reservoir_capacity: int = 20_000
    reservoir_fraction: float = 0.5  # used only with `reservoir: fraction`
    ratio: float = 0.5  # replayed samples per new training sample (Reservoir and SPMF)
    megg_ratio: float = 0.8  # the same for MEGG, whose paper reports its gains for ratios above 0.7
    megg_chunk_size: int = 256  # samples per vmap call when MEGG computes per-sample gradients

    OPTION: ClassVar[str] = "incremental.replay"  # where the section sits in its config, for error messages

    def __post_init__(self) -> None:
        where = self.OPTION
        if self.reservoir not in ("capacity", "fraction"):
            raise ConfigError(f"{where}.reservoir: expected 'capacity' or 'fraction', got {self.reservoir!r}")
        if self.reservoir_capacity < 1:
            raise ConfigError(f"{where}.reservoir_capacity: must be >= 1, got {self.reservoir_capacity}")
        _check_fraction(f"{where}.reservoir_fraction", self.reservoir_fraction)
        _check_fraction(f"{where}.ratio", self.ratio)
        _check_fraction(f"{where}.megg_ratio", self.megg_ratio)
        if self.megg_chunk_size < 1:
            raise ConfigError(f"{where}.megg_chunk_size: must be >= 1, got {self.megg_chunk_size}")


@dataclass
class IncCtrConfig:
    """IncCTR: loss = (1 - kd_lambda) BCE(y, y_hat) + kd_lambda BCE(y_teacher, y_hat)."""

    kd_lambda: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.kd_lambda <= 1:
            raise ConfigError(f"incremental.inc_ctr.kd_lambda: expected a weight in [0, 1], got {self.kd_lambda}")


@dataclass
class ReLoop2Config:
    """ReLoop2: an error memory over the base model's last hidden vectors, compensating its output."""

    memory: Literal["sketch", "exact"] = "sketch"  # RACE-style LSH sketch, or exact top-k attention
    n_arrays: int = 100  # K: independent SimHash arrays (paper: 70..180)
    n_bits: int = 10  # L: SimHash bits per array, 2^L buckets each
    weight: float = 0.5  # lambda: output = clamp(y_base + lambda * y_err, 0, 1) (paper: 0.4..0.9)
    reset: Literal["on_update", "never"] = "on_update"  # empty the memory when the base model is updated?
    prefill_val: bool = True  # after an update, write the period's val split (the newest labelled data)
    stream_batch_size: int = 256  # test samples scored per step, each step read before it is written
    top_k: int = 50  # exact memory: neighbours attended over
    temperature: float = 0.1  # exact memory: softmax temperature over cosine similarities
    capacity: int = 20_000  # exact memory: newest samples kept

    def __post_init__(self) -> None:
        where = "incremental.reloop2"
        if self.n_arrays < 1:
            raise ConfigError(f"{where}.n_arrays: K must be >= 1, got {self.n_arrays}")
        if not 1 <= self.n_bits <= MAX_SKETCH_BITS:
            raise ConfigError(
                f"{where}.n_bits: L must be in 1..{MAX_SKETCH_BITS} (2^L buckets per array; L = {self.n_bits} "
                f"would need {self.n_arrays} x 2^{self.n_bits} buckets), got {self.n_bits}"
            )
        if not 0 <= self.weight <= 1:
            raise ConfigError(f"{where}.weight: lambda must be in [0, 1], got {self.weight}")
        for name in ("stream_batch_size", "top_k", "capacity"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ConfigError(f"{where}.temperature: must be > 0, got {self.temperature}")


@dataclass
class AsmgConfig:
    """ASMG: a meta generator over the last k incrementally updated models."""

    sequence_length: int = 3  # k: models in the input sequence
    hidden_size: int = 4  # GRU hidden size per coordinate
    learning_rate: float = 0.01  # of the meta generator (the ASMG scripts use 1e-2)
    epochs: int = 10  # at most; early stopping on the period's val split
    loss_weights: Literal["linear", "uniform"] = "linear"  # GRU multi-step loss weights: j / sum(j), or equal
    warm_start_steps: int = 200  # fit the new GRU to reproduce its newest input before its first training
    # Generator trainings before it serves (Algorithm 1's offline warm-up; IU serves until then).
    # None: k, so that its first model comes from a generator trained on a full k-model sequence.
    warm_up: int | None = None

    def __post_init__(self) -> None:
        where = "incremental.asmg"
        if self.warm_up is not None and self.warm_up < 1:
            raise ConfigError(f"{where}.warm_up: must be >= 1 training (or null for k), got {self.warm_up}")
        if self.sequence_length < 1:
            raise ConfigError(f"{where}.sequence_length: k must be >= 1, got {self.sequence_length}")
        if self.hidden_size < 1:
            raise ConfigError(f"{where}.hidden_size: must be >= 1, got {self.hidden_size}")
        if self.learning_rate <= 0:
            raise ConfigError(f"{where}.learning_rate: must be > 0, got {self.learning_rate}")
        if self.epochs < 1:
            raise ConfigError(f"{where}.epochs: must be >= 1, got {self.epochs}")
        if self.warm_start_steps < 0:
            raise ConfigError(f"{where}.warm_start_steps: must be >= 0, got {self.warm_start_steps}")

    @property
    def warm_up_trainings(self) -> int:
        return self.sequence_length if self.warm_up is None else self.warm_up


@dataclass
class SmlConfig:
    """SML: a transfer module combining the previous and the newly trained parameters."""

    table_channels: list[int] = field(default_factory=lambda: [10, 5])  # conv channels n1, n2 for embedding tables
    table_hidden: int = 20  # MLP hidden size for embedding tables
    dense_channels: list[int] = field(default_factory=lambda: [5, 3])  # conv channels for the other parameters
    dense_hidden: int = 40  # MLP hidden size for the other parameters
    learning_rate: float = 0.001  # of the transfer module (the SML reference script's transfer_lr)
    # Of the base parameters trained through f. The SML reference script uses 1e-2; here 1e-2 lowered the val AUC
    # of every fit through f (mean best val AUC 0.7252 / 0.7249 against 0.7268 / 0.7322 at 1e-3, EmbMLP / DeepFM,
    # ML-100K, 3 seeds), so the default is train.learning_rate's 1e-3 (docs/incremental.md has the figures).
    base_learning_rate: float = 0.001
    warm_start_steps: int = 200  # fit the new module to output the new parameters before its first training

    def __post_init__(self) -> None:
        where = "incremental.sml"
        for name in ("table_channels", "dense_channels"):
            channels = getattr(self, name)
            if len(channels) != 2 or any(c < 1 for c in channels):
                raise ConfigError(f"{where}.{name}: expected two positive channel counts [n1, n2], got {channels}")
        for name in ("table_hidden", "dense_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "base_learning_rate"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}.{name}: must be > 0, got {getattr(self, name)}")
        if self.warm_start_steps < 0:
            raise ConfigError(f"{where}.warm_start_steps: must be >= 0, got {self.warm_start_steps}")


@dataclass
class IncrementalConfig:
    methods: list[str] = field(default_factory=list)  # run beside the `updates`; checked by CtrConfig (the catalogue)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    inc_ctr: IncCtrConfig = field(default_factory=IncCtrConfig)
    reloop2: ReLoop2Config = field(default_factory=ReLoop2Config)
    asmg: AsmgConfig = field(default_factory=AsmgConfig)
    sml: SmlConfig = field(default_factory=SmlConfig)
