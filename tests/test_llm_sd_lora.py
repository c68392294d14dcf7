"""SD-LoRA: the magnitudes and the fold against the formula, KD's span test, frozen directions, the served adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from llm4rec.cli import main
from llm4rec.config import from_dict
from llm4rec.errors import ConfigError
from llm4rec.llm.backbone import BackboneConfig, load_backbone
from llm4rec.llm.lsat_config import LsatConfig
from llm4rec.llm.sd_lora import Magnitudes, fold, lora_layers, module_delta, span_coefficients
from llm4rec.llm.train import LoraSettings, attach_lora
from tests.test_llm_lsat import joined, lsat_config

SEQUENCES = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]


def with_adapters(backbone, ranks: dict[str, int], seed: int = 0):
    """The backbone with one random LoRA per name (B random too, so every delta is non-zero)."""
    model = backbone.model
    for name, r in ranks.items():
        model = attach_lora(model, LoraSettings(r=r, alpha=2 * r, dropout=0.0), name)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.05)
    return model


def unit(layer, name: str) -> torch.Tensor:
    delta = module_delta(layer, name)
    return delta / torch.linalg.matrix_norm(delta)  # the full [out, in] matrix: independent of delta_inner


def test_hooked_magnitudes_and_the_folded_adapter_add_the_normalised_directions(backbone):
    from llm4rec.llm.score import score_margins, score_sequences, sigmoid

    model = with_adapters(backbone, {"d1": 4, "d2": 2, "d3": 3})
    names, alphas = ["d1", "d2", "d3"], [0.7, -0.3, 1.9]
    fold(model, names, alphas, "folded")
    layers = lora_layers(model, "folded")
    assert len(layers) == 2 * backbone.model.config.num_hidden_layers  # q_proj and v_proj of every layer
    for _, layer in layers:
        expected = sum(a * unit(layer, n) for a, n in zip(alphas, names, strict=True))
        torch.testing.assert_close(module_delta(layer, "folded"), expected, atol=1e-5, rtol=0)
        assert model.peft_config["folded"].r == 9 and layer.scaling["folded"] == 1.0

    # The training-time form (all directions active, scaled by the hooks) is the same function as the fold.
    pad = backbone.tokenizer.pad_token_id
    served = score_margins(model, SEQUENCES, backbone.answer_ids, pad, ["folded"], "two")
    model.set_adapter("d1")
    model.base_model.set_adapter(names)
    magnitudes = Magnitudes(model, names, alphas)
    hooked = score_sequences(model, SEQUENCES, backbone.answer_ids, pad)  # as validation scores during training
    magnitudes.remove()
    np.testing.assert_allclose(hooked, sigmoid(served[0]), atol=1e-6, rtol=0)


def test_a_new_lora_at_b_zero_adds_nothing_and_gets_finite_gradients(backbone):
    model = with_adapters(backbone, {"d1": 4})
    model = attach_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), "new")  # peft's init: B = 0
    model.base_model.set_adapter(["d1", "new"])
    ids = torch.tensor([SEQUENCES[0]])
    magnitudes = Magnitudes(model, ["d1", "new"], [0.5, 0.8])
    with_new = model(input_ids=ids).logits
    magnitudes.remove()
    model.base_model.set_adapter(["d1"])
    magnitudes = Magnitudes(model, ["d1"], [0.5])
    torch.testing.assert_close(with_new, model(input_ids=ids).logits, atol=0, rtol=0)
    magnitudes.remove()
    model.base_model.set_adapter(["d1", "new"])
    magnitudes = Magnitudes(model, ["d1", "new"], [0.5, 0.8])
    model(input_ids=ids).logits.sum().backward()
    magnitudes.remove()
    grads = [p.grad for n, p in model.named_parameters() if ".new." in n and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(magnitudes.magnitudes.grad).all()


def test_kd_folds_a_direction_in_the_span_of_earlier_ones_and_keeps_one_outside(backbone):
    model = with_adapters(backbone, {"d1": 2, "d2": 2, "inside": 4, "outside": 2})
    with torch.no_grad():
        for _, layer in lora_layers(model, "d1"):
            a1, a2 = layer.lora_A["d1"].weight, layer.lora_A["d2"].weight
            a1.zero_(), a2.zero_()
            a1[0, 0] = a1[1, 1] = 1.0  # d1 and d2 read disjoint inputs: orthogonal in every module
            a2[0, 2] = a2[1, 3] = 1.0
            # inside = 2 unit(d1) - 3 unit(d2) in every module, as stacked factors
            n1 = torch.linalg.matrix_norm(module_delta(layer, "d1"))
            n2 = torch.linalg.matrix_norm(module_delta(layer, "d2"))
            s1, s2, s_in = layer.scaling["d1"], layer.scaling["d2"], layer.scaling["inside"]
            layer.lora_A["inside"].weight.copy_(torch.cat([a1, a2]))
            b = torch.cat([layer.lora_B["d1"].weight * (2 * s1 / n1), layer.lora_B["d2"].weight * (-3 * s2 / n2)], 1)
            layer.lora_B["inside"].weight.copy_(b / s_in)
    coefficients, residual = span_coefficients(model, ["d1", "d2"], "inside")
    # unit(inside) = (2 d1 - 3 d2) / sqrt(13) in every module
    np.testing.assert_allclose(coefficients, [2 / 13**0.5, -3 / 13**0.5], atol=1e-5)
    assert residual < 1e-3
    coefficients, residual = span_coefficients(model, ["d1", "d2"], "outside")
    assert residual > 0.9  # a random rank-2 direction in a 16 x 16 space is nearly orthogonal to both


def sd_config(tmp_path, tiny_backbone_dir, **sd_lora):
    out = tmp_path / "lsat"
    config = lsat_config(tmp_path / "lsat.yaml", tiny_backbone_dir, out)
    settings = {"rank_schedule": [4, 2], **sd_lora}
    config.write_text(config.read_text() + f"methods: [SD-LoRA, SD-LoRA-RR]\nsd_lora: {json.dumps(settings)}\n")
    return config, out


def test_sd_lora_keeps_directions_frozen_learns_magnitudes_and_serves_a_plain_adapter(
    prepared, tiny_backbone_dir, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    from llm4rec.llm.session import LoraSession

    frozen_checks = []
    fit_active = LoraSession.fit_active

    def watched(self, name, *args, **kwargs):
        """Snapshot the earlier directions' tensors and the magnitudes around each SD-LoRA fit."""
        earlier = {n: p.detach().clone() for n, p in self.model.named_parameters() if "lora_" in n and ".sd_lora_" in n
                   and f".{name}." not in n and "directions" in n}  # fmt: skip
        magnitudes = getattr(self.model, "sd_lora_magnitudes", None)
        before = magnitudes.values() if magnitudes is not None else None
        summary = fit_active(self, name, *args, **kwargs)
        after = {n: p for n, p in self.model.named_parameters() if n in earlier}
        frozen_checks.append((earlier, after, before, magnitudes.values() if magnitudes is not None else None))
        return summary

    monkeypatch.setattr(LoraSession, "fit_active", watched)
    config, out = sd_config(tmp_path, tiny_backbone_dir)
    assert main(["lsat", "--config", str(config), "-q"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["period"]) for r in results} == {(m, p) for m in ("SD-LoRA", "SD-LoRA-RR")
                                                             for p in (4, 5, "mean")}  # fmt: skip

    # Fits with earlier directions: those are bit-identical after the fit, the magnitudes moved (some fit).
    later = [c for c in frozen_checks if c[0]]
    assert later, "the periods after the first fit train on top of earlier directions"
    for earlier, after, _, _ in later:
        assert all(torch.equal(earlier[n], after[n]) for n in earlier)
    assert any(b[:-1] != a[:-1] for _, _, b, a in later if b is not None)

    # The served adapter after period 4 folds the manifest's directions with its magnitudes, exactly.
    served = out / "adapters" / "sd_lora" / "sd-lora-rr" / "period_4"
    manifest = json.loads((served / "llm4rec.json").read_text())["sd_lora"]
    assert manifest["periods"][0] == 2 and manifest["ranks"][0] == 4 and set(manifest["ranks"][1:]) <= {2}
    weights = load_file(served / "adapter_model.safetensors")
    sources = [load_file(f"{d}/adapter_model.safetensors") for d in manifest["directions"]]
    scalings = [json.loads(Path(d, "adapter_config.json").read_text()) for d in manifest["directions"]]
    for key in [k for k in weights if "lora_A" in k]:
        folded = weights[key.replace("lora_A", "lora_B")] @ weights[key]
        expected = 0
        for source, cfg, alpha in zip(sources, scalings, manifest["magnitudes"], strict=True):
            delta = source[key.replace("lora_A", "lora_B")] @ source[key] * (cfg["lora_alpha"] / cfg["r"])
            expected = expected + alpha * delta / torch.linalg.matrix_norm(delta)
        torch.testing.assert_close(folded, expected, atol=1e-5, rtol=0)

    # It reloads with plain peft and `llm4rec predict --adapter` gives the run's scores.
    args = ["predict", "--model", str(tiny_backbone_dir), "--config", str(tmp_path / "data.yaml"), "--period", "5"]
    assert main([*args, "-q", "--adapter", str(served), "--out", str(tmp_path / "sd.csv")]) == 0
    both = joined(out / "predictions" / "SD-LoRA-RR" / "period_5.csv", tmp_path / "sd.csv", tmp_path / "data.yaml",
                  period=5)  # fmt: skip
    np.testing.assert_allclose(both["p_yes_run"], both["p_yes_predict"], atol=1e-6, rtol=0)

    # Resumed: every adapter is reused.
    assert main(["lsat", "--config", str(config), "-q"]) == 0
    assert json.loads((out / "training.json").read_text())["fits"] == {}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rank_schedule": [4, 0]}, "sd_lora.rank_schedule: every rank must be >= 1"),
        ({"kd_threshold": 1.0}, "sd_lora.kd_threshold: expected a share"),
        ({"kd_threshold": 0}, "sd_lora.kd_threshold: expected a share"),
    ],
)
def test_bad_sd_lora_settings_fail_clearly(change, message, tiny_backbone_dir):
    with pytest.raises(ConfigError, match=message):
        from_dict(LsatConfig, {"backbone": {"model_name_or_path": str(tiny_backbone_dir)}, "sd_lora": change})


def test_sd_lora_refuses_to_start_from_an_adapter_of_another_base(
    prepared, tiny_backbone_dir, movie_template, tmp_path, capsys
):
    from llm4rec.llm.adapters import save_adapter

    backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    model = with_adapters(backbone, {"plain": 2})
    save_adapter(model, tmp_path / "plain", backbone, movie_template, 512, {"recipe_key": "x"})
    foreign = tmp_path / "foreign"
    shutil.copytree(tmp_path / "plain", foreign)
    meta = json.loads((foreign / "llm4rec.json").read_text())
    meta.update(base_fingerprint="another-model", sd_lora={"directions": ["d"], "magnitudes": [1.0]})
    (foreign / "llm4rec.json").write_text(json.dumps(meta))
    for start, message in [(foreign, "was trained on base model"), (tmp_path / "plain", "is not an SD-LoRA adapter")]:
        config, _ = sd_config(tmp_path, tiny_backbone_dir, start_from=str(start))
        assert main(["lsat", "--config", str(config), "-q"]) == 2
        assert message in capsys.readouterr().err
