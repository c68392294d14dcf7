"""The one trainer for every CTR model: BCE on logits, Adam, mini-batches by tensor indexing,
early stopping on the val split's AUC (the best epoch's weights are kept).

Data arrive as a dict of tensors (see :meth:`FeatureEncoders.encode`), on
any device; a batch is one index tensor applied to each, so no Python runs per
sample and, on a GPU, nothing is copied from the host per batch. Shuffling uses
its own CPU generator seeded by ``seed`` (the permutation is moved to the data's
device once per epoch), so a seed shuffles alike on every device and a run is
repeatable on CPU.

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


TASKS = ("ctr", "rating")


@dataclass
class CtrTrainConfig:
    epochs: int = 10  # at most; early stopping on the val split's AUC usually ends sooner
    patience: int = 1  # epochs without a better val AUC (rating: val RMSE) before stopping
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    eval_batch_size: int = 8192
    # ctr: BCE on the like / dislike label. rating: the rating itself (MEGG's RMSE task), rescaled from
    # rating_scale to [0, 1] and fitted by the squared error of sigmoid(logit); scored by RMSE on the scale.
    task: str = "ctr"
    rating_scale: tuple[float, float] = (1.0, 5.0)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"train.task: expected one of {list(TASKS)}, got {self.task!r}")
        self.rating_scale = tuple(self.rating_scale)
        if len(self.rating_scale) != 2 or not self.rating_scale[0] < self.rating_scale[1]:
            raise ConfigError(
                f"train.rating_scale: expected [low, high] with low < high, got {list(self.rating_scale)}"
            )
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
    val_rmse: list[float] = field(default_factory=list)  # after each epoch, the rating task (on the [0, 1] scale)

    def to_dict(self) -> dict:
        def rounded(values: list[float]) -> list:
            return [None if math.isnan(a) else round(a, 5) for a in values]

        return {
            "n_train": self.n_train,
            "n_val": self.n_val,
            "epochs": len(self.val_rmse or self.val_auc),
            "best_epoch": self.best_epoch,
            **({"val_rmse": rounded(self.val_rmse)} if self.val_rmse else {"val_auc": rounded(self.val_auc)}),
            "seconds": round(self.seconds, 3),
        }


def take(tensors: Tensors, index: torch.Tensor) -> Tensors:
    return {name: values[index] for name, values in tensors.items()}


def n_rows(tensors: Tensors) -> int:
    return len(tensors["label"])


def pointwise_loss(task: str, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The task's loss of logits against targets: BCE (ctr), or the squared error of sigmoid(logit) against the
    rating rescaled to [0, 1] (rating). MEGG's gradients use it too."""
    if task == "rating":
        return F.mse_loss(torch.sigmoid(logits), target, reduction=reduction)
    return F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)


def bce_loss(model: torch.nn.Module, batch: Tensors) -> torch.Tensor:
    """Mean binary cross-entropy of the model's logits against the batch's labels."""
    return F.binary_cross_entropy_with_logits(model(batch), batch["label"])


def squared_error_loss(model: torch.nn.Module, batch: Tensors) -> torch.Tensor:
    """Mean squared error of sigmoid(logit) against the rescaled rating (the rating task)."""
    return pointwise_loss("rating", model(batch), batch["label"])


def rescaled_ratings(ratings: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Ratings on ``scale`` mapped to [0, 1], the targets of the rating task."""
    low, high = scale
    return ((np.asarray(ratings, dtype=np.float64) - low) / (high - low)).astype(np.float32)


@torch.no_grad()
def predict_scores(model: CtrModel | torch.nn.Module, tensors: Tensors, batch_size: int = 8192) -> torch.Tensor:
    """P(label = 1) per row, float64 on the tensors' device, in eval mode (no dropout). The batches' scores
    are concatenated where they are computed, so scoring never waits on a GPU batch by batch."""
    was_training = model.training
    model.eval()
    n, device = n_rows(tensors), tensors["label"].device
    out = [
        torch.sigmoid(model(take(tensors, torch.arange(start, min(start + batch_size, n), device=device)))).double()
        for start in range(0, n, batch_size)
    ]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64, device=device)


def predict_proba(model: CtrModel | torch.nn.Module, tensors: Tensors, batch_size: int = 8192) -> np.ndarray:
    """:func:`predict_scores` copied to the host once: what the shared metrics read."""
    return predict_scores(model, tensors, batch_size).cpu().numpy()


def _val_score(model: torch.nn.Module, val: Tensors, config: CtrTrainConfig) -> tuple[float, float]:
    """(val AUC, or val RMSE on the [0, 1] scale for the rating task; the number early stopping maximises):
    AUC, or -LogLoss when val has one class only; -RMSE for the rating task."""
    y = val["label"].cpu().numpy()
    p = predict_proba(model, val, config.eval_batch_size)
    if config.task == "rating":
        error = metrics.rmse(y, p)
        return error, -error
    auc = metrics.auc(y, p)
    return auc, (auc if not math.isnan(auc) else -metrics.logloss(y, p))


def fit(
    model: CtrModel | torch.nn.Module,
    train: Tensors,
    val: Tensors | None,
    config: CtrTrainConfig,
    seed: int = 0,
    loss: LossFn | None = None,
    learning_rate: float | None = None,
    on_epoch_end: Callable[[int, torch.nn.Module], None] | None = None,
) -> TrainReport:
    """Train ``model`` in place on ``train``; keep the epoch with the best ``val`` AUC (all epochs if no val).

    ``learning_rate`` overrides the config's (SML trains its transfer module at its own rate).
    ``on_epoch_end(epoch, model)`` (epoch 1-based) runs after each epoch's training, before its val check,
    so a caller can see the weights of every epoch, not only the best one kept at the end (MEGG scores
    its replay candidates with the penultimate epoch's weights)."""
    started = time.perf_counter()
    loss = loss or (squared_error_loss if config.task == "rating" else bce_loss)
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
        metric, score = _val_score(model, val, config)
        (report.val_rmse if config.task == "rating" else report.val_auc).append(metric)
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
