"""ASMG (Peng et al., "Learning an Adaptive Meta Model-Generator for Incrementally Updating Recommender
Systems", RecSys 2021): a meta generator turns the sequence of incrementally updated models into the model
that serves the next period.

The base model is kept up to date by plain IU (Eq. 1); its incrementally
updated models Theta_K, Theta_{K+1}, ... form the sequence (the model
pre-trained on periods 0..K-1 is not in it: Eq. 2 starts at the first update). Generators work coordinate-wise
(Sec. 3.3): every coordinate of a dense parameter (MLP weights and biases, the
final layer) has its own generator weights; an embedding table has one
generator per embedding dimension, shared across ids (Sec. 3.5). Coordinates
are batched as tensors: a parameter is a (rows, groups) matrix, with rows = ids
and groups = dimensions for a table, and one row of numel groups otherwise.

- **ASMG-GRU** (GRUmulti, Sec. 3.4): a GRU with hidden size d per group, Eq. (4), output W h + b,
  Eq. (5), run over the last k models from the hidden state learned before them (truncated sequence),
  trained at every step at once towards the data of the period after each model, loss weights
  j / sum(j) (Eq. 7). Gate biases are added to Eq. (4), as in a standard GRU.
- **ASMG-Linear**: Theta* = sum_i alpha_i Theta_i over the last k models, alpha a softmax over the
  sequence per coordinate (per dimension for tables), trained towards the next period.

No test data: at fit(t) the generator is trained on the models up to Theta_{t-1} towards periods up to t
(period t's train split, early stopping on its val split), then applied to the models up to Theta_t, from
the state it reached after the model before them, to make the model serving t + 1. This is the ASMG
scripts' test-then-train order, shifted so that the training on D_t happens in fit(t). Until k + 1 models
exist the sequences are shorter (all models but the first), so the generator is always applied to as many
models as it was just trained on. As in Algorithm 1, it first warms up: IU serves until the generator has
been trained ``warm_up`` times (default k, the first training on a full sequence); a generator trained on
one short sequence extrapolates the last update and serves badly calibrated models.

A new id enters older models' sequences with its first known value (see
:func:`~llm4rec.incremental.params.align_tables`) and a zero hidden state; the data of a period are scored
as the model before it knew them (new ids through the OOV row). The GRU starts from a warm start that
copies its newest input (:func:`~llm4rec.incremental.params.warm_start`): a randomly initialised generator
outputs noise, and this protocol has too few periods to train that away.

The generator is initialised on the CPU (its own seeded stream) and moved to the base model's device; the
model sequence, the GRU states and the meta training's batches live there too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from llm4rec.ctr.features import FeatureTable, known_by
from llm4rec.ctr.models.base import CtrModel, ModelOptions
from llm4rec.ctr.train import CtrTrainConfig, predict_proba, take
from llm4rec.ctr.updates import CtrUpdateMethod, method_name
from llm4rec.data.periods import Timeline
from llm4rec.errors import ConfigError
from llm4rec.eval import metrics
from llm4rec.incremental.config import AsmgConfig, check_sequence_length
from llm4rec.incremental.params import (
    Params,
    align_tables,
    logits_with,
    own_random_state,
    table_names,
    trainable_parameters,
    warm_start,
    with_parameters,
)

GENERATORS = ("GRU", "Linear")
Tensors = dict[str, torch.Tensor]


def _key(name: str) -> str:
    return name.replace(".", "__")  # module names may not contain dots


def as_rows(value: torch.Tensor, is_table: bool) -> torch.Tensor:
    """(rows, groups): a table as it is (ids x dims), a dense parameter as one row of all its coordinates."""
    return value if is_table else value.reshape(1, -1)


class CoordinateGRU(nn.Module):
    """GRU cells with one set of weights per group of coordinates, all groups in batched matmuls (Eq. 4-5).

    Tensors are laid out (groups, rows, ...): a group's weights multiply all its rows in one ``bmm``.
    """

    def __init__(self, groups: int, hidden: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(hidden)  # nn.GRU's initialisation

        def uniform(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.input_weight = uniform(groups, 1, 3 * hidden)  # theta -> [reset, update, candidate]
        self.bias = uniform(groups, 1, 3 * hidden)
        self.gate_weight = uniform(groups, hidden, 2 * hidden)  # h -> [reset, update]
        self.candidate_weight = uniform(groups, hidden, hidden)  # (reset * h) -> candidate
        self.out_weight = uniform(groups, hidden, 1)
        self.out_bias = uniform(groups, 1)

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (groups, rows), h (groups, rows, hidden) -> (next h, output theta* (groups, rows))."""
        d = h.shape[-1]
        inputs = torch.addcmul(self.bias, x.unsqueeze(-1), self.input_weight)  # (G, R, 3d)
        reset, update = torch.sigmoid(inputs[..., : 2 * d] + torch.bmm(h, self.gate_weight)).chunk(2, dim=-1)
        candidate = torch.tanh(inputs[..., 2 * d :] + torch.bmm(reset * h, self.candidate_weight))
        h = h + update * (candidate - h)  # (1 - z) h + z h~
        return h, torch.bmm(h, self.out_weight).squeeze(-1) + self.out_bias


