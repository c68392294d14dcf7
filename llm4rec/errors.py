"""Errors that carry a message meant for the user (the CLI prints it without a traceback)."""


class Llm4recError(Exception):
    """Base class: the message names the file, field or option and what was expected."""


class ConfigError(Llm4recError, ValueError):
    """A config file, field or command-line option is invalid."""


class DataError(Llm4recError, ValueError):
    """A data file or dataset is missing, malformed, or too small for what was asked."""


def brief(error: BaseException, limit: int = 240) -> str:
    """A library's exception folded onto one short line, for the end of one of our messages: its type and its
    text with whitespace runs (newlines too) made single spaces, cut to ``limit`` characters."""
    text = " ".join(str(error).split())
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    name = type(error).__name__
    return f"{name}: {text}" if text else name
