"""MetaEmb (Pan et al., "Warm Up Cold-start Advertisements: Improving CTR Predictions via Learning to Learn ID
Embeddings", SIGIR 2019): a generator that maps a new item's features to its id embedding.

The base model is trained first and frozen. The generator reads the item's feature embeddings from it (the mean
of its genres' embeddings and each item-side feature's, e.g. the release decade) and outputs an id embedding
phi. It is trained on the old items as if each were new, with the paper's two-batch objective: for an item
with batches a and b of K samples each,

    L = alpha * L_a(phi) + (1 - alpha) * L_b(phi - cold_lr * grad_phi L_a(phi)),

so the generated embedding predicts well at once (L_a) and after one warm-up step on a's samples (L_b). A new
item's id row starts from phi; the warm-up rounds then update id embeddings as the base method does. The
model's prediction with a substituted embedding is a :func:`torch.func.functional_call` with the item table's
rows replaced, so the base model's parameters are never changed while the generator learns.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from llm4rec.ctr.models.base import CtrModel
from llm4rec.ctr.side_features import SIDE_FEATURES
from llm4rec.ctr.train import take
from llm4rec.errors import ConfigError

Tensors = dict[str, torch.Tensor]


class MetaEmbGenerator(nn.Module):
    def __init__(self, model: CtrModel, config, seed: int = 0) -> None:
        super().__init__()
        fields = getattr(model, "fields", None)
        if fields is None:
            raise ConfigError(
                f"coldstart.warm_ups: MetaEmb needs a model with field embeddings, not {type(model).__name__}"
            )
        self.config = config
        self.item_sides = [name for name in fields.side if SIDE_FEATURES[name].owner == "item"]
        generator = torch.Generator().manual_seed(seed)
        self.net = nn.Linear(fields.dim * (1 + len(self.item_sides)), fields.dim)
        with torch.no_grad():
            self.net.weight.copy_(torch.randn(self.net.weight.shape, generator=generator) * 0.01)
            self.net.bias.zero_()
        self.register_buffer("scale", torch.tensor(1.0))

    def item_features(self, model: CtrModel, batch: Tensors) -> torch.Tensor:
        """(B, in) the frozen model's embeddings of each sample's item features."""
        fields = model.fields
        parts = [fields.genres(batch), *(fields.side[name](batch[name]) for name in self.item_sides)]
        return torch.cat(parts, dim=1).detach()

    def forward(self, model: CtrModel, batch: Tensors) -> torch.Tensor:
        return self.scale * torch.tanh(self.net(self.item_features(model, batch)))

    def _logits_with(self, model: CtrModel, batch: Tensors, items: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """The model's logits on ``batch`` with the id embeddings of ``items`` replaced by ``phi`` (rows)."""
        weight = model.fields.item.weight.detach().index_copy(0, items, phi)
        return functional_call(model, {"fields.item.weight": weight}, (batch,))

    def train_on(self, model: CtrModel, train: Tensors, k: int, train_config, seed: int = 0) -> dict:
        """Fit the generator on the old items of ``train`` (items with at least 2 K samples), the model frozen."""
        config, loss_of = self.config, nn.functional.binary_cross_entropy_with_logits
        trained = torch.unique(train["item"])
        self.scale.fill_(3 * float(model.fields.item.weight.detach()[trained].std()))
        items = train["item"].cpu().numpy()
        order = np.argsort(items, kind="stable")
        uniques, starts, counts = np.unique(items[order], return_index=True, return_counts=True)
        usable = np.flatnonzero(counts >= 2 * k)
        rng = np.random.default_rng([seed, 2019])
        optimizer = torch.optim.Adam(self.net.parameters(), lr=config.learning_rate)
        was_training = model.training
        model.eval()
        losses = []
        for _ in range(config.epochs):
            for group in np.array_split(rng.permutation(usable), max(1, len(usable) // config.items_per_batch)):
                picks = [order[starts[i] + rng.permutation(counts[i])[: 2 * k]] for i in group]
                a = take(train, torch.as_tensor(np.concatenate([p[:k] for p in picks]), device=train["item"].device))
                b = take(train, torch.as_tensor(np.concatenate([p[k:] for p in picks]), device=train["item"].device))
                ids = torch.as_tensor(uniques[group], device=train["item"].device)
                firsts = take(train, torch.as_tensor(np.array([p[0] for p in picks]), device=ids.device))
                phi = self(model, firsts)  # one embedding per item, from its features
                loss_a = loss_of(self._logits_with(model, a, ids, phi), a["label"])
                (grad,) = torch.autograd.grad(loss_a, phi, create_graph=True)
                loss_b = loss_of(self._logits_with(model, b, ids, phi - config.cold_lr * grad), b["label"])
                loss = config.alpha * loss_a + (1 - config.alpha) * loss_b
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        model.train(was_training)
        model.zero_grad(set_to_none=True)
        return {
            "steps": len(losses),
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
        }

    @torch.no_grad()
    def initialise(self, model: CtrModel, items: torch.Tensor, samples: Tensors) -> None:
        """Write the generated embedding into the id rows of ``items`` (encoded), reading each item's features from
        its first sample in ``samples``."""
        codes = samples["item"].cpu().numpy()
        wanted = items.cpu().numpy()
        _, first = np.unique(codes, return_index=True)
        first_of = dict(zip(np.unique(codes).tolist(), first.tolist(), strict=True))
        rows = [first_of[int(i)] for i in wanted if int(i) in first_of]
        batch = take(samples, torch.as_tensor(rows, device=items.device))
        model.fields.item.weight[batch["item"]] = self(model, batch)
