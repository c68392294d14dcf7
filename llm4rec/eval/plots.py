"""PNG plots of results and of a timeline (matplotlib, headless Agg backend; written atomically)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from llm4rec.eval.results import MEAN, METRIC_COLUMNS, ResultRow, across_seeds  # noqa: E402
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


def _seed_spread(rows: list[ResultRow], metric: str) -> dict[tuple, float]:
    """(method, period) -> the std over seeds of ``metric``, for methods run with more than one seed."""
    return {
        (s.method, s.period): s.std[metric]
        for s in across_seeds(rows)
        if len(s.seeds) > 1 and s.std.get(metric) is not None and not math.isnan(s.std[metric])
    }


def _error_bars(axes, x, y, errors, colour, width: float) -> None:
    """One std over the seeds at each point that has one (methods with a single seed get none)."""
    if any(e is not None for e in errors):
        axes.errorbar(x, y, yerr=[e or 0.0 for e in errors], fmt="none", ecolor=colour, capsize=3, lw=width,
                      alpha=0.8)  # fmt: skip


def _metric_label(metric: str) -> str:
    return "gAUC" if metric == "gauc" else ("LogLoss" if metric == "logloss" else metric.upper())


def plot_metric_per_period(
    rows: list[ResultRow],
    path: str | Path,
    metric: str = "auc",
    title: str = "",
    highlight: dict[str, list[str]] | None = None,
    xlabel: str = "tested period (trained through the period before)",
) -> Path:
    """One line per method: ``metric`` on each tested period (mean over seeds); many methods split into panels.

    ``highlight`` = {"LLM": [...], "CTR": [...]} draws the two kinds in one panel, each in its own style and
    legend (the first kind solid and bold, the second dashed), each point of a method run with several seeds
    with an error bar of one std over the seeds.
    """
    spread = _seed_spread(rows, metric)
    rows = _seed_means(rows)
    methods = list(dict.fromkeys(r.method for r in rows if r.period != MEAN))
    if highlight:
        return _plot_kinds_per_period(rows, methods, highlight, path, metric, title, spread)
    groups = method_groups(methods)
    figure, panels = plt.subplots(
        1, len(groups), figsize=(8 if len(groups) == 1 else 5 * len(groups), 4.5), squeeze=False, sharey=True
    )
    for axes, (group, members) in zip(panels[0], groups.items(), strict=True):
        if len(members) > 10:  # the default cycle repeats after 10 colours
            axes.set_prop_cycle(color=plt.cm.tab20.colors)
        for method in members:
            own = sorted((r for r in rows if r.method == method and r.period != MEAN), key=lambda r: r.period)
            x, y = [r.period for r in own], [getattr(r, metric) for r in own]
            (line,) = axes.plot(x, y, marker="o", label=method)
            _error_bars(axes, x, y, [spread.get((method, period)) for period in x], line.get_color(), 1.0)
        axes.set_xlabel(xlabel)
        if all(isinstance(r.period, int) for r in rows):
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # periods are whole numbers
        axes.set_title(group)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    panels[0][0].set_ylabel(_metric_label(metric))
    figure.suptitle(title or f"{_metric_label(metric)} per period")
    return _save(figure, path)


# Per kind: a line style and a colour family of its own (warm for the first kind, cool for the second), so
# the style says which kind a line is and the colour which method.
_KIND_STYLES = [
    {"linestyle": "-", "linewidth": 2.2, "marker": "o", "markersize": 6},
    {"linestyle": "--", "linewidth": 1.3, "marker": "s", "markersize": 4},
    {"linestyle": ":", "linewidth": 1.3, "marker": "^", "markersize": 4},
]
_KIND_COLOURS = [
    ["#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#9467bd", "#bcbd22", "#7f0000", "#f781bf"],
    ["#1f77b4", "#2ca02c", "#17becf", "#7f7f7f", "#393b79", "#637939", "#6baed6", "#74c476", "#9edae5",
     "#3182bd", "#31a354", "#c7c7c7", "#5254a3", "#8ca252", "#aec7e8", "#98df8a"],
    ["#525252", "#969696", "#252525", "#bdbdbd"],
]  # fmt: skip


def _kind_colours(kind_index: int, n: int) -> list:
    colours = _KIND_COLOURS[kind_index % len(_KIND_COLOURS)]
    return [colours[i % len(colours)] for i in range(n)]


def _plot_kinds_per_period(rows, methods, highlight, path, metric, title, spread=None) -> Path:
    # A kind keeps its style (by its place in ``highlight``) even when another kind has no rows.
    kinds = {kind: (i, [m for m in members if m in methods]) for i, (kind, members) in enumerate(highlight.items())}
    kinds = {kind: (i, members) for kind, (i, members) in kinds.items() if members}
    n_lines = sum(len(m) for _, m in kinds.values())
    figure, axes = plt.subplots(figsize=(11, max(5.0, 0.22 * n_lines + 1.5)))
    handles = []
    for kind, (index, members) in kinds.items():
        style = _KIND_STYLES[index % len(_KIND_STYLES)]
        handles.append(Line2D([], [], linestyle="none", label=kind))  # a heading line in the legend
        for method, colour in zip(members, _kind_colours(index, len(members)), strict=True):
            own = sorted((r for r in rows if r.method == method and r.period != MEAN), key=lambda r: r.period)
            x, y = [r.period for r in own], [getattr(r, metric) for r in own]
            (line,) = axes.plot(x, y, color=colour, label=method, **style)
            errors = [(spread or {}).get((method, period)) for period in x]
            _error_bars(axes, x, y, errors, colour, style["linewidth"] * 0.6)
            handles.append(line)
    # Outside the axes, so no line is hidden; each kind under its own heading.
    legend = axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                         frameon=False, handlelength=3)  # fmt: skip
    for text in legend.get_texts():
        if text.get_text() in kinds:
            text.set_fontweight("bold")
    axes.set_xlabel("tested period (trained through the period before)")
    axes.set_ylabel(_metric_label(metric))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.set_title(title or f"{_metric_label(metric)} per period")
    return _save(figure, path)


def plot_mean_metric(
    rows: list[ResultRow],
    path: str | Path,
    metric: str = "auc",
    title: str = "",
    highlight: dict[str, list[str]] | None = None,
) -> Path:
    """Horizontal bars of each method's mean ``metric`` over the tested periods (and seeds), best on top.

    Where a method ran with several seeds, an error bar shows the standard deviation over seeds (of each seed's
    mean over periods). ``highlight`` = {"LLM": [...], "CTR": [...]} colours the bars by kind.
    """
    summaries = across_seeds([r for r in rows if r.period == MEAN])
    if not summaries:
        raise ValueError("plot_mean_metric needs the mean rows (see llm4rec.eval.report.with_means)")
    reverse = metric != "logloss"  # lower LogLoss is better
    summaries.sort(key=lambda s: s.mean[metric], reverse=not reverse)  # barh draws the first bar at the bottom
    values = [s.mean[metric] for s in summaries]
    errors = [0.0 if math.isnan(s.std[metric]) else s.std[metric] for s in summaries]
    kinds = list(highlight or {})
    kind_of = {m: kind for kind, members in (highlight or {}).items() for m in members}
    palette = ["#dd5a26", "#3b6fb6", "#7f7f7f"]
    colours = [palette[kinds.index(kind_of[s.method]) % 3] if s.method in kind_of else "#4c72b0" for s in summaries]
    shown = {kind_of[s.method] for s in summaries if s.method in kind_of}
    figure, axes = plt.subplots(figsize=(8, 0.3 * len(summaries) + 1.4))
    labels = [s.method + (f" ({len(s.seeds)} seeds)" if len(s.seeds) > 1 else "") for s in summaries]
    axes.barh(labels, values, color=colours)
    for y, (value, error) in enumerate(zip(values, errors, strict=True)):
        if error:  # a single seed has no spread to draw
            axes.errorbar(value, y, xerr=error, fmt="none", ecolor="black", capsize=3, lw=1)
    low = min(v - e for v, e in zip(values, errors, strict=True))
    high = max(v + e for v, e in zip(values, errors, strict=True))
    margin = max((high - low) * 0.15, 0.005)
    axes.set_xlim(low - margin, high + margin * 2.2)  # differences of 0.01 AUC must stay visible; room for labels
    for y, (value, error) in enumerate(zip(values, errors, strict=True)):
        text = f" {value:.4f}" + (f" ± {error:.4f}" if error else "")
        axes.text(value + error, y, text, va="center", fontsize="small")
    seeds_note = " (bars: std over seeds)" if any(errors) else ""
    axes.set_xlabel(f"mean {_metric_label(metric)} over the tested periods{seeds_note}")
    axes.set_title(title or f"mean {_metric_label(metric)}")
    axes.grid(axis="x", alpha=0.3)
    if shown:
        from matplotlib.patches import Patch

        axes.legend(handles=[Patch(color=palette[i % 3], label=k) for i, k in enumerate(kinds) if k in shown],
                    loc="lower right", fontsize="small")  # fmt: skip
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
