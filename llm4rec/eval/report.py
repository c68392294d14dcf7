"""Writing a run's output: results, predictions, plots, config and training record (each file written atomically).

:func:`write_run` is the one writer every runner (``ctr``, ``lsat``, ``train``,
``compare``, ``popularity``, ``fewshot``) calls: ``results.{json,csv,md}``, the
AUC plots, and ``config.json`` / ``training.json`` when given. Predictions have
one schema everywhere (:data:`PREDICTION_COLUMNS`), written by
:func:`write_predictions`.

When rows of several seeds are present, :func:`~llm4rec.eval.results.across_seeds`
aggregates them per (method, period, split) into mean and standard deviation
over the seeds, and the markdown tables show ``mean ± std``; with one seed they
look as before.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.errors import DataError, brief
from llm4rec.eval.results import (
    COLUMNS,
    MEAN,
    OPTIONAL_METRICS,
    PRETRAINED,
    SUMMARY_COLUMNS,
    ResultRow,
    SeedSummary,
    across_seeds,
    compared_periods,
    mean_rows,
)
from llm4rec.io import write_json, write_text

# One row per scored sample, for every runner: who, what, the label, and P(label = 1) as the method scored it.
PREDICTION_COLUMNS = ["user_id", "item_id", "label", "p"]


def with_optional_metrics(columns: list[str], rows: list[ResultRow]) -> list[str]:
    """``columns`` with each of :data:`OPTIONAL_METRICS` (``rmse``: the rating task; ``f1``: the cold-start
    protocol) after ``logloss`` when some row has one."""
    for name in reversed(OPTIONAL_METRICS):
        if name in columns or all(math.isnan(getattr(r, name)) for r in rows):
            continue
        at = columns.index("logloss") + 1 if "logloss" in columns else len(columns)
        columns = [*columns[:at], name, *columns[at:]]
    return columns


def n_seeds(rows: list[ResultRow]) -> int:
    return len({r.seed for r in rows})


def _mean_std_cell(mean: float, std: float, seconds: bool = False) -> str:
    if math.isnan(mean):
        return "–"
    text = f"{mean:.1f}" if seconds else f"{mean:.4f}"
    if math.isnan(std):
        return text
    return f"{text} ± {std:.1f}" if seconds else f"{text} ± {std:.4f}"


def summary_table(summaries: list[SeedSummary], columns: list[str]) -> str:
    """Markdown table of seed summaries: metrics as ``mean ± std`` (just the mean for a single seed)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for summary in summaries:
        values = []
        for column in columns:
            if column in SUMMARY_COLUMNS:
                values.append(_mean_std_cell(summary.mean[column], summary.std[column], column == "seconds"))
            elif column == "seeds":
                values.append(str(len(summary.seeds)))
            else:
                values.append(_cell(getattr(summary, column)))
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def ranked_seed_means(rows: list[ResultRow]) -> list[SeedSummary]:
    """Each method's mean over periods, then mean ± std over seeds, best AUC first."""
    means = across_seeds([r for r in with_means(rows) if r.period == MEAN])
    return sorted(means, key=lambda s: -s.mean["auc"] if not math.isnan(s.mean["auc"]) else 0)


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


def _period_span(periods: list) -> str:
    """``4-9`` for a run of consecutive periods, else ``4, 6, 9``."""
    numbers = sorted(periods)
    if len(numbers) > 1 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(str(p) for p in numbers)


def own_period_means(rows: list[ResultRow]) -> list[ResultRow]:
    """For a method some of whose compared periods another method's model served (ASMG's warm-up and SML's
    first period serve plain IU; ``served_by`` of the per-period rows), its mean over the periods it served
    itself, named ``<method> (periods <span>)``, followed by the serving method's mean over the same periods
    when that method ran too. Every other method: nothing (its mean row already is this)."""
    per_period = [r for r in rows if r.period != MEAN]
    compared = set(compared_periods(per_period))
    methods = {r.method for r in per_period}
    out = []
    for method in dict.fromkeys(r.method for r in per_period):
        own = [r for r in per_period if r.method == method and r.period in compared]
        others = sorted({r.served_by for r in own if r.served_by not in ("", PRETRAINED)})
        periods = sorted({r.period for r in own if r.served_by == ""})
        if not others or not periods:
            continue
        label = f"(periods {_period_span(periods)})"
        for name in [method, *(m for m in others if m in methods)]:
            subset = [r for r in per_period if r.method == name]
            for row in mean_rows(subset, periods):
                row.method = f"{name} {label}"
                out.append(row)
    return out


