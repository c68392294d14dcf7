"""DIN: target attention over the history, then an MLP.

Each history item gets a weight from an activation unit, an MLP over
[history item, target item, their difference, their product]; padding gets
weight 0. As in the paper the weights are not softmax-normalised, so the
pooled vector also carries how much of the history matches. Plain ReLU stands
in for the paper's Dice activation.
"""

from __future__ import annotations

import torch
from torch import nn

from llm4rec.ctr.features import PAD
from llm4rec.ctr.models.base import Batch, CtrModel, FieldEmbeddings, ModelOptions, mlp

DEFAULT_MLP = [64, 32]


class ActivationUnit(nn.Module):
    def __init__(self, dim: int, sizes: list[int]) -> None:
        super().__init__()
        self.net = nn.Sequential(mlp([4 * dim, *sizes]), nn.Linear(sizes[-1], 1))

    def forward(self, history: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """history (B, L, D), target (B, D), history indices (B, L) -> attention-pooled history (B, D)."""
        target = target.unsqueeze(1).expand_as(history)
        weights = self.net(torch.cat([history, target, history - target, history * target], dim=-1)).squeeze(-1)
        weights = weights.masked_fill(index == PAD, 0.0)
        return (weights.unsqueeze(-1) * history).sum(1)


class DIN(CtrModel):
    def __init__(self, vocab_sizes: dict[str, int], options: ModelOptions) -> None:
        super().__init__()
        dim = options.embedding_dim
        self.fields = FieldEmbeddings(vocab_sizes, dim)
        self.attention = ActivationUnit(dim, options.attention_mlp)
        sizes = options.mlp or DEFAULT_MLP
        self.deep = mlp([self.fields.n_fields * dim, *sizes], options.dropout)
        self.output = nn.Linear(sizes[-1], 1)

    def parts(self, batch: Batch) -> tuple[torch.Tensor, float]:
        item = self.fields.item(batch["item"])
        history = self.attention(self.fields.item(batch["history"]), item, batch["history"])
        user = self.fields.user(batch["user"])
        fields = [user, item, self.fields.genres(batch), history, *self.fields.side_vectors(batch)]
        return self.deep(torch.cat(fields, dim=1)), 0.0
