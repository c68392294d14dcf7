"""End to end through the command line: backbone build -> train (also via accelerate launch) -> predict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from llm4rec.cli import main
from llm4rec.eval.report import PREDICTION_COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def write_run_config(path: Path, backbone: Path, out: Path) -> Path:
    path.write_text(
        f"""
backbone:
  model_name_or_path: {backbone}
data: ml-100k
cutoff: 120  # below most prompts' length: their oldest titles go
train_periods: [1]
lora: {{r: 4, alpha: 8}}
train:
  epochs: 1
  batch_size: 8
  max_train_samples: 48
  max_val_samples: 24
  learning_rate: 0.005
  eval_at_start: false  # keep the trained adapter even where the base scores val better
out: {out}
"""
    )
    return path


def test_build_train_predict(prepared, tmp_path, capsys):
    backbone = tmp_path / "backbone"
    args = [
        "backbone",
        "build",
        "--dataset",
        "ml-100k",
        "--out",
        str(backbone),
        "--periods",
        "0",
        "--max-samples",
        "80",
    ]
    assert main([*args, "-q"]) == 0
    meta = json.loads((backbone / "llm4rec.json").read_text())
    assert meta["periods"] == [0] and meta["n_texts"] == 80 and set(meta["answer_token_ids"]) == {"yes", "no"}
    assert "scratch-llama-tiny" in capsys.readouterr().out

    out = tmp_path / "run"
    config = write_run_config(tmp_path / "lora.yaml", backbone, out)
    assert main(["train", "--config", str(config), "-q"]) == 0
    summary = json.loads((out / "training.json").read_text())
    assert summary["train_periods"] == [1] and summary["test_period"] == 2 and summary["n_train"] == 48
    assert summary["steps"] == 6  # 48 samples, batch 8, one process
    adapter_meta = json.loads((out / "adapter" / "llm4rec.json").read_text())
    assert adapter_meta["periods"] == [1] and adapter_meta["base_model"] == str(backbone)
    assert adapter_meta["cutoff"] == 120
    trained = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(trained.columns) == PREDICTION_COLUMNS  # the one predictions schema of every runner

    predictions = tmp_path / "preds.csv"
    argv = ["predict", "--model", str(backbone), "--adapter", str(out / "adapter"), "--dataset", "ml-100k"]
    assert main([*argv, "--period", "2", "--out", str(predictions), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "AUC" in printed and "gAUC" in printed and "LogLoss" in printed
    scored = pd.read_csv(predictions, keep_default_na=False)
    assert len(scored) == len(trained)
    pd.testing.assert_series_equal(scored["p"], trained["p"], atol=1e-6, rtol=0)  # same adapter, same scores
    # predict took the adapter's cutoff: the default prompt limit would have scored longer prompts
    uncut = tmp_path / "uncut.csv"
    assert main([*argv, "--period", "2", "--out", str(uncut), "--cutoff", "512", "-q"]) == 0
    assert (pd.read_csv(uncut)["p"] - scored["p"]).abs().max() > 1e-6

    # The base model alone scores differently from base + adapter.
    base_only = tmp_path / "base.csv"
    assert main(["predict", "--model", str(backbone), "--period", "2", "--out", str(base_only), "-q"]) == 0
    assert (pd.read_csv(base_only)["p"] - scored["p"]).abs().max() > 1e-6

    # accelerate launch runs the same training and gets the same adapter.
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not on PATH")
    launched = tmp_path / "launched"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        "accelerate",
        "launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
    ]
    command += ["--dynamo_backend", "no", str(ROOT / "scripts" / "train_lsat.py"), "train", "--config", str(config)]
    done = subprocess.run([*command, "--out", str(launched), "-q"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    relaunched = pd.read_csv(launched / "predictions.csv", keep_default_na=False)
    pd.testing.assert_series_equal(relaunched["p"], trained["p"], atol=1e-5, rtol=0)


def test_predict_refuses_template_with_adapter(prepared, tmp_path, capsys):
    code = main(["predict", "--model", "x", "--adapter", "y", "--template", "movie", "--period", "1", "--out", "z.csv"])
    assert code == 2
    assert "--template" in capsys.readouterr().err


def test_unknown_preset_is_a_clear_error(prepared, tmp_path, capsys):
    assert main(["backbone", "build", "--preset", "gpt-5", "--out", str(tmp_path / "b")]) == 2
    assert "scratch-llama-tiny" in capsys.readouterr().err


def test_run_config_rejects_test_period_before_training(tmp_path):
    from llm4rec.config import load_config
    from llm4rec.errors import ConfigError
    from llm4rec.llm.run import LoraRunConfig

    path = tmp_path / "c.yaml"
    path.write_text("backbone: {model_name_or_path: b}\ntrain_periods: [3]\ntest_period: 2\n")
    with pytest.raises(ConfigError, match="must come after"):
        load_config(LoraRunConfig, path)
    path.write_text("backbone: {model_name_or_path: b}\ntrain: {epoch: 2}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\]"):
        load_config(LoraRunConfig, path)


def test_help_lists_llm_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "backbone" in text and "predict" in text and "train" in text


def test_two_processes_split_the_batches(prepared, tmp_path):
    """Data-parallel training (DDP over gloo on CPU): each of 2 processes takes every other batch."""
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    backbone = tmp_path / "backbone"
    assert main(["backbone", "build", "--out", str(backbone), "--periods", "0", "--max-samples", "40", "-q"]) == 0
    config = write_run_config(tmp_path / "lora.yaml", backbone, tmp_path / "run")
    config.write_text(config.read_text().replace("  epochs: 1\n", "  epochs: 1\n  eval_every: 1\n"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    command = [
        "torchrun",
        "--nproc_per_node",
        "2",
        str(ROOT / "scripts" / "train_lsat.py"),
        "train",
        "--config",
        str(config),
    ]
    done = subprocess.run([*command, "-q"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "training.json").read_text())
    assert summary["steps"] == 3  # 48 samples, batch 8 per process, 2 processes (one process: 6 steps)
    # The learning-rate schedule spans the 3 steps (accelerate advances it once per process and step):
    # 1 warmup step of 6 scheduler steps, then linear decay; after step 1, 4/5 of the peak.
    rates = [h["learning_rate"] for h in summary["history"]]
    assert rates == pytest.approx([0.005 * 4 / 5, 0.005 * 2 / 5, 0.0])
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
