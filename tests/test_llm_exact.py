"""The LLM path made exact: fp32 answer logits, base fingerprints, fresh adapters, gradient accumulation, NaN val
AUC, leak checks on scratch backbones, tokenizer.model checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm4rec.errors import ConfigError
from llm4rec.llm.backbone import BackboneConfig, load_backbone, model_fingerprint
from llm4rec.llm.score import left_pad, score_sequences
from llm4rec.llm.train import LoraSettings, LoraTrainConfig, attach_lora, plan_steps, train_lora
from tests.conftest import period_samples

# ---------------------------------------------------------------- scores in full precision


def test_bf16_scores_keep_fp32_resolution_where_logits_are_large(tiny_backbone_dir, movie_template, planted_timeline):
    """Answer logits near 30 (as on SmolLM2): bf16 logits step by 0.125 there, so scores read off the model's own
    bf16 logits tie; the answer logits taken in fp32 from the final hidden state do not."""
    backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir), dtype="bfloat16"), movie_template)
    yes, no = backbone.answer_ids
    head = backbone.model.get_output_embeddings().weight
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # both answer rows: a large shared part plus different parts (tied embeddings too)
        direction = torch.sign(torch.randn(head.shape[1], generator=generator))
        head[yes] = (direction * 2.0 + 0.25 * torch.randn(head.shape[1], generator=generator)).to(head.dtype)
        head[no] = (direction * 2.0 + 0.25 * torch.randn(head.shape[1], generator=generator)).to(head.dtype)
    sequences = period_samples(backbone, planted_timeline, movie_template, 1, "val")["input_ids"][:40]
    distinct = len({tuple(s) for s in sequences})  # planted prompts differ only in the target title
    pad = backbone.tokenizer.pad_token_id
    ours = score_sequences(backbone.model, sequences, backbone.answer_ids, pad, batch_size=8)
    with torch.no_grad():
        input_ids, mask = left_pad(sequences, pad)
        logits = backbone.model(input_ids=input_ids, attention_mask=mask).logits[:, -1]
    assert logits[:, yes].float().abs().min() > 16  # the regime where bf16 steps are 0.125 or more
    rounded = torch.softmax(logits[:, [yes, no]].float(), -1)[:, 0].numpy()
    assert distinct >= 10 and len(np.unique(rounded)) < distinct // 2  # the model's own bf16 logits tie
    assert len(np.unique(ours)) == distinct  # ours: as many distinct scores as distinct prompts


def test_fp32_answer_logits_equal_the_models_logits_in_fp32(backbone, planted_timeline, movie_template):
    from llm4rec.llm.score import last_token_logits

    sequences = period_samples(backbone, planted_timeline, movie_template, 1, "val")["input_ids"][:6]
    input_ids, mask = left_pad(sequences, backbone.tokenizer.pad_token_id)
    from llm4rec.llm.score import position_ids

    with torch.no_grad():
        theirs = backbone.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask)).logits[:, -1]
        ours = last_token_logits(backbone.model, input_ids, mask)
        pair = last_token_logits(backbone.model, input_ids, mask, backbone.answer_ids)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pair, theirs[:, list(backbone.answer_ids)], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_tells_bases_apart_and_ignores_the_dtype(tiny_backbone_dir, movie_template):
    from transformers import AutoModelForCausalLM

    base = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    in_bf16 = load_backbone(BackboneConfig(str(tiny_backbone_dir), dtype="bfloat16"), movie_template)
    assert in_bf16.fingerprint == base.fingerprint

    # the base with a LoRA merged in
    torch.manual_seed(0)
    lora = attach_lora(AutoModelForCausalLM.from_pretrained(tiny_backbone_dir), LoraSettings(r=4))
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    merged = lora.merge_and_unload()
    # other transformer weights under the same embeddings
    other = AutoModelForCausalLM.from_pretrained(tiny_backbone_dir)
    with torch.no_grad():
        other.model.layers[-1].mlp.down_proj.weight.mul_(1.5)
    assert torch.equal(other.get_input_embeddings().weight, base.model.get_input_embeddings().weight)
    prints = {model_fingerprint(m, base.tokenizer) for m in (base.model, merged, other)}
    assert len(prints) == 3
    # the tokenizer is part of it
    assert model_fingerprint(base.model) != model_fingerprint(base.model, base.tokenizer)


# ---------------------------------------------------------------- fresh adapters, kept starting adapters


def test_a_fresh_lora_always_trains(backbone, planted_timeline, movie_template):
    train = period_samples(backbone, planted_timeline, movie_template, 1, "train")
    val = period_samples(backbone, planted_timeline, movie_template, 1, "val")
    torch.manual_seed(0)
    model = attach_lora(backbone.model, LoraSettings(r=4))
    # A learning rate of 0 never improves on the start: a fresh LoRA must still return a trained state, not step 0.
    config = LoraTrainConfig(epochs=2, batch_size=16, learning_rate=1e-12, max_train_samples=48, eval_at_start=True)
    result = train_lora(model, backbone.tokenizer, backbone.answer_ids, train, val, config, progress=False)
    assert [h["step"] for h in result.history] == [3, 6] and result.best_step > 0 and not result.kept_start


def test_fine_tuning_that_never_improves_keeps_and_flags_the_start(
    backbone, planted_timeline, movie_template, caplog, monkeypatch
):
    train = period_samples(backbone, planted_timeline, movie_template, 1, "train")
    val = period_samples(backbone, planted_timeline, movie_template, 1, "val")
    torch.manual_seed(0)
    model = attach_lora(backbone.model, LoraSettings(r=4))
    good = LoraTrainConfig(epochs=2, batch_size=16, learning_rate=1e-2, max_train_samples=160)
    train_lora(model, backbone.tokenizer, backbone.answer_ids, train, val, good, progress=False)
    start = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    harmful = LoraTrainConfig(epochs=1, batch_size=16, learning_rate=0.5, max_train_samples=32)  # moves it far
    flipped = train.map(lambda row: {"label": 1 - row["label"]})
    # Whether flipped labels at lr 0.5 lower this tiny model's val AUC is numerics (in a fresh environment of
    # 2026-12-04, transformers 5.25, it rose): the val AUC after each step is made to fall, so "never improves"
    # is certain and the test checks the rule, keeping and restoring the start.
    import llm4rec.llm.train as train_module

    aucs = iter([0.6, 0.5, 0.4, 0.3])
    monkeypatch.setattr(train_module, "validation_auc", lambda *args, **kwargs: next(aucs))
    with caplog.at_level("WARNING"):
        result = train_lora(
            model, backbone.tokenizer, backbone.answer_ids, flipped, val, harmful, progress=False, keep_start=True,
            fit_name="FT p9",
        )  # fmt: skip
    assert result.history[0]["step"] == 0 and result.best_step == 0 and result.kept_start
    assert "FT p9: no update beat the starting adapter" in caplog.text
    assert all(torch.equal(model.state_dict()[k], v) for k, v in start.items())


# ---------------------------------------------------------------- gradient accumulation


def test_step_plan_takes_every_micro_batch_and_counts_the_steps():
    lengths = np.arange(10)
    config = LoraTrainConfig(epochs=3, batch_size=4, gradient_accumulation_steps=2, group_by_length=False)
    plan = plan_steps(lengths, config, world=1, rank=0, rng=np.random.default_rng(0))
    assert [[len(b) for b in step] for step in plan[0]] == [[4, 4], [2]]  # 3 micro-batches: the last step has 1
    assert sum(len(epoch) for epoch in plan) == 6
    for epoch in plan:
        assert sorted(np.concatenate([b for step in epoch for b in step]).tolist()) == list(range(10))


def _lora_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def test_accumulated_micro_batches_equal_one_big_batch(tiny_backbone_dir, movie_template, planted_timeline):
    """12 rows as 3 accumulated micro-batches of 4 make the same update as one batch of 12 (the step's mean)."""
    states = []
    for batch_size, accumulation in ((12, 1), (4, 3)):
        backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
        train = period_samples(backbone, planted_timeline, movie_template, 1, "train")
        val = period_samples(backbone, planted_timeline, movie_template, 1, "val")
        torch.manual_seed(0)
        model = attach_lora(backbone.model, LoraSettings(r=4, dropout=0.0))
        config = LoraTrainConfig(
            epochs=1, batch_size=batch_size, gradient_accumulation_steps=accumulation, max_train_samples=12,
            group_by_length=False, warmup_fraction=0.0, learning_rate=1e-2, share_prompt_prefix="never",
        )  # fmt: skip
        result = train_lora(model, backbone.tokenizer, backbone.answer_ids, train, val, config, progress=False)
        assert result.steps == result.planned_steps == 1
        states.append(_lora_state(model))
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, atol=1e-6, rtol=1e-4)


