"""Option helpers every ``llm4rec`` subcommand shares: a leaf module, so the command modules and the CLI import
it and it imports none of them.

Parsing (``--seeds 0,1,2``, comma lists), choosing the data (``dataset`` / ``--config``), the run commands'
``--config`` / ``--out`` / ``--quiet``, checking output paths before anything runs (:func:`check_out_dir`,
:func:`check_out_file`), and quieting the libraries' own progress bars.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llm4rec.errors import ConfigError, Llm4recError


def comma_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: the names of a comma-separated option."""
    return [n.strip() for n in value.split(",") if n.strip()]


def parse_seeds(value: str, option: str = "--seeds") -> list[int]:
    """``--seeds 0,1,2``; anything but integers in 0 .. 2**32 - 1 is an error naming the option."""
    from llm4rec.config import check_seeds

    try:
        seeds = [int(s) for s in comma_list(value)]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers such as 0,1,2, got {value!r}") from None
    return check_seeds(seeds, option)


def _check_parents(path: Path, option: str) -> None:
    """The nearest existing folder above ``path`` is a writable directory (so ``path`` can be made there)."""
    for parent in path.absolute().parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise ConfigError(
                f"{option} {path}: {parent} is a file, so nothing can be made under it; choose another path"
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {path}: {parent} is not writable; choose another path")
        return


def check_out_dir(path: str | Path | None, option: str = "--out") -> Path | None:
    """Refuse an output directory that cannot be written (an existing file, a path under a file, a read-only
    folder) with one line naming ``option``, before a command loads data or trains. ``None``: nothing to check."""
    if path is None or str(path) == "":
        return None
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{option} {path}: {path} is a file, not a directory; name a directory (it is made if missing)"
        )
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {path}: {path} is not writable; choose another directory")
        return path
    _check_parents(path, option)
    return path


def check_out_file(path: str | Path | None, option: str = "--out") -> Path | None:
    """Refuse an output file that cannot be written (an existing directory, a path under a file, a read-only
    folder or file) with one line naming ``option``, before a command loads data or a model."""
    if path is None or str(path) == "":
        return None
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"{option} {path}: {path} is a directory, not a file; name a file such as {path / 'predictions.csv'}"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{option} {path}: {path} is not writable; choose another file")
    _check_parents(path, option)
    return path


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
    check_out_dir(args.out, "--out")  # before the config: building it may fetch or check a backbone
    config = load_config(config_class, args.config)
    if args.out:
        config.out = args.out
    else:
        check_out_dir(getattr(config, "out", None), f"{args.config}: out")
    return config
