"""The batched yes/no scorer against a naive computation, LoRA training, and adapters on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm4rec.errors import ConfigError
from llm4rec.eval import metrics
from llm4rec.llm.adapters import load_adapter, save_adapter
from llm4rec.llm.backbone import BackboneConfig, load_backbone
from llm4rec.llm.score import score_sequences
from llm4rec.llm.train import LoraSettings, LoraTrainConfig, attach_lora, train_lora
from tests.conftest import period_samples


def naive_p_yes(model, ids: list[int], answer_ids) -> float:
    """One unpadded sequence, full logits, softmax over the whole vocabulary, then renormalised to the two answers."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].double()
    probs = torch.softmax(logits, -1)
    return float(probs[answer_ids[0]] / (probs[answer_ids[0]] + probs[answer_ids[1]]))


def test_batched_scorer_equals_naive_full_logits(backbone, planted_timeline, movie_template):
    data = period_samples(backbone, planted_timeline, movie_template, 1, "val")
    sequences = data["input_ids"][:13]
    for i in range(0, len(sequences), 2):  # prefixes of many lengths in one batch: lots of left padding
        sequences[i] = sequences[i][: 20 + 7 * i]
    assert len({len(s) for s in sequences}) > 3
    batched = score_sequences(backbone.model, sequences, backbone.answer_ids, backbone.tokenizer.pad_token_id, 4)
    naive = np.array([naive_p_yes(backbone.model, s, backbone.answer_ids) for s in sequences])
    np.testing.assert_allclose(batched, naive, atol=1e-5, rtol=0)
    assert len(np.unique(np.round(batched, 6))) > 1  # not a constant


def test_training_lowers_loss_and_raises_auc_then_save_load_scores_identically(
    backbone, planted_timeline, movie_template, tmp_path, tiny_backbone_dir
):
    train = period_samples(backbone, planted_timeline, movie_template, 1, "train")
    val = period_samples(backbone, planted_timeline, movie_template, 1, "val")
    test = period_samples(backbone, planted_timeline, movie_template, 2, "all").select(range(120))
    pad = backbone.tokenizer.pad_token_id
    y_test = np.asarray(test["label"])
    before = metrics.auc(y_test, score_sequences(backbone.model, test["input_ids"], backbone.answer_ids, pad))

    torch.manual_seed(0)  # LoRA's A matrices start random
    model = attach_lora(backbone.model, LoraSettings())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.05 * sum(p.numel() for p in model.parameters())  # only LoRA weights train
    config = LoraTrainConfig(epochs=3, batch_size=16, learning_rate=1e-2, patience=3)
    result = train_lora(model, backbone.tokenizer, backbone.answer_ids, train, val, config, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert [h["step"] for h in result.history] == [23, 46, 69]  # a fresh LoRA is never scored as a candidate
    assert len(losses) == 3 and losses[-1] < losses[0]
    p_after = score_sequences(model, test["input_ids"], backbone.answer_ids, pad)
    after = metrics.auc(y_test, p_after)
    assert after > 0.8 and after > before + 0.05, (before, after)
    assert result.best_val_auc == max(h["val_auc"] for h in result.history)

    out = save_adapter(model, tmp_path / "adapter", backbone, movie_template, 512, {"periods": [1]})
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    meta = json.loads((out / "llm4rec.json").read_text())
    assert meta["periods"] == [1] and meta["base_fingerprint"] == backbone.fingerprint and meta["cutoff"] == 512

    fresh = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    loaded = load_adapter(fresh, out)
    p_loaded = score_sequences(loaded, test["input_ids"], fresh.answer_ids, pad)
    np.testing.assert_allclose(p_loaded, p_after, atol=1e-6, rtol=0)


def test_adapter_from_another_base_model_is_refused(backbone, movie_template, tmp_path, tiny_backbone_dir):
    from llm4rec.llm.scratch import PRESETS, init_scratch_model

    other_dir = tmp_path / "other-base"
    init_scratch_model(PRESETS["scratch-llama-tiny"], backbone.tokenizer, seed=1).save_pretrained(other_dir)
    backbone.tokenizer.save_pretrained(other_dir)
    other = load_backbone(BackboneConfig(str(other_dir)), movie_template)
    adapter = save_adapter(attach_lora(other.model, LoraSettings()), tmp_path / "a", other, movie_template, 512, {})
    with pytest.raises(ConfigError, match="was trained on base model"):
        load_adapter(backbone, adapter)


def test_adapter_without_safetensors_is_refused(backbone, movie_template, tmp_path):
    adapter = save_adapter(
        attach_lora(backbone.model, LoraSettings()), tmp_path / "a", backbone, movie_template, 512, {}
    )
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    with pytest.raises(ConfigError, match="only safetensors"):
        load_adapter(backbone, adapter)


def test_unknown_lora_target_module_lists_the_real_ones(backbone):
    with pytest.raises(ConfigError, match=r"\['query'\] not found.*q_proj"):
        attach_lora(backbone.model, LoraSettings(target_modules=["query"]))


def test_train_on_inputs_trains_on_prompt_whole_answer_and_eos(backbone, planted_timeline, movie_template):
    from llm4rec.llm.score import left_pad, position_ids
    from llm4rec.llm.train import full_sequence_loss

    tokenizer = backbone.tokenizer
    train = period_samples(backbone, planted_timeline, movie_template, 1, "train")
    # TALLRec's training text: prompt + "Yes." / "No." + EOS, tokenized whole.
    for label, answer in ((1, "Yes."), (0, "No.")):
        prompt = train["prompt"][0]
        whole = tokenizer(prompt + answer)["input_ids"] + [tokenizer.eos_token_id]
        assert train["input_ids"][0] + backbone.answer_tokens[label] == whole
        assert backbone.answer_tokens[label][0] == backbone.answer_ids[1 - label]
        assert len(backbone.answer_tokens[label]) >= 3  # answer word, full stop (here separate tokens), EOS
    sequences = [s + backbone.answer_tokens[1] for s in train["input_ids"][:3]]
    input_ids, mask = left_pad(sequences, backbone.tokenizer.pad_token_id)
    with torch.no_grad():
        loss = full_sequence_loss(backbone.model, input_ids, mask)
        logits = backbone.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask)).logits
    # By hand: mean next-token cross-entropy over the real tokens of all rows.
    log_probs = torch.log_softmax(logits.double(), -1)
    terms = [
        -log_probs[r, k, input_ids[r, k + 1]]
        for r in range(3)
        for k in range(input_ids.shape[1] - 1)
        if mask[r, k] and mask[r, k + 1]
    ]
    assert abs(float(loss) - float(sum(terms) / len(terms))) < 1e-5

    model = attach_lora(backbone.model, LoraSettings())
    config = LoraTrainConfig(epochs=1, batch_size=8, max_train_samples=32, max_val_samples=16, train_on_inputs=True)
    val = period_samples(backbone, planted_timeline, movie_template, 1, "val")
    result = train_lora(
        model, tokenizer, backbone.answer_ids, train, val, config, progress=False, answer_tokens=backbone.answer_tokens
    )
    assert result.steps == 4 and all(np.isfinite(h["val_auc"]) for h in result.history)