def test_schedule_spans_exactly_the_steps_taken_and_a_second_fit_starts_clean(
    tiny_backbone_dir, movie_template, planted_timeline
):
    from accelerate import Accelerator

    config = LoraTrainConfig(
        epochs=2, batch_size=4, gradient_accumulation_steps=2, max_train_samples=20, warmup_fraction=0.0,
        patience=5, learning_rate=1e-2, group_by_length=False,
    )  # fmt: skip

    def fit(accelerator, name):
        backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
        train = period_samples(backbone, planted_timeline, movie_template, 1, "train")
        val = period_samples(backbone, planted_timeline, movie_template, 1, "val")
        torch.manual_seed(0)
        model = attach_lora(backbone.model, LoraSettings(r=4), name)
        result = train_lora(model, backbone.tokenizer, backbone.answer_ids, train, val, config, accelerator, False)
        return result, _lora_state(model)

    shared = Accelerator()
    first, _ = fit(shared, "first")
    # 20 rows: 5 micro-batches of 4 an epoch, steps of 2 + 2 + 1: 3 steps an epoch, 6 in all; the linear schedule
    # ends at 0 exactly at the last of them.
    assert first.steps == first.planned_steps == 6
    assert first.history[-1]["learning_rate"] == 0.0
    second, second_state = fit(shared, "second")  # the same accelerator: no step counter carried over
    fresh, fresh_state = fit(Accelerator(), "second")
    assert second.history == fresh.history
    for key, value in fresh_state.items():
        torch.testing.assert_close(second_state[key], value)


