"""SML (Zhang et al., "How to Retrain Recommender System? A Sequential Meta-Learning Method", SIGIR 2020),
on any CTR model as in the ASMG paper's baseline: a transfer module f combines the previous model W_{t-1}
and the parameters W_hat_t trained on the new period into the serving model W_t = f(W_{t-1}, W_hat_t).

f works per parameter tensor, as a (rows, groups) matrix (see :mod:`llm4rec.incremental.meta`): it stacks
[W_prev; W_new; W_prev * W_new / ||W_prev||] along a new axis (the norm per row: per id of a table, over
the whole tensor of a dense parameter, as in the paper's reference code, so the product channel stays on the
scale of the other two), applies two 1-wide convolutions across that axis (3 -> n1
-> n2 channels, GELU, no bias), flattens each row's n2 x groups values and maps them back to the row through
an MLP (hidden size l1). Embedding tables share one module across ids (a row is an id); a dense parameter is
one row of all its coordinates.

At fit(t), with no test data:

1. the transfer module is trained towards period t (train split; val split for early stopping) on the pair
   kept from fit(t-1), (W_{t-2}, W_hat_{t-1}), with the data scored as that model knew it; then
   W_{t-1} = f(W_{t-2}, W_hat_{t-1}) is recomputed with it (the SML scripts' "update" after training f);
2. W_hat_t starts from W_{t-1} and is trained on period t *through* f (f frozen), at ``base_learning_rate``
   (1e-3; the SML reference script's 1e-2 lowered every fit's val AUC here, see SmlConfig), f itself at
   ``learning_rate`` (1e-3);
3. W_t = f(W_{t-1}, W_hat_t) serves period t + 1.

The first incremental period has no pair to train f on, so it is plain IU (W_t = W_hat_t); f is created at
the next period with a warm start that makes it output W_new (see
:func:`~llm4rec.incremental.params.warm_start`) and then trained as above. f is initialised on the CPU (its own
seeded stream) and moved to the base model's device, where the pairs of parameters are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from llm4rec.ctr.features import FeatureTable, known_by
from llm4rec.ctr.models.base import Batch, CtrModel, ModelOptions
from llm4rec.ctr.train import CtrTrainConfig, TrainReport, fit
from llm4rec.ctr.updates import CtrUpdateMethod, method_name
from llm4rec.data.periods import Timeline
from llm4rec.incremental.config import SmlConfig
from llm4rec.incremental.meta import as_rows
from llm4rec.incremental.params import (
    Params,
    load_parameters,
    logits_with,
    own_random_state,
    pad_rows,
    table_names,
    warm_start,
)


def _key(name: str) -> str:
    return name.replace(".", "__")


class ParameterTransfer(nn.Module):
    """f for one parameter: (rows, groups) previous and new values -> (rows, groups) combined values."""

    def __init__(self, groups: int, channels: list[int], hidden: int) -> None:
        super().__init__()
        n1, n2 = channels
        self.conv1 = nn.Linear(3, n1, bias=False)  # a (3 x 1) convolution over [prev; new; prev * new]
        self.conv2 = nn.Linear(n1, n2, bias=False)  # a (n1 x 1) convolution over the channels
        self.mlp = nn.Sequential(nn.Linear(n2 * groups, hidden), nn.GELU(), nn.Linear(hidden, groups))

    def forward(self, previous: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """(rows, groups) each; a row's product channel is divided by the L2 norm of its previous values."""
        norm = previous.norm(dim=1, keepdim=True) + 1e-15
        stacked = torch.stack([previous, new, previous * new / norm], dim=-1)  # (rows, groups, 3)
        channels = F.gelu(self.conv2(F.gelu(self.conv1(stacked))))  # (rows, groups, n2)
        return self.mlp(channels.transpose(1, 2).flatten(1))


class TransferModule(nn.Module):
    """One :class:`ParameterTransfer` per trainable parameter of the base model."""

    def __init__(self, shapes: dict[str, torch.Size], tables: set[str], config: SmlConfig) -> None:
        super().__init__()
        self.tables = tables
        self.transfers = nn.ModuleDict()
        for name, shape in shapes.items():
            is_table = name in tables
            groups = shape[1] if is_table else int(np.prod(shape))
            channels = config.table_channels if is_table else config.dense_channels
            hidden = config.table_hidden if is_table else config.dense_hidden
            self.transfers[_key(name)] = ParameterTransfer(groups, channels, hidden)

    def forward(self, previous: Params, new: Params) -> Params:
        out = {}
        for name, value in new.items():
            is_table = name in self.tables
            rows = self.transfers[_key(name)](as_rows(previous[name], is_table), as_rows(value, is_table))
            out[name] = rows.reshape(value.shape)
        return out


