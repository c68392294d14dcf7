"""Typed config of an LSAT run (`llm4rec lsat --config configs/lsat/...`); every field is checked on load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from llm4rec.config import check_seed
from llm4rec.data.config import DataConfig
from llm4rec.errors import ConfigError
from llm4rec.incremental.config import ReLoop2Config, ReplayConfig
from llm4rec.llm.backbone import BackboneConfig
from llm4rec.llm.catalogue import DEFAULT_FAMILIES, FAMILIES, entries_of
from llm4rec.llm.ensemble import COMBINES
from llm4rec.llm.merge import MERGE_MODES, check_weight
from llm4rec.llm.score import PASSES
from llm4rec.llm.train import LoraSettings, LoraTrainConfig

DEFAULT_GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def _check_grid(grid: list[float], option: str) -> None:
    if not grid:
        raise ConfigError(f"{option}: give at least one weight in [0, 1]")
    for w in grid:
        check_weight(w, option)


@dataclass
class ScratchBuildConfig:
    """Build a scratch backbone at ``backbone.model_name_or_path`` when that directory does not exist yet."""

    preset: str = "scratch-llama-tiny"
    periods: list[int] | None = None  # pre-training periods; None = the first half
    max_samples: int | None = None  # None = the preset's
    epochs: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed, "build_backbone.seed")


def check_backbone_source(config) -> None:
    """``fetch_backbone`` / ``build_backbone`` of a run config (one with ``data`` resolved and
    ``first_test_period`` known): a known name, one of the two, a directory to put it, and a scratch build whose
    pre-training periods end before the first tested period."""
    fetch, build = getattr(config, "fetch_backbone", None), getattr(config, "build_backbone", None)
    if fetch is not None:
        from llm4rec.llm.fetch import get_offline_backbone

        get_offline_backbone(fetch)
        if build is not None:
            raise ConfigError(
                "fetch_backbone and build_backbone: give one of the two (fetch a pretrained LLM or build one)"
            )
    if (fetch is not None or build is not None) and not config.backbone.model_name_or_path:
        raise ConfigError("backbone.model_name_or_path: name the directory the backbone is fetched or built into")
    if build is not None:
        from llm4rec.llm.scratch import check_pretraining_periods, default_pretraining_periods

        periods = build.periods or default_pretraining_periods(config.data.periods.n_periods)
        check_pretraining_periods(periods, config.first_test_period, "build_backbone.periods")


@dataclass
class LongTermConfig:
    periods: int = 6  # K: the long-term adapter learns periods 0..K-1 as full retraining would
    refresh_every: int = 0  # R > 0: retrain it on 0..t every R periods after K-1; 0 = frozen (the paper)

    def __post_init__(self) -> None:
        if self.periods < 1:
            raise ConfigError(f"long_term.periods: K must be >= 1 (trained on periods 0..K-1), got {self.periods}")
        if self.refresh_every < 0:
            raise ConfigError(f"long_term.refresh_every: must be >= 0 (0 = frozen), got {self.refresh_every}")


@dataclass
class EnsembleConfig:
    weight: float | None = None  # the long-term adapter's weight; None = chosen on val_t over `grid`
    grid: list[float] = field(default_factory=lambda: list(DEFAULT_GRID))
    combine: Literal["probability", "logit"] = "probability"  # P = w P_long + (1-w) P_short, or on logits
    # "one": one pass of mixed-adapter batches (peft adapter_names); "two": one pass per adapter. Side by side on
    # the CPU, one pass took 0.985x the time of two (BENCHMARKS.md): at parity; measure on a GPU with llm4rec bench.
    passes: Literal["one", "two"] = "one"

    def __post_init__(self) -> None:
        if self.weight is not None:
            check_weight(self.weight, "ensemble.weight")
        _check_grid(self.grid, "ensemble.grid")
        if self.combine not in COMBINES:
            raise ConfigError(f"ensemble.combine: expected one of {list(COMBINES)}, got {self.combine!r}")
        if self.passes not in PASSES:
            raise ConfigError(f"ensemble.passes: expected one of {list(PASSES)}, got {self.passes!r}")


@dataclass
class TaskArithmeticConfig:
    modes: list[str] = field(default_factory=lambda: ["exact", "lsat"])
    weight: float | None = None  # None = chosen on val_t over `grid`
    grid: list[float] = field(default_factory=lambda: list(DEFAULT_GRID))
    density: float = 0.5  # ties / dare_*: share of the weights kept
    svd_rank: int | None = None  # svd: rank of the merged adapter; None = the larger of the two ranks
    seed: int = 0  # dare_*: which weights are dropped

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in MERGE_MODES]
        if unknown:
            raise ConfigError(f"task_arithmetic.modes: {unknown} unknown; available: {list(MERGE_MODES)}")
        if len(set(self.modes)) != len(self.modes):
            raise ConfigError(f"task_arithmetic.modes: a mode is listed twice in {self.modes}")
        if self.weight is not None:
            check_weight(self.weight, "task_arithmetic.weight")
        _check_grid(self.grid, "task_arithmetic.grid")
        if not 0 < self.density <= 1:
            raise ConfigError(f"task_arithmetic.density: expected a value in (0, 1], got {self.density}")
        check_seed(self.seed, "task_arithmetic.seed")


@dataclass
class SdLoraConfig:
    """SD-LoRA and its variants (:mod:`llm4rec.llm.sd_lora`)."""

    initial_magnitude: float = 0.8  # a new period's magnitude when its fit starts (the authors' code: 0.8)
    # SD-LoRA-RR: the k-th direction's rank, the last value repeating (the paper lowers 10 -> 8 -> 6 over 20 tasks)
    rank_schedule: list[int] = field(default_factory=lambda: [8, 6, 4])
    # SD-LoRA-KD: fold a new direction into the earlier magnitudes when the part of it outside their span is below
    # this share of its norm (ours: independently trained LoRAs are nearly orthogonal, so they are seldom folded)
    kd_threshold: float = 0.5
    start_from: str | None = None  # a served SD-LoRA adapter to continue from instead of the first history fit

    def __post_init__(self) -> None:
        if not self.initial_magnitude > 0:
            raise ConfigError(f"sd_lora.initial_magnitude: must be > 0, got {self.initial_magnitude}")
        if not self.rank_schedule or any(isinstance(r, bool) or not isinstance(r, int) for r in self.rank_schedule):
            raise ConfigError(f"sd_lora.rank_schedule: give the ranks as whole numbers, got {self.rank_schedule}")
        if min(self.rank_schedule) < 1:
            raise ConfigError(
                f"sd_lora.rank_schedule: every rank must be >= 1 (a direction of rank 0 learns nothing), "
                f"got {self.rank_schedule}"
            )
        if not 0 < self.kd_threshold < 1:
            raise ConfigError(
                f"sd_lora.kd_threshold: expected a share of the new direction's norm in (0, 1), got {self.kd_threshold}"
            )


@dataclass
class LoraReplayConfig(ReplayConfig):
    """Replay in LoRA updates (``<method>+Reservoir`` / ``+MEGG``, :mod:`llm4rec.llm.replay`): the CTR side's
    reservoir and ratios (``reservoir: fraction`` is not used here), sized for LLM fits; the budget is ``ratio``
    (``megg_ratio``) x the fit's new samples."""

    OPTION: ClassVar[str] = "replay"
    reservoir_capacity: int = 2000  # past samples kept (reservoir sampling over every fit's rows, in time order)
    ratio: float = 0.5  # Reservoir: replayed samples per new one
    megg_ratio: float = 0.5  # MEGG: the same, chosen from a GGscored pool
    # MEGG: candidates GGscored per fit (a seeded draw from the reservoir); each costs about two training steps'
    # worth of forward and backward work, so the pool is the selection's price.
    megg_pool: int = 168
    megg_chunk_size: int = 16  # samples per forward-backward pass of the GGscores

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reservoir != "capacity":
            raise ConfigError("replay.reservoir: LoRA replay keeps a fixed-capacity reservoir; give 'capacity'")
        if self.megg_pool < 1:
            raise ConfigError(f"replay.megg_pool: must be >= 1, got {self.megg_pool}")


