"""Replay in LoRA updates: GGscores over the LoRA parameters, where replayed samples come from, the names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm4rec.compare.methods import parse_method
from llm4rec.errors import ConfigError
from llm4rec.llm.replay import lora_ggscores, reservoir_before, sample_positions
from llm4rec.llm.train import LoraSettings, answer_loss, attach_lora

SEQUENCES = [
    [5, 6, 7, 8, 9, 30],
    [5, 6, 7, 8, 9, 10, 11, 40, 41, 42],
    [5, 6, 50, 51],
    [5, 6, 7, 8, 9, 10, 11, 12, 60],
    [5, 61, 62, 63, 64, 65, 66],
]  # different lengths: a batch pads every row but the longest


def lora_model(backbone):
    model = attach_lora(backbone.model, LoraSettings(r=4, dropout=0.0, target_modules=["q_proj", "v_proj"]), "first")
    model = attach_lora(model, LoraSettings(r=2, dropout=0.0), "other")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.1)  # lora_B starts at zero: give both factors values
    return model


def brute_force_ggscores(model, adapter: str, targets: np.ndarray) -> np.ndarray:
    """One backward pass per sample, unpadded: <g(z), mean over the pool of g> over the adapter's LoRA weights."""
    model.set_adapter(adapter)
    model.eval()
    names = [n for n, _ in model.named_parameters() if f".{adapter}." in n and "lora_" in n]
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad_(True)
    gradients = []
    for sequence, target in zip(SEQUENCES, targets, strict=True):
        ids = torch.tensor([sequence])
        loss = answer_loss(model, ids, torch.ones_like(ids), torch.tensor([int(target)]))
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        gradients.append(torch.cat([g.flatten() for g in grads]).double())
    stacked = torch.stack(gradients)
    return (stacked @ stacked.mean(0)).numpy()


@pytest.mark.parametrize("one_pass_bytes", [2**31, 0], ids=["one pass, per-sample gradients kept", "two passes"])
def test_ggscores_equal_a_brute_force_per_sample_autograd_dot_product(backbone, one_pass_bytes):
    model = lora_model(backbone)
    targets = np.array([backbone.answer_ids[i % 2] for i in range(len(SEQUENCES))])
    pad = backbone.tokenizer.pad_token_id
    model.set_adapter("other")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    scores = lora_ggscores(model, "first", SEQUENCES, targets, pad, batch_size=3, one_pass_bytes=one_pass_bytes)
    assert model.active_adapter == "other"  # the model is left as it was found
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    expected = brute_force_ggscores(model, "first", targets)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-7 * np.abs(expected).max())
    assert np.ptp(expected) > 0.1 * np.abs(expected).max()  # samples differ: there is something to rank
    again = lora_ggscores(model, "first", SEQUENCES, targets, pad, batch_size=5, one_pass_bytes=one_pass_bytes)
    np.testing.assert_allclose(again, scores, rtol=1e-4)


def test_the_new_rows_are_the_ones_training_draws_from_a_capped_set():
    import datasets

    for n, limit, seed in [(50, 20, 0), (50, 20, 3), (7, 20, 1), (30, None, 0)]:
        table = datasets.Dataset.from_dict({"i": list(range(n))})
        expected = table if limit is None or n <= limit else table.shuffle(seed=seed).select(range(limit))
        assert sample_positions(n, limit, seed).tolist() == expected["i"]


def test_replayed_samples_come_only_from_periods_before_t(planted_timeline):
    table = planted_timeline.table
    for period in (1, 2, 3):
        positions = reservoir_before(planted_timeline, period, capacity=150, seed=0)
        assert len(positions) == min(150, len(planted_timeline.training_positions(0, period - 1)))
        assert (table["period"].to_numpy()[positions] < period).all()
        new = set(planted_timeline.training_positions(period, period))
        assert not new & set(positions)  # val_{t-1} is new at t, never replayed
    # Every earlier period can be drawn: the reservoir is uniform over what the earlier fits learnt.
    drawn = table["period"].to_numpy()[reservoir_before(planted_timeline, 3, capacity=300, seed=1)]
    assert set(drawn) == {0, 1, 2}


