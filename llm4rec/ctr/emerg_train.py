"""EmerG's training scheme: meta-learning across items' CTR tasks, and the warm-up of new items.

Why meta-learning: a new item arrives with a handful of samples, too few to fit a model, enough to nudge a
few parameters. EmerG therefore learns the shared parts (hypernetwork, GNN, user and feature embeddings,
readout) so that a few gradient steps on *only the item-specific parameters* (the item's embedding row and
its graph offset, :attr:`llm4rec.ctr.models.emerg.EmerG.item_specific`) fit an item well.

- A task is one old item: its samples, in the order given (the caller passes them in time order), split
  into a support part (the first ``support_share``) and a query part (the rest).
- Inner loop (:func:`adapt`): each task starts *cold*, its item's embedding row and graph offset at zero,
  the state of an item with no samples (its graph is then the hypernetwork's, from its features); then
  ``inner_steps`` SGD steps of ``inner_lr`` on its support loss move those rows alone. It is computed
  with :func:`torch.func.functional_call` on adapted copies, so the module is never mutated.
- Outer step (:func:`meta_step`): Adam (``meta_lr``) on every shared parameter against
  ``support_weight`` x the cold support loss + (1 - ``support_weight``) x the adapted query loss,
  averaged over the step's tasks (the paper's code: 0.1 / 0.9). First order by default, as the paper's
  code (the inner gradient is not differentiated through); ``second_order`` differentiates through it.
- Warm-up (:func:`warm_up`): a round of new items' samples trains only those items' item-specific rows,
  ``warm_steps`` full-batch Adam steps of ``warm_lr`` (the paper's code: 0.01 and 12 steps per round).

Several tasks share an outer step (``tasks_per_step``). Their losses are summed per-item means, and an
item's rows are distinct parameters, so each item's inner step is its own task's step, with one
exception: an item's embedding row is also read through users' histories, so another task's sample
whose user had liked the item adds to its gradient (the paper's features have no histories).

Where this differs from the public code (LARS-research/EmerG): there the hypernetwork's graph is copied
into a per-item table without a gradient path, so the hypernetwork is never trained; here its output
enters the graph and the outer step trains it. There item-id embeddings are re-initialised once before
meta-training; here every task starts cold. Support and query are two consecutive groups of fixed size
there, the first ``support_share`` and the rest of an item's samples here. There each new item is warmed
up alone on a copy of the model, one Adam optimizer kept across rounds a-c; here one call warms a round's
items together (Adam's per-coordinate steps keep them independent, but for the history coupling above)
with a fresh optimizer per round.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import functional_call

from llm4rec.ctr.features import OOV
from llm4rec.ctr.train import Tensors, n_rows, pointwise_loss, predict_proba, take
from llm4rec.errors import ConfigError
from llm4rec.eval import metrics


@dataclass
class EmergTrainConfig:
    meta_epochs: int = 50  # at most this many passes over the old items' tasks...
    patience: int | None = 5  # ...stopping when the val AUC has not improved for this many (None: never)
    tasks_per_step: int = 32  # items per outer step
    support_share: float = 0.5  # share of an item's samples (the earliest) in its support set
    min_samples: int = 4  # items with fewer samples are not tasks (each needs a support and a query part)
    inner_lr: float = 0.01  # SGD step of the inner loop on the item-specific rows
    inner_steps: int = 1
    meta_lr: float = 1e-3  # Adam on the shared parameters
    support_weight: float = 0.1  # weight of the cold support loss in the outer loss (the query's: 1 - it)
    second_order: bool = False  # differentiate through the inner step (the paper's code: first order)
    warm_lr: float = 0.01  # Adam on a warm-up round's item-specific rows
    warm_steps: int = 12  # full-batch steps per warm-up round

    def __post_init__(self) -> None:
        for name in ("meta_epochs", "tasks_per_step", "inner_steps", "warm_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"emerg.{name}: must be >= 1, got {getattr(self, name)}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"emerg.patience: must be >= 1 or null (never stop early), got {self.patience}")
        if self.min_samples < 2:
            raise ConfigError(f"emerg.min_samples: must be >= 2 (a support and a query sample), got {self.min_samples}")
        if not 0 < self.support_share < 1:
            raise ConfigError(f"emerg.support_share: expected a value in (0, 1), got {self.support_share}")
        if not 0 <= self.support_weight <= 1:
            raise ConfigError(f"emerg.support_weight: expected a value in [0, 1], got {self.support_weight}")
        for name in ("inner_lr", "meta_lr", "warm_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"emerg.{name}: must be > 0, got {getattr(self, name)}")


@dataclass
class MetaTrainReport:
    n_tasks: int
    n_support: int
    n_query: int
    steps: int = 0
    val_auc: list[float] = field(default_factory=list)  # after each meta epoch, with no warm-up
    best_epoch: int = 0  # 1-based; 0 when there was no val split
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "n_tasks": self.n_tasks,
            "n_support": self.n_support,
            "n_query": self.n_query,
            "steps": self.steps,
            "best_epoch": self.best_epoch,
            "val_auc": [None if math.isnan(a) else round(a, 5) for a in self.val_auc],
            "seconds": round(self.seconds, 3),
        }


def item_specific_names(model: torch.nn.Module) -> tuple[str, ...]:
    names = getattr(model, "item_specific", None)
    if not names:
        raise TypeError(f"{type(model).__name__} declares no item-specific parameters (an EmerG model does)")
    return tuple(names)


def item_rows_mask(items: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(rows of ``table``, 1) mask: 1 at the rows of ``items`` (padding and OOV excluded: the OOV row is every
    unseen item's, not one item's)."""
    mask = torch.zeros(len(table), 1, dtype=table.dtype, device=table.device)
    mask[items[items > OOV]] = 1.0
    return mask


