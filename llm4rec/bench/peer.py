"""The usual way to score and train an LLM recommender, as TALLRec and the LSAT authors' code do it.

This is the peer our paths are measured against; it is not part of the
package API, only a few lines of plain transformers.

- Scoring from full logits: batches in input order, padded on the right to the
  longest row, a forward pass that returns the full-vocabulary logits at every
  position (as ``Trainer.predict`` and LSAT's evaluation get them), then the
  two answer tokens' logits at each row's last real token.
- Scoring with ``generate``: left-padded batches in input order,
  ``generate(max_new_tokens=1)`` and the logits of its first step (TALLRec's
  ``evaluate.py``). TALLRec then takes a softmax over the two answers' full-
  vocabulary *probabilities*; both peers here take it over their logits, as we
  do, so all paths give the same number and only the speed differs.
- Training: ``transformers.Trainer`` with its defaults (no length grouping),
  ``DataCollatorForSeq2Seq`` padding each batch to its longest row, prompt +
  answer as input with labels -100 except on the answer token, and the model's
  own loss over full-vocabulary logits at every position.
"""

from __future__ import annotations

import copy
import tempfile
import time

import numpy as np
import torch

from llm4rec.bench.data import BenchData
from llm4rec.bench.measure import synchronize
from llm4rec.llm.score import left_pad


def right_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [batch, longest], real tokens from position 0 (positions need no help)."""
    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def _device_of(model, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


@torch.no_grad()
def peer_logits_scores(model, sequences, answer_ids, pad_id, batch_size=32, device=None) -> np.ndarray:
    """P(positive answer) from full-sequence, full-vocabulary logits of right-padded batches in input order."""
    device = _device_of(model, device)
    model.eval()
    out = []
    for start in range(0, len(sequences), batch_size):
        input_ids, mask = right_pad(sequences[start : start + batch_size], pad_id)
        input_ids, mask = input_ids.to(device), mask.to(device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits  # [batch, longest, vocab]
        last = mask.sum(-1) - 1
        pair = logits[torch.arange(len(input_ids), device=device), last][:, list(answer_ids)].float()
        out.append(torch.softmax(pair, dim=-1)[:, 0].cpu())
    return torch.cat(out).double().numpy()


@torch.no_grad()
def peer_generate_scores(model, sequences, answer_ids, pad_id, batch_size=32, device=None) -> np.ndarray:
    """P(positive answer) from the first generated step's logits, left-padded batches in input order."""
    device = _device_of(model, device)
    model.eval()
    out = []
    for start in range(0, len(sequences), batch_size):
        input_ids, mask = left_pad(sequences[start : start + batch_size], pad_id)
        generated = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=1,
            do_sample=False,
            pad_token_id=pad_id,
            output_logits=True,  # the raw logits (``scores`` would be after logits processors)
            return_dict_in_generate=True,
        )
        pair = generated.logits[0][:, list(answer_ids)].float()
        out.append(torch.softmax(pair, dim=-1)[:, 0].cpu())
    return torch.cat(out).double().numpy()


def peer_training_set(data: BenchData):
    """Prompt + answer token as input, labels -100 except the answer (TALLRec's ``train_on_inputs=False``,
    cut to the answer's first token so the loss is the one ours minimises)."""
    import datasets

    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for seq, label in zip(data.sequences, data.labels, strict=True):
        answer = data.answer_ids[0] if label == 1 else data.answer_ids[1]
        rows["input_ids"].append(seq + [answer])
        rows["attention_mask"].append([1] * (len(seq) + 1))
        rows["labels"].append([-100] * len(seq) + [answer])
    return datasets.Dataset.from_dict(rows)


class CountingCollator:
    """``DataCollatorForSeq2Seq`` padding to the longest row (on the right); also counts each batch's prompt
    tokens, in the order batches are made (the order the Trainer steps through them)."""

    def __init__(self, tokenizer):
        from transformers import DataCollatorForSeq2Seq

        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.padding_side = "right"
        self.collate = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
        self.prompt_tokens: list[int] = []

    def __call__(self, features):
        batch = self.collate(features)
        self.prompt_tokens.append(int(batch["attention_mask"].sum()) - len(features))  # the answer is no prompt
        return batch


def step_clock(device: torch.device):
    """A TrainerCallback that records when each optimizer step has finished (device work included)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            synchronize(device)
            self.ends.append(time.perf_counter())  # ends[k] = end of step k (ends[0]: start)

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(device)
            self.ends.append(time.perf_counter())

    return StepClock()


def peer_trainer(
    model,
    data: BenchData,
    batch_size: int,
    max_steps: int,
    device: torch.device,
    mixed_precision: str = "no",
    learning_rate: float = 1e-3,
    seed: int = 0,
    output_dir: str | None = None,
):
    """A ``transformers.Trainer`` on ``data`` with its defaults: (trainer, counting collator, step clock).
    Nothing is saved (``save_strategy="no"``); ``output_dir`` defaults to a new temporary directory."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=output_dir or tempfile.mkdtemp(prefix="llm4rec-peer-"),
        per_device_train_batch_size=batch_size,
        max_steps=max_steps,
        learning_rate=learning_rate,
        bf16=mixed_precision == "bf16",
        fp16=mixed_precision == "fp16",
        use_cpu=device.type == "cpu",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,  # the default sampler: random batches, no grouping by length
    )
    collator = CountingCollator(data.tokenizer)
    clock = step_clock(device)
    trainer = Trainer(
        model=model, args=args, train_dataset=peer_training_set(data), data_collator=collator, callbacks=[clock]
    )
    return trainer, collator, clock
