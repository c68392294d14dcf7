"""The one trainer for every CTR model: BCE on logits, Adam, mini-batches by tensor indexing,
early stopping on the val split's AUC (the best epoch's weights are kept).

Data arrive as a dict of tensors (see :meth:`FeatureEncoders.encode`); a
batch is one index tensor applied to each, so no Python runs per sample.
Shuffling uses its own generator seeded by ``seed``, so a run is repeatable on CPU.

``model`` is any module mapping a batch to logits: a :class:`CtrModel`, or a
wrapper that computes a model's parameters (SML's transfer, ASMG's generator);
only its parameters with ``requires_grad`` are trained. ``loss`` replaces the
BCE (IncCTR adds a distillation term read from an extra tensor of the batch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from llm4rec.ctr.models.base import CtrModel
from llm4rec.errors import ConfigError
from llm4rec.eval import metrics

Tensors = dict[str, torch.Tensor]
LossFn = Callable[[torch.nn.Module, Tensors], torch.Tensor]


@dataclass
class CtrTrainConfig:
    epochs: int = 10  # at most; early stopping on the val split's AUC usually ends sooner
    patience: int = 1  # epochs without a better val AUC before stopping
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    eval_batch_size: int = 8192

    def __post_init__(self) -> None:
        for name in ("epochs", "patience", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate: must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay: must be >= 0, got {self.weight_decay}")


@dataclass
class TrainReport:
    n_train: int
    n_val: int
    val_auc: list[float] = field(default_factory=list)  # after each epoch
    best_epoch: int = 0  # 1-based; 0 when there was no val split
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "n_train": self.n_train,
            "n_val": self.n_val,
            "epochs": len(self.val_auc),
            "best_epoch": self.best_epoch,
            "val_auc": [None if math.isnan(a) else round(a, 5) for a in self.val_auc],
            "seconds": round(self.seconds, 3),
        }


def take(tensors: Tensors, index: torch.Tensor) -> Tensors:
    return {name: values[index] for name, values in tensors.items()}


def n_rows(tensors: Tensors) -> int:
    return len(tensors["label"])


def bce_loss(model: torch.nn.Module, batch: Tensors) -> torch.Tensor:
    """Mean binary cross-entropy of the model's logits against the batch's labels."""
    return F.binary_cross_entropy_with_logits(model(batch), batch["label"])


@torch.no_grad()
def predict_proba(model: CtrModel | torch.nn.Module, tensors: Tensors, batch_size: int = 8192) -> np.ndarray:
    """P(label = 1) per row, in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    n, device = n_rows(tensors), tensors["label"].device
    out = [
        torch.sigmoid(model(take(tensors, torch.arange(start, min(start + batch_size, n), device=device)))).double()
        for start in range(0, n, batch_size)
    ]
    model.train(was_training)
    return torch.cat(out).cpu().numpy() if out else np.empty(0)


def _val_score(model: torch.nn.Module, val: Tensors, batch_size: int) -> tuple[float, float]:
    """(val AUC, the number early stopping maximises): AUC, or -LogLoss when val has one class only."""
    y = val["label"].numpy()
    p = predict_proba(model, val, batch_size)
    auc = metrics.auc(y, p)
    return auc, (auc if not math.isnan(auc) else -metrics.logloss(y, p))


def fit(
    model: CtrModel | torch.nn.Module,
    train: Tensors,
    val: Tensors | None,
    config: CtrTrainConfig,
    seed: int = 0,
    loss: LossFn = bce_loss,
    learning_rate: float | None = None,
    on_epoch_end: Callable[[int, torch.nn.Module], None] | None = None,
) -> TrainReport:
    """Train ``model`` in place on ``train``; keep the epoch with the best ``val`` AUC (all epochs if no val).

    ``learning_rate`` overrides the config's (SML trains its transfer module at its own rate).
    ``on_epoch_end(epoch, model)`` (epoch 1-based) runs after each epoch's training, before its val check,
    so a caller can see the weights of every epoch, not only the best one kept at the end (MEGG scores
    its replay candidates with the penultimate epoch's weights)."""
    started = time.perf_counter()
    n = n_rows(train)
    report = TrainReport(n_train=n, n_val=n_rows(val) if val is not None else 0)
    if n == 0:
        return report
    generator = torch.Generator().manual_seed(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=learning_rate or config.learning_rate, weight_decay=config.weight_decay)
    best_score, best_state, stale = -math.inf, None, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(train["label"].device)
        for start in range(0, n, config.batch_size):
            batch = take(train, order[start : start + config.batch_size])
            batch_loss = loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
        if val is None or n_rows(val) == 0:
            report.val_auc.append(float("nan"))
            continue
        auc, score = _val_score(model, val, config.eval_batch_size)
        report.val_auc.append(auc)
        if score > best_score:
            best_score, stale, report.best_epoch = score, 0, epoch
            best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    report.seconds = time.perf_counter() - started
    return report
