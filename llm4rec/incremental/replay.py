"""Experience replay: past samples mixed into each period's incremental update.

All three keep the same uniform reservoir of past samples (by default of fixed capacity, filled by
reservoir sampling; or a growing fraction of every sample seen) and differ in which of its samples they
replay, ``ratio`` x |new| of them per period (``megg_ratio`` x |new| for MEGG):

- **Reservoir**: a uniform draw.
- **SPMF** (Wang et al., "Streaming ranking based recommender systems", SIGIR 2018; the ASMG paper's
  baseline): the reservoir's positives are ranked by the current model's score, rank 0 the highest, and
  drawn with probability proportional to exp(rank / N), so positives the model now scores low (has
  forgotten) come first; negatives are drawn uniformly, each class in proportion to the new period's.
- **MEGG** (arXiv 2509.07319): GGscore(z) = <g(z), g_ref>, the gradient of z's loss dotted with the
  gradient of the total loss on the candidate pool (the reservoir), both restricted to the parameters z
  touches: its user and item embedding rows and the final layer (the paper's parameter-localised form).
  It keeps both ends: the samples with the most positive and the most negative scores. Per-sample
  gradients come from :func:`torch.func.vmap` over :func:`torch.func.grad`, in chunks. As in the paper,
  both gradients come from the previous period's penultimate-epoch weights, not its final (best) model:
  a snapshot one epoch short of convergence, which the paper finds more robust to noisy samples.

The reservoirs (:mod:`llm4rec.incremental.reservoir`, shared with the LLM side) hold row numbers (numpy, on the host: bookkeeping, seeded by the method's own generator); the
candidates' tensors, the snapshot and the gradients live on the method's device, and a pool's GGscores are
summed there and copied to the host once.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from llm4rec.ctr.features import PAD, FeatureTable
from llm4rec.ctr.models.base import CtrModel, ModelOptions
from llm4rec.ctr.train import CtrTrainConfig, TrainReport, pointwise_loss, predict_proba, take
from llm4rec.ctr.updates import CtrUpdateMethod
from llm4rec.data.periods import Timeline
from llm4rec.errors import ConfigError, DataError
from llm4rec.incremental.config import ReplayConfig
from llm4rec.incremental.reservoir import build_reservoir, keep_both_ends, spmf_probabilities

SELECTIONS = ("Reservoir", "SPMF", "MEGG")
Tensors = dict[str, torch.Tensor]


def _touched_tables(model: CtrModel) -> dict[str, str]:
    """Table parameter name -> the batch field holding the sample's own id (its user or item row)."""
    return {
        f"{name}.weight": table.vocab
        for name, table in model.embedding_tables().items()
        if table.vocab in ("user", "item")
    }


def _final_layer(model: CtrModel) -> list[str]:
    return [f"output.{name}" for name, p in model.output.named_parameters() if p.requires_grad]


def reference_gradient(
    model: CtrModel, pool: Tensors, batch_size: int = 8192, task: str = "ctr"
) -> dict[str, torch.Tensor]:
    """Gradient of the mean loss over ``pool`` w.r.t. the user / item tables and the final layer (eval mode)."""
    names = [*_touched_tables(model), *_final_layer(model)]
    params = dict(model.named_parameters())
    total = {name: torch.zeros_like(params[name]) for name in names}
    n = len(pool["label"])
    was_training = model.training
    model.eval()
    for start in range(0, n, batch_size):
        batch = take(pool, torch.arange(start, min(start + batch_size, n), device=pool["label"].device))
        loss = pointwise_loss(task, model(batch), batch["label"], reduction="sum") / n
        for name, g in zip(names, torch.autograd.grad(loss, [params[m] for m in names]), strict=True):
            total[name] += g
    model.train(was_training)
    return total


