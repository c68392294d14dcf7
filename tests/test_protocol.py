import json
import math

import numpy as np
import pandas as pd
import pytest

from llm4rec.baselines.popularity import ItemPopularity
from llm4rec.data.periods import PeriodConfig, build_timeline
from llm4rec.errors import ConfigError, Llm4recError
from llm4rec.eval import metrics
from llm4rec.eval.protocol import run_protocol
from llm4rec.eval.report import read_results, with_means, write_results
from llm4rec.eval.results import COLUMNS, MEAN
from tests.conftest import synthetic_dataset


@pytest.fixture(scope="module")
def timeline():
    return build_timeline(synthetic_dataset(n=3000), PeriodConfig(n_periods=5))


class Recorder:
    """Remembers what it was trained and tested on; predicts a fixed per-item score."""

    name = "Recorder"

    def __init__(self):
        self.fitted, self.tested = [], []

    def fit(self, timeline, period):
        self.fitted.append(period)

    def predict_proba(self, samples):
        self.tested.append(int(samples["period"].iloc[0]))
        return (samples["item_id"].astype(int).to_numpy() % 7) / 7


def test_trains_on_t_tests_on_t_plus_1(timeline):
    method = Recorder()
    rows = run_protocol(method, timeline, progress=False)
    assert method.fitted == [0, 1, 2, 3]
    assert method.tested == [1, 2, 3, 4]
    assert [r.period for r in rows] == [1, 2, 3, 4]
    for row in rows:
        part = timeline.period(row.period)
        assert row.n == len(part)
        p = (part["item_id"].astype(int).to_numpy() % 7) / 7
        assert row.auc == pytest.approx(metrics.auc(part["label"], p))
        assert row.gauc == pytest.approx(metrics.gauc(part["label"], p, part["user_id"]))
        warm = part["item_id"].isin(timeline.seen_items(row.period - 1)).to_numpy()
        y = part["label"].to_numpy()
        if len(np.unique(y[warm])) == 2:
            assert row.auc_warm == pytest.approx(metrics.auc(y[warm], p[warm]))


def test_first_and_last_tested_period(timeline):
    method = Recorder()
    rows = run_protocol(method, timeline, first_test_period=2, last_test_period=3, progress=False)
    assert [r.period for r in rows] == [2, 3] and method.fitted == [1, 2]
    with pytest.raises(ConfigError, match="out of range"):
        run_protocol(Recorder(), timeline, first_test_period=0, progress=False)
    with pytest.raises(ConfigError, match="out of range"):
        run_protocol(Recorder(), timeline, last_test_period=5, progress=False)


def test_bad_predictions_are_rejected(timeline):
    class Broken(Recorder):
        name = "Broken"

        def predict_proba(self, samples):
            return np.full(len(samples) - 1, 0.5)

    with pytest.raises(Llm4recError, match="Broken: predict_proba returned"):
        run_protocol(Broken(), timeline, progress=False)

    class OutOfRange(Recorder):
        name = "OutOfRange"

        def predict_proba(self, samples):
            return np.full(len(samples), 1.5)

    with pytest.raises(Llm4recError, match="probabilities in"):
        run_protocol(OutOfRange(), timeline, progress=False)


def test_popularity_hand_computed(timeline):
    method = ItemPopularity(smoothing=2.0)
    method.fit(timeline, 1)
    seen = timeline.through(1)
    prior = seen["label"].mean()
    item = seen["item_id"].iloc[0]
    own = seen[seen["item_id"] == item]["label"]
    expected = (own.sum() + 2.0 * prior) / (len(own) + 2.0)
    samples = pd.DataFrame({"item_id": [item, "never-seen"]})
    assert method.predict_proba(samples) == pytest.approx([expected, prior])


def test_popularity_learns_planted_item_quality(timeline):
    rows = run_protocol(ItemPopularity(), timeline, progress=False)
    assert all(r.auc > 0.65 for r in rows)  # synthetic ratings depend on item quality
    assert all(math.isnan(r.auc_cold) or r.auc_cold == 0.5 for r in rows)  # unseen items all get the prior


def test_results_files_round_trip(timeline, tmp_path):
    rows = run_protocol(ItemPopularity(), timeline, progress=False)
    paths = write_results(rows, tmp_path / "out", title="test")
    data = json.loads(paths["json"].read_text())
    assert list(data[0]) == COLUMNS
    assert [d["period"] for d in data] == [1, 2, 3, 4, MEAN]
    mean = data[-1]
    assert mean["auc"] == pytest.approx(np.mean([r.auc for r in rows]))
    assert mean["n"] == sum(r.n for r in rows)
    csv = pd.read_csv(paths["csv"])
    assert csv.columns.tolist() == COLUMNS and len(csv) == 5
    text = paths["md"].read_text()
    assert "| Popularity | test | 0 |" in text and "gAUC" in text
    again = read_results(tmp_path / "out")
    assert [r.to_dict() for r in with_means(again)] == [r.to_dict() for r in with_means(rows)]
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left


def test_means_leave_out_periods_served_by_the_pre_trained_model():
    from llm4rec.eval.report import format_markdown, own_period_means, with_means
    from llm4rec.eval.results import PRETRAINED, ResultRow

    def row(method, period, auc, served_by="", seed=0):
        return ResultRow(method, period, "test", 10, auc, auc, 0.5, auc, float("nan"), 1.0, seed, served_by)

    rows = [
        row("M-IU", 3, 0.60, PRETRAINED), row("M-IU", 4, 0.70), row("M-IU", 5, 0.80), row("M-IU", 6, 0.90),
        row("M-ASMG", 3, 0.60, PRETRAINED), row("M-ASMG", 4, 0.70, "M-IU"), row("M-ASMG", 5, 0.85),
        row("M-ASMG", 6, 0.95), row("Popularity", 3, 0.50), row("Popularity", 4, 0.50), row("Popularity", 5, 0.50),
        row("Popularity", 6, 0.70),
    ]  # fmt: skip
    means = {r.method: r for r in with_means(rows) if r.period == "mean"}
    assert means["M-IU"].auc == pytest.approx(0.80) and means["M-IU"].n == 30  # periods 4-6 only
    assert means["M-ASMG"].auc == pytest.approx((0.70 + 0.85 + 0.95) / 3)
    assert means["Popularity"].auc == pytest.approx(0.5667, abs=1e-4)  # the same periods for everyone
    assert means["M-IU"].seconds == 4.0  # the cost stays the whole run's
    own = {r.method: r.auc for r in own_period_means(rows)}
    assert own == pytest.approx({"M-ASMG (periods 5-6)": 0.90, "M-IU (periods 5-6)": 0.85})
    markdown = format_markdown(rows)
    assert "Means are over tested periods 4-6: in period 3 every method" in markdown
    assert "| M-ASMG (periods 5-6) |" in markdown and "| 4 | 10 | 0.7000 |" in markdown
    # No pre-trained period: every tested period counts, and nothing is said.
    plain = [r for r in rows if r.period != 3]
    assert {r.method: r.n for r in with_means(plain) if r.period == "mean"}["M-IU"] == 30
    assert "Means are over" not in format_markdown([r for r in plain if r.method != "M-ASMG"])