class TransferredModel(nn.Module):
    """Logits of the base model with parameters f(previous, new): what the trainer fits, in either phase.

    ``train_new`` chooses the phase: the new parameters are trained (f frozen), or f is (new frozen).
    """

    def __init__(
        self, template: CtrModel, previous: Params, new: Params, transfer: TransferModule, train_new: bool
    ) -> None:
        super().__init__()
        self._template = (template,)  # a tuple hides it from .parameters(): its own weights are not trained here
        self.previous = {name: value.detach() for name, value in previous.items()}
        self.new = nn.ParameterDict(
            {_key(n): nn.Parameter(v.detach().clone(), requires_grad=train_new) for n, v in new.items()}
        )
        self.names = list(new)
        self.transfer = transfer
        for p in transfer.parameters():
            p.requires_grad_(not train_new)

    def new_params(self) -> Params:
        return {name: self.new[_key(name)] for name in self.names}

    def generated(self) -> Params:
        return self.transfer(self.previous, self.new_params())

    def forward(self, batch: Batch) -> torch.Tensor:
        return logits_with(self._template[0], self.generated(), batch)

    def train(self, mode: bool = True) -> TransferredModel:
        self._template[0].train(mode)  # dropout in the base model follows the wrapper
        return super().train(mode)


@dataclass
class ModelPair:
    """(W_{t-1}, W_hat_t) as kept after fit(t), with the vocabulary sizes of period t."""

    previous: Params
    new: Params
    vocab: dict[str, int]


class SmlMethod(CtrUpdateMethod):
    """IU through SML's transfer module (a PeriodMethod)."""

    def __init__(
        self,
        model: str,
        features: FeatureTable,
        options: ModelOptions | None = None,
        train: CtrTrainConfig | None = None,
        sml: SmlConfig | None = None,
        seed: int = 0,
        device: torch.device | str | None = "cpu",
    ) -> None:
        super().__init__(model, "IU", features, options, train, seed=seed, device=device)
        self.sml = sml or SmlConfig()
        self.name = f"{model}-SML"
        self.transfer: TransferModule | None = None
        self.pair: ModelPair | None = None

    @property
    def served_by(self) -> str:
        """The pre-trained model after the first fit; IU's model after the first incremental period (a pair
        is kept, no transfer module made yet)."""
        if self.pair is not None and self.transfer is None:
            return method_name(self.model_name, "IU", self.window)
        return super().served_by

    def _trainable(self) -> Params:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def train_period(
        self, timeline: Timeline, period: int, train_rows: np.ndarray, val_rows: np.ndarray
    ) -> TrainReport:
        if self.pretraining:
            return super().train_period(timeline, period, train_rows, val_rows)
        if self.pair is None:  # the first incremental period: nothing to train f on yet, so plain IU
            previous = self._trainable()
            report = super().train_period(timeline, period, train_rows, val_rows)
            self.pair = ModelPair(previous, self._trainable(), self.encoders.vocab_sizes())
            return report
        train, val = self.encode(train_rows), self.encode(val_rows)
        self.extra_reports[period] = self._train_transfer(period, train, val)
        # W_{t-1} recomputed with the trained f, grown to period t's ids (new rows: the model's fresh rows).
        with torch.no_grad():
            previous = self.transfer(self.pair.previous, self.pair.new)
        current = self._trainable()
        previous = {
            name: pad_rows(value, current[name].shape[0], fill=current[name]) for name, value in previous.items()
        }
        wrapped = TransferredModel(self.model, previous, previous, self.transfer, train_new=True)
        report = fit(
            wrapped, train, val, self.train_config, self.fit_seed(period), learning_rate=self.sml.base_learning_rate
        )
        with torch.no_grad():
            load_parameters(self.model, wrapped.generated())
        self.pair = ModelPair(
            previous, {n: v.detach() for n, v in wrapped.new_params().items()}, self.encoders.vocab_sizes()
        )
        return report

    def _train_transfer(self, period: int, train: dict, val: dict) -> dict:
        """Step 1: f trained towards period t on (W_{t-2}, W_hat_{t-1}), data scored with the vocabulary of t-1."""
        pair, report = self.pair, {}
        if self.transfer is None:
            shapes = {name: value.shape for name, value in pair.new.items()}
            with own_random_state(self.fit_seed(period)):  # drawn on the CPU, then moved
                self.transfer = TransferModule(shapes, table_names(self.model), self.sml).to(self.device)
            report["warm_start_error"] = warm_start(
                self.transfer,
                lambda: self.transfer(pair.previous, pair.new),
                pair.new,
                self.sml.warm_start_steps,
            )
        wrapped = TransferredModel(self.model, pair.previous, pair.new, self.transfer, train_new=False)
        transfer_report = fit(
            wrapped,
            known_by(train, pair.vocab),
            known_by(val, pair.vocab),
            self.train_config,
            self.fit_seed(period) + 500_009,
            learning_rate=self.sml.learning_rate,
        )
        report["transfer"] = transfer_report.to_dict()
        return report