def per_item_loss(logits: torch.Tensor, batch: Tensors) -> torch.Tensor:
    """Sum over the batch's items of each item's mean BCE: one task's loss per item, whatever its size."""
    _, inverse, counts = torch.unique(batch["item"], return_inverse=True, return_counts=True)
    losses = pointwise_loss("ctr", logits, batch["label"], reduction="none")
    return (losses / counts[inverse]).sum()


def adapt(
    model: torch.nn.Module, support: Tensors, config: EmergTrainConfig, create_graph: bool = False
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The inner loop: (the item-specific tables after the support items start cold and take
    ``config.inner_steps`` SGD steps on their own support losses, the summed cold support loss).

    Only the rows of the support's items move; every other row is the module's. The module itself is left
    as it was. ``create_graph`` keeps the inner gradients differentiable (second order)."""
    params = dict(model.named_parameters())
    names = item_specific_names(model)
    masks = {name: item_rows_mask(support["item"], params[name]) for name in names}
    adapted = {name: params[name] * (1 - masks[name]) for name in names}  # the tasks' rows start cold
    cold_loss = None
    for step in range(config.inner_steps):
        loss = per_item_loss(functional_call(model, adapted, (support,)), support)
        cold_loss = loss if cold_loss is None else cold_loss
        # The cold loss is part of the outer loss: keep its graph for the outer backward.
        grads = torch.autograd.grad(
            loss, list(adapted.values()), create_graph=create_graph, retain_graph=create_graph or step == 0
        )
        adapted = {
            name: value - config.inner_lr * masks[name] * (grad if create_graph else grad.detach())
            for (name, value), grad in zip(adapted.items(), grads, strict=True)
        }
    return adapted, cold_loss


def shared_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """What the outer step trains: everything but the graph offsets, which stay zero for old items so that
    the hypernetwork alone carries what an item's features say about its graph. (The item embedding table
    stays: a task's own rows get no outer gradient, they start cold, but rows read through histories do.)"""
    return [param for name, param in model.named_parameters() if name != "graph_offset.weight"]


def meta_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    support: Tensors,
    query: Tensors,
    config: EmergTrainConfig,
) -> float:
    """One outer step over the tasks (items) of ``support`` / ``query``; returns the outer loss."""
    n_tasks = len(torch.unique(support["item"]))
    adapted, cold_loss = adapt(model, support, config, create_graph=config.second_order)
    query_loss = per_item_loss(functional_call(model, adapted, (query,)), query)
    loss = (config.support_weight * cold_loss + (1 - config.support_weight) * query_loss) / n_tasks
    model.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.zero_grad(set_to_none=True)  # the graph offsets' gradients, never stepped
    return float(loss.detach())


