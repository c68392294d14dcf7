"""IncCTR (Wang et al., "A Practical Incremental Method to Train Deep CTR Models", arXiv 2009.02147).

Incremental update with knowledge distillation from the previous period's
model (the "KD-batch" variant with the previous incremental model as teacher,
as implemented for the ASMG paper's baselines):

    loss = (1 - lambda) * BCE(y, y_hat) + lambda * BCE(y_teacher, y_hat)

on the new period's data, where y_teacher is the teacher's probability. The
teacher scores the new data as it would have when it served: ids it did not
know go through its OOV row. With lambda = 0 this is plain IU, bit for bit.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.nn import functional as F

from llm4rec.ctr.features import FeatureTable, known_by
from llm4rec.ctr.models.base import ModelOptions
from llm4rec.ctr.train import CtrTrainConfig, LossFn, TrainReport, fit, predict_scores
from llm4rec.ctr.updates import CtrUpdateMethod
from llm4rec.data.periods import Timeline
from llm4rec.incremental.config import IncCtrConfig

TEACHER = "teacher"  # the batch key holding the teacher's probabilities


def distillation_loss(kd_lambda: float) -> LossFn:
    """(1 - lambda) BCE against the labels + lambda BCE against the teacher's probabilities (batch[TEACHER])."""

    def loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch)
        hard = F.binary_cross_entropy_with_logits(logits, batch["label"])
        soft = F.binary_cross_entropy_with_logits(logits, batch[TEACHER])
        return (1 - kd_lambda) * hard + kd_lambda * soft

    return loss


class IncCtrMethod(CtrUpdateMethod):
    """IU with the previous period's model as a distillation teacher (a PeriodMethod)."""

    def __init__(
        self,
        model: str,
        features: FeatureTable,
        options: ModelOptions | None = None,
        train: CtrTrainConfig | None = None,
        distill: IncCtrConfig | None = None,
        seed: int = 0,
        device: torch.device | str | None = "cpu",
    ) -> None:
        super().__init__(model, "IU", features, options, train, seed=seed, device=device)
        self.distill = distill or IncCtrConfig()
        self.name = f"{model}-IncCTR"
        self.teacher: torch.nn.Module | None = None  # the last fit's teacher (on the method's device)

    def train_period(
        self, timeline: Timeline, period: int, train_rows: np.ndarray, val_rows: np.ndarray
    ) -> TrainReport:
        if self.pretraining:  # no earlier model to learn from
            return super().train_period(timeline, period, train_rows, val_rows)
        self.teacher = copy.deepcopy(self.model)  # the model trained through t - 1 (grown, but see known_by)
        train = self.encode(train_rows)
        as_seen = known_by(train, self.previous_vocab)
        # Computed once, on the device, where the batches read them.
        train[TEACHER] = predict_scores(self.teacher, as_seen, self.train_config.eval_batch_size).float()
        return fit(
            self.model,
            train,
            self.encode(val_rows),
            self.train_config,
            self.fit_seed(period),
            loss=distillation_loss(self.distill.kd_lambda),
        )