def compared_note(rows: list[ResultRow]) -> str | None:
    """One line saying which tested periods the means cover, when a period scored by the pre-trained model
    was left out of them; None when the means cover every tested period."""
    tested = sorted({r.period for r in rows if r.period != MEAN})
    compared = compared_periods(rows)
    left = [p for p in tested if p not in compared]
    if not left:
        return None
    return (
        f"Means are over tested periods {_period_span(compared)}: in period {_period_span(left)} every method "
        "scores with the model pre-trained before its first update, so the methods do not differ there "
        "(its rows are in the per-period tables, `served_by: pre-trained`)."
    )


OWN_PERIODS_NOTE = (
    "## Over the periods each method serves itself\n\n"
    "Some methods serve another method's model in some periods (ASMG until its generator has warmed up, SML "
    "in its first incremental period: plain IU; see `served_by` in results.json). Here each of them is "
    "averaged over the periods it served itself, beside the serving method over the same periods.\n\n"
)


def ranked_means(rows: list[ResultRow]) -> list[ResultRow]:
    """The ``mean`` rows among ``rows`` (see :func:`with_means`), best AUC first (NaN last)."""
    means = [r for r in rows if r.period == MEAN]
    return sorted(means, key=lambda r: -r.auc if not math.isnan(r.auc) else math.inf)


