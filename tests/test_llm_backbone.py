"""Backbone loading, answer tokens, the scratch backbone on disk, and load errors."""

from __future__ import annotations

import json

import pytest
import torch

from llm4rec.errors import ConfigError
from llm4rec.llm.backbone import BackboneConfig, answer_token_ids, load_backbone, load_tokenizer, quantization_config
from llm4rec.llm.prompts import Answers, PromptTemplate


def test_scratch_backbone_is_a_standard_checkpoint(tiny_backbone_dir, movie_template):
    files = {p.name for p in tiny_backbone_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "llm4rec.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    meta = json.loads((tiny_backbone_dir / "llm4rec.json").read_text())
    assert meta["preset"] == "scratch-llama-tiny" and meta["periods"] == [0] and meta["dataset"] == "ml-100k"
    assert meta["last_loss"] < meta["first_loss"]
    backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    assert type(backbone.model).__name__ == "LlamaForCausalLM"
    assert backbone.model.config.hidden_size == 256 and backbone.model.config.num_hidden_layers == 4
    assert backbone.model.dtype == torch.float32 and not backbone.model.training
    assert backbone.model.config._attn_implementation == "sdpa"
    assert backbone.answer_ids == (meta["answer_token_ids"]["yes"], meta["answer_token_ids"]["no"])
    assert backbone.tokenizer.padding_side == "left"


def test_answer_tokens_are_the_first_tokens_after_the_response_marker(tiny_backbone_dir, movie_template):
    tokenizer = load_tokenizer(BackboneConfig(str(tiny_backbone_dir)))
    yes, no = answer_token_ids(tokenizer, movie_template)
    marker = tokenizer("### Response:\n", add_special_tokens=False)["input_ids"]
    assert tokenizer("### Response:\nYes.", add_special_tokens=False)["input_ids"][len(marker)] == yes
    assert tokenizer.decode([yes]).startswith("Y") and tokenizer.decode([no]).startswith("N")


def test_answers_sharing_a_first_token_are_refused(tiny_backbone_dir, movie_template):
    tokenizer = load_tokenizer(BackboneConfig(str(tiny_backbone_dir)))
    template = PromptTemplate(
        movie_template.wrapper, movie_template.instruction, movie_template.input, Answers("Yes.", "Yes!")
    )
    with pytest.raises(ConfigError, match="begin with the same token"):
        answer_token_ids(tokenizer, template)


def test_answer_that_does_not_start_a_token_is_refused(tiny_backbone_dir, movie_template):
    tokenizer = load_tokenizer(BackboneConfig(str(tiny_backbone_dir)))
    template = PromptTemplate(
        movie_template.wrapper, movie_template.instruction, movie_template.input, Answers(" Yes.", "No.")
    )
    with pytest.raises(ConfigError, match=r"answers.positive ' Yes.'.*does not start a token"):
        answer_token_ids(tokenizer, template)


@pytest.mark.parametrize("kind", ["4bit", "8bit"])
def test_quantization_on_cpu_is_a_clear_error(kind):
    with pytest.raises(ConfigError, match=f"{kind} .*needs a CUDA GPU"):
        quantization_config(kind, torch.device("cpu"), torch.float32)


def test_quantized_load_on_cpu_fails_before_loading(tiny_backbone_dir, movie_template):
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        load_backbone(BackboneConfig(str(tiny_backbone_dir), quantization="4bit"), movie_template, "cpu")


def test_unreachable_hub_id_is_a_clear_error_not_a_hang(monkeypatch, movie_template):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="hub cannot be reached"):
        load_backbone(BackboneConfig("no-such-org/no-such-model-xyz"), movie_template)


def test_missing_local_directory_is_an_error(tmp_path, movie_template):
    with pytest.raises(ConfigError, match="is not a model directory"):
        load_backbone(BackboneConfig(str(tmp_path / "nowhere")), movie_template)


