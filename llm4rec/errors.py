"""Errors that carry a message meant for the user (the CLI prints it without a traceback)."""


class Llm4recError(Exception):
    """Base class: the message names the file, field or option and what was expected."""


class ConfigError(Llm4recError, ValueError):
    """A config file, field or command-line option is invalid."""


class DataError(Llm4recError, ValueError):
    """A data file or dataset is missing, malformed, or too small for what was asked."""
