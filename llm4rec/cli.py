"""The ``llm4rec`` command.

llm4rec data prepare ml-100k            fetch / read a dataset into the cache
llm4rec data stats ml-100k --json       sizes, positive rate, and the periods
llm4rec popularity --dataset ml-100k    the item-popularity reference over the periods
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from llm4rec import __version__
from llm4rec.command_options import add_data_options, check_out_dir, check_out_file, data_config_from_args
from llm4rec.errors import Llm4recError


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from llm4rec.data.amazon import AmazonBooksFilters
    from llm4rec.data.store import check_name, dataset_dir, prepare_dataset

    check_name(args.dataset)
    options = {k: getattr(args, k) for k in ("min_user_reviews", "user_fraction", "min_title_interactions", "seed")}
    given = {k: v for k, v in options.items() if v is not None}
    if given and args.dataset != "amazon-books":
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise Llm4recError(f"{flags} apply to amazon-books only, not {args.dataset}")
    filters = AmazonBooksFilters(**given) if args.dataset == "amazon-books" else None
    dataset = prepare_dataset(args.dataset, path=args.path, filters=filters, force=args.force)
    print(
        f"{dataset.name}: {len(dataset.interactions):,} interactions, "
        f"{dataset.interactions['user_id'].nunique():,} users, {len(dataset.items):,} items "
        f"(from {dataset.meta.get('source', '?')}) -> {dataset_dir(dataset.name)}"
    )
    return 0


def dataset_stats(config) -> dict:
    from llm4rec.data.config import load_timeline

    timeline = load_timeline(config)
    interactions, samples = timeline.dataset.interactions, timeline.table
    return {
        "dataset": config.name,
        "n_interactions": len(interactions),
        "n_users": int(interactions["user_id"].nunique()),
        "n_items": int(interactions["item_id"].nunique()),
        "positive_rate": round(float((interactions["rating"] > config.label_threshold).mean()), 4),
        "label": f"rating > {config.label_threshold:g}",
        "history_length": config.history_length,
        "mean_history_length": round(float(samples["history_item_ids"].map(len).mean()), 2),
        "n_in_periods": len(samples),
        "periods": timeline.summary(),
    }


def cmd_data_stats(args: argparse.Namespace) -> int:
    check_out_file(args.plot, "--plot")
    stats = dataset_stats(data_config_from_args(args))
    if args.plot:
        from llm4rec.eval.plots import plot_periods

        plot_periods(stats["periods"], args.plot, title=f"{stats['dataset']}: periods and positive rate")
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(
        f"{stats['dataset']}: {stats['n_interactions']:,} interactions, {stats['n_users']:,} users, "
        f"{stats['n_items']:,} items, positive rate {stats['positive_rate']:.4f} ({stats['label']})"
    )
    print(
        f"{stats['n_in_periods']:,} samples in {len(stats['periods'])} periods; "
        f"mean history length {stats['mean_history_length']} (cap {stats['history_length']})"
    )
    print(f"{'period':>6}  {'start':19}  {'end':19}  {'train':>7}  {'val':>6}  {'pos.rate':>8}")
    for p in stats["periods"]:
        print(
            f"{p['index']:>6}  {p['start']}  {p['end']}  {p['n_train']:>7,}  {p['n_val']:>6,}  "
            f"{p['positive_rate']:>8.4f}"
        )
    return 0


def cmd_popularity(args: argparse.Namespace) -> int:
    from llm4rec.baselines.popularity import ItemPopularity
    from llm4rec.data.config import load_timeline
    from llm4rec.eval.protocol import run_protocol
    from llm4rec.eval.report import markdown_table, with_means, write_run

    check_out_dir(args.out)
    config = data_config_from_args(args)
    timeline = load_timeline(config)
    method = ItemPopularity(smoothing=args.smoothing)
    rows = run_protocol(method, timeline, first_test_period=args.first_test_period, progress=not args.quiet)
    rows = with_means(rows)
    print(markdown_table(rows, ["method", "period", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds"]))
    if args.out:
        write_run(args.out, rows, title=f"Item popularity on {config.name}", plot_title=config.name)
        print(f"results written to {args.out}/results.{{json,csv,md}}, auc_per_period.png and auc_mean.png")
    return 0


# Modules that add their own subcommands: each has ``register(commands)`` taking the subparsers object.
# They keep heavy imports (torch, transformers) inside their command functions so `llm4rec --help` stays fast.
COMMAND_MODULES = (
    "llm4rec.llm.commands",
    "llm4rec.ctr.commands",
    "llm4rec.compare.commands",
    "llm4rec.bench.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm4rec",
        description="Keep LLM-based recommenders up to date as user behaviour drifts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `llm4rec COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"llm4rec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = commands.add_parser("data", help="prepare datasets and show their statistics")
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda _args: data.print_help() or 2)

    prepare = data_commands.add_parser(
        "prepare",
        help="read a dataset into the cache (ML-100K is fetched)",
        description="Read a dataset from its official files into canonical parquet tables under the cache "
        "($LLM4REC_CACHE, default ~/.cache/llm4rec). ml-100k is fetched when --path is not given.",
    )
    prepare.add_argument("dataset", help="ml-100k, ml-1m or amazon-books")
    prepare.add_argument(
        "--path",
        help="local copy: ml-100k.zip or its directory; the ml-1m directory; "
        "the directory holding Books_5.json(.gz) and meta_Books.json(.gz)",
    )
    prepare.add_argument("--force", action="store_true", help="prepare again even if already in the cache")
    amazon = prepare.add_argument_group("amazon-books filters (LSAT defaults)")
    amazon.add_argument("--min-user-reviews", type=int, help="keep users with at least N reviews (default 11)")
    amazon.add_argument("--user-fraction", type=float, help="keep this seeded fraction of users (default 0.2)")
    amazon.add_argument(
        "--min-title-interactions", type=int, help="keep titles with at least N interactions (default 50)"
    )
    amazon.add_argument("--seed", type=int, help="seed of the user sample (default 0)")
    prepare.set_defaults(func=cmd_data_prepare)

    stats = data_commands.add_parser(
        "stats",
        help="sizes, positive rate and periods of a dataset",
        description="Print the dataset's size, positive rate and chronological periods.",
    )
    add_data_options(stats, positional=True)
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument("--plot", metavar="PNG", help="also draw period sizes and positive rates into this PNG file")
    stats.set_defaults(func=cmd_data_stats)

    popularity = commands.add_parser(
        "popularity",
        help="run the item-popularity reference through the period protocol",
        description="Train through period t, test on period t+1, for every period; print the per-period table.",
    )
    add_data_options(popularity, positional=False)
    popularity.add_argument(
        "--smoothing", type=float, default=10.0, help="pseudo-interactions at the prior (default 10)"
    )
    popularity.add_argument("--first-test-period", type=int, default=1, help="first tested period (default 1)")
    popularity.add_argument("--out", help="directory for results.json / results.csv / results.md")
    popularity.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    popularity.set_defaults(func=cmd_popularity)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Llm4recError as error:
        print(f"llm4rec: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llm4rec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