def test_a_replaying_fit_learns_its_new_rows_plus_the_replayed_ones(
    planted_timeline, tiny_backbone_dir, movie_template, tmp_path
):
    from llm4rec.config import from_dict
    from llm4rec.llm.adapter_store import AdapterStore
    from llm4rec.llm.adapters import read_adapter_meta
    from llm4rec.llm.backbone import BackboneConfig, load_backbone
    from llm4rec.llm.catalogue import build_method, entry_of
    from llm4rec.llm.lsat_config import LsatConfig
    from llm4rec.llm.session import LoraSession
    from llm4rec.llm.train import LoraTrainConfig

    backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    config = from_dict(
        LsatConfig,
        {"backbone": {"model_name_or_path": str(tiny_backbone_dir)}, "long_term": {"periods": 1},
         "data": {"name": "ml-100k", "periods": {"n_periods": 4}}, "first_test_period": 3,
         "samples": {"val": 24, "history_fit": 40, "recent_fit": 24},
         "replay": {"ratio": 0.5, "megg_ratio": 0.5, "megg_pool": 20, "megg_chunk_size": 8}},
    )  # fmt: skip
    session = LoraSession(
        backbone, movie_template, planted_timeline, AdapterStore(tmp_path / "adapters"), LoraSettings(r=4),
        LoraTrainConfig(epochs=1, batch_size=8, learning_rate=5e-3), data_recipe={"planted": 1}, progress=False,
    )  # fmt: skip
    table = planted_timeline.table
    for name in ("LLM-FT+Reservoir", "LLM-FT+MEGG"):
        method = build_method(entry_of(name), session, config)
        method.fit(planted_timeline, 2)
        meta = read_adapter_meta(method.path)
        record = meta["samples"]
        assert meta["role"] == f"ft-{name.split('+')[1].lower()}" and record["new"] == 24 and record["replayed"] == 12
        assert meta["training"]["n_train"] == 24 + 12
        assert record["replayed_periods"] and max(record["replayed_periods"]) < 2
        assert method.fit_records()[str(method.path)]["samples"] == record
    # MEGG keeps both ends of the GGscores of its pool (kept in the store, so a rerun does not recompute them).
    import json

    (cached,) = (tmp_path / "adapters" / "replay").glob("megg-*.json")
    kept = json.loads(cached.read_text())
    scores, chosen = np.asarray(kept["ggscores"]), kept["chosen"]
    assert len(scores) == 20 and len(chosen) == 12
    assert (table["period"].to_numpy()[chosen] < 2).all()


def test_replay_names_resolve_for_one_period_fits_only():
    from llm4rec.compare.config import ExperimentConfig
    from llm4rec.config import from_dict
    from llm4rec.llm.catalogue import key_settings

    for name, family in [("LLM-FT+Reservoir", "FT"), ("LLM-FT+MEGG", "FT"), ("LSAT-ensemble+MEGG", "LSAT"),
                         ("LSAT-short+Reservoir", "LSAT"), ("LLM-FT+MEGG+ReLoop2", "FT")]:  # fmt: skip
        spec = parse_method(name)
        assert spec.side == "llm" and spec.entry.family == family and "replay" in spec.entry.sections
    for name in ("LLM-FR+Reservoir", "LSAT-long+MEGG", "SD-LoRA+MEGG", "LLM-FT+MEGG+MEGG", "LLM-FT+ReLoop2+MEGG"):
        with pytest.raises(ConfigError, match="is not a method"):
            parse_method(name)
    config = from_dict(
        ExperimentConfig,
        {"methods": ["LLM-FT", "LLM-FT+MEGG"], "llm": {"backbone": {"model_name_or_path": "x"},
                                                       "replay": {"megg_pool": 99}}},
    )  # fmt: skip
    plain, replayed = (key_settings(s.entry, config.lsat) for s in config.specs)
    assert "replay" not in plain and replayed["replay"]["megg_pool"] == 99
    with pytest.raises(ConfigError, match="replay.ratio"):
        from_dict(ExperimentConfig, {"methods": ["LLM-FT+Reservoir"],
                                     "llm": {"backbone": {"model_name_or_path": "x"}, "replay": {"ratio": 2}}})  # fmt: skip
