"""An offline stand-in for a pretrained LLM: a small Llama trained from scratch on the dataset's prompts.

``build_scratch_backbone`` trains a byte-level BPE tokenizer (``tokenizers``)
on the prompt text of the pre-training periods, builds a Llama-architecture
model from a preset, pre-trains it as a causal LM on those prompts with their
answers, and saves both with ``save_pretrained``, so it loads through
:func:`llm4rec.llm.backbone.load_backbone` like any checkpoint. Only the
pre-training periods are read: no later period (and so no test data) is seen.
It is a small domain model, not a pretrained LLM, and is named as such.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from llm4rec.data.periods import Timeline
from llm4rec.errors import ConfigError
from llm4rec.io import atomic_directory, write_json
from llm4rec.llm.backbone import META_FILE, answer_token_ids
from llm4rec.llm.prompts import PromptTemplate
from llm4rec.llm.samples import render_prompts, title_lookup
from llm4rec.llm.score import left_pad, position_ids

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "pad": "<pad>"}


@dataclass
class ScratchPreset:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int = 1024
    # Pre-training defaults (the build command can override them). On ML-100K, 12,000 prompts of periods 0-4,
    # one epoch, take about 7 minutes on 2 CPU cores and give AUC 0.704 on period 6 before any LoRA.
    max_samples: int = 12000
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.05
    # Extra weight of the answer token in the causal-LM loss: the answer is 1 token of ~170, and the
    # backbone stands in for an LLM that already answers yes/no questions, so its pre-training leans on it.
    answer_loss_weight: float = 0.0


PRESETS = {
    # About 3.4M parameters: 4 layers, hidden 256, tied embeddings.
    "scratch-llama-tiny": ScratchPreset(
        vocab_size=4000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=512,
    ),
    # About 25M parameters: 8 layers, hidden 512.
    "scratch-llama-small": ScratchPreset(
        vocab_size=8000, hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
        intermediate_size=1024, max_samples=20000, learning_rate=1e-3,
    ),
}  # fmt: skip


def get_preset(name: str) -> ScratchPreset:
    if name not in PRESETS:
        raise ConfigError(f"unknown backbone preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (any text encodes, no unknown characters) that prepends <s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS["bos"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        unk_token=SPECIAL_TOKENS["unk"],
        pad_token=SPECIAL_TOKENS["pad"],
        padding_side="left",
    )


def init_scratch_model(preset: ScratchPreset, tokenizer, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_key_value_heads,
        intermediate_size=preset.intermediate_size,
        max_position_embeddings=preset.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def pretraining_texts(
    timeline: Timeline, periods: list[int], template: PromptTemplate, max_samples: int, seed: int
) -> tuple[list[str], list[str]]:
    """Prompts and their answers from ``periods`` (a seeded sample of at most ``max_samples``)."""
    for period in periods:
        timeline.check_period(period)
    rows = timeline.table[timeline.table["period"].isin(periods)]
    if len(rows) > max_samples:
        rows = rows.sample(n=max_samples, random_state=seed).sort_index()
    prompts = render_prompts(rows, title_lookup(timeline.items), template)
    return prompts, [template.answer(label) for label in rows["label"].tolist()]


def pretraining_sequences(tokenizer, prompts: list[str], answers: list[str], max_length: int):
    """Token ids of prompt + answer + </s>, and the position of each answer's first token."""
    prompt_lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    full = tokenizer([p + a for p, a in zip(prompts, answers, strict=True)])["input_ids"]
    sequences = [ids[: max_length - 1] + [tokenizer.eos_token_id] for ids in full]
    # A prompt cut by max_length has no answer left to weight (-1).
    positions = [n if n < len(seq) - 1 else -1 for n, seq in zip(prompt_lengths, sequences, strict=True)]
    return sequences, positions


def weighted_lm_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor, answer_at: torch.Tensor, answer_weight: float
) -> torch.Tensor:
    """Next-token cross-entropy over real tokens; the answer token counts ``1 + answer_weight`` times."""
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten(), reduction="none"
    ).view(input_ids.shape[0], -1)
    weights = (mask[:, 1:] * mask[:, :-1]).float()  # both tokens real: a pad never predicts the first token
    rows = torch.nonzero(answer_at >= 1).flatten()
    weights[rows, answer_at[rows] - 1] += answer_weight  # position answer_at - 1 predicts the answer token
    return (ce * weights).sum() / weights.sum()


