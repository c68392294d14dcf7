"""Typed config of a comparison (`llm4rec compare --config configs/experiments/...`).

The top level fixes what every method shares: the dataset and its periods, the
tested periods, the tested samples (the same rows for every method) and the
seeds. ``llm:`` holds the settings of an LSAT run (:class:`LsatConfig` fields)
and ``ctr:`` those of a CTR run (:class:`CtrConfig` fields), minus the fields
the top level sets; each may override ``seeds``. Everything is checked on load,
before anything trains.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from llm4rec.compare.methods import POPULARITY_SMOOTHING, MethodSpec, parse_methods
from llm4rec.data.config import DataConfig
from llm4rec.errors import ConfigError

# Set by the experiment's top level, so not allowed inside the llm: / ctr: sections.
LLM_OWNED = ("data", "methods", "first_test_period", "last_test_period", "out", "seed")
CTR_OWNED = ("data", "models", "updates", "seed", "last_test_period", "protocol")


def _check_seeds(seeds: list[int], where: str) -> None:
    from llm4rec.config import check_seeds

    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: expected a non-empty list of distinct integer seeds, got {seeds}")
    check_seeds(seeds, where)


def _section(raw: dict[str, Any], owned: tuple[str, ...], where: str) -> tuple[dict[str, Any], list[int] | None]:
    """A copy of the section without ``seeds`` (returned apart), refusing the keys the top level owns."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    taken = [key for key in owned if key in raw]
    if taken:
        raise ConfigError(f"{where}: {taken} are set at the top level of the experiment config, not in {where}")
    section = copy.deepcopy(raw)
    seeds = section.pop("seeds", None)
    if seeds is not None:
        if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"{where}.seeds: expected a list of integers, got {seeds!r}")
        _check_seeds(seeds, f"{where}.seeds")
    return section, seeds


