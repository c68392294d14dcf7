"""Write small GGUF files for the tests (gguf's own writer), from a Hugging Face Llama and its BPE tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for q/k projections (transformers undoes it when it reads a GGUF)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def write_llama_gguf(model, tokenizer_dir: Path, path: Path, architecture: str = "llama") -> Path:
    """``model`` (a LlamaForCausalLM with tied embeddings) and the byte-level BPE tokenizer saved in
    ``tokenizer_dir`` as one F32 GGUF file; ``architecture`` is what the file says it is."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny test llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    spec = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special["<s>"])
    writer.add_eos_token_id(special["</s>"])
    writer.add_pad_token_id(special["<pad>"])
    writer.add_unk_token_id(special["<unk>"])
    writer.add_add_bos_token(True)

    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}."
        parts = {
            "attn_norm": state[layer + "input_layernorm.weight"],
            "attn_q": _llama_cpp_permute(state[layer + "self_attn.q_proj.weight"], config.num_attention_heads),
            "attn_k": _llama_cpp_permute(state[layer + "self_attn.k_proj.weight"], config.num_key_value_heads),
            "attn_v": state[layer + "self_attn.v_proj.weight"],
            "attn_output": state[layer + "self_attn.o_proj.weight"],
            "ffn_norm": state[layer + "post_attention_layernorm.weight"],
            "ffn_gate": state[layer + "mlp.gate_proj.weight"],
            "ffn_up": state[layer + "mlp.up_proj.weight"],
            "ffn_down": state[layer + "mlp.down_proj.weight"],
        }
        for name, weight in parts.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