def test_an_accelerator_that_accumulates_itself_is_refused(backbone, planted_timeline, movie_template):
    from accelerate import Accelerator

    train = period_samples(backbone, planted_timeline, movie_template, 1, "train")
    model = attach_lora(backbone.model, LoraSettings(r=4))
    with pytest.raises(ConfigError, match="accumulates gradients itself"):
        train_lora(model, backbone.tokenizer, backbone.answer_ids, train, train, LoraTrainConfig(),
                   Accelerator(gradient_accumulation_steps=2), False)  # fmt: skip


# ---------------------------------------------------------------- NaN val AUC


def test_a_nan_val_auc_is_an_error_naming_the_fit(backbone, planted_timeline, movie_template):
    train = period_samples(backbone, planted_timeline, movie_template, 1, "train")
    val = period_samples(backbone, planted_timeline, movie_template, 1, "val")
    one_class = val.filter(lambda row: row["label"] == 1)
    model = attach_lora(backbone.model, LoraSettings(r=4))
    config = LoraTrainConfig(epochs=1, batch_size=16, max_train_samples=16)
    with pytest.raises(ConfigError, match=r"short p3: the val AUC at step 1 is NaN \(\d+ val samples, \d+ positive\)"):
        train_lora(model, backbone.tokenizer, backbone.answer_ids, train, one_class, config, progress=False,
                   fit_name="short p3")  # fmt: skip


