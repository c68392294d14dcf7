"""Benchmark correctness, not speed: our scores and losses equal the usual way's on the same model and inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm4rec.bench.architectures import build_random_model, get_architecture
from llm4rec.bench.data import LengthSpec, synthetic_data
from llm4rec.bench.flops import forward_flops
from llm4rec.bench.peer import CountingCollator, peer_generate_scores, peer_logits_scores, peer_trainer
from llm4rec.cli import main
from llm4rec.errors import ConfigError
from llm4rec.llm.score import (
    in_input_order,
    iter_last_token_logits,
    left_pad,
    score_sequences,
    shared_prefix_length,
)
from llm4rec.llm.train import LoraSettings, answer_loss, attach_lora, shared_prefix_answer_loss

TINY = get_architecture("scratch-llama-tiny", vocab_size=256)
LENGTHS = LengthSpec(28, 6, 20, 40)  # every row a different length: padding in each batch


def peer_batch_loss(trainer, collator: CountingCollator, features: list[dict]) -> torch.Tensor:
    """The loss the Trainer minimises on one batch of ``peer_training_set`` rows (its ``compute_loss``)."""
    batch = collator(features)
    inputs = {k: v.to(trainer.args.device) for k, v in batch.items()}
    count = (inputs["labels"] != -100).sum()  # what the Trainer passes as num_items_in_batch
    return trainer.compute_loss(trainer.model, inputs, num_items_in_batch=count)


@pytest.fixture
def data():
    return synthetic_data(12, TINY.vocab_size, LENGTHS, shared_prefix=17, seed=1)


@pytest.fixture
def lora_model(one_thread):
    """Two adapters with random B (peft starts B at zero, which would hide any adapter mix-up)."""
    model = attach_lora(build_random_model(TINY, seed=3), LoraSettings(), adapter_name="long")
    attach_lora(model, LoraSettings(), adapter_name="short")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model.set_adapter("long")
    return model.eval()


def test_our_scores_equal_both_peers_scores_in_fp32(data, one_thread):
    model = build_random_model(TINY, seed=2)
    args = (data.sequences, data.answer_ids, data.pad_id, 5)
    assert shared_prefix_length(data.sequences) == 17  # the shared-prefix cache is in play
    ours = score_sequences(model, *args)
    whole = np.empty(len(data.sequences))
    for batch, logits in iter_last_token_logits(model, data.sequences, data.pad_id, 5, share_prefix=False):
        whole[batch] = torch.softmax(logits[:, list(data.answer_ids)].float(), -1)[:, 0].detach().numpy()
    np.testing.assert_allclose(ours, whole, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours, peer_logits_scores(model, *args), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours, peer_generate_scores(model, *args), atol=1e-4, rtol=0)
    assert np.ptp(ours) > 1e-3  # not a constant


def test_one_mixed_adapter_pass_equals_one_pass_per_adapter(data, lora_model):
    args = (data.sequences, data.answer_ids, data.pad_id)
    batches, values = [], []
    with torch.inference_mode():
        for batch, logits in iter_last_token_logits(
            lora_model, data.sequences, data.pad_id, 4, adapters=("long", "short")
        ):
            batches.append(batch)
            values.append(torch.softmax(logits[:, list(data.answer_ids)].float(), -1)[:, 0].view(2, len(batch)))
    both = in_input_order(batches, values, len(data.sequences))
    for row, name in enumerate(("long", "short")):
        lora_model.set_adapter(name)
        np.testing.assert_allclose(both[row], score_sequences(lora_model, *args, 4), atol=1e-5, rtol=0)
    assert np.abs(both[0] - both[1]).max() > 1e-4  # the adapters differ


def test_our_answer_loss_equals_the_trainers_loss_and_gradients(data, lora_model, tmp_path):
    """Labels -100 except the answer token: the Trainer's loss (sum over labelled tokens / their count, the
    count being one per row) is the mean over rows of the answer token's cross-entropy, which is ours."""
    rows = list(range(6))
    trainer, collator, _ = peer_trainer(lora_model, data, 6, 1, torch.device("cpu"), output_dir=str(tmp_path))
    features = [trainer.train_dataset[i] for i in rows]
    sequences = [data.sequences[i] for i in rows]
    targets = torch.tensor([data.answer_ids[0] if data.labels[i] == 1 else data.answer_ids[1] for i in rows])
    prefix = torch.tensor([data.sequences[0][:17]])

    def loss_and_grads(loss_fn):
        lora_model.zero_grad()
        loss = loss_fn()
        loss.backward()
        grads = [p.grad.clone() for n, p in lora_model.named_parameters() if "lora_" in n and ".long." in n]
        return float(loss.detach()), grads

    peer_loss, peer_grads = loss_and_grads(lambda: peer_batch_loss(trainer, collator, features))
    ours, our_grads = loss_and_grads(lambda: answer_loss(lora_model, *left_pad(sequences, data.pad_id), targets))
    shared, shared_grads = loss_and_grads(
        lambda: shared_prefix_answer_loss(
            lora_model, prefix, *left_pad([s[17:] for s in sequences], data.pad_id), targets
        )
    )
    assert ours == pytest.approx(peer_loss, abs=1e-5) and shared == pytest.approx(peer_loss, abs=1e-5)
    assert len(peer_grads) == 2 * 2 * TINY.num_hidden_layers  # A and B of q_proj and v_proj per layer
    assert any(g.abs().max() > 0 for g in peer_grads)
    for peer_grad, our_grad, shared_grad in zip(peer_grads, our_grads, shared_grads, strict=True):
        torch.testing.assert_close(our_grad, peer_grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(shared_grad, peer_grad, atol=1e-5, rtol=1e-4)


def test_architectures_have_the_published_sizes(one_thread):
    assert get_architecture("tinyllama-1.1b").parameter_count() == 1_100_048_384
    assert get_architecture("llama2-7b").parameter_count() == 6_738_415_616
    assert get_architecture("smollm2-135m").parameter_count() == 134_515_008  # the fetched checkpoint's count
    model = build_random_model(TINY)
    assert sum(p.numel() for p in model.parameters()) == TINY.parameter_count()
    with pytest.raises(ConfigError, match="known: tinyllama-1.1b, llama2-7b"):
        get_architecture("gpt-5")


def test_forward_flops_is_twice_the_parameters_used_per_token():
    arch = get_architecture("tinyllama-1.1b")
    d, v = arch.hidden_size, arch.vocab_size
    # One token: every weight but the input embeddings and the norms does one multiply-add; attention to
    # itself adds 2 d per layer, as many as the norms' d weights twice, so they cancel out of the count.
    assert forward_flops(arch, [1]) == 2 * (arch.parameter_count() - v * d - d)
    assert forward_flops(arch, [10, 20]) == forward_flops(arch, [10]) + forward_flops(arch, [20])
    # A shared prefix counted once: two prompts of 10 sharing 4 tokens = one of 10 + the other's 6-token tail.
    tail = forward_flops(arch, [10]) - forward_flops(arch, [4], head_positions=0)
    assert forward_flops(arch, [10, 10], shared_prefix=4) == pytest.approx(forward_flops(arch, [10]) + tail)
    assert forward_flops(arch, [10], head_positions=None) == forward_flops(arch, [10], 10)


def test_bench_settings_errors_name_the_option():
    with pytest.raises(ConfigError, match="--lengths"):
        LengthSpec.parse("167:18")
    from llm4rec.bench.settings import LlmBenchSettings

    with pytest.raises(ConfigError, match="--dtype"):
        LlmBenchSettings(dtype="int8")
    with pytest.raises(ConfigError, match="--peers"):
        LlmBenchSettings(peers=["vllm"])


def test_bench_cli_prints_a_json_line_per_measurement_and_tables(capsys, tmp_path, one_thread):
    jsonl = tmp_path / "bench.jsonl"
    argv = ["bench", "all", "--arch", "scratch-llama-tiny", "--vocab-size", "256", "--n", "6", "--batch-sizes",
            "3", "--train-batch-size", "2", "--train-steps", "1", "--warmup-steps", "0", "--lsat-batch-size", "3",
            "--repeats", "1", "--lengths", "24:4:20:30", "--shared-prefix", "16", "--ctr-rows", "300",
            "--ctr-models", "MF", "--peak-tflops", "1", "--jsonl", str(jsonl)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert records == [json.loads(line) for line in jsonl.read_text().splitlines()]
    kinds = {(r["bench"], r.get("path") or r.get("model") or r.get("what") or r.get("stage")) for r in records}
    for expected in [("score", "ours"), ("score", "peer-logits"), ("score", "peer-generate"), ("train", "ours"),
                     ("train", "peer-trainer"), ("lsat", "ensemble, one pass"), ("lsat", "merge_and_unload"),
                     ("megg", "GGscores, one pass"), ("megg", "gradient pass (floor)"), ("ctr", "MF"),
                     ("machine", "start")]:  # fmt: skip
        assert expected in kinds
    scores = [r for r in records if r["bench"] == "score" and r.get("kind") != "ratio"]
    assert all(r["max_abs_diff_vs_ours"] < 1e-4 and r["samples_per_s"] > 0 and r["forward_mfu"] > 0 for r in scores)
    ratios = [r for r in records if r.get("kind") == "ratio"]
    assert {r["bench"] for r in ratios} == {"score", "train", "megg", "lsat"}
    (megg,) = [r for r in ratios if r["what"] == "GGscores one pass / gradient pass (time)"]
    assert megg["max_rel_diff_one_vs_two_passes"] < 1e-4  # the two forms give the same GGscores
    assert all(r["met"] in (True, False, None) and r["ratio"] > 0 for r in ratios)
    assert "| arch | dtype | batch | path | samples/s |" in out and "Ratios against targets" in out
    assert "MEGG GGscores over the LoRA weights" in out


def test_training_shares_the_prompt_prefix_only_when_it_changes_nothing(one_thread):
    """With LoRA dropout the shared prefix would draw one dropout mask per batch, not one per row: "exact" (the
    default) shares only without dropout; "always" shares anyway; "never" never."""
    from llm4rec.llm.train import LoraTrainConfig, shares_prompt_prefix

    model = attach_lora(build_random_model(TINY), LoraSettings(dropout=0.05), adapter_name="with_dropout")
    attach_lora(model, LoraSettings(dropout=0.0), adapter_name="without")
    decide = {
        (adapter, mode): shares_prompt_prefix(model, adapter, LoraTrainConfig(share_prompt_prefix=mode))
        for adapter in ("with_dropout", "without")
        for mode in ("exact", "always", "never")
    }
    assert decide == {
        ("with_dropout", "exact"): False,
        ("with_dropout", "always"): True,
        ("with_dropout", "never"): False,
        ("without", "exact"): True,
        ("without", "always"): True,
        ("without", "never"): False,
    }
    assert not shares_prompt_prefix(model, "without", LoraTrainConfig(train_on_inputs=True))
    with pytest.raises(ConfigError, match="share_prompt_prefix"):
        LoraTrainConfig(share_prompt_prefix="yes")
