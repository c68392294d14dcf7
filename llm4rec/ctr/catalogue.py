"""The CTR side's method catalogue: every way of keeping a CTR model up to date, in one place.

A CTR row is named ``<Model>-<Method>``: a model of :mod:`llm4rec.ctr.models` and a method here: an update mode
(``IU``, ``BU<w>`` with the window in the name, ``FR``), an incremental-learning strategy, ``ReLoop2`` (IU with
the error memory) or ``<base>+ReLoop2`` for any other base. ``llm4rec ctr`` lists update modes under
``updates`` and the rest under ``incremental.methods``; ``llm4rec compare`` takes the row names.

Every method reads the side's shared sections (:data:`SHARED_SECTIONS`) and its entry's own; both make up its
resume key. Builders import their classes when called, so this module (and every config that checks names
against it) loads without torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llm4rec.catalogue import ConfigView, MethodEntry, keyed_settings
from llm4rec.errors import ConfigError

# Read by every CTR method: the feature table, the model's sizes, its training, and the pre-training periods.
SHARED_SECTIONS = ("features", "model", "train", "pretrain_periods")
# Fields of the protocol (keyed apart: the dataset, the tested periods, the seed) and run settings that do not
# change results (torch threads, the device: a CPU comparison's results are reused on a GPU and back).
PROTOCOL_FIELDS = ("data", "last_test_period", "seed", "threads", "device")
RELOOP = "ReLoop2"
RELOOP_SECTIONS = ("incremental.reloop2",)
_BU = re.compile(r"BU([1-9][0-9]*)")


def _update(mode: str):
    def build(model: str, features, view: ConfigView, seed: int):
        from llm4rec.ctr.updates import CtrUpdateMethod

        window = {"window": view.window} if mode == "BU" else {}
        return CtrUpdateMethod(model, mode, features, view.model, view.train, seed=seed, device=view.device, **window)

    return build


def _check_asmg(config) -> None:
    """ASMG trains its generator on the models of earlier fits: the tested periods must give it enough of them."""
    from llm4rec.incremental.config import check_sequence_length

    if config.protocol == "periods":
        last = config.data.periods.n_periods - 1 if config.last_test_period is None else config.last_test_period
        # Pre-trained at K-1, then one updated model per fit at periods K .. last-1.
        check_sequence_length(config.incremental.asmg, last - config.pretrain_periods, config.pretrain_periods)


BOTH_TASKS = ("ctr", "rating")


def _strategy(name: str, help: str, section: str, load_class, *arguments, check=None, tasks=("ctr",)) -> MethodEntry:
    """An incremental strategy's entry: it reads ``incremental.<section>`` and builds ``load_class()(model,
    *arguments, features, view.model, view.train, view.incremental.<section>, seed, device=view.device)`` (the
    class is imported when the method is built)."""

    def build(model: str, features, view: ConfigView, seed: int):
        settings = getattr(view.incremental, section)
        return load_class()(model, *arguments, features, view.model, view.train, settings, seed, device=view.device)

    return MethodEntry(name, help, (f"incremental.{section}",), build, check=check, tasks=tasks)


def _replay():
    from llm4rec.incremental.replay import ReplayMethod

    return ReplayMethod


def _inc_ctr():
    from llm4rec.incremental.distill import IncCtrMethod

    return IncCtrMethod


def _asmg():
    from llm4rec.incremental.meta import AsmgMethod

    return AsmgMethod


def _sml():
    from llm4rec.incremental.sml import SmlMethod

    return SmlMethod


UPDATE_MODES = {
    "IU": MethodEntry(
        "IU", "incremental update: fine-tune the current model on period t", (), _update("IU"), tasks=BOTH_TASKS
    ),
    "BU": MethodEntry(
        "BU", "batch update BU<w>: fine-tune the current model on periods t-w+1..t", ("window",), _update("BU"),
        tasks=BOTH_TASKS,
    ),
    "FR": MethodEntry(
        "FR", "full retraining: a fresh model on periods 0..t", (), _update("FR"), fresh_each_fit=True,
        tasks=BOTH_TASKS,
    ),
}  # fmt: skip
_STRATEGIES = [
    _strategy(
        "Reservoir", "IU plus replay of a uniform reservoir of past samples", "replay", _replay, "Reservoir",
        tasks=BOTH_TASKS,
    ),
    _strategy(
        "SPMF", "IU plus replay of the reservoir samples the current model forgot most (SPMF)", "replay", _replay,
        "SPMF", tasks=BOTH_TASKS,
    ),
    _strategy(
        "MEGG", "IU plus replay chosen by gradient agreement with the new period (MEGG's GGscore)", "replay",
        _replay, "MEGG", tasks=BOTH_TASKS,
    ),
    _strategy("IncCTR", "IU with knowledge distillation from the previous model (IncCTR)", "inc_ctr", _inc_ctr),
    _strategy(
        "ASMG-GRU", "a GRU meta generator over the last k incrementally updated models (ASMG)", "asmg", _asmg,
        "GRU", check=_check_asmg,
    ),
    _strategy(
        "ASMG-Linear", "ASMG with a linear (softmax-weighted) combination of the last k models", "asmg", _asmg,
        "Linear", check=_check_asmg,
    ),
    _strategy("SML", "a transfer module combining the previous and the newly trained parameters (SML)", "sml", _sml),
]  # fmt: skip
STRATEGIES: dict[str, MethodEntry] = {entry.name: entry for entry in _STRATEGIES}
ENTRIES: dict[str, MethodEntry] = {**UPDATE_MODES, **STRATEGIES}
RELOOP_HELP = "the base plus ReLoop2's error memory over its last hidden vectors, served test-then-write"


@dataclass(frozen=True)
class CtrMethod:
    """A parsed CTR method name (the part after ``<Model>-``)."""

    name: str  # as written: IU, BU3, SPMF, FR+ReLoop2, ReLoop2, ...
    base: MethodEntry  # the update mode or strategy that trains the model
    window: int = 0  # w of BU<w> (0 without a batch-update base)
    with_memory: bool = False  # ReLoop2 on top

    @property
    def config_name(self) -> str:
        """The name ``llm4rec ctr`` configs use: BU without its window (``window:`` sets it)."""
        if self.name == RELOOP:
            return RELOOP
        base = "BU" if self.window else self.base.name
        return f"{base}+{RELOOP}" if self.with_memory else base

    @property
    def sections(self) -> tuple[str, ...]:
        """Every config section this method reads: the shared ones, its base's, ReLoop2's."""
        return (*SHARED_SECTIONS, *self.base.sections, *(RELOOP_SECTIONS if self.with_memory else ()))

    @property
    def needs_burn_in(self) -> bool:
        """Whether the method is kept up to date from pre-training on, fitted on every period before the first
        tested one (a fresh model every fit needs none; an error memory on top keeps state, so it does)."""
        return self.with_memory or not self.base.fresh_each_fit

    @property
    def tasks(self) -> tuple[str, ...]:
        """What it can fit: its base's tasks (ReLoop2's memory compensates a click probability: ctr only)."""
        return ("ctr",) if self.with_memory else self.base.tasks

    @property
    def is_update_mode(self) -> bool:
        return self.base.name in UPDATE_MODES and not self.with_memory


def parse_method(name: str, windowed: bool = True) -> CtrMethod | None:
    """The method a name means, or None. ``windowed``: batch update is written ``BU<w>`` (row names), else
    ``BU`` (``llm4rec ctr`` configs, whose ``window`` field sets w)."""
    if name == RELOOP:
        return CtrMethod(name, UPDATE_MODES["IU"], with_memory=True)
    base, with_memory = (name[: -len(RELOOP) - 1], True) if name.endswith("+" + RELOOP) else (name, False)
    if with_memory and base == "IU":
        return None  # IU with the memory is named ReLoop2
    bu = _BU.fullmatch(base)
    if windowed and bu:
        return CtrMethod(name, UPDATE_MODES["BU"], int(bu.group(1)), with_memory)
    if base == "BU" and windowed:
        return None  # BU needs its window in a row name
    if base in ENTRIES:
        return CtrMethod(name, ENTRIES[base], 0, with_memory)
    return None


def method_names(windowed: bool = True) -> list[str]:
    """Every method name (``BU<w>`` stands for any window when ``windowed``)."""
    bu = "BU<w>" if windowed else "BU"
    bases = [bu if name == "BU" else name for name in ENTRIES]
    return [*bases, RELOOP, *(f"{b}+{RELOOP}" for b in bases if b != "IU")]


def check_method(name: str, where: str) -> CtrMethod:
    """A name of ``incremental.methods`` in an ``llm4rec ctr`` config (BU without its window) parsed, or a
    ConfigError listing the names."""
    method = parse_method(name, windowed=False)
    if method is None:
        raise ConfigError(
            f"{where}: unknown method {name!r}; available: {list(STRATEGIES) + [RELOOP]}, "
            f"or '<base>+{RELOOP}' with a base in {[b for b in ENTRIES if b != 'IU']}"
        )
    if method.is_update_mode:
        raise ConfigError(f"{where}: {name} is an update mode; list it under `updates`")
    return method


def method_view(method: CtrMethod, config, owner: str) -> ConfigView:
    """What ``method``'s builder may read of a CtrConfig: its sections and the protocol's fields."""
    return ConfigView(config, (*method.sections, *PROTOCOL_FIELDS), owner)


def build_method(method: CtrMethod | str, model: str, features, config, seed: int = 0):
    """The period method ``<model>-<method>`` (a CtrUpdateMethod, wrapped by ReLoop2 when asked), built from the
    sections of ``config`` (a CtrConfig) its entry declares. A string is a config name (BU: ``config.window``)."""
    if isinstance(method, str):
        name, method = method, parse_method(method, windowed=False)
        if method is None:
            check_method(name, "method")
    owner = f"{model}-{method.name}"
    view = method_view(method, config, owner)
    built = method.base.build(model, features, view, seed)
    built.pretrain_period = config.pretrain_periods - 1  # a fit there serves the shared pre-trained model
    if method.with_memory:
        from llm4rec.incremental.reloop import ReLoop2Method

        return ReLoop2Method(built, view.incremental.reloop2, seed)
    return built


def key_settings(method: CtrMethod, config) -> dict:
    """What produces the results of ``method`` beyond the shared protocol: its declared sections' values."""
    return keyed_settings(config, method.sections)


def catalogue_rows() -> list[dict]:
    """One row per method for ``llm4rec methods`` and docs/methods.md."""
    rows = [
        {"name": "BU<w>" if e.name == "BU" else e.name, "help": e.help, "sections": [*SHARED_SECTIONS, *e.sections]}
        for e in ENTRIES.values()
    ]
    rows.append(
        {"name": RELOOP, "help": "IU plus ReLoop2's error memory", "sections": [*SHARED_SECTIONS, *RELOOP_SECTIONS]}
    )
    rows.append({"name": f"<base>+{RELOOP}", "help": RELOOP_HELP, "sections": ["<base's>", *RELOOP_SECTIONS]})
    return rows
