"""P(Yes) for many prompts: one forward pass per batch, never ``generate``.

Prompts are sorted by length so a batch pads little, padded on the left so
every row's last position is its own last prompt token, and given explicit
position ids so padding does not shift the positions of the real tokens.
Only the last position goes through the output layer (``logits_to_keep``),
and the answer tokens' logits are computed again there in fp32 from the
final hidden state (the output layer's input, caught by a hook): in bf16 the
model's own logits are rounded before any cast (logit(Yes) is about 29.5 on
SmolLM2, where bf16 steps are 0.125), so scores computed from them tie.
P(Yes) is the softmax over the two answer tokens' logits.

All prompts of a template begin with the same instruction (69 of the 167
tokens of an average ML-100K prompt). Its keys and values are computed once
and every batch continues from them (a shared-prefix KV cache), so only each
prompt's own tail runs through the model: the same numbers for ~40% less
work. Rows are laid out as [prefix | left padding | tail], the padding masked.
On a GPU, batches are copied from pinned memory without waiting, and the
probabilities stay on the device until the end: no host-device sync per batch.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from llm4rec.errors import ConfigError

PASSES = ("one", "two")  # score_margins: one mixed-adapter pass, or one pass per adapter
# A shared prefix shorter than this is not worth the extra forward call it takes.
MIN_SHARED_PREFIX = 16


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


def last_position(input_ids: torch.Tensor) -> torch.Tensor:
    """``logits_to_keep`` for the last position, as an index tensor rather than the int 1: the int slices the hidden
    states to a strided view, which ``F.linear`` runs as a slow batched matmul (bmm) when the LM head is frozen
    (as under LoRA); the index gathers a contiguous copy and the head runs as one matmul. Made on the device
    (``arange``), so no host-to-device copy."""
    return torch.arange(input_ids.shape[1] - 1, input_ids.shape[1], device=input_ids.device)


def output_layer(model) -> torch.nn.Module | None:
    """The layer that maps final hidden states to vocabulary logits (``lm_head``), under any wrappers."""
    return _base_model(model).get_output_embeddings()


@contextlib.contextmanager
def final_hidden_states(model) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward appends the output layer's input (the final, normed hidden states at the
    positions ``logits_to_keep`` kept) to the yielded list."""
    caught: list[torch.Tensor] = []
    layer = output_layer(model)
    handle = layer.register_forward_hook(lambda _module, inputs, _output: caught.append(inputs[0]))
    try:
        yield caught
    finally:
        handle.remove()


