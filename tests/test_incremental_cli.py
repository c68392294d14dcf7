"""`llm4rec ctr` with incremental methods and several seeds: per-seed rows, mean ± std tables, clear config errors."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from llm4rec.cli import main
from llm4rec.config import load_config
from llm4rec.ctr.config import CtrConfig
from llm4rec.eval.report import format_markdown, summary_table, with_means
from llm4rec.eval.results import ResultRow, across_seeds

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ctr"
TINY = """
data:
  name: ml-100k
  periods: {n_periods: 6}
models: [EmbMLP]
updates: [IU]
pretrain_periods: 2
incremental:
  methods: [SPMF, ReLoop2, ASMG-Linear]
  asmg: {sequence_length: 2}
  reloop2: {n_arrays: 10, n_bits: 4}
features: {history_length: 5}
model: {embedding_dim: 4, mlp: [8, 4]}
train: {epochs: 2, batch_size: 256, learning_rate: 0.01}
seeds: [0, 1]
"""


pytestmark = pytest.mark.usefixtures("restore_threads")  # the command sets torch's thread count


def test_incremental_methods_over_seeds_end_to_end(prepared_quietly, tmp_path, capsys):
    config = tmp_path / "ctr.yaml"
    config.write_text(TINY)
    out = tmp_path / "out"
    assert main(["ctr", "--config", str(config), "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "| seeds |" in printed and " ± " in printed and "| EmbMLP-ASMG-Linear | 2 |" in printed
    rows = json.loads((out / "results.json").read_text())
    methods = {"EmbMLP-IU", "EmbMLP-SPMF", "EmbMLP-ReLoop2", "EmbMLP-ASMG-Linear"}
    assert {(r["method"], r["seed"]) for r in rows} == {(m, s) for m in methods for s in (0, 1)}
    assert sorted({r["period"] for r in rows if r["period"] != "mean"}) == [2, 3, 4, 5]
    # Period 2 is scored by the pre-trained model for every method but ReLoop2; ASMG serves IU until its generator
    # has trained twice (warm_up = k = 2: at fits 3 and 4), so it serves period 5 only.
    served = {(r["method"], r["period"]): r["served_by"] for r in rows if r["seed"] == 0 and r["period"] != "mean"}
    assert served[("EmbMLP-IU", 2)] == served[("EmbMLP-SPMF", 2)] == "pre-trained"
    assert served[("EmbMLP-ReLoop2", 2)] == "" and served[("EmbMLP-IU", 3)] == ""
    assert [served[("EmbMLP-ASMG-Linear", p)] for p in (2, 3, 4, 5)] == ["pre-trained", "EmbMLP-IU", "EmbMLP-IU", ""]
    mean = {(r["method"], r["seed"]): r for r in rows if r["period"] == "mean"}
    per_period = {(r["method"], r["seed"], r["period"]): r for r in rows if r["period"] != "mean"}
    for (method, seed), row in mean.items():  # the means leave out period 2, where the methods do not differ
        assert row["n"] == sum(per_period[(method, seed, p)]["n"] for p in (3, 4, 5))
        assert math.isclose(row["auc"], np.mean([per_period[(method, seed, p)]["auc"] for p in (3, 4, 5)]))
    markdown = (out / "results.md").read_text()
    assert "mean ± std over 2 seeds [0, 1]" in markdown and "## EmbMLP-SPMF" in markdown
    assert "Means are over tested periods 3-5: in period 2 every method scores with the model pre-trained" in markdown
    assert "| EmbMLP-ASMG-Linear (periods 5) | test | 2 |" in markdown and "| EmbMLP-IU (periods 5) |" in markdown
    training = json.loads((out / "training.json").read_text())
    assert set(training["seeds"]) == {"0", "1"}
    assert training["seeds"]["1"]["EmbMLP-SPMF"]["2"]["strategy"]["replayed"] > 0
    assert (out / "auc_per_period.png").is_file() and (out / "auc_mean.png").is_file()


def test_seed_and_method_overrides(prepared_quietly, tmp_path, capsys):
    config = tmp_path / "ctr.yaml"
    config.write_text(TINY)
    args = ["ctr", "--config", str(config), "--updates", "", "--methods", "IncCTR", "--seeds", "3", "-q"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| EmbMLP-IncCTR |" in printed and "EmbMLP-IU" not in printed and "±" not in printed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("  replay: {ratio: 1.5}\n", "incremental.replay.ratio: expected a value in (0, 1], got 1.5"),
        ("  reloop2: {n_bits: 30}\n", "incremental.reloop2.n_bits: L must be in 1..24"),
        ("  asmg: {sequence_length: 4}\n", "incremental.asmg.sequence_length: k = 4 needs k + 1 = 5"),
        ("  methods: [SPMF, Replay]\n", "incremental.methods: unknown method 'Replay'"),
    ],
)
def test_bad_settings_are_one_clear_line(prepared_quietly, tmp_path, capsys, change, message):
    text = TINY.replace("  asmg: {sequence_length: 2}\n", "").replace("  reloop2: {n_arrays: 10, n_bits: 4}\n", "")
    key = change.split(":")[0]
    text = "\n".join(line for line in text.splitlines() if not line.startswith(key + ":")) + "\n"
    text = text.replace("incremental:\n", "incremental:\n" + change)
    config = tmp_path / "ctr.yaml"
    config.write_text(text)
    assert main(["ctr", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm4rec: error:") and message in err and "Traceback" not in err


def test_shipped_incremental_config_loads():
    config = load_config(CtrConfig, CONFIGS / "ml-100k-incremental.yaml")
    assert config.models == ["EmbMLP", "DeepFM"] and config.run_seeds == [0, 1, 2]
    assert len(config.incremental.methods) + len(config.updates) == 12
    rating = load_config(CtrConfig, CONFIGS / "ml-100k-rating.yaml")
    assert rating.train.task == "rating" and rating.incremental.methods == ["Reservoir", "SPMF", "MEGG"]


def result(method, period, seed, auc):
    return ResultRow(method, period, "test", 100, auc, auc, 0.6 + seed / 100, auc, float("nan"), 1.0, seed=seed)


def test_across_seeds_gives_mean_and_sample_std():
    rows = [result("A", p, s, 0.6 + 0.01 * s + 0.001 * p) for s in (0, 1, 2) for p in (1, 2)]
    rows += [result("B", p, 0, 0.7) for p in (1, 2)]
    summaries = {(s.method, s.period): s for s in across_seeds(with_means(rows))}
    per_seed_means = [0.6 + 0.01 * s + 0.0015 for s in (0, 1, 2)]
    mean_a = summaries[("A", "mean")]
    assert mean_a.seeds == [0, 1, 2]
    assert mean_a.mean["auc"] == pytest.approx(np.mean(per_seed_means))
    assert mean_a.std["auc"] == pytest.approx(np.std(per_seed_means, ddof=1))
    assert math.isnan(mean_a.mean["auc_cold"]) and math.isnan(summaries[("B", "mean")].std["auc"])
    table = summary_table([mean_a, summaries[("B", "mean")]], ["method", "seeds", "auc", "auc_cold"])
    assert "| A | 3 | 0.6115 ± 0.0100 | – |" in table and "| B | 1 | 0.7000 | – |" in table
    assert "± 0.0100" in format_markdown(rows) and "± " not in format_markdown(rows[-2:])
