"""`llm4rec ctr --config configs/ctr/ml-100k.yaml --out DIR`: the CTR baselines over periods (or the random split),
with the incremental-learning methods of ``incremental.methods`` beside IU / BU / FR, for every seed."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path


def period_methods(config, features, seed: int) -> list:
    """Every configured method for one seed: each model x (update modes, then incremental methods)."""
    from llm4rec.ctr.catalogue import build_method

    return [
        build_method(name, model, features, config, seed)
        for model in config.models
        for name in [*config.updates, *config.incremental.methods]
    ]


def _training_report(method) -> dict:
    """Per fitted period: what the base training did, plus what the strategy's own training did."""
    extra = getattr(method, "extra_reports", {})
    return {
        str(period): {**report.to_dict(), **({"strategy": extra[period]} if period in extra else {})}
        for period, report in method.reports.items()
    }


def run_ctr(config, out: str | Path | None = None, progress: bool = True) -> tuple[list, dict]:
    """Run every configured method for every seed; returns (result rows, training reports).

    Reports are ``{method: {period: report}}`` for one seed, ``{seed: {method: {period: report}}}`` for several.
    """
    from llm4rec.ctr.updates import timeline_features
    from llm4rec.data.config import load_timeline
    from llm4rec.data.store import load_dataset
    from llm4rec.eval.protocol import run_protocol

    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    if config.protocol == "coldstart":
        from llm4rec.ctr.coldstart import run_coldstart

        dataset, rows, reports = load_dataset(config.data.name), [], {}
        for seed in config.run_seeds:  # each seed: its own initialisation and batch order (the split is fixed)
            seed_rows, reports[seed] = run_coldstart(dataset, config, seed=seed, progress=progress)
            rows += seed_rows
        return rows, (next(iter(reports.values())) if len(reports) == 1 else {str(s): r for s, r in reports.items()})
    if config.protocol == "random":
        from llm4rec.ctr.random_split import run_random_split

        dataset, rows, reports = load_dataset(config.data.name), [], {}
        for seed in config.run_seeds:  # each seed: its own shuffle and split, and its own initialisation
            seed_rows, seed_reports = run_random_split(dataset, config, seed=seed, progress=progress)
            rows += seed_rows
            reports[seed] = {name: {"random": r.to_dict()} for name, r in seed_reports.items()}
        if len(reports) == 1:
            return rows, next(iter(reports.values()))
        return rows, {str(seed): by_method for seed, by_method in reports.items()}
    timeline = load_timeline(config.data)
    features = timeline_features(timeline, config.data.label_threshold, config.features)
    rows, reports = [], {}
    for seed in config.run_seeds:
        reports[seed] = {}
        for method in period_methods(config, features, seed):
            rows += run_protocol(
                method,
                timeline,
                first_test_period=config.first_test_period,
                last_test_period=config.last_test_period,
                seed=seed,
                progress=progress,
            )
            reports[seed][method.name] = _training_report(method)
    if len(reports) == 1:
        return rows, next(iter(reports.values()))
    return rows, {str(seed): by_method for seed, by_method in reports.items()}


def cmd_ctr(args: argparse.Namespace) -> int:
    from llm4rec.command_options import check_out_dir, comma_list, parse_seeds
    from llm4rec.config import from_dict, load_yaml
    from llm4rec.ctr.config import CtrConfig
    from llm4rec.devices import check_device
    from llm4rec.run_lock import RunLock

    check_out_dir(args.out)  # before anything trains: the results are written at the end
    data = load_yaml(args.config)
    if args.device is not None:
        check_device(args.device, "--device")
        data["device"] = args.device
    for option in ("models", "updates"):
        value = getattr(args, option)
        if value is not None:
            data[option] = comma_list(value)
    if args.methods is not None:
        incremental = data.get("incremental")
        data["incremental"] = {
            **(incremental if isinstance(incremental, dict) else {}),
            "methods": comma_list(args.methods),
        }
    if args.seeds is not None:
        data["seeds"] = parse_seeds(args.seeds)
    config = from_dict(CtrConfig, data, where=str(args.config))
    with contextlib.ExitStack() as stack:
        if args.out:  # one run writes into a directory at a time
            stack.enter_context(RunLock(args.out, "llm4rec ctr"))
        return _run_and_write(args, config)


