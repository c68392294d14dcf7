"""Training and scoring throughput (samples/s) of every CTR model, on the CPU or a GPU.

The data are random ids shaped like ML-100K's features (943 users, 1,682
items, 19 genres, up to 6 genres per item, histories of the last 30 positive
items, a third of the slots empty), so the figures do not depend on a prepared
dataset. Training is the project's trainer (BCE, Adam, batch 1024) for one
epoch after a warm-up epoch; scoring is ``predict_proba`` in batches of 8192.
Both run as ``llm4rec ctr`` runs them: data on the device (``--device``,
resolved by :mod:`llm4rec.devices`), batches indexed there, scores copied to
the host once per call; the clock stops after the device has finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from llm4rec.devices import resolve_device
from llm4rec.errors import ConfigError

VOCAB = {"user": 943 + 2, "item": 1682 + 2, "genre": 19 + 2}


@dataclass
class CtrBenchSettings:
    models: list[str] = field(default_factory=list)  # empty: the default models and DCNv2
    rows: int = 100_000
    history_length: int = 30
    embedding_dim: int = 16
    device: str = "cpu"
    threads: int = 1  # torch CPU threads (0: torch's default); these models are too small to gain from more

    def __post_init__(self) -> None:
        from llm4rec.ctr.config import DEFAULT_MODELS
        from llm4rec.ctr.models import check_model_name

        if not self.models:
            self.models = DEFAULT_MODELS + ["DCNv2"]
        for name in self.models:
            check_model_name(name, where="--ctr-models")
        if self.rows < 1 or self.history_length < 1 or self.embedding_dim < 1:
            raise ConfigError("--ctr-rows, --ctr-history-length and --ctr-embedding-dim must be >= 1")
        if self.threads < 0:
            raise ConfigError(f"--ctr-threads: must be >= 0, got {self.threads}")
        self.device = str(resolve_device(self.device, "--device"))


def random_features(rows: int, history_length: int, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    from llm4rec.ctr.features import PAD

    generator = torch.Generator().manual_seed(seed)

    def ids(vocab: str, *shape: int) -> torch.Tensor:
        return torch.randint(2, VOCAB[vocab], shape, generator=generator)

    genres = ids("genre", rows, 6)
    genres[torch.rand(rows, 6, generator=generator) < 0.6] = PAD
    history = ids("item", rows, history_length)
    history[torch.rand(rows, history_length, generator=generator) < 0.33] = PAD
    tensors = {
        "user": ids("user", rows),
        "item": ids("item", rows),
        "genres": genres,
        "history": history,
        "label": torch.randint(0, 2, (rows,), generator=generator).float(),
    }
    return {name: value.to(device) for name, value in tensors.items()}


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_ctr(settings: CtrBenchSettings) -> list[dict]:
    from llm4rec.ctr.models import build_model
    from llm4rec.ctr.models.base import ModelOptions
    from llm4rec.ctr.train import CtrTrainConfig, fit, predict_proba

    threads_before = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        data = random_features(settings.rows, settings.history_length, settings.device)
        train = CtrTrainConfig(epochs=1, batch_size=1024)
        if settings.device.startswith("cuda"):
            device = torch.cuda.get_device_name()
        else:
            device = f"CPU, {torch.get_num_threads()} torch thread(s)"
        records = []
        for name in settings.models:
            torch.manual_seed(0)
            model = build_model(name, VOCAB, ModelOptions(embedding_dim=settings.embedding_dim)).to(settings.device)
            fit(model, data, None, train)  # warm-up: allocator, kernels, caches
            _synchronize(settings.device)
            started = time.perf_counter()
            fit(model, data, None, train)
            _synchronize(settings.device)
            train_rate = settings.rows / (time.perf_counter() - started)
            predict_proba(model, data)
            started = time.perf_counter()
            predict_proba(model, data)
            _synchronize(settings.device)
            score_rate = settings.rows / (time.perf_counter() - started)
            records.append(
                {
                    "bench": "ctr",
                    "model": name,
                    "device": device,
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "rows": settings.rows,
                    "history_length": settings.history_length,
                    "embedding_dim": settings.embedding_dim,
                    "train_samples_per_s": round(train_rate, 1),
                    "score_samples_per_s": round(score_rate, 1),
                }
            )
        return records
    finally:
        torch.set_num_threads(threads_before)