@dataclass
class Tasks:
    """Old items as tasks: ``items`` (n,) embedding indices, ``support[i]`` / ``query[i]`` their row positions."""

    items: np.ndarray
    support: list[np.ndarray]
    query: list[np.ndarray]


def split_tasks(item_index: np.ndarray, config: EmergTrainConfig) -> Tasks:
    """Each known item with at least ``min_samples`` rows: its first ``support_share`` of rows (at least one,
    leaving at least one) as support, the rest as query, rows in the order given."""
    order = np.argsort(item_index, kind="stable")
    items, starts, counts = np.unique(item_index[order], return_index=True, return_counts=True)
    tasks = Tasks(np.empty(0, dtype=np.int64), [], [])
    kept = []
    for item, start, count in zip(items, starts, counts, strict=True):
        if item <= OOV or count < config.min_samples:
            continue
        rows = order[start : start + count]
        cut = min(max(round(count * config.support_share), 1), count - 1)
        kept.append(item)
        tasks.support.append(rows[:cut])
        tasks.query.append(rows[cut:])
    tasks.items = np.asarray(kept, dtype=np.int64)
    return tasks


def meta_train(
    model: torch.nn.Module,
    tensors: Tensors,
    config: EmergTrainConfig,
    val: Tensors | None = None,
    seed: int = 0,
) -> MetaTrainReport:
    """Meta-train ``model`` in place on the items of ``tensors`` (a :meth:`FeatureEncoders.encode` output of
    old items' samples, in time order). With ``val``, keep the meta epoch of the best val AUC (scored as the
    model stands, no warm-up). Task order is shuffled by a CPU generator seeded by ``seed``."""
    started = time.perf_counter()
    tasks = split_tasks(tensors["item"].cpu().numpy(), config)
    if not len(tasks.items):
        raise ConfigError(
            f"emerg.min_samples: no item has {config.min_samples} or more samples to be a meta-learning task"
        )
    report = MetaTrainReport(
        n_tasks=len(tasks.items),
        n_support=sum(len(rows) for rows in tasks.support),
        n_query=sum(len(rows) for rows in tasks.query),
    )
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(shared_parameters(model), lr=config.meta_lr)
    device = tensors["label"].device
    best_auc, best_state = -math.inf, None
    for epoch in range(1, config.meta_epochs + 1):
        model.train()
        order = torch.randperm(len(tasks.items), generator=generator).numpy()
        for start in range(0, len(order), config.tasks_per_step):
            chosen = order[start : start + config.tasks_per_step]
            support = take(tensors, torch.from_numpy(np.concatenate([tasks.support[i] for i in chosen])).to(device))
            query = take(tensors, torch.from_numpy(np.concatenate([tasks.query[i] for i in chosen])).to(device))
            meta_step(model, optimizer, support, query, config)
            report.steps += 1
        if val is None or n_rows(val) == 0:
            report.val_auc.append(float("nan"))
            continue
        auc = metrics.auc(val["label"].cpu().numpy(), predict_proba(model, val))
        report.val_auc.append(auc)
        if auc > best_auc or best_state is None:
            best_auc, report.best_epoch = auc, epoch
            best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
        elif config.patience is not None and epoch - report.best_epoch >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    report.seconds = time.perf_counter() - started
    return report


def warm_up(model: torch.nn.Module, tensors: Tensors, config: EmergTrainConfig) -> None:
    """One warm-up round: ``config.warm_steps`` full-batch Adam steps (``warm_lr``) on the summed per-item
    losses of ``tensors`` (new items' samples), moving only those items' item-specific rows; every other
    parameter and row is left exactly as it was."""
    if n_rows(tensors) == 0:
        return
    params = dict(model.named_parameters())
    names = item_specific_names(model)
    masks = {name: item_rows_mask(tensors["item"], params[name]) for name in names}
    optimizer = torch.optim.Adam([params[name] for name in names], lr=config.warm_lr)
    was_training = model.training
    model.train()
    for _ in range(config.warm_steps):
        optimizer.zero_grad(set_to_none=True)
        loss = per_item_loss(model(tensors), tensors)
        grads = torch.autograd.grad(loss, [params[name] for name in names])
        for name, grad in zip(names, grads, strict=True):
            params[name].grad = grad * masks[name]  # rows of other items: zero gradient, so Adam leaves them
        optimizer.step()
    model.train(was_training)