class GruMetaGenerator(nn.Module):
    """One :class:`CoordinateGRU` per parameter; maps a model sequence to one generated model per step.

    States are (groups, rows, hidden) per parameter."""

    def __init__(self, groups: dict[str, int], tables: set[str], hidden: int) -> None:
        super().__init__()
        self.names, self.tables, self.hidden = list(groups), tables, hidden
        self.cells = nn.ModuleDict({_key(name): CoordinateGRU(g, hidden) for name, g in groups.items()})

    def forward(self, sequence: list[Params], state: Params | None = None) -> tuple[list[Params], list[Params]]:
        """(generated parameters after each step, hidden state after each step)."""
        outputs: list[Params] = [{} for _ in sequence]
        states: list[Params] = [{} for _ in sequence]
        for name in self.names:
            cell, is_table = self.cells[_key(name)], name in self.tables
            groups, rows = as_rows(sequence[-1][name], is_table).T.shape
            h = sequence[-1][name].new_zeros(groups, rows, self.hidden)
            if state is not None:  # ids new since the state was taken start from zero
                h[:, : state[name].shape[1]] = state[name]
            for step, params in enumerate(sequence):
                h, y = cell.step(as_rows(params[name], is_table).T, h)
                outputs[step][name] = y.T.reshape(params[name].shape)
                states[step][name] = h
        return outputs, states


class LinearMetaGenerator(nn.Module):
    """Theta* = sum_i alpha_i Theta_i; alpha = softmax over the sequence, per coordinate (per dim for tables)."""

    def __init__(self, groups: dict[str, int], tables: set[str], length: int) -> None:
        super().__init__()
        self.names, self.tables = list(groups), tables
        # Zero logits: the uniform average of the models to begin with.
        self.logits = nn.ParameterDict({_key(name): nn.Parameter(torch.zeros(length, g)) for name, g in groups.items()})

    def weights(self, name: str, steps: int) -> torch.Tensor:
        """(steps, groups) weights of the newest ``steps`` models (the logits' last rows)."""
        return torch.softmax(self.logits[_key(name)][-steps:], dim=0)

    def forward(self, sequence: list[Params]) -> Params:
        return {
            name: linear_combination(
                [p[name] for p in sequence], self.weights(name, len(sequence)), name in self.tables
            )
            for name in self.names
        }


def linear_combination(values: list[torch.Tensor], weights: torch.Tensor, is_table: bool) -> torch.Tensor:
    """sum_i weights[i] * values[i], with weights (len(values), groups) applied per group."""
    shape = values[-1].shape
    stacked = torch.stack([as_rows(v, is_table) for v in values])  # (steps, rows, groups)
    return (weights.unsqueeze(1) * stacked).sum(0).reshape(shape)


@dataclass
class Snapshot:
    """An incrementally updated model: the period it was trained through, its vocabulary, its parameters."""

    period: int
    vocab: dict[str, int]
    params: Params