def head_logits(model, hidden: torch.Tensor, token_ids: Sequence[int] | None = None) -> torch.Tensor:
    """fp32 logits of ``token_ids`` (all tokens when None) from final hidden states ``hidden`` [..., hidden].

    The output layer's weight rows are cast to fp32 before the product, so bf16 weights and activations give
    logits with fp32 resolution. Final-logit soft-capping (Gemma-2) is applied where the config has it."""
    layer = output_layer(model)
    weight = layer.weight if token_ids is None else layer.weight[list(token_ids)]
    bias = getattr(layer, "bias", None)
    if bias is not None and token_ids is not None:
        bias = bias[list(token_ids)]
    logits = torch.nn.functional.linear(hidden.float(), weight.float(), None if bias is None else bias.float())
    cap = getattr(_base_model(model).config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def head_is_exact(model) -> bool:
    """Whether :func:`head_logits` is what the model computes: a plain linear output layer (not one with a LoRA
    of its own, whose delta the base weight lacks) and no logit scaling."""
    layer = output_layer(model)
    config = _base_model(model).config
    return type(layer) is torch.nn.Linear and getattr(config, "logit_scale", None) in (None, 1.0)


def last_token_logits(
    model, input_ids: torch.Tensor, mask: torch.Tensor, token_ids: Sequence[int] | None = None, **forward_kwargs
) -> torch.Tensor:
    """fp32 logits [batch, len(token_ids) or vocab] at each row's last position (``forward_kwargs``: e.g. peft's
    ``adapter_names``)."""
    return _logits_at_last_position(
        model,
        token_ids,
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids(mask),
        logits_to_keep=last_position(input_ids),
        use_cache=False,
        **forward_kwargs,
    )


def _logits_at_last_position(model, token_ids: Sequence[int] | None, **forward_arguments) -> torch.Tensor:
    if not head_is_exact(model):  # the model's own logits, as computed (and in its dtype's resolution)
        logits = model(**forward_arguments).logits[:, -1, :].float()
        return logits if token_ids is None else logits[:, list(token_ids)]
    with final_hidden_states(model) as caught:
        model(**forward_arguments)
    return head_logits(model, caught[-1][:, -1, :], token_ids)


def answer_margin(pair: torch.Tensor) -> torch.Tensor:
    """logit(Yes) - logit(No) from [batch, 2] (positive, negative) logits, in fp32: P(Yes) = sigmoid(margin) =
    the softmax over the two answer logits."""
    pair = pair.float()
    return pair[:, 0] - pair[:, 1]


def answer_probability(pair: torch.Tensor) -> torch.Tensor:
    """P(positive answer) from [batch, 2] (positive, negative) logits: their softmax, in fp32."""
    return torch.softmax(pair.float(), dim=-1)[:, 0]


def length_sorted_batches(lengths: list[int] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# ---------------------------------------------------------------- the shared prompt prefix


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens all ``sequences`` begin with, leaving every sequence at least its last token after them."""
    if not sequences:
        return 0
    head = list(sequences[0][: max(min(len(s) for s in sequences) - 1, 0)])
    for seq in sequences:
        if list(seq[: len(head)]) != head:  # list comparison runs in C; the walk below runs rarely
            head = head[: next(k for k, (a, b) in enumerate(zip(seq, head, strict=False)) if a != b)]
    return len(head)


def _base_model(model):
    """The transformers model under peft / DDP / torch.compile wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    model = getattr(model, "module", model)  # DistributedDataParallel
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _cache_argument(model) -> str | None:
    """The forward argument that takes a KV cache: ``cache`` (transformers >= 5.x) or ``past_key_values``."""
    parameters = inspect.signature(_base_model(model).forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def prefix_cache_applies(model) -> bool:
    """A cache of the shared prefix gives exactly the full forward's numbers: a decoder whose every layer attends
    to all earlier tokens (no sliding window), not training with activation checkpointing (which drops caches)."""
    base = _base_model(model)
    config = base.config
    if getattr(config, "is_encoder_decoder", False):
        return False
    if base.training and any(getattr(m, "gradient_checkpointing", False) is True for m in base.modules()):
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and any(kind != "full_attention" for kind in layer_types):
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    return _cache_argument(model) is not None


def prefix_states(model, prefix_ids: torch.Tensor, **forward_kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's (keys, values) of ``prefix_ids`` [rows, prefix]; gradients flow through them in training."""
    from transformers import DynamicCache

    cache = DynamicCache()
    model(
        input_ids=prefix_ids,
        use_cache=True,
        logits_to_keep=last_position(prefix_ids),  # unused: the least a forward call computes
        **{_cache_argument(model): cache},
        **forward_kwargs,
    )
    return [(layer.keys, layer.values) for layer in cache.layers]


def last_token_logits_after_prefix(
    model,
    states: list[tuple[torch.Tensor, torch.Tensor]],
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    prefix_rows: torch.Tensor | None = None,
    token_ids: Sequence[int] | None = None,
    **forward_kwargs,
) -> torch.Tensor:
    """fp32 logits [batch, len(token_ids) or vocab] at each row's last position, every row continuing a prefix of
    ``states`` (row ``prefix_rows[i]`` of them; the only one when None). ``input_ids``/``mask``: the left-padded
    tails."""
    from transformers import DynamicCache

    batch, prefix_length = input_ids.shape[0], states[0][0].shape[-2]

    def rows(states_of_layer: torch.Tensor) -> torch.Tensor:
        if prefix_rows is None:
            return states_of_layer.expand(batch, *states_of_layer.shape[1:])
        return states_of_layer.index_select(0, prefix_rows)

    cache = DynamicCache(ddp_cache_data=[(rows(keys), rows(values)) for keys, values in states])
    return _logits_at_last_position(
        model,
        token_ids,
        input_ids=input_ids,
        attention_mask=torch.cat([mask.new_ones(batch, prefix_length), mask], dim=1),
        position_ids=prefix_length + position_ids(mask),
        logits_to_keep=last_position(input_ids),
        use_cache=True,
        **{_cache_argument(model): cache},
        **forward_kwargs,
    )


# ---------------------------------------------------------------- scoring many prompts


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """To ``device``; to a GPU from pinned memory without blocking the host (the copy queues behind the kernels)."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def iter_last_token_logits(
    model,
    sequences: list[list[int]],
    pad_id: int,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    adapters: Sequence[str] | None = None,
    progress: bool = False,
    desc: str = "scoring",
    share_prefix: bool = True,
    token_ids: Sequence[int] | None = None,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(indices, logits) of :func:`iter_last_token_states` without the hidden states."""
    for batch, logits, _ in iter_last_token_states(
        model, sequences, pad_id, batch_size, device, adapters, progress, desc, share_prefix, token_ids
    ):
        yield batch, logits


def iter_last_token_states(
    model,
    sequences: list[list[int]],
    pad_id: int,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    adapters: Sequence[str] | None = None,
    progress: bool = False,
    desc: str = "scoring",
    share_prefix: bool = True,
    token_ids: Sequence[int] | None = None,
    hidden: bool = False,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]:
    """(indices, logits) for each length-sorted batch: fp32 logits [len(indices), len(token_ids) or vocab] at each
    prompt's last position, on the device. With ``adapters`` (a PeftModel's adapter names) each batch is stacked
    once per adapter and run as one mixed-adapter batch: logits [len(adapters) * len(indices), ...], adapter-major. ``batch_size`` counts
    the rows of a forward pass, so with k adapters a batch holds ``batch_size // k`` prompts: a mixed pass takes
    no more memory than one adapter's (and on a CPU, larger forwards run slower per row). The shared prompt
    prefix, when there is one, is computed once (once per adapter) and continued by every batch (unless
    ``share_prefix`` is False: every prompt then runs whole, as a reference). With ``hidden``, the third item is
    the final hidden state [rows, H] at each row's last position, the output layer's input there: the vector the
    answer logits are read from, caught in the same forward pass (else None)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    copies = len(adapters) if adapters else 1
    prefix_length = shared_prefix_length(sequences) if share_prefix and prefix_cache_applies(model) else 0
    states, tails = None, sequences
    if prefix_length >= MIN_SHARED_PREFIX:
        prefix = torch.tensor([sequences[0][:prefix_length]] * copies, device=device)
        states = prefix_states(model, prefix, **({"adapter_names": list(adapters)} if adapters else {}))
        tails = [seq[prefix_length:] for seq in sequences]
    batches = length_sorted_batches([len(s) for s in tails], max(batch_size // copies, 1))
    for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        input_ids, mask = left_pad([tails[i] for i in batch], pad_id)
        input_ids, mask = to_device(input_ids, device), to_device(mask, device)
        forward_kwargs, prefix_rows = {}, None
        if adapters:
            input_ids, mask = input_ids.repeat(copies, 1), mask.repeat(copies, 1)
            forward_kwargs["adapter_names"] = [name for name in adapters for _ in batch]
            prefix_rows = torch.arange(copies, device=device).repeat_interleave(len(batch))
        catching = final_hidden_states(model) if hidden else contextlib.nullcontext([])
        with catching as caught:
            if states is None:
                logits = last_token_logits(model, input_ids, mask, token_ids, **forward_kwargs)
            else:
                logits = last_token_logits_after_prefix(
                    model, states, input_ids, mask, prefix_rows, token_ids, **forward_kwargs
                )
        yield batch, logits, caught[-1][:, -1, :] if hidden else None


def in_input_order(batches: list[np.ndarray], values: list[torch.Tensor], n: int) -> np.ndarray:
    """[copies, n] float64 from per-batch [copies, batch] device tensors: one device-to-host copy in all."""
    out = np.empty((values[0].shape[0] if values else 1, n), dtype=np.float64)
    if values:
        out[:, np.concatenate(batches)] = torch.cat(values, dim=1).double().cpu().numpy()
    return out


def _answer_scores(model, sequences, answer_ids, pad_id, batch_size, device, progress, adapters, reduce, desc):
    """[copies, len(sequences)] float64 of ``reduce(answer logits)`` per batch (copies: one per adapter of a
    mixed-adapter pass, else 1), in input order."""
    copies = len(adapters) if adapters else 1
    batches, values = [], []
    for batch, logits in iter_last_token_logits(
        model, sequences, pad_id, batch_size, device, adapters=adapters, progress=progress, desc=desc,
        token_ids=answer_ids,
    ):  # fmt: skip
        batches.append(batch)
        values.append(reduce(logits).view(copies, len(batch)))
    return in_input_order(batches, values, len(sequences))


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
    """P(positive answer) of the model as it is (its active adapter) for each token sequence, in input order."""
    was_training = model.training
    model.eval()
    try:
        return _answer_scores(
            model, sequences, answer_ids, pad_id, batch_size, device, progress, None, answer_probability, "scoring"
        )[0]
    finally:
        model.train(was_training)


@torch.inference_mode()
def score_margins(
    model,
    sequences: list[list[int]],
    answer_ids: tuple[int, int],
    pad_id: int,
    adapters: tuple[str, ...] | list[str],
    passes: Literal["one", "two"] = "one",
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """[len(adapters), len(sequences)] answer margins of each adapter of PeftModel ``model``, in input order.

    Batches go through :func:`~llm4rec.llm.score.iter_last_token_logits`: length-sorted, left-padded, the
    prompts' shared prefix computed once (per adapter) and continued by every batch."""
    if passes not in PASSES:
        raise ConfigError(f"ensemble passes: expected one of {list(PASSES)}, got {passes!r}")
    missing = [a for a in adapters if a not in model.peft_config]
    if missing:
        raise ConfigError(f"adapters {missing} are not loaded; loaded: {sorted(model.peft_config)}")
    if not sequences:
        return np.empty((len(adapters), 0))
    was_training, active = model.training, model.active_adapter
    model.eval()  # peft refuses mixed-adapter batches in training mode

    def margins(names: list[str] | None, desc: str) -> np.ndarray:
        return _answer_scores(
            model, sequences, answer_ids, pad_id, batch_size, device, progress, names, answer_margin, desc
        )

    try:
        if passes == "one":
            return margins(list(adapters), "scoring (mixed adapters)")
        rows = []
        for name in adapters:
            model.set_adapter(name)
            rows.append(margins(None, f"scoring ({name})")[0])
        return np.stack(rows)
    finally:
        model.set_adapter(active)
        model.train(was_training)


@torch.inference_mode()
def score_margins_and_hidden(
    model,
    sequences: list[list[int]],
    answer_ids: tuple[int, int],
    pad_id: int,
    adapters: tuple[str, ...] | list[str],
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`score_margins` (one pass; mixed adapters when several) plus each adapter's final hidden state at every
    prompt's last position, from the same forward: ([len(adapters), n] float64 margins, [len(adapters), n, H]
    float32 hidden states), in input order. What ReLoop2's error memory reads on the LLM side."""
    missing = [a for a in adapters if a not in model.peft_config]
    if missing:
        raise ConfigError(f"adapters {missing} are not loaded; loaded: {sorted(model.peft_config)}")
    copies, n = len(adapters), len(sequences)
    was_training, active = model.training, model.active_adapter
    model.eval()
    try:
        if copies == 1:
            model.set_adapter(adapters[0])
        batches, margins, states = [], [], []
        for batch, logits, hidden in iter_last_token_states(
            model, sequences, pad_id, batch_size, device, adapters=list(adapters) if copies > 1 else None,
            progress=progress, desc="scoring (with hidden states)", token_ids=answer_ids, hidden=True,
        ):  # fmt: skip
            batches.append(batch)
            margins.append(answer_margin(logits).view(copies, len(batch)))
            states.append(hidden.float().view(copies, len(batch), -1))
        if not batches:
            return np.empty((copies, 0)), np.empty((copies, 0, 0), dtype=np.float32)
        hidden_out = np.empty((copies, n, states[0].shape[-1]), dtype=np.float32)
        hidden_out[:, np.concatenate(batches)] = torch.cat(states, dim=1).cpu().numpy()
        return in_input_order(batches, margins, n), hidden_out
    finally:
        model.set_adapter(active)
        model.train(was_training)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """P(Yes) from answer margins (scipy's expit: no overflow for large margins)."""
    from scipy.special import expit

    return expit(x)
