"""Training and scoring throughput (samples/s) of every CTR model, on CPU or a GPU.

    python scripts/bench_ctr.py                      # CPU, one thread, ML-100K-shaped data
    python scripts/bench_ctr.py --device cuda        # on a GPU
    python scripts/bench_ctr.py --threads 2 --models DeepFM,DIN

The data are random ids shaped like ML-100K's features (943 users, 1,682
items, 19 genres, up to 6 genres per item, histories of the last 30 positive
items, a third of the slots empty), so the figures do not depend on a prepared
dataset. Training is the project's trainer (BCE, Adam, batch 1024) for one
epoch after a warm-up epoch; scoring is predict_proba in batches of 8192.
"""

from __future__ import annotations

import argparse
import time

import torch

from llm4rec.ctr.config import DEFAULT_MODELS, ModelOptions, TrainConfig
from llm4rec.ctr.features import PAD
from llm4rec.ctr.models import build_model, check_model_name
from llm4rec.ctr.train import fit, predict_proba

VOCAB = {"user": 943 + 2, "item": 1682 + 2, "genre": 19 + 2}


def random_features(rows: int, history_length: int, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
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


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--history-length", type=int, default=30)
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS + ["DCNv2"]))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",")]
    for name in models:
        check_model_name(name, where="--models")
    data = random_features(args.rows, args.history_length, args.device)
    train = TrainConfig(epochs=1, batch_size=1024)
    device = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    print(f"{args.rows:,} rows, history {args.history_length}, embedding {args.embedding_dim}, {device}")
    print("| model | parameters | train samples/s | score samples/s |")
    print("|---|---|---|---|")
    for name in models:
        torch.manual_seed(0)
        model = build_model(name, VOCAB, ModelOptions(embedding_dim=args.embedding_dim)).to(args.device)
        fit(model, data, None, train)  # warm-up: allocator, kernels, caches
        synchronize(args.device)
        started = time.perf_counter()
        fit(model, data, None, train)
        synchronize(args.device)
        train_rate = args.rows / (time.perf_counter() - started)
        predict_proba(model, data)
        started = time.perf_counter()
        predict_proba(model, data)
        synchronize(args.device)
        score_rate = args.rows / (time.perf_counter() - started)
        n_parameters = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {n_parameters:,} | {train_rate:,.0f} | {score_rate:,.0f} |")


if __name__ == "__main__":
    main()