class AsmgMethod(CtrUpdateMethod):
    """IU models in a sequence, served through a meta generator (a PeriodMethod)."""

    def __init__(
        self,
        model: str,
        generator: str,
        features: FeatureTable,
        options: ModelOptions | None = None,
        train: CtrTrainConfig | None = None,
        meta: AsmgConfig | None = None,
        seed: int = 0,
        device: torch.device | str | None = "cpu",
    ) -> None:
        if generator not in GENERATORS:
            raise ConfigError(f"ASMG generator {generator!r} is unknown; available: {list(GENERATORS)}")
        super().__init__(model, "IU", features, options, train, seed=seed, device=device)
        self.kind, self.meta = generator, meta or AsmgConfig()
        self.name = f"{model}-ASMG-{generator}"
        self.snapshots: list[Snapshot] = []
        self.states: dict[int, Params] = {}  # GRU hidden state before snapshot i (none: zero)
        self.generator: GruMetaGenerator | LinearMetaGenerator | None = None
        self.served: CtrModel | None = None
        self.n_trainings = 0

    def fit(self, timeline: Timeline, period: int) -> None:
        pretraining = self.pretraining
        if pretraining:  # updates follow at periods + 1 .. n - 2 (the last period is only tested)
            check_sequence_length(self.meta, timeline.n_periods - 2 - period, period + 1)
        super().fit(timeline, period)  # IU: self.model is now Theta_t
        if pretraining:  # the pre-trained model stays out of the sequence (Eq. 2 starts at the first update)
            return
        self.snapshots.append(Snapshot(period, self.encoders.vocab_sizes(), trainable_parameters(self.model)))
        if len(self.snapshots) >= 2:
            report = self._train_generator(timeline)
            self.n_trainings += 1
            if self.n_trainings >= self.meta.warm_up_trainings:  # warmed up: the generator serves from now on
                self.served = self._generate()
            self.extra_reports[period] = {**report, "serves": self.served is not None}

    def serving_model(self) -> CtrModel:
        return self.served if self.served is not None else super().serving_model()

    @property
    def served_by(self) -> str:
        """The pre-trained model after the first fit; plain IU (its model, bit for bit) until warmed up."""
        if self.served is None and len(self.reports) > 1:
            return method_name(self.model_name, "IU", self.window)
        return super().served_by

    def _new_generator(self) -> GruMetaGenerator | LinearMetaGenerator:
        params, tables = self.snapshots[-1].params, table_names(self.model)
        groups = {name: as_rows(value, name in tables).shape[1] for name, value in params.items()}
        with own_random_state(self.fit_seed(self.snapshots[-1].period)):  # drawn on the CPU, then moved
            if self.kind == "GRU":
                generator = GruMetaGenerator(groups, tables, self.meta.hidden_size)
            else:
                generator = LinearMetaGenerator(groups, tables, self.meta.sequence_length)
        return generator.to(self.device)

    def _run(self, sequence: list[Params], first: int) -> tuple[list[Params], list[Params]]:
        """Generated parameters per step (GRU: all steps; Linear: the last only) and GRU states per step."""
        if isinstance(self.generator, GruMetaGenerator):
            return self.generator(sequence, self.states.get(first))
        return [self.generator(sequence)], []

    def _sequence(self, first: int, stop: int) -> list[Params]:
        return align_tables([s.params for s in self.snapshots[first:stop]], table_names(self.model))

    def _targets(self, timeline: Timeline, first: int) -> tuple[list[Tensors], Tensors]:
        """Data of the period after each model of the meta sequence (the newest: its train split) and the newest
        period's val split, each encoded as the model before it knew them."""
        table = timeline.table
        periods, is_train = table["period"].to_numpy(), table["split"].to_numpy() == "train"
        newest = self.snapshots[-1].period
        targets = []
        for model, after in zip(self.snapshots[first:-1], self.snapshots[first + 1 :], strict=True):
            rows = np.flatnonzero((periods == after.period) & (is_train | (after.period < newest)))
            targets.append(known_by(self.encode(rows), model.vocab))
        val = known_by(self.encode(np.flatnonzero((periods == newest) & ~is_train)), self.snapshots[-2].vocab)
        return targets, val

    def _train_generator(self, timeline: Timeline) -> dict:
        """Train the generator at fit(t): models up to Theta_{t-1} towards periods up to t (Eq. 6-7)."""
        k = self.meta.sequence_length
        first = max(0, len(self.snapshots) - 1 - k)
        sequence = self._sequence(first, len(self.snapshots) - 1)
        targets, val = self._targets(timeline, first)
        if self.kind == "Linear":
            targets = targets[-1:]  # one step: the newest model's combination towards the next period
        report: dict = {"sequence": [s.period for s in self.snapshots[first:-1]]}
        if self.generator is None:
            self.generator = self._new_generator()
            if self.kind == "GRU":
                report["warm_start_error"] = warm_start(
                    self.generator,
                    lambda: self._run(sequence, first)[0][-1],
                    sequence[-1],
                    self.meta.warm_start_steps,
                )
        report.update(self._fit_generator(sequence, first, targets, val))
        if isinstance(self.generator, GruMetaGenerator):
            with torch.no_grad():
                # The state after the sequence's first model starts the next period's truncated sequence.
                self.states[first + 1] = {n: h.detach() for n, h in self._run(sequence, first)[1][0].items()}
        return report

    def _loss_weights(self, steps: int) -> list[float]:
        if self.meta.loss_weights == "uniform":
            return [1 / steps] * steps
        return [j / (steps * (steps + 1) / 2) for j in range(1, steps + 1)]

    def _fit_generator(self, sequence: list[Params], first: int, targets: list[Tensors], val: Tensors) -> dict:
        """Adam on the weighted next-period losses; every period's data cut into as many batches as the newest's.
        Keeps the epoch whose newest generated model has the best val AUC."""
        config = self.train_config
        shuffle = torch.Generator().manual_seed(self.fit_seed(self.snapshots[-1].period))
        optimizer = torch.optim.Adam(self.generator.parameters(), lr=self.meta.learning_rate, foreach=True)
        weights = self._loss_weights(len(targets))
        n_batches = max(1, math.ceil(len(targets[-1]["label"]) / config.batch_size))
        best, best_state, stale, val_auc = -math.inf, None, 0, []
        for _ in range(self.meta.epochs):
            orders = [  # shuffled on the CPU (the same order on every device), moved once per epoch
                torch.randperm(len(t["label"]), generator=shuffle).to(self.device).tensor_split(n_batches)
                for t in targets
            ]
            for b in range(n_batches):
                outputs = self._run(sequence, first)[0][-len(targets) :]
                loss = sum(
                    w * F.binary_cross_entropy_with_logits(logits_with(self.model, out, batch), batch["label"])
                    for w, out, batch in zip(
                        weights, outputs, (take(t, o[b]) for t, o in zip(targets, orders, strict=True)), strict=True
                    )
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                candidate = with_parameters(self.model, self._run(sequence, first)[0][-1])
            y, p = val["label"].cpu().numpy(), predict_proba(candidate, val, config.eval_batch_size)
            auc = metrics.auc(y, p)
            score = auc if not math.isnan(auc) else -metrics.logloss(y, p)
            val_auc.append(round(auc, 5) if not math.isnan(auc) else None)
            if score > best:
                best, stale = score, 0
                best_state = {n: v.detach().clone() for n, v in self.generator.state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience:
                    break
        self.generator.load_state_dict(best_state)
        return {"generator_val_auc": val_auc}

    def _generate(self) -> CtrModel:
        """The model serving the next period: the generator applied to the newest models, as many as it was just
        trained on (k once k + 1 models exist), from the state after the model before them."""
        first = max(1, len(self.snapshots) - self.meta.sequence_length)
        with torch.no_grad():
            params = self._run(self._sequence(first, len(self.snapshots)), first)[0][-1]
        return with_parameters(self.model, params)
