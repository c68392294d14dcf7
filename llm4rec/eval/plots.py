"""PNG plots of results and of a timeline (matplotlib, headless Agg backend; written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from llm4rec.eval.report import across_seeds  # noqa: E402
from llm4rec.eval.results import MEAN, METRIC_COLUMNS, ResultRow  # noqa: E402
from llm4rec.io import atomic_path  # noqa: E402


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def method_groups(methods: list[str], max_lines: int = 8) -> dict[str, list[str]]:
    """Methods split into panels when there are more than ``max_lines`` and every name reads ``<Model>-<Method>``
    (``DeepFM-IU``, ``EmbMLP-ASMG-GRU``): one panel per update method when there are no more methods than
    models (7 models x IU / BU3 / FR: three panels), else one per model (2 models x 12 methods: two panels)."""
    if len(methods) <= max_lines or not all("-" in m for m in methods):
        return {"": list(methods)}
    parts = [m.split("-", 1) for m in methods]
    n_models, n_modes = len({model for model, _ in parts}), len({mode for _, mode in parts})
    by_mode = n_modes <= n_models
    groups: dict[str, list[str]] = {}
    for method, (model, mode) in zip(methods, parts, strict=True):
        groups.setdefault(mode if by_mode else model, []).append(method)
    return groups if len(groups) > 1 else {"": list(methods)}


def _seed_means(rows: list[ResultRow]) -> list[ResultRow]:
    """Rows of several seeds as one row per (method, period, split): metrics averaged over the seeds."""
    if len({r.seed for r in rows}) <= 1:
        return rows
    return [
        ResultRow(s.method, s.period, s.split, s.n, seconds=s.mean["seconds"], **{m: s.mean[m] for m in METRIC_COLUMNS})
        for s in across_seeds(rows)
    ]


def _metric_label(metric: str) -> str:
    return "gAUC" if metric == "gauc" else ("LogLoss" if metric == "logloss" else metric.upper())


def plot_metric_per_period(rows: list[ResultRow], path: str | Path, metric: str = "auc", title: str = "") -> Path:
    """One line per method: ``metric`` on each tested period (mean over seeds); many methods split into panels."""
    rows = _seed_means(rows)
    methods = list(dict.fromkeys(r.method for r in rows if r.period != MEAN))
    groups = method_groups(methods)
    figure, panels = plt.subplots(
        1, len(groups), figsize=(8 if len(groups) == 1 else 5 * len(groups), 4.5), squeeze=False, sharey=True
    )
    for axes, (group, members) in zip(panels[0], groups.items(), strict=True):
        if len(members) > 10:  # the default cycle repeats after 10 colours
            axes.set_prop_cycle(color=plt.cm.tab20.colors)
        for method in members:
            own = sorted((r for r in rows if r.method == method and r.period != MEAN), key=lambda r: r.period)
            axes.plot([r.period for r in own], [getattr(r, metric) for r in own], marker="o", label=method)
        axes.set_xlabel("tested period (trained through the period before)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # periods are whole numbers
        axes.set_title(group)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    panels[0][0].set_ylabel(_metric_label(metric))
    figure.suptitle(title or f"{_metric_label(metric)} per period")
    return _save(figure, path)


def plot_mean_metric(rows: list[ResultRow], path: str | Path, metric: str = "auc", title: str = "") -> Path:
    """Horizontal bars of each method's mean ``metric`` over the tested periods (and seeds), best on top."""
    means = [r for r in _seed_means(rows) if r.period == MEAN]
    if not means:
        raise ValueError("plot_mean_metric needs the mean rows (see llm4rec.eval.report.with_means)")
    reverse = metric != "logloss"  # lower LogLoss is better
    means.sort(key=lambda r: getattr(r, metric), reverse=not reverse)  # barh draws the first bar at the bottom
    values = [getattr(r, metric) for r in means]
    figure, axes = plt.subplots(figsize=(7, 0.3 * len(means) + 1.2))
    axes.barh([r.method for r in means], values, color="#4c72b0")
    low, high = min(values), max(values)
    margin = max((high - low) * 0.15, 0.005)
    axes.set_xlim(low - margin, high + margin)  # differences of 0.01 AUC must stay visible
    for y, value in enumerate(values):
        axes.text(value, y, f" {value:.4f}", va="center", fontsize="small")
    axes.set_xlabel(f"mean {_metric_label(metric)} over the tested periods")
    axes.set_title(title or f"mean {_metric_label(metric)}")
    axes.grid(axis="x", alpha=0.3)
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