def _run_and_write(args: argparse.Namespace, config) -> int:
    from llm4rec.eval.report import (
        markdown_table,
        n_seeds,
        ranked_means,
        ranked_seed_means,
        summary_table,
        with_means,
        with_optional_metrics,
        write_run,
    )

    started = time.perf_counter()
    rows, reports = run_ctr(config, progress=not args.quiet)
    seconds = time.perf_counter() - started
    if config.protocol == "coldstart":
        from llm4rec.ctr.coldstart_report import print_and_write

        return print_and_write(config, rows, reports, seconds, args.out)
    rows = with_means(rows)
    columns = with_optional_metrics(["method", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds"], rows)
    if n_seeds(rows) > 1:
        means = ranked_seed_means(rows)
        print(summary_table(means, [columns[0], "seeds", *columns[1:]]))
    else:
        means = ranked_means(rows)
        print(markdown_table(means, columns))
    from llm4rec.devices import resolve_device

    device = resolve_device(config.device, "device")
    print(f"{len(means)} methods x {len(config.run_seeds)} seed(s) in {seconds:.1f} s on {device}", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        setting = "random 8:1:1 split" if config.protocol == "random" else "periods"
        what = "CTR methods" if config.incremental.methods else "CTR baselines"
        by = "seeds" if len(config.run_seeds) > 1 else "methods"  # {seed: {method: ...}} or {method: ...}
        write_run(
            out, rows, title=f"{what} on {config.data.name} ({setting})", plot_title=f"{config.data.name} ({setting})",
            config=dataclasses.asdict(config), training={"seconds": round(seconds, 1), by: reports},
            plot_periods=config.protocol != "random",  # one split, no periods to draw
        )  # fmt: skip
        print(
            f"results written to {out}/results.{{json,csv,md}}, "
            f"{'' if config.protocol == 'random' else 'auc_per_period.png, '}auc_mean.png, "
            "config.json and training.json (epochs and val AUC of every fit)",
            file=sys.stderr,
        )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from llm4rec.ctr.catalogue import STRATEGIES, UPDATE_MODES, method_names

    updates, strategies = ", ".join(UPDATE_MODES), ", ".join([*STRATEGIES, "ReLoop2"])
    ctr = commands.add_parser(
        "ctr",
        help="run the CTR baselines (MF, EmbMLP, WideDeep, DeepFM, DCN, NFM, DIN) and incremental methods over periods",
        description="Pre-train each model on the first K periods, then keep it up to date by incremental update "
        "(IU), batch update on the last w periods (BU-w) and full retraining (FR), testing on period t+1, and by "
        f"the incremental-learning methods named in `incremental.methods` ({strategies}, or <base>+ReLoop2); or, "
        "with `protocol: random`, the static 8:1:1 random-split setting. `llm4rec methods` lists every method. "
        "See docs/ctr.md and docs/incremental.md.",
    )
    ctr.add_argument("--config", required=True, help="a CTR config YAML (see configs/ctr/)")
    ctr.add_argument("--out", help="directory for results.{json,csv,md}, auc_per_period.png, config.json")
    ctr.add_argument("--models", help="comma-separated models, overriding the config (e.g. MF,DIN)")
    ctr.add_argument("--updates", help=f"comma-separated update modes, overriding the config ({updates}; '' for none)")
    ctr.add_argument(
        "--methods",
        help="comma-separated incremental methods, overriding incremental.methods (one of "
        f"{', '.join(m for m in method_names(windowed=False) if m not in UPDATE_MODES)})",
    )
    ctr.add_argument("--seeds", help="comma-separated seeds, overriding seed / seeds (e.g. 0,1,2)")
    ctr.add_argument(
        "--device",
        help="where models train and score: auto (CUDA when available, else cpu), cpu, cuda or cuda:N; "
        "overrides the config's `device` (default auto)",
    )
    ctr.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    ctr.set_defaults(func=cmd_ctr)
