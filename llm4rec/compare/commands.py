"""`llm4rec compare --config configs/experiments/ml-100k.yaml --out DIR` and `llm4rec report DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def print_ranked(rows) -> None:
    from llm4rec.eval.report import n_seeds, ranked_seed_means, summary_table

    columns = ["method", "seeds", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds"]
    if n_seeds(rows) <= 1:
        columns.remove("seeds")
    print(summary_table(ranked_seed_means(rows), columns))


def cmd_compare(args: argparse.Namespace) -> int:
    from llm4rec.command_options import check_out_dir, comma_list, parse_seeds
    from llm4rec.compare.config import load_experiment
    from llm4rec.compare.runner import LOG_FILE, run_compare
    from llm4rec.devices import check_device

    check_out_dir(args.out)
    overrides = {}
    if args.methods is not None:
        overrides["methods"] = comma_list(args.methods)
    if args.seeds is not None:
        overrides["seeds"] = parse_seeds(args.seeds)
    ctr_overrides = {}
    if args.device is not None:
        check_device(args.device, "--device")  # checked even when no CTR method runs
        ctr_overrides["device"] = args.device
    config = load_experiment(args.config, overrides, ctr_overrides)  # every check happens here, before anything runs
    if not args.out:
        check_out_dir(config.out, f"{args.config}: out")
    out = Path(args.out or config.out)
    try:
        outcome = run_compare(config, out, progress=not args.quiet, verbose=args.verbose)
    except KeyboardInterrupt:
        print(f"llm4rec: interrupted; finished results are kept in {out}: run the same command to continue",
              file=sys.stderr)  # fmt: skip
        return 130
    print_ranked(outcome.rows)
    print(
        f"{outcome.scored} results computed, {outcome.reused} reused, in {outcome.seconds:.1f} s; "
        f"written to {out}/results.{{json,csv,md}}, auc_per_period.png, auc_mean.png (log: {out / LOG_FILE})",
        file=sys.stderr,
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from llm4rec.compare.report import write_report
    from llm4rec.eval.report import read_results

    paths = write_report(args.directory)
    if not args.quiet:
        print_ranked([r for r in read_results(args.directory) if r.period != "mean"])
    print(
        f"rewrote {', '.join(sorted(str(Path(p).name) for p in paths.values()))} in {args.directory}", file=sys.stderr
    )
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from llm4rec.compare.methods import catalogue_markdown

    print(catalogue_markdown(), end="")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare",
        help="compare LLM update methods (FR, FT, LSAT) with CTR baselines and incremental methods in one table",
        description="Run every method of an experiment config through the same periods and the same tested "
        "samples, saving each (method, seed, tested period) result as it finishes. Running the same command again "
        "continues where it stopped; a method whose settings changed runs again, the others are reused. "
        "Writes results.{json,csv,md} (ranked by mean AUC), auc_per_period.png, auc_mean.png and compare.log. "
        "See docs/compare.md.",
    )
    compare.add_argument("--config", required=True, help="an experiment YAML (see configs/experiments/)")
    compare.add_argument("--out", help="output directory (default: the config's `out`)")
    compare.add_argument("--methods", help="comma-separated method names, overriding the config's `methods`")
    compare.add_argument("--seeds", help="comma-separated seeds, overriding the config's `seeds` (e.g. 0,1,2)")
    compare.add_argument(
        "--device",
        help="the CTR side's device: auto (CUDA when available, else cpu), cpu, cuda or cuda:N, overriding "
        "`ctr.device` (default auto); results are the same on any device, so finished ones are reused. The LLM "
        "side's device comes from accelerate (`accelerate launch` or its config)",
    )
    compare.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    compare.set_defaults(func=cmd_compare)

    report = commands.add_parser(
        "report",
        help="rewrite the tables and plots of a results directory from its saved results (no training)",
        description="Rebuild results.{json,csv,md}, auc_per_period.png and auc_mean.png from the saved results "
        "of `llm4rec compare` (its per-period files) or of `llm4rec lsat` / `ctr` / `popularity` (results.json).",
    )
    report.add_argument("directory", help="a directory written by llm4rec compare, lsat, ctr or popularity")
    report.add_argument("-q", "--quiet", action="store_true", help="do not print the ranked table")
    report.set_defaults(func=cmd_report)

    methods = commands.add_parser(
        "methods",
        help="list every method name of both sides, what it does and the config sections it reads",
        description="Print the method catalogues (llm4rec.llm.catalogue, llm4rec.ctr.catalogue) as a markdown table: "
        "the names `llm4rec compare` takes, what each does, and the config sections that make up its resume key. "
        "docs/methods.md holds the same table.",
    )
    methods.set_defaults(func=cmd_methods)