def format_markdown(rows: list[ResultRow], title: str | None = None, notes: str | None = None) -> str:
    """Mean table ranked by AUC, then one per-period table per method (mean ± std when several seeds ran).

    ``notes`` (markdown) go between the title and the tables: what ran, on what.
    """
    if n_seeds(rows) > 1:
        return _format_markdown_seeds(rows, title, notes)
    rows = with_means(rows)
    means = ranked_means(rows)
    parts = [f"# {title}\n" if title else "", f"{notes}\n" if notes else ""]
    mean_columns = ["method", "split", "seed", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds"]
    mean_columns = with_optional_metrics(mean_columns, rows)
    note = compared_note(rows)
    parts.append(
        "## Mean over tested periods (ranked by AUC)\n\n"
        + (f"{note}\n\n" if note else "")
        + markdown_table(means, mean_columns)
        + "\n"
    )
    own = own_period_means(rows)
    if own:
        parts.append(OWN_PERIODS_NOTE + markdown_table(own, mean_columns) + "\n")
    period_columns = with_optional_metrics(
        ["period", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds"], rows
    )
    if any(r.served_by for r in rows):
        period_columns.append("served_by")
    methods = dict.fromkeys(r.method for r in rows if r.period != MEAN)
    for method in methods:
        own = [r for r in rows if r.method == method and r.period != MEAN]
        parts.append(f"## {method}\n\n" + markdown_table(own, period_columns) + "\n")
    parts.append(
        "AUC, LogLoss: scikit-learn. gAUC: per-user AUC weighted by the user's sample count, "
        "users with one class skipped. auc_warm / auc_cold: test items seen / unseen in periods 0..t.\n"
    )
    return "\n".join(p for p in parts if p)


def _format_markdown_seeds(rows: list[ResultRow], title: str | None, notes: str | None) -> str:
    seeds = sorted({r.seed for r in rows})
    parts = [f"# {title}\n" if title else "", f"{notes}\n" if notes else ""]
    mean_columns = ["method", "split", "seeds", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds"]
    mean_columns = with_optional_metrics(mean_columns, rows)
    note = compared_note(rows)
    parts.append(
        f"## Mean over tested periods, mean ± std over {len(seeds)} seeds {seeds} (ranked by AUC)\n\n"
        + (f"{note}\n\n" if note else "")
        + summary_table(ranked_seed_means(rows), mean_columns)
        + "\n"
    )
    own = own_period_means(rows)
    if own:
        parts.append(OWN_PERIODS_NOTE + summary_table(across_seeds(own), mean_columns) + "\n")
    period_columns = with_optional_metrics(
        ["period", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds"], rows
    )
    per_period = across_seeds([r for r in rows if r.period != MEAN])
    for method in dict.fromkeys(s.method for s in per_period):
        own = [s for s in per_period if s.method == method]
        parts.append(f"## {method}\n\n" + summary_table(own, period_columns) + "\n")
    parts.append(
        "AUC, LogLoss: scikit-learn. gAUC: per-user AUC weighted by the user's sample count, "
        "users with one class skipped. auc_warm / auc_cold: test items seen / unseen in periods 0..t. "
        "± is the sample standard deviation over seeds; seconds: per seed, summed over periods.\n"
    )
    return "\n".join(p for p in parts if p)


def write_results(
    rows: list[ResultRow], out_dir: str | Path, title: str | None = None, notes: str | None = None
) -> dict[str, Path]:
    """Write the three result files into ``out_dir``; returns their paths."""
    rows = with_means(rows)
    paths = write_rows(rows, out_dir)
    paths["md"] = Path(out_dir) / "results.md"
    write_text(paths["md"], format_markdown(rows, title, notes))
    return paths


def write_rows(rows: list[ResultRow], out_dir: str | Path) -> dict[str, Path]:
    """``results.json`` and ``results.csv`` of ``rows`` as they are (the shared schema, :data:`COLUMNS`)."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "results.csv"}
    write_json(paths["json"], [r.to_dict() for r in rows])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.to_dict().items()})
    write_text(paths["csv"], buffer.getvalue())
    return paths


def read_results(path: str | Path) -> list[ResultRow]:
    """Read rows back from a ``results.json`` file (or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        return [ResultRow.from_dict(d) for d in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError, AttributeError) as error:  # missing, not JSON, not a list of rows
        raise DataError(
            f"{path}: not a results file written by llm4rec ({brief(error)}); run the command that wrote it again"
        ) from None


def prediction_table(samples: pd.DataFrame, p: np.ndarray) -> pd.DataFrame:
    """The predictions of ``samples`` (rows of a timeline table) in the shared schema, :data:`PREDICTION_COLUMNS`."""
    return samples[PREDICTION_COLUMNS[:-1]].reset_index(drop=True).assign(p=np.asarray(p, dtype=np.float64))


def write_predictions(path: str | Path, samples: pd.DataFrame, p: np.ndarray) -> Path:
    """``path`` (CSV): the predictions of ``samples`` in the shared schema."""
    from llm4rec.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        prediction_table(samples, p).to_csv(tmp, index=False)
    return path


def write_run(
    out: str | Path,
    rows: list[ResultRow],
    title: str,
    plot_title: str | None = None,
    notes: str | None = None,
    highlight: dict[str, list[str]] | None = None,
    config: dict | None = None,
    training: dict | None = None,
    plot_periods: bool | None = None,
) -> dict[str, Path]:
    """Everything a run leaves in ``out``: ``results.{json,csv,md}`` (titled ``title``), ``auc_mean.png`` and, with
    more than one tested period (or ``plot_periods``), ``auc_per_period.png`` (titled ``plot_title``, default
    ``title``), and ``config.json`` / ``training.json`` when given. Returns the paths written."""
    from llm4rec.eval.plots import plot_mean_metric, plot_metric_per_period

    out = Path(out)
    paths = write_results(rows, out, title=title, notes=notes)
    rows = with_means(rows)
    plot_title = plot_title or title
    tested = {r.period for r in rows if r.period != MEAN}
    if plot_periods if plot_periods is not None else len(tested) > 1:
        paths["auc_per_period"] = plot_metric_per_period(
            rows, out / "auc_per_period.png", title=f"{plot_title}: AUC per tested period", highlight=highlight
        )
    paths["auc_mean"] = plot_mean_metric(
        rows, out / "auc_mean.png", title=f"{plot_title}: mean AUC over the tested periods", highlight=highlight
    )
    for name, record in (("config", config), ("training", training)):
        if record is not None:
            paths[name] = out / f"{name}.json"
            write_json(paths[name], record)
    return paths
