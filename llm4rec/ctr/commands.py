"""`llm4rec ctr --config configs/ctr/ml-100k.yaml --out DIR`: the CTR baselines over periods (or the random split)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path


def run_ctr(config, out: str | Path | None = None, progress: bool = True) -> tuple[list, dict]:
    """Run every configured model (x update mode); returns (result rows, training reports by method)."""
    from llm4rec.ctr.updates import CtrUpdateMethod, timeline_features
    from llm4rec.data.config import load_timeline
    from llm4rec.data.store import load_dataset
    from llm4rec.eval.protocol import run_protocol

    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    if config.protocol == "random":
        from llm4rec.ctr.random_split import run_random_split

        rows, reports = run_random_split(load_dataset(config.data.name), config, progress=progress)
        return rows, {name: {"random": r.to_dict()} for name, r in reports.items()}
    timeline = load_timeline(config.data)
    features = timeline_features(timeline, config.data.label_threshold, config.features)
    rows, reports = [], {}
    for model in config.models:
        for mode in config.updates:
            method = CtrUpdateMethod(model, mode, features, config.model, config.train, config.window, config.seed)
            rows += run_protocol(
                method,
                timeline,
                first_test_period=config.first_test_period,
                last_test_period=config.last_test_period,
                seed=config.seed,
                progress=progress,
            )
            reports[method.name] = {str(period): r.to_dict() for period, r in method.reports.items()}
    return rows, reports


def cmd_ctr(args: argparse.Namespace) -> int:
    from llm4rec.config import from_dict, load_yaml
    from llm4rec.ctr.config import CtrConfig
    from llm4rec.eval.report import markdown_table, with_means, write_results
    from llm4rec.io import write_json

    data = load_yaml(args.config)
    for option in ("models", "updates"):
        value = getattr(args, option)
        if value is not None:
            data[option] = [n.strip() for n in value.split(",") if n.strip()]
    config = from_dict(CtrConfig, data, where=str(args.config))
    started = time.perf_counter()
    rows, reports = run_ctr(config, progress=not args.quiet)
    seconds = time.perf_counter() - started
    rows = with_means(rows)
    means = sorted((r for r in rows if r.period == "mean"), key=lambda r: -r.auc)
    print(markdown_table(means, ["method", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds"]))
    print(f"{len(means)} methods in {seconds:.1f} s", file=sys.stderr)
    if args.out:
        from llm4rec.eval.plots import plot_mean_metric, plot_metric_per_period

        out = Path(args.out)
        setting = "random 8:1:1 split" if config.protocol == "random" else "periods"
        paths = write_results(rows, out, title=f"CTR baselines on {config.data.name} ({setting})")
        if config.protocol != "random":  # one split, no periods to draw
            plot_metric_per_period(rows, out / "auc_per_period.png", title=f"{config.data.name}: AUC per period")
        plot_mean_metric(rows, out / "auc_mean.png", title=f"{config.data.name}: mean AUC ({setting})")
        write_json(out / "config.json", dataclasses.asdict(config))
        write_json(out / "training.json", {"seconds": round(seconds, 1), "methods": reports})
        print(
            f"results written to {Path(paths['md']).parent}/results.{{json,csv,md}}, "
            f"{'' if config.protocol == 'random' else 'auc_per_period.png, '}auc_mean.png, "
            "config.json and training.json (epochs and val AUC of every fit)",
            file=sys.stderr,
        )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    ctr = commands.add_parser(
        "ctr",
        help="run the CTR baselines (MF, EmbMLP, WideDeep, DeepFM, DCN, NFM, DIN) over periods",
        description="Pre-train each model on the first K periods, then keep it up to date by incremental update "
        "(IU), batch update on the last w periods (BU-w) and full retraining (FR), testing on period t+1; "
        "or, with `protocol: random`, the static 8:1:1 random-split setting. See docs/ctr.md.",
    )
    ctr.add_argument("--config", required=True, help="a CTR config YAML (see configs/ctr/)")
    ctr.add_argument("--out", help="directory for results.{json,csv,md}, auc_per_period.png, config.json")
    ctr.add_argument("--models", help="comma-separated models, overriding the config (e.g. MF,DIN)")
    ctr.add_argument("--updates", help="comma-separated update modes, overriding the config (IU,BU,FR)")
    ctr.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    ctr.set_defaults(func=cmd_ctr)
