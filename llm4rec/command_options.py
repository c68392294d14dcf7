"""Option helpers every ``llm4rec`` subcommand shares: a leaf module, so the command modules and the CLI import
it and it imports none of them.

Parsing (``--seeds 0,1,2``, comma lists), choosing the data (``dataset`` / ``--config``), the run commands'
``--config`` / ``--out`` / ``--quiet``, and quieting the libraries' own progress bars.
"""

from __future__ import annotations

import argparse

from llm4rec.errors import Llm4recError


def comma_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: the names of a comma-separated option."""
    return [n.strip() for n in value.split(",") if n.strip()]


def parse_seeds(value: str) -> list[int]:
    """``--seeds 0,1,2``; anything but integers is an error naming the option."""
    try:
        return [int(s) for s in comma_list(value)]
    except ValueError:
        raise Llm4recError(f"--seeds: expected comma-separated integers such as 0,1,2, got {value!r}") from None


def add_data_options(sub: argparse.ArgumentParser, positional: bool) -> None:
    """``dataset`` (or ``--dataset``) and ``--config``: how a command picks its data; read by data_config_from_args."""
    if positional:
        sub.add_argument("dataset", nargs="?", help="ml-100k (default), ml-1m or amazon-books")
    else:
        sub.add_argument("--dataset", help="ml-100k (default), ml-1m or amazon-books")
    sub.add_argument("--config", help="a data config YAML (see configs/data/) instead of the dataset defaults")


def data_config_from_args(args: argparse.Namespace):
    """The DataConfig named by ``--config`` (a YAML file) or by the dataset name's defaults."""
    from llm4rec.config import load_config
    from llm4rec.data.config import DataConfig, default_data_config

    if getattr(args, "config", None):
        config = load_config(DataConfig, args.config)
        if args.dataset and args.dataset != config.name:
            raise Llm4recError(f"--config {args.config} is for dataset {config.name!r}, not {args.dataset!r}")
        return config
    return default_data_config(args.dataset or "ml-100k")


def quiet_libraries() -> None:
    """No per-file progress bars from transformers (weights) and datasets (Arrow files) under --quiet."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def add_run_options(parser: argparse.ArgumentParser, config_help: str) -> None:
    """``--config``, ``--out`` and ``--quiet`` of a run command (read back by :func:`run_config`)."""
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--out", help="override the config's output directory")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run_config(args: argparse.Namespace, config_class):
    """The ``--config`` file of a run command as ``config_class``, ``--out`` applied (and libraries quiet under
    ``--quiet``)."""
    from llm4rec.config import load_config

    if args.quiet:
        quiet_libraries()
    config = load_config(config_class, args.config)
    if args.out:
        config.out = args.out
    return config