# ---------------------------------------------------------------- no test labels in a scratch backbone


def test_a_scratch_backbone_pre_trained_on_a_tested_period_is_refused():
    from llm4rec.config import from_dict
    from llm4rec.llm.lsat_config import LsatConfig

    # The default build pre-trains on periods 0-4 of ML-100K's 10; K = 3 tests periods 4..9.
    with pytest.raises(ConfigError, match=r"pre-trained on periods \[0, 1, 2, 3, 4\].*tested period\(s\) \[4\]"):
        from_dict(LsatConfig, {"backbone": {"model_name_or_path": "x"}, "build_backbone": {},
                               "long_term": {"periods": 3}})  # fmt: skip
    ok = from_dict(LsatConfig, {"backbone": {"model_name_or_path": "x"}, "build_backbone": {"periods": [0, 1, 2]},
                                "long_term": {"periods": 3}})  # fmt: skip
    assert ok.first_test_period == 4


def test_an_existing_scratch_backbone_that_saw_a_tested_period_is_refused(tmp_path):
    from llm4rec.llm.scratch import check_backbone_directory

    (tmp_path / "llm4rec.json").write_text(
        json.dumps({"kind": "scratch-backbone", "dataset": "ml-100k", "periods": [0, 1, 2, 3, 4]})
    )
    with pytest.raises(ConfigError, match=r"llm4rec.json: the scratch backbone is pre-trained on periods"):
        check_backbone_directory(tmp_path, "ml-100k", 4)
    check_backbone_directory(tmp_path, "ml-100k", 5)  # periods 0-4 end before 5
    check_backbone_directory(tmp_path, "ml-1m", 4)  # another dataset's periods


# ---------------------------------------------------------------- sentencepiece checkpoints


def test_a_checkpoint_with_only_tokenizer_model_loads(tmp_path):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the user will like movie number {i} yes or no" for i in range(200)))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=60, model_type="bpe",
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
    )  # fmt: skip
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (tmp_path / "tokenizer.model").rename(checkpoint / "tokenizer.model")
    (checkpoint / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert tokenizer.decode(tokenizer("the user", add_special_tokens=False)["input_ids"]) == "the user"


def test_sentencepiece_and_protobuf_are_declared():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    dependencies = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    names = set(re.findall(r'^\s*"([A-Za-z0-9_.-]+)', dependencies, flags=re.M))
    assert {"sentencepiece", "protobuf", "gguf"} <= names


# ---------------------------------------------------------------- attention per phase


def test_cpu_training_steps_run_eager_attention_and_scoring_keeps_the_models(backbone, planted_timeline,
                                                                               movie_template):  # fmt: skip
    """train.attention: auto runs the training forwards eagerly on a CPU (SDPA's backward is slow there), the
    val scoring with the model's own SDPA, and leaves the model as it found it; an unknown name is refused."""
    train = period_samples(backbone, planted_timeline, movie_template, 1, "train")
    val = period_samples(backbone, planted_timeline, movie_template, 1, "val")
    torch.manual_seed(0)
    model = attach_lora(backbone.model, LoraSettings(r=4, dropout=0.0))
    base = model.get_base_model()
    assert base.config._attn_implementation == "sdpa"
    seen = []  # (training mode, attention) of each forward
    hook = base.model.register_forward_pre_hook(
        lambda m, a: seen.append((m.training, base.config._attn_implementation))
    )
    try:
        config = LoraTrainConfig(epochs=1, batch_size=16, max_train_samples=32, max_val_samples=16)
        train_lora(model, backbone.tokenizer, backbone.answer_ids, train, val, config, progress=False)
    finally:
        hook.remove()
    assert {a for training, a in seen if training} == {"eager"}
    assert {a for training, a in seen if not training} == {"sdpa"}
    assert base.config._attn_implementation == "sdpa"
    with pytest.raises(ConfigError, match="train.attention"):
        LoraTrainConfig(attention="flash")
