"""Task arithmetic on two LoRA adapters and the output ensemble, checked against hand computations and peft."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm4rec.errors import ConfigError
from llm4rec.llm.backbone import BackboneConfig, load_backbone
from llm4rec.llm.ensemble import combine, read_ensemble, score_ensemble, write_ensemble
from llm4rec.llm.merge import MERGE_MODES, merge_adapters
from llm4rec.llm.samples import build_samples
from llm4rec.llm.score import score_margins, score_sequences
from llm4rec.llm.train import LoraSettings, attach_lora


def lora_deltas(model, adapter_name: str) -> dict[str, torch.Tensor]:
    """dW = B @ A * scaling of every module adapted by ``adapter_name`` (float32, by module name)."""
    deltas = {}
    for module_name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or adapter_name not in lora_a:
            continue
        a = lora_a[adapter_name].weight.float()
        b = module.lora_B[adapter_name].weight.float()
        deltas[module_name] = (b @ a) * module.scaling[adapter_name]
    return deltas


def randomize(model, adapter: str, seed: int) -> None:
    """Give an adapter non-zero A and B (a fresh LoRA has B = 0, which would hide cross terms)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if f".{adapter}." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


@pytest.fixture
def two_adapters(tiny_backbone_dir, movie_template):
    """A PeftModel holding adapters 'long' and 'short' with random weights, plus its backbone."""
    backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    model = attach_lora(backbone.model, LoraSettings(r=4, alpha=16), "long")
    model = attach_lora(model, LoraSettings(r=4, alpha=16), "short")
    randomize(model, "long", 1)
    randomize(model, "short", 2)
    model.eval()
    return backbone, model


@pytest.fixture
def sequences(two_adapters, planted_timeline, movie_template):
    backbone, _ = two_adapters
    rows = planted_timeline.period(2).head(24)
    return build_samples(rows, planted_timeline.items, movie_template, backbone.tokenizer)["input_ids"]


def test_exact_merge_is_the_weighted_sum_of_deltas(two_adapters):
    _, model = two_adapters
    long, short = lora_deltas(model, "long"), lora_deltas(model, "short")
    merge_adapters(model, "long", "short", 0.3, "exact", "merged")
    merged = lora_deltas(model, "merged")
    assert set(merged) == set(long) and len(merged) == 8  # q_proj and v_proj of 4 layers
    for module in merged:
        expected = 0.3 * long[module] + 0.7 * short[module]
        torch.testing.assert_close(merged[module], expected, atol=1e-5, rtol=0)
    assert model.active_adapter == "merged"


def test_lsat_merge_interpolates_a_and_b_separately(two_adapters):
    _, model = two_adapters
    merge_adapters(model, "long", "short", 0.25, "lsat", "merged")
    merged, long, short = (lora_deltas(model, name) for name in ("merged", "long", "short"))
    for module, module_obj in model.named_modules():
        if module not in merged:
            continue
        a = 0.25 * module_obj.lora_A["long"].weight + 0.75 * module_obj.lora_A["short"].weight
        b = 0.25 * module_obj.lora_B["long"].weight + 0.75 * module_obj.lora_B["short"].weight
        torch.testing.assert_close(merged[module], (b @ a) * module_obj.scaling["long"], atol=1e-6, rtol=0)
        # ... which is not the weighted sum of the deltas: the cross terms the exact mode avoids
        assert (merged[module] - (0.25 * long[module] + 0.75 * short[module])).abs().max() > 1e-4