@dataclass
class SampleLimits:
    """Caps that make a CPU run feasible; each draw is seeded, None = everything."""

    history_fit: int | None = None  # training samples of a fit over periods 0..t (FR, the long-term adapter)
    recent_fit: int | None = None  # training samples of a fit over period t (FT, the short-term adapter)
    val: int | None = 1000  # val_t samples for early stopping and for choosing merge / ensemble weights
    test: int | None = None  # samples of each tested period, the same rows for every method

    def __post_init__(self) -> None:
        for name in ("history_fit", "recent_fit", "val", "test"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"samples.{name}: must be >= 1 or null (all), got {value}")


@dataclass
class LsatConfig:
    backbone: BackboneConfig
    data: DataConfig | str = "ml-100k"  # a dataset name (its preset periods), a data YAML path, or a mapping
    fetch_backbone: str | None = None  # e.g. smollm2-135m: fetched into backbone.model_name_or_path when missing
    build_backbone: ScratchBuildConfig | None = None
    template: str | None = None  # movie, book or a YAML path; None = the dataset's
    cutoff: int = 512
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: LoraTrainConfig = field(default_factory=LoraTrainConfig)
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_FAMILIES))  # of llm4rec.llm.catalogue.FAMILIES
    long_term: LongTermConfig = field(default_factory=LongTermConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    task_arithmetic: TaskArithmeticConfig = field(default_factory=TaskArithmeticConfig)
    sd_lora: SdLoraConfig = field(default_factory=SdLoraConfig)
    reloop2: ReLoop2Config = field(default_factory=ReLoop2Config)  # <LLM method>+ReLoop2 (the CTR side's memory)
    replay: LoraReplayConfig = field(default_factory=LoraReplayConfig)  # <method>+Reservoir / +MEGG
    samples: SampleLimits = field(default_factory=SampleLimits)
    first_test_period: int | None = None  # default: long_term.periods + 1 (the first short-term period is K)
    last_test_period: int | None = None  # default: the last period
    score_batch_size: int = 32
    out: str = "runs/lsat"
    seed: int = 0

    def __post_init__(self) -> None:
        from llm4rec.data.config import resolve_data_config

        self.data = resolve_data_config(self.data)
        unknown = [m for m in self.methods if m not in FAMILIES]
        if unknown or not self.methods:
            raise ConfigError(f"methods: expected a non-empty list drawn from {list(FAMILIES)}, got {self.methods}")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods: a method is listed twice in {self.methods}")
        if self.first_test_period is None:
            self.first_test_period = self.long_term.periods + 1
        n_periods = self.data.periods.n_periods
        last = n_periods - 1 if self.last_test_period is None else self.last_test_period
        if not self.long_term.periods + 1 <= self.first_test_period <= last <= n_periods - 1:
            raise ConfigError(
                f"test periods {self.first_test_period}..{last} are out of range: with {n_periods} periods and the "
                f"long-term adapter on periods 0..{self.long_term.periods - 1}, tested periods must lie in "
                f"{self.long_term.periods + 1}..{n_periods - 1} (the short-term adapter needs a period after K-1)"
            )
        self.last_test_period = last
        check_seed(self.seed, "seed")
        check_backbone_source(self)
        if self.score_batch_size < 1:
            raise ConfigError(f"score_batch_size: must be >= 1, got {self.score_batch_size}")

    def method_names(self) -> list[str]:
        """Result rows' method names, in run order."""
        return [entry.lsat_name for entry in entries_of(self.methods, self.task_arithmetic.modes)]
