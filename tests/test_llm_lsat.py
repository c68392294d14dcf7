"""LSAT over periods: the runner end to end, adapters that reload and reproduce the run, FT's keep-old rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from llm4rec.cli import main
from llm4rec.config import from_dict
from llm4rec.errors import ConfigError
from llm4rec.llm.adapter_store import AdapterStore
from llm4rec.llm.backbone import BackboneConfig, load_backbone
from llm4rec.llm.lsat import PeriodAdapters
from llm4rec.llm.lsat_config import LsatConfig
from llm4rec.llm.session import LoraSession
from llm4rec.llm.train import LoraSettings, LoraTrainConfig

METHODS = ["FR", "FT", "LSAT-long", "LSAT-short", "LSAT-ensemble", "LSAT-ta-exact", "LSAT-ta-lsat"]


def lsat_config(path: Path, backbone: Path, out: Path) -> Path:
    """A config sized for a test: 5 periods, the long-term adapter on 0-1, tests on 3-4, a few dozen samples."""
    data = path.with_name("data.yaml")
    data.write_text("name: ml-100k\nhistory_length: 3\nperiods: {n_periods: 6}\n")
    path.write_text(
        f"""
backbone: {{model_name_or_path: {backbone}}}
data: {data}
lora: {{r: 4, alpha: 8}}
train: {{epochs: 1, batch_size: 8, learning_rate: 0.005}}
long_term: {{periods: 3}}
samples: {{history_fit: 32, recent_fit: 24, val: 24, test: 40}}
task_arithmetic: {{modes: [exact, lsat], grid: [0.3, 0.7]}}
ensemble: {{grid: [0.3, 0.7]}}
out: {out}
"""
    )
    return path


def joined(run_csv: Path, predict_csv: Path, data_yaml: Path, period: int = 4, n: int = 40) -> pd.DataFrame:
    """The run's predictions (``n`` tested rows of ``period``) beside `llm4rec predict`'s rows for those samples
    (predict scores the whole period, in order)."""
    from llm4rec.config import load_config
    from llm4rec.data.config import DataConfig, load_timeline
    from llm4rec.eval.protocol import tested_samples

    timeline = load_timeline(load_config(DataConfig, data_yaml))
    positions = timeline.period(period).index.get_indexer(tested_samples(timeline, period, n).index)
    run = pd.read_csv(run_csv)
    again = pd.read_csv(predict_csv, keep_default_na=False).iloc[positions].reset_index(drop=True)
    pd.testing.assert_frame_equal(run[["user_id", "item_id", "label"]], again[["user_id", "item_id", "label"]])
    return pd.DataFrame({"p_yes_run": run["p"], "p_yes_predict": again["p"]})


def test_lsat_runs_every_method_and_its_adapters_reproduce_the_run(prepared, tiny_backbone_dir, tmp_path, capsys):
    out = tmp_path / "lsat"
    config = lsat_config(tmp_path / "lsat.yaml", tiny_backbone_dir, out)
    assert main(["lsat", "--config", str(config), "-q"]) == 0
    printed = capsys.readouterr().out
    assert all(f"\n{name}\n" in printed for name in METHODS)  # a per-period table per method

    results = json.loads((out / "results.json").read_text())
    assert sorted({r["method"] for r in results}) == sorted(METHODS)
    assert {(r["method"], r["period"]) for r in results} == {(m, p) for m in METHODS for p in (4, 5, "mean")}
    assert all(r["n"] == 40 for r in results if r["period"] != "mean")
    assert all(0.0 <= r["auc"] <= 1.0 for r in results)
    for path in ["long/period_2", "short/period_3", "fr/period_3", "ft/period_3", "merged/exact/period_3"]:
        assert (out / "adapters" / path / "adapter_model.safetensors").is_file(), path
    for png in ("auc_per_period.png", "auc_mean.png"):
        assert (out / png).stat().st_size > 5000
    training = json.loads((out / "training.json").read_text())
    merge = json.loads((out / "adapters" / "merged" / "lsat" / "period_3" / "llm4rec.json").read_text())["merge"]
    assert merge["mode"] == "lsat" and merge["weight"] in (0.3, 0.7) and len(merge["val_auc_by_weight"]) == 2
    assert training["fits"], "the first run trains"

    # A merged adapter and an ensemble manifest: `llm4rec predict` reproduces the run's scores.
    data = ["--config", str(tmp_path / "data.yaml"), "--period", "4", "-q"]
    base = ["predict", "--model", str(tiny_backbone_dir), *data]
    merged_dir = out / "adapters" / "merged" / "exact" / "period_3"
    assert main([*base, "--adapter", str(merged_dir), "--out", str(tmp_path / "ta.csv")]) == 0
    both = joined(out / "predictions" / "LSAT-ta-exact" / "period_4.csv", tmp_path / "ta.csv", tmp_path / "data.yaml")
    np.testing.assert_allclose(both["p_yes_run"], both["p_yes_predict"], atol=1e-6, rtol=0)
    ensemble_dir = out / "adapters" / "ensemble" / "period_3"
    assert main([*base, "--adapter", str(ensemble_dir), "--out", str(tmp_path / "ens.csv")]) == 0
    both = joined(out / "predictions" / "LSAT-ensemble" / "period_4.csv", tmp_path / "ens.csv", tmp_path / "data.yaml")
    np.testing.assert_allclose(both["p_yes_run"], both["p_yes_predict"], atol=1e-6, rtol=0)

    # merge_and_unload into a full checkpoint scores the same, and loads as a plain model.
    full = tmp_path / "full"
    merged_args = ["--adapter", str(merged_dir), "--merge-into-base", str(full), "--out", str(tmp_path / "full.csv")]
    assert main([*base, *merged_args]) == 0
    both = joined(out / "predictions" / "LSAT-ta-exact" / "period_4.csv", tmp_path / "full.csv", tmp_path / "data.yaml")
    np.testing.assert_allclose(both["p_yes_run"], both["p_yes_predict"], atol=1e-5, rtol=0)
    assert main(["predict", "--model", str(full), *data, "--out", str(tmp_path / "plain.csv")]) == 0
    both = joined(
        out / "predictions" / "LSAT-ta-exact" / "period_4.csv", tmp_path / "plain.csv", tmp_path / "data.yaml"
    )
    np.testing.assert_allclose(both["p_yes_run"], both["p_yes_predict"], atol=1e-5, rtol=0)
    capsys.readouterr()
    assert (
        main([*base, "--adapter", str(ensemble_dir), "--merge-into-base", str(tmp_path / "x"), "--out", "x.csv"]) == 2
    )
    assert "output ensemble of two adapters" in capsys.readouterr().err

    # The same command again reuses every adapter (same recipes) and gives the same table.
    before = (out / "results.json").read_text()
    assert main(["lsat", "--config", str(config), "-q"]) == 0
    assert json.loads((out / "training.json").read_text())["fits"] == {}
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(before)]
    again = [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((out / "results.json").read_text())]
    assert again == strip


def test_a_merged_adapter_is_a_plain_peft_adapter(prepared, tiny_backbone_dir, tmp_path, movie_template):
    from peft import PeftModel

    from llm4rec.llm.merge import merge_adapters
    from llm4rec.llm.score import score_margins
    from llm4rec.llm.train import attach_lora

    backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    model = attach_lora(backbone.model, LoraSettings(r=4), "long")
    model = attach_lora(model, LoraSettings(r=4), "short")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.05)
    merge_adapters(model, "long", "short", 0.7, "exact", "merged")
    model.save_pretrained(str(tmp_path / "saved"), selected_adapters=["merged"], safe_serialization=True)
    sequences = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    pad = backbone.tokenizer.pad_token_id
    expected = score_margins(model, sequences, backbone.answer_ids, pad, ["merged"], "two")
    fresh = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    reloaded = PeftModel.from_pretrained(fresh.model, str(tmp_path / "saved" / "merged"))
    got = score_margins(reloaded, sequences, backbone.answer_ids, pad, ["default"], "two")
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_fine_tuning_keeps_the_old_adapter_when_val_auc_drops(
    planted_timeline, tiny_backbone_dir, movie_template, tmp_path
):
    from safetensors.torch import load_file

    backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    config = from_dict(
        LsatConfig,
        {"backbone": {"model_name_or_path": str(tiny_backbone_dir)}, "long_term": {"periods": 1},
         "data": {"name": "ml-100k", "periods": {"n_periods": 4}}, "samples": {"val": 60, "recent_fit": 80}, "first_test_period": 3},
    )  # fmt: skip
    session = LoraSession(
        backbone, movie_template, planted_timeline, AdapterStore(tmp_path / "adapters"), LoraSettings(r=4),
        LoraTrainConfig(epochs=1, batch_size=8, learning_rate=5e-3), data_recipe={"planted": 1}, progress=False,
    )  # fmt: skip
    adapters = PeriodAdapters(session, config)
    start = adapters.full_retrain(1)  # FT's first period is 2 (tests start at 3): it starts from FR through 1
    adapters.full_retrain = lambda through, role="fr": start
    # A learning rate that wrecks the adapter: the val AUC drops, so FT must keep what it started from.
    session.train_config = LoraTrainConfig(epochs=1, batch_size=8, learning_rate=3.0, warmup_fraction=0.0)
    tuned = adapters.fine_tuned(2)
    fit = session.fits[str(tuned)]
    assert fit["history"][-1]["val_auc"] < fit["history"][0]["val_auc"] - 0.05  # training did make it worse
    assert fit["best_step"] == 0
    old, new = load_file(start / "adapter_model.safetensors"), load_file(tuned / "adapter_model.safetensors")
    assert old.keys() == new.keys()
    for key in old:
        torch.testing.assert_close(new[key], old[key], atol=0, rtol=0)


def test_long_term_adapter_is_frozen_or_refreshed(tiny_backbone_dir):
    def through_periods(refresh: int) -> list[int]:
        config = from_dict(
            LsatConfig,
            {"backbone": {"model_name_or_path": "x"}, "long_term": {"periods": 4, "refresh_every": refresh}},
        )
        adapters = PeriodAdapters.__new__(PeriodAdapters)
        adapters.config = config
        adapters.full_retrain = lambda through, role="fr": through  # what it would train on
        return [adapters.long_term(t) for t in range(4, 10)]

    assert through_periods(0) == [3, 3, 3, 3, 3, 3]  # frozen after periods 0..K-1 (the paper)
    assert through_periods(2) == [3, 5, 5, 7, 7, 9]  # refreshed on 0..t every 2 periods


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ensemble": {"weight": 1.5}}, r"ensemble.weight.*\[0, 1\]"),
        ({"task_arithmetic": {"grid": [0.5, -0.1]}}, r"task_arithmetic.grid.*\[0, 1\]"),
        ({"task_arithmetic": {"modes": ["exact", "mean"]}}, "available"),
        ({"methods": ["FR", "Replay"]}, "methods"),
        ({"first_test_period": 12}, "out of range"),
        ({"long_term": {"periods": 8}, "first_test_period": 5}, "out of range"),
        ({"samples": {"test": 0}}, "samples.test"),
    ],
)
def test_bad_lsat_configs_fail_clearly(change, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(LsatConfig, {"backbone": {"model_name_or_path": "x"}, "data": "ml-100k", **change})
