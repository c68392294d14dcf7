"""Result plots: valid PNGs, many methods split into panels by update mode."""

from __future__ import annotations

import matplotlib.image
import pytest

from llm4rec.eval.plots import _seed_means, method_groups, plot_mean_metric, plot_metric_per_period
from llm4rec.eval.report import with_means
from llm4rec.eval.results import ResultRow


def rows(methods: list[str]) -> list[ResultRow]:
    out = []
    for k, method in enumerate(methods):
        for period in (1, 2, 3):
            auc = 0.6 + 0.01 * k + 0.001 * period
            out.append(ResultRow(method, period, "test", 100, auc, auc, 0.6, auc, float("nan"), 1.0))
    return with_means(out)


def test_few_methods_share_one_panel_many_split_by_update_mode():
    assert method_groups(["A", "B-IU"]) == {"": ["A", "B-IU"]}
    many = [f"{m}-{u}" for m in ("MF", "DIN", "DCN") for u in ("IU", "BU3", "FR")]
    groups = method_groups(many)
    assert list(groups) == ["IU", "BU3", "FR"] and groups["FR"] == ["MF-FR", "DIN-FR", "DCN-FR"]
    assert method_groups([f"M{k}" for k in range(12)]) == {"": [f"M{k}" for k in range(12)]}  # no mode suffix


def test_plots_are_png_files(tmp_path):
    many = [f"{m}-{u}" for m in ("MF", "DIN", "DCN") for u in ("IU", "BU3", "FR")]
    lines = plot_metric_per_period(rows(many), tmp_path / "per_period.png")
    bars = plot_mean_metric(rows(many), tmp_path / "mean.png", metric="logloss")
    for path in (lines, bars):
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    wide = matplotlib.image.imread(lines).shape[1]
    narrow = matplotlib.image.imread(plot_metric_per_period(rows(["A", "B"]), tmp_path / "one.png")).shape[1]
    assert wide > 1.5 * narrow  # three panels side by side


def test_mean_plot_needs_mean_rows(tmp_path):
    plain = [r for r in rows(["A"]) if r.period != "mean"]
    with pytest.raises(ValueError, match="mean rows"):
        plot_mean_metric(plain, tmp_path / "x.png")


def test_many_methods_of_few_models_split_by_model_and_seeds_are_averaged(tmp_path):
    modes = ("IU", "BU3", "FR", "SPMF", "ASMG-GRU", "IncCTR+ReLoop2")
    methods = [f"{m}-{u}" for m in ("EmbMLP", "DeepFM") for u in modes]
    groups = method_groups(methods)
    assert list(groups) == ["EmbMLP", "DeepFM"] and groups["DeepFM"][4] == "DeepFM-ASMG-GRU"
    seeded = [
        ResultRow(
            r.method,
            r.period,
            r.split,
            r.n,
            r.auc + 0.01 * s,
            r.gauc,
            r.logloss,
            r.auc_warm,
            r.auc_cold,
            r.seconds,
            seed=s,
        )
        for s in (0, 1)
        for r in rows(["A", "B"])
    ]
    averaged = _seed_means(seeded)
    assert len(averaged) == len(rows(["A", "B"]))  # one row per (method, period), not per seed
    assert averaged[0].auc == pytest.approx(seeded[0].auc + 0.005)
    plot_mean_metric(seeded, tmp_path / "mean.png")


def test_per_period_points_of_several_seeds_get_one_std_error_bars(tmp_path, monkeypatch):
    """A method run with 2 seeds gets an error bar of its seed std at each period (numpy's std of the two
    AUCs, as the tables give); a one-seed method gets none; the plot is still a PNG."""
    import numpy as np
    from matplotlib.axes import Axes

    from llm4rec.eval.plots import _seed_spread

    two_seeds = []
    for seed, shift in ((0, 0.0), (1, 0.04)):
        for period in (8, 9):
            auc = 0.55 + shift + 0.01 * period
            two_seeds.append(ResultRow("LLM-FT", period, "test", 100, auc, auc, 0.6, auc, float("nan"), 1.0,
                                       seed=seed))  # fmt: skip
    one_seed = [ResultRow("Popularity", p, "test", 100, 0.68, 0.68, 0.6, 0.68, float("nan"), 0.1) for p in (8, 9)]
    all_rows = with_means(two_seeds + one_seed)
    spread = _seed_spread(all_rows, "auc")
    assert spread[("LLM-FT", 8)] == pytest.approx(np.std([0.63, 0.67], ddof=1))
    assert not any(method == "Popularity" for method, _ in spread)
    drawn = []
    original = Axes.errorbar
    monkeypatch.setattr(Axes, "errorbar", lambda self, x, y, **kw: drawn.append((list(x), kw["yerr"])) or
                        original(self, x, y, **kw))  # fmt: skip
    path = plot_metric_per_period(all_rows, tmp_path / "p.png", highlight={"LLM": ["LLM-FT"], "ref": ["Popularity"]})
    assert drawn == [([8, 9], [pytest.approx(spread[("LLM-FT", 8)])] * 2)]
    assert matplotlib.image.imread(path).ndim == 3
