"""Forward FLOPs of a Llama on a set of prompts, and the model FLOPs utilisation (MFU).

Counted is the work a path does on real tokens: every real (non-pad) token
through every layer, causal attention over each token's prefix, and the LM
head where the path applies it (the last position, or every position for the
full-logits peer). Padding is waste and is not counted. A prompt prefix shared
by all prompts and computed once (our scorer's cache) is counted once. A
multiply-add is 2 FLOPs; norms, rotary embeddings and softmax are left out
(under 1% at these sizes).
"""

from __future__ import annotations

from collections.abc import Iterable

from llm4rec.bench.architectures import Architecture

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM datasheet, dense (no sparsity); the H200's is the same


def forward_flops(
    arch: Architecture, lengths: Iterable[int], head_positions: int | None = 1, shared_prefix: int = 0
) -> float:
    """FLOPs of forward passes over prompts of ``lengths`` with the LM head at ``head_positions`` per prompt
    (None: every position), the first ``shared_prefix`` tokens of all prompts computed once."""
    d, kv = arch.hidden_size, arch.num_key_value_heads * arch.head_dim
    linear_per_token = d * d * 2 + d * kv * 2 + 3 * d * arch.intermediate_size  # q, o, k, v, gate/up/down
    tokens = attended = heads = 0  # attended: sum over tokens of how many tokens each attends to
    p = shared_prefix
    for length in lengths:
        tokens += length - p
        attended += length * (length + 1) // 2 - p * (p + 1) // 2  # the tail attends to the prefix too
        heads += length if head_positions is None else head_positions
    tokens += p
    attended += p * (p + 1) // 2
    per_layer = linear_per_token * tokens + 2 * d * attended  # Q K^T and A V: d multiply-adds per pair each
    return 2.0 * (arch.num_hidden_layers * per_layer + d * arch.vocab_size * heads)


def mfu(flops: float, seconds: float, peak_tflops: float) -> float:
    return flops / seconds / (peak_tflops * 1e12)
