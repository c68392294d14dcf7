"""What a method catalogue entry is, and the config view that keeps a method's resume key honest.

Each side has one catalogue (:mod:`llm4rec.ctr.catalogue`, :mod:`llm4rec.llm.catalogue`): method name ->
help text -> the config sections it reads -> its builder. Everything that needs to know the methods derives
from it: the CLI's choices and help, the compare resolver, the resume key of a (method, seed) run, and
``llm4rec methods`` (the list the docs point to).

A builder is handed a :class:`ConfigView`, not the config: the view answers only the sections its entry
declares (plus the side's shared sections and the protocol's fields), and reading anything else raises. The
resume key hashes exactly the declared sections, so a method cannot depend on a setting its key ignores: a new
method that forgot to declare a section fails the first time it is built, instead of silently reusing stale
results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from llm4rec.errors import Llm4recError


class UndeclaredSection(Llm4recError):
    """A method read a config section its catalogue entry does not declare (so its resume key would miss it)."""


@dataclass(frozen=True)
class MethodEntry:
    """One method of a side's catalogue.

    ``sections``: dotted paths into the side's config (``incremental.replay``, ``task_arithmetic.grid``) that the
    method reads beyond the side's shared sections; each one is part of the method's resume key.
    ``build``: called with side-specific arguments and a :class:`ConfigView` of the declared sections.
    """

    name: str
    help: str
    sections: tuple[str, ...] = ()
    build: Callable[..., Any] | None = None
    # A method whose every fit starts afresh needs no burn-in fits before the first tested period.
    fresh_each_fit: bool = False
    # check(config): refuse, on load, a config this method cannot run with (None: nothing beyond the sections').
    check: Callable[[Any], None] | None = None
    # What it can fit: "ctr" (the like / dislike label), "rating" (the rating itself, scored by RMSE).
    tasks: tuple[str, ...] = ("ctr",)


def _at_default(field: dataclasses.Field, value: Any) -> bool:
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    return value == default


def _plain(value: Any) -> Any:
    """A section's value as a resume key hashes it. A field marked ``keyed_when_set`` (in its metadata) is left
    out while at its default: an option added after results exist keeps those results' keys until it is set."""
    if not dataclasses.is_dataclass(value):
        return value
    plain = dataclasses.asdict(value)
    for field in dataclasses.fields(value):
        if field.metadata.get("keyed_when_set") and _at_default(field, getattr(value, field.name)):
            del plain[field.name]
    return plain


def keyed_settings(config: Any, sections: Iterable[str], exclude: Iterable[str] = ()) -> dict:
    """The values of ``sections`` (dotted paths) in ``config``, nested by path: what a resume key hashes.
    ``exclude``: dotted paths inside those sections that are keyed apart (e.g. ``train.seed``)."""
    settings: dict = {}
    for path in sections:
        value: Any = config
        for part in path.split("."):
            value = getattr(value, part)
        *parents, last = path.split(".")
        target = settings
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = _plain(value)
    for path in exclude:
        *parents, last = path.split(".")
        target = settings
        for part in parents:
            target = target.get(part) if isinstance(target, dict) else None
            if target is None:
                break
        if isinstance(target, dict):
            target.pop(last, None)
    return settings


class ConfigView:
    """Read-only access to the declared sections of a config (dotted paths), for one method's builder.

    ``view.task_arithmetic.grid`` works when ``task_arithmetic.grid`` (or all of ``task_arithmetic``) is declared;
    any other attribute raises :class:`UndeclaredSection` naming the method and the path.
    """

    def __init__(self, config: Any, allowed: Iterable[str], owner: str, prefix: str = "") -> None:
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_allowed", frozenset(allowed))
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        path = self._prefix + name
        if path in self._allowed:
            return getattr(self._config, name)
        if any(a.startswith(path + ".") for a in self._allowed):
            return ConfigView(getattr(self._config, name), self._allowed, self._owner, path + ".")
        raise UndeclaredSection(
            f"internal: {self._owner} reads config section {path!r}, which its catalogue entry does not declare "
            f"(declared: {sorted(self._allowed)}); add it to the entry's sections so that it is part of the key"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise UndeclaredSection(f"internal: {self._owner} may not change its config ({self._prefix}{name})")
