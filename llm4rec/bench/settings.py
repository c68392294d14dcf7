"""What an LLM benchmark run measures, and the model and data it measures on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

import torch

from llm4rec.bench.architectures import Architecture, build_random_model, get_architecture
from llm4rec.bench.data import BenchData, LengthSpec, prompt_data, synthetic_data
from llm4rec.bench.flops import H100_BF16_DENSE_TFLOPS
from llm4rec.config import check_seed
from llm4rec.devices import resolve_device
from llm4rec.errors import ConfigError

DTYPES = ("float32", "bfloat16", "float16")
PEERS = ("logits", "generate")


@dataclass
class LlmBenchSettings:
    arch: str = "scratch-llama-small"
    vocab_size: int | None = None  # None: the architecture's own
    device: str = "cpu"
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on the CPU
    attention: str = "sdpa"
    n: int = 128  # prompts per scoring measurement
    batch_sizes: list[int] = field(default_factory=lambda: [8, 32, 64])
    train_batch_size: int = 16
    lora_dropout: float = 0.0  # the configs' value: with dropout 0 training shares the prompt prefix exactly
    train_steps: int = 4  # measured optimizer steps per training run
    warmup_steps: int = 1  # untimed steps before them
    lsat_batch_size: int = 32
    lsat_n: int | None = None  # prompts per LSAT measurement (None: n)
    repeats: int = 2  # interleaved timed repeats of every path
    peers: list[str] = field(default_factory=lambda: list(PEERS))
    lengths: LengthSpec = field(default_factory=LengthSpec)
    shared_prefix: int = 69  # synthetic prompts' common beginning (the instruction)
    prompts: str | None = None  # a backbone directory: real ML-100K prompts tokenized by its tokenizer
    compile: bool = False  # also score through torch.compile(model)
    ablation: bool = True  # also ours with the other shared-prefix setting (scoring: off; training: off, or always
    # under LoRA dropout) and, in training, with the model's own attention instead of train.attention: auto
    peak_tflops: float | None = None  # None: the H100/H200 bf16 dense peak on those GPUs, else no MFU
    seed: int = 0

    def __post_init__(self) -> None:
        get_architecture(self.arch, self.vocab_size)  # a known name, a sane vocabulary
        self.device = str(resolve_device(self.device, "--device"))
        if self.dtype == "auto":
            self.dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype: expected one of {', '.join(DTYPES)} (or auto), got {self.dtype!r}")
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            raise ConfigError(f"--peers: unknown {unknown}; expected a subset of {', '.join(PEERS)}")
        if self.lsat_n is not None and not 1 <= self.lsat_n <= self.n:
            raise ConfigError(f"--lsat-n: expected 1 to --n ({self.n}), got {self.lsat_n}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora-dropout: expected a value in [0, 1), got {self.lora_dropout}")
        for name in ("n", "train_batch_size", "train_steps", "lsat_batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"--batch-sizes: expected positive integers, got {self.batch_sizes}")
        if self.warmup_steps < 0:
            raise ConfigError(f"--warmup-steps: must be >= 0, got {self.warmup_steps}")
        check_seed(self.seed, "--seed")
        if not 0 <= self.shared_prefix < self.lengths.low:
            raise ConfigError(
                f"--shared-prefix: must be >= 0 and shorter than the shortest prompt ({self.lengths.low}), "
                f"got {self.shared_prefix}"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def mixed_precision(self) -> str:
        """The Trainer's and accelerate's precision setting that goes with the model's dtype."""
        return {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[self.dtype]

    def samples_needed(self) -> int:
        return max(self.n, (self.warmup_steps + self.train_steps) * self.train_batch_size, max(self.batch_sizes) * 2)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} logical CPU(s)"


def peak_tflops(settings: LlmBenchSettings, device: torch.device) -> float | None:
    if settings.peak_tflops is not None:
        return settings.peak_tflops
    if device.type == "cuda" and settings.dtype != "float32":
        name = torch.cuda.get_device_name(device)
        if "H100" in name or "H200" in name:  # both: 989 dense bf16/fp16 TFLOP/s (SXM)
            return H100_BF16_DENSE_TFLOPS
    return None


@dataclass
class LlmBench:
    """A model with random weights and the prompts to run through it."""

    settings: LlmBenchSettings
    arch: Architecture
    model: torch.nn.Module
    data: BenchData
    device: torch.device

    def context(self) -> dict:
        """Fields every record of this run carries."""
        return {
            "arch": self.arch.name,
            "parameters": self.arch.parameter_count(),
            "device": device_description(self.device),
            "dtype": self.settings.dtype,
            "attention": self.settings.attention,
            "data": self.data.source,
        }

    def fresh_model(self) -> torch.nn.Module:
        """Another model of the same architecture (other random weights)."""
        return build_random_model(
            self.arch, self.settings.torch_dtype, self.device, self.settings.attention, self.settings.seed + 1
        )


def prepare(settings: LlmBenchSettings) -> LlmBench:
    device = torch.device(settings.device)
    arch = get_architecture(settings.arch, settings.vocab_size)
    n = settings.samples_needed()
    if settings.prompts:
        data = prompt_data(settings.prompts, n)
        if len(data.sequences) < n:
            raise ConfigError(f"--prompts: {len(data.sequences)} prompts available, the settings need {n}")
        if max(max(s) for s in data.sequences) >= arch.vocab_size:
            raise ConfigError(
                f"--prompts: the tokenizer's ids reach past {arch.name}'s vocabulary of {arch.vocab_size}; "
                "raise --vocab-size"
            )
    else:
        data = synthetic_data(n, arch.vocab_size, settings.lengths, settings.shared_prefix, settings.seed)
    model = build_random_model(arch, settings.torch_dtype, device, settings.attention, settings.seed, data.pad_id)
    return LlmBench(settings, arch, model, data, device)
