"""PNG plots of results and of a timeline (matplotlib, headless Agg backend; written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from llm4rec.eval.results import MEAN, ResultRow  # noqa: E402
from llm4rec.io import atomic_path  # noqa: E402


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_metric_per_period(rows: list[ResultRow], path: str | Path, metric: str = "auc", title: str = "") -> Path:
    """One line per method: ``metric`` on each tested period."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    methods = dict.fromkeys(r.method for r in rows if r.period != MEAN)
    for method in methods:
        own = sorted((r for r in rows if r.method == method and r.period != MEAN), key=lambda r: r.period)
        axes.plot([r.period for r in own], [getattr(r, metric) for r in own], marker="o", label=method)
    axes.set_xlabel("tested period (trained through the period before)")
    axes.set_ylabel(metric.upper() if metric != "gauc" else "gAUC")
    axes.set_title(title or f"{metric.upper()} per period")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    return _save(figure, path)


def plot_periods(summary: list[dict], path: str | Path, title: str = "") -> Path:
    """Train / val sizes per period (bars) and the positive rate (line): what drifts, and how much."""
    figure, counts = plt.subplots(figsize=(8, 4.5))
    index = [p["index"] for p in summary]
    train = [p["n_train"] for p in summary]
    counts.bar(index, train, color="#4c72b0", label="train")
    counts.bar(index, [p["n_val"] for p in summary], bottom=train, color="#dd8452", label="val")
    counts.set_xlabel("period")
    counts.set_ylabel("samples")
    rate = counts.twinx()
    rate.plot(index, [p["positive_rate"] for p in summary], color="black", marker="o", label="positive rate")
    rate.set_ylabel("positive rate")
    rate.set_ylim(0, 1)
    handles = counts.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
    counts.legend(handles, [h.get_label() for h in handles], loc="lower right", fontsize="small")
    counts.set_title(title or "periods")
    return _save(figure, path)
