"""A model's parameters as plain tensors: the shared interface of the model-level strategies (ASMG, SML).

Strategies never look inside a model class. They see its trainable parameters
by name, and which of them are embedding tables (rows = ids, which grow period
by period) as opposed to dense parameters (MLP weights and biases, the final
layer). Generated parameters go back into a model through
:func:`torch.func.functional_call` (while training a generator) or
:func:`with_parameters` (to serve).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

from llm4rec.ctr.models.base import Batch, CtrModel

Params = dict[str, torch.Tensor]
WARM_START_LR = 0.02  # Adam step of the warm-start regression (no data involved)


@contextlib.contextmanager
def own_random_state(seed: int) -> Iterator[None]:
    """Initialise a strategy's own modules from ``seed`` without moving torch's global random state, so the
    base model's chain (new embedding rows are drawn from it) stays the one IU would have."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def trainable_parameters(model: CtrModel) -> Params:
    """Detached copies of every parameter that training updates (MF's frozen output layer is left out)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def table_names(model: CtrModel) -> set[str]:
    """Names of the embedding-table parameters (``fields.item.weight``, ...): one row per id."""
    return {f"{name}.weight" for name in model.embedding_tables()}


def pad_rows(tensor: torch.Tensor, rows: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """``tensor`` with rows appended up to ``rows``: copied from ``fill`` (same row indices) or zeros."""
    missing = rows - tensor.shape[0]
    if missing <= 0:
        return tensor
    extra = fill[tensor.shape[0] : rows] if fill is not None else tensor.new_zeros((missing, *tensor.shape[1:]))
    return torch.cat([tensor, extra.to(tensor)])


def align_tables(sequence: list[Params], tables: set[str]) -> list[Params]:
    """Give every model of a sequence the newest model's table sizes.

    An id the older model did not know yet enters its sequence with its first known value (back-filled from
    the next model that has it), so its sequence is flat until it appears rather than a jump from zero.
    """
    aligned = [dict(p) for p in sequence]
    for name in tables:
        for index in range(len(aligned) - 2, -1, -1):
            newer = aligned[index + 1][name]
            aligned[index][name] = pad_rows(aligned[index][name], newer.shape[0], fill=newer)
    return aligned


def with_parameters(template: CtrModel, params: Params) -> CtrModel:
    """A copy of ``template`` holding ``params`` (tables may be larger than the template's)."""
    model = copy.deepcopy(template)
    load_parameters(model, params)
    return model


def load_parameters(model: CtrModel, params: Params) -> None:
    """Put ``params`` into ``model`` in place, replacing each named parameter (shapes may change)."""
    for name, value in params.items():
        owner_name, _, attribute = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        old = getattr(owner, attribute)
        setattr(owner, attribute, nn.Parameter(value.detach().clone().to(old), requires_grad=old.requires_grad))


def logits_with(template: CtrModel, params: Params, batch: Batch) -> torch.Tensor:
    """The template's logits with ``params`` in place of its own (differentiable in ``params``)."""
    return torch.func.functional_call(template, params, (batch,))


def relative_error(generated: Params, target: Params) -> torch.Tensor:
    """Mean over parameters of ||generated - target||^2 / ||target||^2 (each parameter weighs the same)."""
    terms = [
        (generated[name] - value).square().sum() / value.square().sum().clamp(min=1e-12)
        for name, value in target.items()
    ]
    return torch.stack(terms).mean()


def warm_start(
    module: nn.Module, generate: Callable[[], Params], target: Params, steps: int, lr: float = WARM_START_LR
) -> float:
    """Fit ``module`` so that ``generate()`` reproduces ``target`` (no data involved); returns the final error.

    A randomly initialised generator outputs noise, and one period of meta training is too little to undo it
    when only a few periods exist (the papers warm up over 10+ periods), so the strategies start from a module
    that copies its newest input and let training move it from there.
    """
    if steps == 0:
        return float("nan")
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, foreach=True)
    for _ in range(steps):
        error = relative_error(generate(), target)
        optimizer.zero_grad(set_to_none=True)
        error.backward()
        optimizer.step()
    with torch.no_grad():
        return float(relative_error(generate(), target))
