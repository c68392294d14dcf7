"""`llm4rec fewshot`: LoRA on K samples per seed, beside zero-shot, popularity and another backbone, one table."""

from __future__ import annotations

import json

import pytest

from llm4rec.cli import main
from llm4rec.errors import ConfigError


def write_config(path, backbone, out, reference=None, shots="[8, 16]"):
    path.write_text(
        f"""
backbone: {{model_name_or_path: {backbone}}}
data: ml-100k
lora: {{r: 4, alpha: 8, dropout: 0.0}}
train: {{batch_size: 8, learning_rate: 0.005}}
epochs_by_shots: {{8: 2}}
shots: {shots}
seeds: [0, 1]
train_period: 5
val_samples: 24
test_samples: 40
reference_backbones: [{reference or ""}]
score_batch_size: 16
out: {out}
"""
    )
    return path


def test_fewshot_table_has_every_row_on_the_same_samples(prepared, tiny_backbone_dir, tmp_path, capsys):
    out = tmp_path / "fewshot"
    config = write_config(tmp_path / "fewshot.yaml", tiny_backbone_dir, out, reference=tiny_backbone_dir)
    assert main(["fewshot", "--config", str(config), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "mean ± std over seeds" in printed and "LoRA-16" in printed
    rows = json.loads((out / "results.json").read_text())
    tested = [r for r in rows if r["period"] == 6]
    by_method = {}
    for r in tested:
        by_method.setdefault(r["method"], []).append(r)
    assert set(by_method) == {"scratch zero-shot", "LoRA-8", "LoRA-16", "Popularity", "scratch alone"}
    assert sorted(r["seed"] for r in by_method["LoRA-8"]) == [0, 1] and len(by_method["Popularity"]) == 1
    assert {r["n"] for r in tested} == {40}  # every row on the same tested samples
    # the same backbone scored alone twice (as the backbone and as a reference) gives the same numbers
    assert by_method["scratch zero-shot"][0]["auc"] == pytest.approx(by_method["scratch alone"][0]["auc"])
    for shots, epochs in ((8, 2), (16, 2)):  # 16: train.epochs (the default, 2)
        for seed in (0, 1):
            meta = json.loads(
                (out / "adapters" / f"shots-{shots}-seed-{seed}" / "period_5" / "llm4rec.json").read_text()
            )
            training = meta["training"]
            assert training["n_train"] == shots and training["n_val"] == 24
            assert training["steps"] == epochs * shots // 8 and not training["kept_starting_adapter"]
    seeds = {json.dumps(r["auc"]) for r in by_method["LoRA-16"]}
    assert len(seeds) == 2  # two seeds, two adapters
    # A rerun reuses every adapter: nothing is trained again.
    assert main(["fewshot", "--config", str(config), "-q"]) == 0
    assert json.loads((out / "training.json").read_text())["fits"] == {}


def test_fewshot_config_errors_name_the_field(tmp_path):
    from llm4rec.config import from_dict
    from llm4rec.llm.fewshot import FewShotConfig

    base = {"backbone": {"model_name_or_path": "x"}}
    with pytest.raises(ConfigError, match="shots: expected distinct sample counts"):
        from_dict(FewShotConfig, {**base, "shots": [16, 16]})
    with pytest.raises(ConfigError, match="epochs_by_shots: keys must be among shots"):
        from_dict(FewShotConfig, {**base, "epochs_by_shots": {32: 2}})
    with pytest.raises(ConfigError, match=r"train_period: expected a period in 0..8"):
        from_dict(FewShotConfig, {**base, "train_period": 9})
    with pytest.raises(ConfigError, match="unknown offline backbone 'smol'"):
        from_dict(FewShotConfig, {**base, "fetch_backbone": "smol"})
    with pytest.raises(ConfigError, match=r"tested period\(s\) \[5\]"):
        from_dict(FewShotConfig, {**base, "train_period": 4, "build_backbone": {"periods": [0, 5]}})
