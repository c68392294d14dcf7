"""The method names an experiment config may list, from both sides, and what each name means.

LLM methods (one LoRA session on the experiment's backbone, :mod:`llm4rec.llm.lsat`):
``LLM-FR``, ``LLM-FT``, ``LSAT-long``, ``LSAT-short``, ``LSAT-ensemble`` and
``LSAT-ta-<mode>`` for every task-arithmetic mode.

CTR methods are ``<Model>-<Method>``: a model of :mod:`llm4rec.ctr.models` and
an update mode (``IU``, ``FR``, ``BU<w>`` with the window in the name), an
incremental-learning strategy, ``ReLoop2`` or ``<base>+ReLoop2``
(:mod:`llm4rec.incremental`).

``Popularity`` is the item-popularity reference (:mod:`llm4rec.baselines.popularity`):
what any model has to beat. Names are exactly the result rows' names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from llm4rec.errors import ConfigError

LLM_FAMILIES = {"LLM-FR": "FR", "LLM-FT": "FT"}  # the rest are LSAT's
LSAT_SINGLE = ["LSAT-long", "LSAT-short", "LSAT-ensemble"]
TA_PREFIX = "LSAT-ta-"
REFERENCES = ["Popularity"]
_BU = re.compile(r"BU([1-9][0-9]*)")


@dataclass(frozen=True)
class MethodSpec:
    """One row name of the comparison, parsed."""

    name: str
    side: Literal["llm", "ctr", "reference"]
    family: str = ""  # llm: FR, FT or LSAT
    lsat_name: str = ""  # llm: the name llm4rec.llm.lsat gives it (FR, FT, LSAT-long, ..., LSAT-ta-exact)
    merge_mode: str = ""  # llm: the task-arithmetic mode of LSAT-ta-<mode>
    model: str = ""  # ctr: the model
    method: str = ""  # ctr: the registry's method name (IU, BU, FR, SPMF, IncCTR+ReLoop2, ...)
    window: int = 0  # ctr: w of BU<w> (0 when the method has no batch-update base)

    @property
    def is_llm(self) -> bool:
        return self.side == "llm"


def llm_method_names() -> list[str]:
    from llm4rec.llm.merge import MERGE_MODES

    return [*LLM_FAMILIES, *LSAT_SINGLE, *(TA_PREFIX + mode for mode in MERGE_MODES)]


def ctr_models() -> list[str]:
    from llm4rec.ctr.models import MODELS

    return list(MODELS)


def ctr_method_parts() -> list[str]:
    """The ``<Method>`` half of a CTR name (``BU<w>`` stands for any window)."""
    from llm4rec.incremental.config import known_method_names

    names = ["IU", "BU<w>", "FR"]
    for name in known_method_names():
        if name != "IU+ReLoop2":  # IU with the memory is named ReLoop2
            names.append(name.replace("BU+", "BU<w>+"))
    return names


def valid_names_help() -> str:
    return (
        f"LLM methods: {llm_method_names()}; CTR methods: <Model>-<Method> with Model in {ctr_models()} and "
        f"Method in {ctr_method_parts()}; the reference: {REFERENCES}"
    )


def _ctr_spec(name: str) -> MethodSpec | None:
    from llm4rec.incremental.config import STRATEGIES, split_reloop

    model, sep, method = name.partition("-")
    if not sep or model not in ctr_models() or method == "IU+ReLoop2":  # that one is named <Model>-ReLoop2
        return None
    base, _ = split_reloop(method)
    window, registry_name = 0, method
    bu = _BU.fullmatch(base)
    if bu:
        window = int(bu.group(1))
        registry_name = method.replace(base, "BU", 1)
    elif base == "BU" or (base not in ("IU", "FR") and base not in STRATEGIES):
        return None  # BU without its window, or not a method
    return MethodSpec(name=name, side="ctr", model=model, method=registry_name, window=window)


def parse_method(name: str) -> MethodSpec:
    """The spec of a row name; unknown names raise ConfigError listing the valid ones."""
    if name in REFERENCES:
        return MethodSpec(name=name, side="reference")
    if name in LLM_FAMILIES:
        return MethodSpec(name=name, side="llm", family=LLM_FAMILIES[name], lsat_name=LLM_FAMILIES[name])
    if name in LSAT_SINGLE:
        return MethodSpec(name=name, side="llm", family="LSAT", lsat_name=name)
    if name.startswith(TA_PREFIX) and name in llm_method_names():
        return MethodSpec(name=name, side="llm", family="LSAT", lsat_name=name, merge_mode=name[len(TA_PREFIX) :])
    spec = _ctr_spec(name)
    if spec is None:
        raise ConfigError(f"methods: {name!r} is not a method; {valid_names_help()}")
    return spec


def parse_methods(names: list[str]) -> list[MethodSpec]:
    """Every name parsed, in order; an empty list, an unknown name or a name listed twice is an error."""
    if not names:
        raise ConfigError(f"methods: name at least one method; {valid_names_help()}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"methods: {twice} listed more than once; every method name must be unique")
    return [parse_method(name) for name in names]
