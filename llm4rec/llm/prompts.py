"""Prompt templates (TALLRec / LSAT format) read from YAML files.

A template has a ``wrapper`` (the Alpaca preamble), an ``instruction``, an
``input`` with the placeholders ``{preference}``, ``{unpreference}`` and
``{target}``, and the two ``answers``. A rendered prompt ends right after
``### Response:\\n``: the model's next token is the answer, which is where
the scorer reads P(Yes) and where training puts its loss.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

from llm4rec.config import from_dict, load_yaml
from llm4rec.errors import ConfigError

PLACEHOLDERS = ("preference", "unpreference", "target")
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"  # shipped as package data; ./prompts links here
BUILTIN_TEMPLATES = {"movie": "movie.yaml", "book": "book.yaml"}
# The dataset each built-in template is written for.
DATASET_TEMPLATES = {"ml-100k": "movie", "ml-1m": "movie", "amazon-books": "book"}


@dataclass
class Answers:
    positive: str = "Yes."
    negative: str = "No."


@dataclass
class PromptTemplate:
    wrapper: str
    instruction: str
    input: str
    answers: Answers = field(default_factory=Answers)
    source: str = "<inline>"  # the file it came from, for error messages

    def __post_init__(self) -> None:
        names = [name for _, name, _, _ in string.Formatter().parse(self.input) if name is not None]
        missing = [p for p in PLACEHOLDERS if p not in names]
        unknown = sorted(set(names) - set(PLACEHOLDERS))
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing {', '.join('{' + m + '}' for m in missing)}")
            if unknown:
                problems.append(f"unknown {', '.join('{' + u + '}' for u in unknown)}")
            raise ConfigError(
                f"prompt template {self.source}: field 'input' {' and '.join(problems)}; "
                f"it must use exactly the placeholders {{preference}}, {{unpreference}} and {{target}}"
            )
        for where, text in (("wrapper", self.wrapper), ("instruction", self.instruction)):
            if any(name is not None for _, name, _, _ in string.Formatter().parse(text)):
                raise ConfigError(f"prompt template {self.source}: field {where!r} must not contain placeholders")
        if not self.answers.positive.strip() or not self.answers.negative.strip():
            raise ConfigError(f"prompt template {self.source}: answers.positive and answers.negative must be non-empty")

    def render(self, preference: list[str], unpreference: list[str], target: str) -> str:
        """The prompt for one sample, up to and including ``### Response:\\n``."""
        text = self.input.format(
            preference=quote_titles(preference),
            unpreference=quote_titles(unpreference),
            target=f'"{target}"',
        )
        return f"{self.wrapper}\n\n### Instruction:\n{self.instruction}\n\n### Input:\n{text}\n\n### Response:\n"

    def answer(self, label: int) -> str:
        return self.answers.positive if label else self.answers.negative


def quote_titles(titles: list[str]) -> str:
    return ", ".join(f'"{t}"' for t in titles)


def load_template(name_or_path: str) -> PromptTemplate:
    """A built-in template (``movie``, ``book``) or a YAML file of the same shape."""
    path = PROMPTS_DIR / BUILTIN_TEMPLATES[name_or_path] if name_or_path in BUILTIN_TEMPLATES else Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"prompt template {name_or_path!r}: no such file; use a built-in template "
            f"({', '.join(BUILTIN_TEMPLATES)}) or the path of a YAML file"
        )
    data = load_yaml(path)
    data.setdefault("source", str(path))
    return from_dict(PromptTemplate, data, where=str(path))


def template_for_dataset(dataset: str) -> str:
    return DATASET_TEMPLATES.get(dataset, "movie")
