"""`llm4rec ctr`: both protocols end to end on a small local ML-100K copy, the shipped configs, clear errors."""

import json
from pathlib import Path

import pytest

from llm4rec.cli import main
from llm4rec.config import load_config
from llm4rec.ctr.config import CtrConfig
from llm4rec.eval.results import COLUMNS

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ctr"
TINY = """
data:
  name: ml-100k
  periods: {n_periods: 5}
protocol: PROTOCOL
models: [MF, DIN]
pretrain_periods: 2
features: {history_length: 5}
model: {embedding_dim: 4, mlp: [8], attention_mlp: [4]}
train: {epochs: 2, batch_size: 256, learning_rate: 0.01}
"""


pytestmark = pytest.mark.usefixtures("restore_threads")  # the command sets torch's thread count


def test_periods_end_to_end(prepared_quietly, tmp_path, capsys):
    config = tmp_path / "ctr.yaml"
    config.write_text(TINY.replace("PROTOCOL", "periods"))
    out = tmp_path / "out"
    assert main(["ctr", "--config", str(config), "--out", str(out), "-q"]) == 0
    assert "| MF-BU3 |" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {
        "results.json",
        "results.csv",
        "results.md",
        "auc_per_period.png",
        "auc_mean.png",
        "config.json",
        "training.json",
    }
    rows = json.loads((out / "results.json").read_text())
    assert list(rows[0]) == COLUMNS
    methods = {f"{m}-{u}" for m in ("MF", "DIN") for u in ("IU", "BU3", "FR")}
    assert {r["method"] for r in rows} == methods
    assert sorted({r["period"] for r in rows if r["period"] != "mean"}) == [2, 3, 4]
    assert all(0 <= r["auc"] <= 1 for r in rows)
    training = json.loads((out / "training.json").read_text())["methods"]
    assert set(training["DIN-FR"]) == {"1", "2", "3"}  # fitted through periods 1..3, tested 2..4


def test_random_split_and_overrides(prepared_quietly, tmp_path, capsys):
    config = tmp_path / "ctr.yaml"
    config.write_text(TINY.replace("PROTOCOL", "random"))
    out = tmp_path / "out"
    assert main(["ctr", "--config", str(config), "--out", str(out), "--models", "DeepFM", "--device", "cpu", "-q"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["period"], r["split"]) for r in rows] == [
        ("DeepFM", "random", "test"),
        ("DeepFM", "mean", "test"),
    ]
    # rating 3 dropped, then 10% of the rest tested
    assert rows[0]["n"] < 2400 * 0.1
    assert "| DeepFM |" in capsys.readouterr().out
    assert (out / "auc_mean.png").is_file() and not (out / "auc_per_period.png").exists()  # no periods to draw
    # Several seeds: one split (and one initialisation) per seed, seed 0's the same as alone.
    seeded = tmp_path / "seeds"
    assert (
        main(["ctr", "--config", str(config), "--out", str(seeded), "--models", "DeepFM", "--seeds", "0,1", "-q"]) == 0
    )
    by_seed = {r["seed"]: r for r in json.loads((seeded / "results.json").read_text()) if r["period"] == "random"}
    assert sorted(by_seed) == [0, 1] and by_seed[0]["auc"] == rows[0]["auc"] and by_seed[1]["auc"] != rows[0]["auc"]
    assert "mean ± std over 2 seeds" in (seeded / "results.md").read_text()


@pytest.mark.parametrize("name", ["ml-100k.yaml", "ml-100k-random-split.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CtrConfig, CONFIGS / name)
    assert config.models == ["MF", "EmbMLP", "WideDeep", "DeepFM", "DCN", "NFM", "DIN"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--models", "MF,XGBoost"], "unknown model 'XGBoost'; available models"),
        (["--updates", "IU,online"], "updates: expected a non-empty list drawn from"),
    ],
)
def test_errors_are_one_clear_line(prepared_quietly, tmp_path, capsys, extra, message):
    config = tmp_path / "ctr.yaml"
    config.write_text(TINY.replace("PROTOCOL", "periods"))
    assert main(["ctr", "--config", str(config), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm4rec: error:") and message in err and "Traceback" not in err


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ctr", "--help"])
    assert exit_info.value.code == 0 and "BU-w" in capsys.readouterr().out


def test_registering_the_command_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, llm4rec.cli; llm4rec.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