@dataclass
class ExperimentConfig:
    methods: list[str]  # result rows, both sides: see llm4rec.compare.methods
    data: DataConfig | str = "ml-100k"  # a dataset name (its preset periods), a data YAML path, or a mapping
    first_test_period: int = 7  # every method trains through t and is tested on t + 1, for t + 1 in first..last
    last_test_period: int | None = None  # default: the last period
    test_samples: int | None = 2000  # rows of each tested period, drawn once (seeded by the period): None = all
    seeds: list[int] = field(default_factory=lambda: [0])
    llm: dict[str, Any] = field(default_factory=dict)  # LsatConfig fields (backbone, lora, train, samples, ...)
    ctr: dict[str, Any] = field(default_factory=dict)  # CtrConfig fields (pretrain_periods, model, train, ...)
    out: str = "runs/compare"
    where: str = field(default="config", repr=False)  # the file name, for error messages

    # Resolved on load.
    specs: list[MethodSpec] = field(init=False, repr=False)
    lsat: Any = field(init=False, default=None, repr=False)  # LsatConfig for seed 0, or None without LLM methods
    ctr_config: Any = field(init=False, default=None, repr=False)  # CtrConfig, or None without CTR methods
    backbone_identity: str | None = field(init=False, default=None, repr=False)  # set by run_compare
    llm_seeds: list[int] = field(init=False, repr=False)
    ctr_seeds: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from llm4rec.data.config import resolve_data_config

        self.data = resolve_data_config(self.data)
        _check_seeds(self.seeds, f"{self.where}: seeds")
        n_periods = self.data.periods.n_periods
        last = n_periods - 1 if self.last_test_period is None else self.last_test_period
        if not 1 <= self.first_test_period <= last <= n_periods - 1:
            raise ConfigError(
                f"{self.where}: tested periods {self.first_test_period}..{last} are out of range: with {n_periods} "
                f"periods a tested period is in 1..{n_periods - 1}"
            )
        self.last_test_period = last
        if self.test_samples is not None and self.test_samples < 1:
            raise ConfigError(f"{self.where}: test_samples must be >= 1 or null (all), got {self.test_samples}")
        self.specs = parse_methods(self.methods)
        llm_specs = [s for s in self.specs if s.is_llm]
        ctr_specs = [s for s in self.specs if s.side == "ctr"]
        self.llm_seeds = self.ctr_seeds = list(self.seeds)
        if llm_specs:
            self.lsat, seeds = self._lsat_config(llm_specs)
            self.llm_seeds = seeds or self.llm_seeds
        if ctr_specs:
            self.ctr_config, seeds = self._ctr_config(ctr_specs)
            self.ctr_seeds = seeds or self.ctr_seeds

    @property
    def tested_periods(self) -> list[int]:
        return list(range(self.first_test_period, self.last_test_period + 1))

    def seeds_of(self, spec: MethodSpec) -> list[int]:
        if spec.side == "reference":
            return self.seeds[:1]  # deterministic: one seed says all
        return self.llm_seeds if spec.is_llm else self.ctr_seeds

    def _lsat_config(self, specs: list[MethodSpec]):
        from llm4rec.config import from_dict
        from llm4rec.llm.lsat_config import LsatConfig

        where = f"{self.where}: llm"
        section, seeds = _section(self.llm, LLM_OWNED, where)
        if "test" in (section.get("samples") or {}):
            raise ConfigError(f"{where}.samples.test: the tested rows are the experiment's test_samples")
        from llm4rec.llm.catalogue import FAMILIES

        families = {s.entry.family for s in specs}
        section["methods"] = [f for f in FAMILIES if f in families]
        section["task_arithmetic"] = {
            **(section.get("task_arithmetic") or {}),
            "modes": [s.entry.merge_mode for s in specs if s.entry.merge_mode],
        }
        section["samples"] = {**(section.get("samples") or {}), "test": self.test_samples}
        section.update(
            data=dataclasses.asdict(self.data),
            first_test_period=self.first_test_period,
            last_test_period=self.last_test_period,
        )
        if "backbone" not in section:
            raise ConfigError(f"{where}.backbone: name the backbone (model_name_or_path) the LLM methods fine-tune")
        return from_dict(LsatConfig, section, where=where), seeds

    def _ctr_config(self, specs: list[MethodSpec]):
        from llm4rec.config import from_dict
        from llm4rec.ctr.catalogue import UPDATE_MODES
        from llm4rec.ctr.config import CtrConfig

        where = f"{self.where}: ctr"
        section, seeds = _section(self.ctr, CTR_OWNED, where)
        incremental = section.get("incremental") or {}
        if "methods" in incremental:
            raise ConfigError(f"{where}.incremental.methods: list the methods in the experiment's `methods`")
        section["models"] = list(dict.fromkeys(s.model for s in specs))
        section["updates"] = list(UPDATE_MODES)
        section["incremental"] = {
            **incremental,
            "methods": list(dict.fromkeys(s.entry.config_name for s in specs if not s.entry.is_update_mode)),
        }
        section["last_test_period"] = self.last_test_period
        section["data"] = dataclasses.asdict(self.data)
        ctr = from_dict(CtrConfig, section, where=where)
        if ctr.train.task != "ctr":
            raise ConfigError(
                f"{where}.train.task: the comparison ranks every method by the like / dislike label (task ctr); "
                f"run the {ctr.train.task!r} task with `llm4rec ctr`"
            )
        if ctr.pretrain_periods > self.first_test_period:
            raise ConfigError(
                f"{where}.pretrain_periods: the CTR models pre-train on periods 0..K-1 and must serve the first "
                f"tested period {self.first_test_period}, so K <= {self.first_test_period}; got {ctr.pretrain_periods}"
            )
        return ctr, seeds

    def lsat_for_seed(self, seed: int, out: str):
        """The LSAT config of one seed: its own seed for sampling, shuffling and LoRA initialisation."""
        lsat = dataclasses.replace(self.lsat, seed=seed, out=out)
        lsat.train = dataclasses.replace(self.lsat.train, seed=seed)
        return lsat

    def ctr_config_of(self, spec: MethodSpec):
        """The CtrConfig a CTR method runs with: the experiment's, with the window of its BU<w> name."""
        window = spec.entry.window
        return dataclasses.replace(self.ctr_config, window=window) if window else self.ctr_config

    def method_settings(self, spec: MethodSpec) -> dict:
        """What produces this method's results beyond the shared protocol, as its catalogue entry declares it:
        a changed value changes its key."""
        if spec.is_llm:
            from llm4rec.llm.catalogue import key_settings

            # The backbone's files, not only its path (llm4rec.llm.backbone_identity).
            return {**key_settings(spec.entry, self.lsat), "backbone_identity": self.backbone_identity}
        if spec.side == "reference":
            return {"smoothing": POPULARITY_SMOOTHING}
        from llm4rec.ctr.catalogue import key_settings

        return key_settings(spec.entry, self.ctr_config_of(spec))

    def unit_key(self, spec: MethodSpec, seed: int, dataset_fingerprint: str) -> str:
        """The hash of everything that produces a (method, seed) run's results: its directory name."""
        recipe = {
            "method": spec.name,
            "seed": seed,
            "data": dataclasses.asdict(self.data),
            "dataset": dataset_fingerprint,
            "tested_periods": self.tested_periods,
            "test_samples": self.test_samples,
            "settings": self.method_settings(spec),
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {
            "methods": self.methods,
            "data": dataclasses.asdict(self.data),
            "first_test_period": self.first_test_period,
            "last_test_period": self.last_test_period,
            "test_samples": self.test_samples,
            "seeds": {"llm": self.llm_seeds, "ctr": self.ctr_seeds},
            "llm": dataclasses.asdict(self.lsat) if self.lsat is not None else None,
            "ctr": dataclasses.asdict(self.ctr_config) if self.ctr_config is not None else None,
        }


def load_experiment(
    path: str, overrides: dict[str, Any] | None = None, ctr_overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Read an experiment YAML; ``overrides`` replace top-level keys and ``ctr_overrides`` keys of its ``ctr:``
    section (both from the command line). Seeds from the command line replace the sides' ``seeds`` too."""
    from llm4rec.config import from_dict, load_yaml

    data = {**load_yaml(path), **(overrides or {})}
    if "seeds" in (overrides or {}):  # the command line's seeds are every method's: the sides' own give way
        for side in ("llm", "ctr"):
            if isinstance(data.get(side), dict):
                data[side] = {key: value for key, value in data[side].items() if key != "seeds"}
    if "where" in data:
        raise ConfigError(f"{path}: unknown key(s) ['where']")
    if ctr_overrides:
        ctr = data.get("ctr")
        data["ctr"] = {**(ctr if isinstance(ctr, dict) else {}), **ctr_overrides}
    return from_dict(ExperimentConfig, {**data, "where": str(path)}, where=str(path))