def test_pickle_only_checkpoint_is_refused(tmp_path, tiny_backbone_dir, movie_template):
    import shutil

    from safetensors.torch import load_file

    copy = tmp_path / "pickled"
    shutil.copytree(tiny_backbone_dir, copy)
    weights = load_file(copy / "model.safetensors")
    (copy / "model.safetensors").unlink()
    torch.save(weights, copy / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="could not be loaded"):
        load_backbone(BackboneConfig(str(copy)), movie_template)


def test_empty_model_name_is_a_config_error():
    with pytest.raises(ConfigError, match="model_name_or_path"):
        BackboneConfig("")


def test_pretraining_loss_is_the_causal_lm_loss_plus_the_weighted_answer(tiny_backbone_dir, movie_template):
    from llm4rec.llm.score import left_pad, position_ids
    from llm4rec.llm.scratch import pretraining_sequences, weighted_lm_loss

    backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    tokenizer, model = backbone.tokenizer, backbone.model
    prompts = [movie_template.render(["A"], [], "B"), movie_template.render(["C", "D"], ["E"], "F")]
    sequences, positions = pretraining_sequences(tokenizer, prompts, ["Yes.", "No."], 512)
    assert [sequences[0][positions[0]], sequences[1][positions[1]]] == list(backbone.answer_ids)
    input_ids, mask = left_pad(sequences, tokenizer.pad_token_id)
    pad = input_ids.shape[1] - mask.sum(1)
    answer_at = torch.tensor(positions) + pad
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask)).logits
        reference = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids(mask),
            labels=input_ids.masked_fill((mask == 0) | (mask.cumsum(-1) == 1), -100),
        ).loss
        plain = weighted_lm_loss(logits, input_ids, mask, answer_at, 0.0)
        weighted = weighted_lm_loss(logits, input_ids, mask, answer_at, 3.0)
    torch.testing.assert_close(plain, reference, atol=1e-5, rtol=0)
    # By hand: every real token's cross-entropy, the two answer tokens counted 1 + 3 times.
    log_probs = torch.log_softmax(logits.double(), -1)
    terms, weights = [], []
    for row in range(2):
        for k in range(int(pad[row]), input_ids.shape[1] - 1):
            terms.append(-log_probs[row, k, input_ids[row, k + 1]])
            weights.append(4.0 if k + 1 == int(answer_at[row]) else 1.0)
    expected = sum(t * w for t, w in zip(terms, weights, strict=True)) / sum(weights)
    assert abs(float(weighted) - float(expected)) < 1e-5


@pytest.mark.parametrize(("fp32_ms", "bf16_ms", "expected"), [(6.9, 0.75, torch.bfloat16), (1.0, 5.0, torch.float32),
                                                              (1.0, 0.9, torch.float32)])  # fmt: skip
def test_dtype_fastest_takes_bf16_on_a_cpu_only_where_it_measures_faster(monkeypatch, fp32_ms, bf16_ms, expected):
    """``dtype: fastest`` times a matmul in both dtypes (not the CPU flags: an AMD EPYC with AVX512-BF16 ran
    SmolLM2 slower in bf16) and takes bf16 only when it is at least 1.2x faster; ``auto`` stays fp32 on a CPU."""
    from llm4rec.llm import backbone as backbone_module

    timings = {torch.float32: fp32_ms / 1e3, torch.bfloat16: bf16_ms / 1e3}
    monkeypatch.setattr(backbone_module, "_matmul_seconds", lambda dtype: timings[dtype])
    backbone_module.cpu_bf16_pays.cache_clear()
    try:
        assert backbone_module.resolve_dtype("fastest", torch.device("cpu")) == expected
        assert backbone_module.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    finally:
        backbone_module.cpu_bf16_pays.cache_clear()


def test_the_matmul_timing_is_a_positive_duration():
    from llm4rec.llm.backbone import _matmul_seconds

    assert 0 < _matmul_seconds(torch.float32, repeats=1) < 5
