"""The row names an experiment config may list, from both sides, resolved through the sides' catalogues.

LLM methods are the entries of :mod:`llm4rec.llm.catalogue` (``LLM-FR``, ``LLM-FT``, ``LSAT-long``, ...,
``LSAT-ta-<mode>``, with the suffixes ``+Reservoir`` / ``+MEGG`` / ``+ReLoop2``). CTR methods are ``<Model>-<Method>``: a model of :mod:`llm4rec.ctr.models` and a method of
:mod:`llm4rec.ctr.catalogue` (``IU``, ``BU<w>``, ``FR``, a strategy, ``ReLoop2`` or ``<base>+ReLoop2``).
``Popularity`` is the item-popularity reference (:mod:`llm4rec.baselines.popularity`): what any model has to
beat. Names are exactly the result rows' names; ``llm4rec methods`` lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llm4rec.errors import ConfigError

REFERENCES = {"Popularity": "each item's smoothed positive rate over periods 0..t (the reference to beat)"}
POPULARITY_SMOOTHING = 10.0  # pseudo-interactions at the prior, as `llm4rec popularity`


@dataclass(frozen=True)
class MethodSpec:
    """One row name of the comparison, parsed: ``entry`` is an LlmEntry (llm) or a CtrMethod (ctr)."""

    name: str
    side: Literal["llm", "ctr", "reference"]
    entry: object = None
    model: str = ""  # ctr: the model

    @property
    def is_llm(self) -> bool:
        return self.side == "llm"


def ctr_models() -> list[str]:
    from llm4rec.ctr.models import MODELS

    return list(MODELS)


def valid_names_help() -> str:
    from llm4rec.ctr.catalogue import method_names
    from llm4rec.llm.catalogue import ENTRIES

    return (
        f"LLM methods: {list(ENTRIES)}, each also as <method>+ReLoop2, those serving one-period fits as "
        f"<method>+Reservoir / +MEGG; CTR methods: <Model>-<Method> with Model in {ctr_models()} and "
        f"Method in {method_names()}; the reference: {list(REFERENCES)} (`llm4rec methods` lists them all)"
    )


def parse_method(name: str) -> MethodSpec:
    """The spec of a row name; unknown names raise ConfigError listing the valid ones."""
    from llm4rec.ctr.catalogue import parse_method as parse_ctr_method
    from llm4rec.llm.catalogue import entry_of

    if name in REFERENCES:
        return MethodSpec(name=name, side="reference")
    llm_entry = entry_of(name)
    if llm_entry is not None:
        return MethodSpec(name=name, side="llm", entry=llm_entry)
    model, sep, method = name.partition("-")
    ctr_method = parse_ctr_method(method) if sep and model in ctr_models() else None
    if ctr_method is None:
        raise ConfigError(f"methods: {name!r} is not a method; {valid_names_help()}")
    return MethodSpec(name=name, side="ctr", entry=ctr_method, model=model)


def parse_methods(names: list[str]) -> list[MethodSpec]:
    """Every name parsed, in order; an empty list, an unknown name or a name listed twice is an error."""
    if not names:
        raise ConfigError(f"methods: name at least one method; {valid_names_help()}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"methods: {twice} listed more than once; every method name must be unique")
    return [parse_method(name) for name in names]


def catalogue_markdown() -> str:
    """The method list of docs/methods.md (what ``llm4rec methods`` prints), made from the catalogues."""
    from llm4rec.ctr import catalogue as ctr
    from llm4rec.llm import catalogue as llm

    def shared(sections: tuple[str, ...]) -> str:
        return "Every method reads " + ", ".join(f"`{s}`" for s in sections) + "; the table gives its own sections."

    def table(rows: list[dict]) -> list[str]:
        lines = ["| method | what it does | its own config sections (part of its resume key) |", "|---|---|---|"]
        for row in rows:
            sections = ", ".join(f"`{s}`" for s in row["sections"]) or "–"
            lines.append(f"| `{row['name']}` | {row['help']} | {sections} |")
        return lines

    lines = ["### LLM methods (`llm:` section of an experiment; `llm4rec lsat`)", "", shared(llm.SHARED_SECTIONS), ""]
    lines += [*table(llm.catalogue_rows()), ""]
    lines += [
        f"### CTR methods: `<Model>-<Method>`, Model in {', '.join(f'`{m}`' for m in ctr_models())}",
        "",
        shared(ctr.SHARED_SECTIONS),
        "",
        *table(ctr.catalogue_rows()),
        "",
        "### Reference",
        "",
        *table([{"name": name, "help": text, "sections": []} for name, text in REFERENCES.items()]),
    ]
    return "\n".join(lines) + "\n"