def own_rows(chunk: Tensors) -> tuple[dict[str, torch.Tensor], Tensors]:
    """Each sample's own rows of the user and item vocabularies, and the chunk re-indexed into them.

    Per vocabulary, a sample reads a few rows only: [padding, its user] of a user table, [padding, its
    item, its history items] of an item table. Gathered per sample, these small (B, R) row lists replace
    the whole tables inside vmap, so a per-sample table costs R x D rather than N x D. Local index 1 is the
    sample's own user / item (also where the item recurs in its history); padding stays 0, so masks hold.
    """
    user, item, history = chunk["user"], chunk["item"], chunk["history"]
    slots = 2 + torch.arange(history.shape[1], device=history.device).expand_as(history)
    local = dict(chunk)
    local["user"], local["item"] = torch.ones_like(user), torch.ones_like(item)
    local["history"] = torch.where(history == PAD, PAD, torch.where(history == item[:, None], 1, slots))
    rows = {
        "user": torch.stack([torch.full_like(user, PAD), user], 1),
        "item": torch.cat([torch.full_like(item, PAD)[:, None], item[:, None], history], 1),
    }
    return rows, local


def ggscores(model: CtrModel, pool: Tensors, chunk_size: int = 256, task: str = "ctr") -> np.ndarray:
    """GGscore of every sample of ``pool``: <g(z), g_ref> over z's user and item rows and the final layer.

    g(z) w.r.t. its own rows is the gradient w.r.t. a zero offset added to those rows only (local index 1 of
    :func:`own_rows`), so vmap gives every sample its own row gradients (B x D), not whole-table gradients.
    """
    tables, final = _touched_tables(model), _final_layer(model)
    reference = reference_gradient(model, pool, task=task)
    base = {name: p.detach() for name, p in model.named_parameters()}

    def sample_loss(offsets: dict, final_params: dict, rows: dict, sample: Tensors) -> torch.Tensor:
        params = dict(base)
        for name, vocab in tables.items():
            own = (torch.arange(rows[vocab].shape[0], device=offsets[name].device) == 1).to(offsets[name].dtype)
            params[name] = base[name][rows[vocab]] + own[:, None] * offsets[name][None, :]
        params.update(final_params)
        batch = {key: value.unsqueeze(0) for key, value in sample.items()}
        return pointwise_loss(task, functional_call(model, params, (batch,)), batch["label"])

    per_sample = vmap(grad(sample_loss, argnums=(0, 1)), in_dims=(None, None, 0, 0))
    offsets = {name: base[name].new_zeros(base[name].shape[1]) for name in tables}
    final_params = {name: base[name] for name in final}
    n, scores, device = len(pool["label"]), [], pool["label"].device
    was_training = model.training
    model.eval()  # no dropout: a sample's gradient must not depend on the chunk it falls in
    for start in range(0, n, chunk_size):
        chunk = take(pool, torch.arange(start, min(start + chunk_size, n), device=device))
        rows, local = own_rows(chunk)
        row_grads, final_grads = per_sample(offsets, final_params, rows, local)
        score = torch.zeros(len(chunk["label"]), dtype=torch.float64, device=device)
        for name, vocab in tables.items():
            score += (row_grads[name] * reference[name][chunk[vocab]]).sum(-1).double()
        for name in final:
            score += (final_grads[name] * reference[name]).flatten(1).sum(-1).double()
        scores.append(score)
    model.train(was_training)
    return torch.cat(scores).cpu().numpy() if scores else np.empty(0)  # one copy for the whole pool


