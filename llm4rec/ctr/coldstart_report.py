"""What a cold-start run prints and leaves in ``--out``: AUC and F1 per warm-up round, over seeds.

``results.{json,csv}`` hold the shared schema's rows (``period`` = the round); ``results.md`` and the printed
table give each method's AUC and F1 at every round as mean ± std over the seeds; ``auc_per_round.png`` draws
them, ``config.json`` and ``training.json`` record the run.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from llm4rec.ctr.coldstart import ROUNDS
from llm4rec.eval.results import ResultRow, across_seeds


def _cell(mean: float, std: float) -> str:
    if mean != mean:  # NaN
        return "–"
    return f"{mean:.4f}" if std != std else f"{mean:.4f} ± {std:.4f}"


def rounds_table(rows: list[ResultRow], metric: str) -> str:
    """Markdown: one line per method, one column per round, ``metric`` as mean ± std over seeds."""
    summaries = across_seeds(rows)
    methods = list(dict.fromkeys(s.method for s in summaries))
    cells = {(s.method, s.period): _cell(s.mean[metric], s.std[metric]) for s in summaries}
    seeds = {s.method: len(s.seeds) for s in summaries}
    lines = [f"| method | seeds | {' | '.join(ROUNDS)} |", "|---|---|" + "---|" * len(ROUNDS)]
    for method in methods:
        lines.append(
            f"| {method} | {seeds[method]} | " + " | ".join(cells.get((method, r), "–") for r in ROUNDS) + " |"
        )
    return "\n".join(lines)


def report_markdown(config, rows: list[ResultRow], split: dict) -> str:
    cs = config.coldstart
    sizes = ", ".join(f"{name} {n:,}" for name, n in split.items())
    return "\n\n".join(
        [
            f"# Cold-start warm-up on {config.data.name}",
            f"Old items: more than {cs.old_item_min} interactions; new items: {3 * cs.k + cs.min_test}.."
            f"{cs.old_item_min}; K = {cs.k} samples per new item per round. Sizes: {sizes}.",
            "## AUC on the new items' test samples", rounds_table(rows, "auc"),
            "## F1 (positive when the score is above the mean score)", rounds_table(rows, "f1"),
        ]
    ) + "\n"  # fmt: skip


def print_and_write(config, rows: list[ResultRow], reports: dict, seconds: float, out: str | None) -> int:
    from llm4rec.eval.plots import plot_metric_per_period
    from llm4rec.eval.report import write_rows
    from llm4rec.io import write_json, write_text

    split = (reports if "split" in reports else next(iter(reports.values())))["split"]
    text = report_markdown(config, rows, split)
    print(text)
    print(f"{len({r.method for r in rows})} methods x {len(config.run_seeds)} seed(s) in {seconds:.1f} s",
          file=sys.stderr)  # fmt: skip
    if out:
        out = Path(out)
        write_rows(rows, out)
        write_text(out / "results.md", text)
        plot_metric_per_period(rows, out / "auc_per_round.png", title=f"{config.data.name}: AUC per warm-up round",
                               xlabel="round (cold: before any sample of the new items)")  # fmt: skip
        write_json(out / "config.json", dataclasses.asdict(config))
        write_json(out / "training.json", {"seconds": round(seconds, 1), "runs": reports})
        print(f"results written to {out}/results.{{json,csv,md}}, auc_per_round.png, config.json, training.json",
              file=sys.stderr)  # fmt: skip
    return 0
