"""Which dataset, how it is labelled, and how it is cut: one typed config, with per-dataset defaults."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from llm4rec.data.periods import PeriodConfig, Timeline, build_timeline
from llm4rec.data.store import SOURCES, load_dataset
from llm4rec.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "ml-100k"
    label_threshold: float = 3.0  # label = rating > label_threshold
    history_length: int = 10  # previous interactions kept per sample (TALLRec/LSAT: 10)
    periods: PeriodConfig = field(default_factory=PeriodConfig)

    def __post_init__(self) -> None:
        if self.name not in SOURCES:
            raise ConfigError(f"data.name: unknown dataset {self.name!r}; known datasets: {sorted(SOURCES)}")
        if self.history_length < 1:
            raise ConfigError(f"data.history_length: must be >= 1, got {self.history_length}")


# Defaults per dataset (mirrored, and checked by a test, in configs/data/<name>.yaml).
DATA_PRESETS: dict[str, DataConfig] = {
    # ML-100K: all 100,000 ratings in 10 periods of 10,000 (each about 9,000 train / 1,000 val).
    "ml-100k": DataConfig("ml-100k", periods=PeriodConfig(n_periods=10)),
    # ML-1M as in the LSAT paper: samples with 10 earlier interactions, the last 200,000, 20 periods of 10,000.
    "ml-1m": DataConfig("ml-1m", periods=PeriodConfig(n_periods=20, last_n=200_000, min_history=10)),
    # Amazon Books as in the LSAT paper: 20 equal time intervals from 2014-03-01 to 2018-05-01.
    "amazon-books": DataConfig(
        "amazon-books", periods=PeriodConfig(n_periods=20, mode="time", start="2014-03-01", end="2018-05-01")
    ),
}


def default_data_config(name: str) -> DataConfig:
    if name not in DATA_PRESETS:
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {sorted(DATA_PRESETS)}")
    return copy.deepcopy(DATA_PRESETS[name])


def resolve_data_config(data: DataConfig | str) -> DataConfig:
    """A run config's ``data``: a dataset name (its preset), a data config YAML path, or a DataConfig."""
    if isinstance(data, DataConfig):
        return data
    if data.endswith((".yaml", ".yml")):
        from llm4rec.config import load_config

        return load_config(DataConfig, data)
    return default_data_config(data)


def load_timeline(config: DataConfig) -> Timeline:
    """Load the prepared dataset named by ``config`` and cut it into periods."""
    dataset = load_dataset(config.name)
    return build_timeline(dataset, config.periods, config.history_length, config.label_threshold)
