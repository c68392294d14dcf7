"""Writing results: ``results.json``, ``results.csv`` and ``results.md`` (each written atomically)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from llm4rec.eval.results import COLUMNS, MEAN, ResultRow, mean_rows
from llm4rec.io import write_json, write_text


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _seconds(value: float) -> str:
    return f"{value:.1f}"


def markdown_table(rows: list[ResultRow], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        values = [_seconds(row.seconds) if c == "seconds" else _cell(getattr(row, c)) for c in columns]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def with_means(rows: list[ResultRow]) -> list[ResultRow]:
    """The per-period rows followed by their mean rows (existing mean rows are recomputed)."""
    per_period = [r for r in rows if r.period != MEAN]
    return per_period + mean_rows(per_period)


def format_markdown(rows: list[ResultRow], title: str | None = None) -> str:
    """Mean table ranked by AUC, then one per-period table per method."""
    rows = with_means(rows)
    means = sorted((r for r in rows if r.period == MEAN), key=lambda r: -r.auc if not math.isnan(r.auc) else 0)
    parts = [f"# {title}\n" if title else ""]
    mean_columns = ["method", "split", "seed", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds"]
    parts.append("## Mean over tested periods (ranked by AUC)\n\n" + markdown_table(means, mean_columns) + "\n")
    period_columns = ["period", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds"]
    methods = dict.fromkeys(r.method for r in rows if r.period != MEAN)
    for method in methods:
        own = [r for r in rows if r.method == method and r.period != MEAN]
        parts.append(f"## {method}\n\n" + markdown_table(own, period_columns) + "\n")
    parts.append(
        "AUC, LogLoss: scikit-learn. gAUC: per-user AUC weighted by the user's sample count, "
        "users with one class skipped. auc_warm / auc_cold: test items seen / unseen in periods 0..t.\n"
    )
    return "\n".join(p for p in parts if p)


def write_results(rows: list[ResultRow], out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write the three result files into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    rows = with_means(rows)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "results.csv", "md": out_dir / "results.md"}
    write_json(paths["json"], [r.to_dict() for r in rows])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.to_dict().items()})
    write_text(paths["csv"], buffer.getvalue())
    write_text(paths["md"], format_markdown(rows, title))
    return paths


def read_results(path: str | Path) -> list[ResultRow]:
    """Read rows back from a ``results.json`` file (or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    return [ResultRow.from_dict(d) for d in json.loads(path.read_text(encoding="utf-8"))]
