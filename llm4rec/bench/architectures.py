"""Named model architectures built with random weights: honest throughput figures without a download.

Speed depends on the shapes, not on the values of the weights, so a Llama built
from a real backbone's published configuration runs exactly as fast as the
checkpoint would. The real backbones' numbers are copied from their
``config.json`` on the Hugging Face hub; the scratch presets come from
:mod:`llm4rec.llm.scratch`, with the vocabulary optionally overridden (the
scratch tokenizers have 4,000-8,000 tokens, real LLMs 32,000 and more, and the
vocabulary is where the usual full-logits path spends its time).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from llm4rec.errors import ConfigError
from llm4rec.llm.scratch import PRESETS


@dataclass(frozen=True)
class Architecture:
    name: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    source: str  # where the numbers come from

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def parameter_count(self) -> int:
        """All parameters (tied embeddings counted once), as ``sum(p.numel())`` gives for the built model."""
        d, kv = self.hidden_size, self.num_key_value_heads * self.head_dim
        layer = d * d * 2 + d * kv * 2 + 3 * d * self.intermediate_size + 2 * d  # q, o, k, v, MLP, two norms
        embeddings = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * layer + embeddings + d  # + the final norm


REAL_BACKBONES = {
    "tinyllama-1.1b": Architecture(
        "tinyllama-1.1b", vocab_size=32000, hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4, intermediate_size=5632, max_position_embeddings=2048, tie_word_embeddings=False,
        source="TinyLlama/TinyLlama-1.1B-Chat-v1.0 config.json",
    ),
    "llama2-7b": Architecture(
        "llama2-7b", vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, intermediate_size=11008, max_position_embeddings=4096, tie_word_embeddings=False,
        source="meta-llama/Llama-2-7b-hf config.json",
    ),
    # The pretrained LLM llm4rec fetches offline (llm4rec backbone fetch smollm2-135m): its config.json there.
    "smollm2-135m": Architecture(
        "smollm2-135m", vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=8192, tie_word_embeddings=True,
        source="HuggingFaceTB/SmolLM2-135M-Instruct config.json",
    ),
}  # fmt: skip


def _from_preset(name: str) -> Architecture:
    preset = PRESETS[name]
    return Architecture(
        name,
        vocab_size=preset.vocab_size,
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_hidden_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_key_value_heads,
        intermediate_size=preset.intermediate_size,
        max_position_embeddings=preset.max_position_embeddings,
        tie_word_embeddings=True,
        source=f"llm4rec scratch preset {name}",
    )


ARCHITECTURES: dict[str, Architecture] = {**REAL_BACKBONES, **{name: _from_preset(name) for name in PRESETS}}


def get_architecture(name: str, vocab_size: int | None = None) -> Architecture:
    """The named architecture, with its vocabulary replaced by ``vocab_size`` when given."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"--arch: unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    if vocab_size is None:
        return arch
    if vocab_size < 16:
        raise ConfigError(f"--vocab-size: expected at least 16 tokens, got {vocab_size}")
    return replace(arch, vocab_size=vocab_size, name=f"{arch.name}@vocab{vocab_size}")


def llama_config(arch: Architecture, pad_token_id: int = 0):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        intermediate_size=arch.intermediate_size,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=arch.tie_word_embeddings,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        eos_token_id=None,
    )


def build_random_model(
    arch: Architecture,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    attention: str = "sdpa",
    seed: int = 0,
    pad_token_id: int = 0,
):
    """A ``LlamaForCausalLM`` of ``arch`` with random weights, made directly on ``device`` in ``dtype`` (a 7B
    model is initialised on the GPU in seconds, where initialising on the CPU and moving would take minutes)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            llama_config(arch, pad_token_id), dtype=dtype, attn_implementation=attention
        )
    return model.eval()
