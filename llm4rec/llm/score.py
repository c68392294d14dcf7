"""P(Yes) for many prompts: one forward pass per batch, never ``generate``.

Prompts are sorted by length so a batch pads little, padded on the left so
every row's last position is its own last prompt token, and given explicit
position ids so padding does not shift the positions of the real tokens.
Only the last position's logits are computed (``logits_to_keep=1``) and
P(Yes) is the softmax over the two answer tokens' logits there.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both [batch, longest], real tokens right-aligned."""
    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            input_ids[row, longest - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, longest - len(seq) :] = 1
    return input_ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over each row's real tokens (pads get 0), as if the row had no padding."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def last_token_logits(model, input_ids: torch.Tensor, mask: torch.Tensor, **forward_kwargs) -> torch.Tensor:
    """[batch, vocab] logits at each row's last position (``forward_kwargs``: e.g. peft's ``adapter_names``)."""
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids(mask),
        logits_to_keep=1,
        use_cache=False,
        **forward_kwargs,
    )
    return out.logits[:, -1, :]


def answer_probability(logits: torch.Tensor, answer_ids: tuple[int, int]) -> torch.Tensor:
    """P(positive answer) from last-position logits: softmax over the two answer tokens, in fp32."""
    pair = logits[:, list(answer_ids)].float()
    return torch.softmax(pair, dim=-1)[:, 0]


def length_sorted_batches(lengths: list[int] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def score_sequences(
    model,
    sequences: list[list[int]],
    answer_ids: tuple[int, int],
    pad_id: int,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """P(positive answer) for each token sequence, in input order."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    p = np.empty(len(sequences), dtype=np.float64)
    batches = length_sorted_batches([len(s) for s in sequences], batch_size)
    for batch in tqdm(batches, desc="scoring", unit="batch", disable=not progress, leave=False):
        input_ids, mask = left_pad([sequences[i] for i in batch], pad_id)
        logits = last_token_logits(model, input_ids.to(device), mask.to(device))
        p[batch] = answer_probability(logits, answer_ids).cpu().numpy()
    model.train(was_training)
    return p