class ReplayMethod(CtrUpdateMethod):
    """IU plus ``ratio`` x |new| replayed reservoir samples per period (``megg_ratio`` for MEGG; a PeriodMethod).

    The reservoir starts with the pre-training periods and takes in each period once it has been trained on,
    so the candidates at period t come from periods 0..t-1, scored by the model trained through t-1 (for
    MEGG: by that training's penultimate-epoch snapshot, grown to period t's ids).
    """

    def __init__(
        self,
        model: str,
        selection: str,
        features: FeatureTable,
        options: ModelOptions | None = None,
        train: CtrTrainConfig | None = None,
        replay: ReplayConfig | None = None,
        seed: int = 0,
        device: torch.device | str | None = "cpu",
    ) -> None:
        if selection not in SELECTIONS:
            raise ConfigError(f"replay selection {selection!r} is unknown; available: {list(SELECTIONS)}")
        super().__init__(model, "IU", features, options, train, seed=seed, device=device)
        self.selection, self.replay = selection, replay or ReplayConfig()
        self.name = f"{model}-{selection}"
        self.rng = np.random.default_rng([seed, 2018])
        self.reservoir = build_reservoir(self.replay, self.rng)
        self.snapshot: CtrModel | None = None  # MEGG: the last training's penultimate-epoch model
        self.last_two: list[CtrModel] = []  # MEGG: the models after the current training's last two epochs
        self.offered = np.zeros(len(features), dtype=bool)  # rows the reservoir has been offered

    def train_period(
        self, timeline: Timeline, period: int, train_rows: np.ndarray, val_rows: np.ndarray
    ) -> TrainReport:
        replayed = np.empty(0, dtype=np.int64)
        if not self.pretraining and len(self.reservoir.rows):
            replayed = self.select(train_rows)
        self.last_two = []
        report = super().train_period(timeline, period, np.concatenate([train_rows, replayed]), val_rows)
        if self.selection == "MEGG":  # no epoch ran (nothing to train on): the model itself
            self.snapshot = self.last_two[0] if self.last_two else copy.deepcopy(self.model)
        self.extra_reports[period] = {"replayed": len(replayed), "reservoir": len(self.reservoir.rows)}
        # Period t's samples are past ones from t + 1. IU at t also learns val_{t-1} (the one row rule),
        # offered already: each row is offered once, so that every row has the same chance to be kept.
        seen = np.concatenate([train_rows, val_rows])
        fresh = seen[~self.offered[seen]]
        self.offered[fresh] = True
        self.reservoir.add(fresh)
        return report

    def candidates(self, new_rows: np.ndarray) -> np.ndarray:
        """The reservoir's rows that ``new_rows`` does not hold: val_{t-1} is new data at t, not replayed."""
        rows = self.reservoir.rows
        return rows[~np.isin(rows, new_rows)]

    def on_epoch_end(self, epoch: int, model: torch.nn.Module) -> None:
        """MEGG keeps copies of the model after the last two epochs of each training: the earlier one (the
        only one when a single epoch ran) is the snapshot the next period's GGscores come from, whichever
        epoch the val check keeps as the model."""
        if self.selection != "MEGG":
            return
        snapshot = copy.deepcopy(model)
        snapshot.zero_grad(set_to_none=True)
        self.last_two = [*self.last_two[-1:], snapshot]

    def select(self, new_rows: np.ndarray) -> np.ndarray:
        """Reservoir rows to replay beside ``new_rows``."""
        candidates, ratio = self.candidates(new_rows), self.replay.ratio
        if self.selection == "Reservoir":
            n = min(round(ratio * len(new_rows)), len(candidates))
            return self.rng.choice(candidates, size=n, replace=False)
        if self.selection == "SPMF":
            return self._spmf(new_rows, candidates, ratio)
        if self.snapshot is None:
            raise DataError(f"{self.name}: select before the first training (no snapshot to score with)")
        self.snapshot.grow(self.encoders.vocab_sizes())  # ids first seen in period t get (untrained) rows
        scores = ggscores(self.snapshot, self.encode(candidates), self.replay.megg_chunk_size, self.train_config.task)
        return candidates[keep_both_ends(scores, round(self.replay.megg_ratio * len(new_rows)))]

    def _spmf(self, new_rows: np.ndarray, candidates: np.ndarray, ratio: float) -> np.ndarray:
        positive = self.features.label[candidates] == 1
        new_positive = self.features.label[new_rows] == 1
        pos, neg = candidates[positive], candidates[~positive]
        n_pos = min(round(ratio * new_positive.sum()), len(pos))
        n_neg = min(round(ratio * (~new_positive).sum()), len(neg))
        scores = predict_proba(self.model, self.encode(pos), self.train_config.eval_batch_size)
        chosen_pos = self.rng.choice(pos, size=n_pos, replace=False, p=spmf_probabilities(scores)) if n_pos else pos[:0]
        return np.concatenate([chosen_pos, self.rng.choice(neg, size=n_neg, replace=False)])