def pretrain(
    model,
    tokenizer,
    prompts: list[str],
    answers: list[str],
    preset: ScratchPreset,
    seed: int,
    max_length: int,
    progress: bool,
):
    """Causal-LM pre-training with accelerate (device and mixed precision); returns the loss per step."""
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    accelerator = Accelerator()
    sequences, answer_positions = pretraining_sequences(tokenizer, prompts, answers, max_length)
    rng = np.random.default_rng(seed)
    # Length-grouped batches in random order: little padding, no fixed curriculum.
    order = np.argsort([len(s) for s in sequences], kind="stable")
    batches = [order[i : i + preset.batch_size] for i in range(0, len(order), preset.batch_size)]
    steps = len(batches) * preset.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.learning_rate, weight_decay=0.01, betas=(0.9, 0.95))
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(steps * preset.warmup_fraction), steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    losses = []
    bar = tqdm(total=steps, desc="pre-training", unit="step", disable=not progress)
    for _ in range(preset.epochs):
        for batch in rng.permutation(len(batches)):
            rows = batches[batch]
            input_ids, mask = left_pad([sequences[i] for i in rows], tokenizer.pad_token_id)
            # With left padding, a row's token k sits at column (longest - length) + k.
            pad = input_ids.shape[1] - mask.sum(1)
            answer_at = torch.as_tensor([answer_positions[i] for i in rows]) + pad
            answer_at[torch.as_tensor([answer_positions[i] for i in rows]) < 0] = -1
            input_ids, mask = input_ids.to(accelerator.device), mask.to(accelerator.device)
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask)).logits
            loss = weighted_lm_loss(
                logits, input_ids, mask, answer_at.to(accelerator.device), preset.answer_loss_weight
            )
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    bar.close()
    return accelerator.unwrap_model(model), losses


def default_pretraining_periods(n_periods: int) -> list[int]:
    """The first half of the periods: the later half stays unseen for training and testing methods on it."""
    return list(range(max(1, n_periods // 2)))


def check_pretraining_periods(periods: list[int], first_tested: int, where: str) -> None:
    """A backbone pre-trained on a tested period has seen its labels: refuse, naming the periods."""
    seen = sorted(p for p in periods if p >= first_tested)
    if seen:
        raise ConfigError(
            f"{where}: the scratch backbone is pre-trained on periods {periods}, but periods from {first_tested} on "
            f"are tested, so it would have seen the labels of tested period(s) {seen}; pre-train it on periods "
            f"before {first_tested} only (build_backbone.periods / --periods) or test later periods"
        )


def check_backbone_directory(path: str | Path, dataset: str, first_tested: int) -> None:
    """The check above for an existing scratch backbone, from the periods its ``llm4rec.json`` records (a backbone
    of another dataset, or not a scratch one, has no periods of this one)."""
    meta_path = Path(path) / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # JSONDecodeError, UnicodeDecodeError
        return
    if isinstance(meta, dict) and meta.get("kind") == "scratch-backbone" and meta.get("dataset") == dataset:
        check_pretraining_periods(list(meta.get("periods") or []), first_tested, str(meta_path))


def build_scratch_backbone(
    timeline: Timeline,
    template: PromptTemplate,
    out: str,
    preset_name: str = "scratch-llama-tiny",
    periods: list[int] | None = None,
    seed: int = 0,
    max_length: int = 512,
    progress: bool = True,
    **overrides,
) -> dict:
    """Train tokenizer and model, save both to ``out`` (atomically) with ``llm4rec.json``; return that metadata.

    ``overrides`` replace the preset's pre-training settings (max_samples, epochs, learning_rate, ...); None values
    are ignored.
    """
    preset = get_preset(preset_name)
    known = {f.name for f in fields(ScratchPreset)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown backbone settings {unknown}; settings: {sorted(known)}")
    preset = replace(preset, **{k: v for k, v in overrides.items() if v is not None})
    periods = default_pretraining_periods(timeline.n_periods) if periods is None else sorted(set(periods))
    started = time.perf_counter()
    prompts, answers = pretraining_texts(timeline, periods, template, preset.max_samples, seed)
    tokenizer = train_tokenizer([p + a for p, a in zip(prompts, answers, strict=True)], preset.vocab_size)
    answer_ids = answer_token_ids(tokenizer, template)
    model = init_scratch_model(preset, tokenizer, seed)
    n_parameters = sum(p.numel() for p in model.parameters())
    log.info(
        "%s: %.2fM parameters, vocabulary %d, %d texts", preset_name, n_parameters / 1e6, len(tokenizer), len(prompts)
    )
    model, losses = pretrain(model, tokenizer, prompts, answers, preset, seed, max_length, progress)
    seconds = time.perf_counter() - started
    window = max(1, min(20, len(losses) // 5))  # steps averaged for the first and last loss
    meta = {
        "kind": "scratch-backbone",
        "preset": preset_name,
        "dataset": timeline.name,
        "periods": periods,
        "n_texts": len(prompts),
        "n_parameters": n_parameters,
        "vocab_size": len(tokenizer),
        "answer_token_ids": {"yes": answer_ids[0], "no": answer_ids[1]},
        "template": template.source,
        "seed": seed,
        "pretraining": {
            k: getattr(preset, k)
            for k in ("max_samples", "epochs", "batch_size", "learning_rate", "warmup_fraction", "answer_loss_weight")
        },
        "first_loss": round(float(np.mean(losses[:window])), 4),
        "last_loss": round(float(np.mean(losses[-window:])), 4),
        "seconds": round(seconds, 1),
    }
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        write_json(tmp / META_FILE, meta)
    return meta