def test_full_rank_svd_equals_exact_so_scaling_is_applied_once(two_adapters):
    _, model = two_adapters  # alpha 16 != r 4: a double scaling would show as a factor of 4
    long, short = lora_deltas(model, "long"), lora_deltas(model, "short")
    merge_adapters(model, "long", "short", 0.6, "svd", "merged", svd_rank=8)
    for module, delta in lora_deltas(model, "merged").items():
        torch.testing.assert_close(delta, 0.6 * long[module] + 0.4 * short[module], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", [m for m in MERGE_MODES if m not in ("exact", "lsat")])
def test_every_peft_mode_gives_an_active_adapter_of_the_right_shape(two_adapters, mode):
    _, model = two_adapters
    merge_adapters(model, "long", "short", 0.5, mode, "merged", seed=3)
    deltas = lora_deltas(model, "merged")
    assert model.active_adapter == "merged" and len(deltas) == 8
    assert all(torch.isfinite(d).all() and d.abs().sum() > 0 for d in deltas.values())


def test_dare_is_seeded_and_a_reused_name_is_replaced(two_adapters):
    _, model = two_adapters

    def dare(seed: int) -> dict:
        merge_adapters(model, "long", "short", 0.5, "dare_linear", "m", seed=seed)
        return lora_deltas(model, "m")

    first, again, other = dare(7), dare(7), dare(8)
    module = next(iter(first))
    torch.testing.assert_close(first[module], again[module])
    assert not torch.allclose(first[module], other[module])
    # peft alone would keep the old adapter when the name is reused; ours recomputes it
    merge_adapters(model, "long", "short", 1.0, "exact", "m")
    torch.testing.assert_close(lora_deltas(model, "m")[module], lora_deltas(model, "long")[module], atol=1e-6, rtol=0)


def test_bad_merges_fail_clearly(tiny_backbone_dir, movie_template):
    backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    model = attach_lora(backbone.model, LoraSettings(r=4), "long")
    model = attach_lora(model, LoraSettings(r=8), "short")
    model = attach_lora(model, LoraSettings(r=4, target_modules=["q_proj"]), "q_only")
    with pytest.raises(ConfigError, match="equal ranks"):
        merge_adapters(model, "long", "short", 0.5, "lsat", "m")
    with pytest.raises(ConfigError, match="equal ranks"):
        merge_adapters(model, "long", "short", 0.5, "ties", "m")
    merge_adapters(model, "long", "short", 0.5, "exact", "m")  # exact allows different ranks
    with pytest.raises(ConfigError, match="different modules"):
        merge_adapters(model, "long", "q_only", 0.5, "exact", "m")
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        merge_adapters(model, "long", "short", 1.5, "exact", "m")
    with pytest.raises(ConfigError, match="available"):
        merge_adapters(model, "long", "short", 0.5, "average", "m")
    with pytest.raises(ConfigError, match="not loaded"):
        merge_adapters(model, "long", "nope", 0.5, "exact", "m")


def test_ensemble_is_the_weighted_mean_of_two_separate_scorings(two_adapters, sequences):
    backbone, model = two_adapters
    pad, answers = backbone.tokenizer.pad_token_id, backbone.answer_ids
    separate = {}
    for name in ("long", "short"):
        model.set_adapter(name)
        separate[name] = score_sequences(model, sequences, answers, pad, batch_size=5)
    assert np.abs(separate["long"] - separate["short"]).max() > 1e-3  # the adapters differ
    p = score_ensemble(model, sequences, answers, pad, ("long", "short"), weight=0.3, passes="two", batch_size=5)
    np.testing.assert_allclose(p, 0.3 * separate["long"] + 0.7 * separate["short"], atol=1e-6, rtol=0)


def test_one_pass_mixed_batches_agree_with_two_passes(two_adapters, sequences):
    backbone, model = two_adapters
    pad, answers = backbone.tokenizer.pad_token_id, backbone.answer_ids
    model.set_adapter("short")
    one = score_margins(model, sequences, answers, pad, ("long", "short"), passes="one", batch_size=7)
    two = score_margins(model, sequences, answers, pad, ("long", "short"), passes="two", batch_size=7)
    np.testing.assert_allclose(one, two, atol=1e-5, rtol=0)
    assert model.active_adapter == "short"  # scoring leaves the active adapter as it was
    logit = combine(one[0], one[1], 0.4, "logit")
    np.testing.assert_allclose(logit, 1 / (1 + np.exp(-(0.4 * one[0] + 0.6 * one[1]))), rtol=1e-12)


def test_ensemble_manifest_round_trip_and_errors(tmp_path):
    (tmp_path / "adapters" / "long").mkdir(parents=True)
    (tmp_path / "adapters" / "short").mkdir()
    write_ensemble(tmp_path / "ens", tmp_path / "adapters" / "long", tmp_path / "adapters" / "short", 0.7, "logit")
    manifest = read_ensemble(tmp_path / "ens")
    assert (manifest.weight, manifest.combine, manifest.long) == (0.7, "logit", "../adapters/long")
    assert manifest.adapter_paths(tmp_path / "ens")[1] == (tmp_path / "adapters" / "short").resolve()
    assert read_ensemble(tmp_path / "adapters" / "long") is None  # not a manifest
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        write_ensemble(tmp_path / "bad", tmp_path, tmp_path, -0.1)
    with pytest.raises(ConfigError, match="combine"):
        combine(np.zeros(2), np.zeros(2), 0.5, "median")
