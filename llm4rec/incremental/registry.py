"""Method names in a config -> period methods: ``build_method("SPMF", "EmbMLP", features, config, seed)``.

Names are those of :mod:`llm4rec.incremental.config`: a strategy (Reservoir, SPMF, MEGG, IncCTR,
ASMG-GRU, ASMG-Linear, SML), ``ReLoop2`` (IU with the error memory) or ``<base>+ReLoop2`` for any
strategy or update mode (IU, BU, FR) as the base. The result is named ``<Model>-<Method>``.
"""

from __future__ import annotations

from collections.abc import Callable

from llm4rec.ctr.config import CtrConfig
from llm4rec.ctr.features import FeatureTable
from llm4rec.ctr.updates import MODES, CtrUpdateMethod
from llm4rec.errors import ConfigError
from llm4rec.incremental.config import known_method_names, split_reloop
from llm4rec.incremental.distill import IncCtrMethod
from llm4rec.incremental.meta import AsmgMethod
from llm4rec.incremental.reloop import ReLoop2Method
from llm4rec.incremental.replay import ReplayMethod
from llm4rec.incremental.sml import SmlMethod

Builder = Callable[[str, FeatureTable, CtrConfig, int], CtrUpdateMethod]


def _replay(selection: str) -> Builder:
    def build(model: str, features: FeatureTable, config: CtrConfig, seed: int) -> CtrUpdateMethod:
        return ReplayMethod(model, selection, features, config.model, config.train, config.incremental.replay, seed)

    return build


def _asmg(generator: str) -> Builder:
    def build(model: str, features: FeatureTable, config: CtrConfig, seed: int) -> CtrUpdateMethod:
        return AsmgMethod(model, generator, features, config.model, config.train, config.incremental.asmg, seed)

    return build


def _update(mode: str) -> Builder:
    def build(model: str, features: FeatureTable, config: CtrConfig, seed: int) -> CtrUpdateMethod:
        return CtrUpdateMethod(model, mode, features, config.model, config.train, config.window, seed)

    return build


BUILDERS: dict[str, Builder] = {
    **{mode: _update(mode) for mode in MODES},
    "Reservoir": _replay("Reservoir"),
    "SPMF": _replay("SPMF"),
    "MEGG": _replay("MEGG"),
    "IncCTR": lambda model, features, config, seed: IncCtrMethod(
        model, features, config.model, config.train, config.incremental.inc_ctr, seed
    ),
    "ASMG-GRU": _asmg("GRU"),
    "ASMG-Linear": _asmg("Linear"),
    "SML": lambda model, features, config, seed: SmlMethod(
        model, features, config.model, config.train, config.incremental.sml, seed
    ),
}


def build_method(name: str, model: str, features: FeatureTable, config: CtrConfig, seed: int = 0):
    """The period method ``<model>-<name>`` with the settings of ``config.incremental`` (IU / BU / FR too)."""
    if name not in BUILDERS and name not in known_method_names():
        raise ConfigError(f"method {name!r} is unknown; available: {[*MODES, *known_method_names()]}")
    base, with_memory = split_reloop(name)
    method = BUILDERS[base](model, features, config, seed)
    return ReLoop2Method(method, config.incremental.reloop2, seed) if with_memory else method
