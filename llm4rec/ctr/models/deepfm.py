"""DeepFM: first-order weights + factorisation-machine pairwise terms + a deep MLP, all on shared embeddings."""

from __future__ import annotations

import torch
from torch import nn

from llm4rec.ctr.models.base import Batch, CtrModel, FieldEmbeddings, FirstOrder, ModelOptions, mlp

DEFAULT_MLP = [64, 32]


def pairwise_interactions(fields: torch.Tensor) -> torch.Tensor:
    """sum over field pairs i < j of e_i * e_j, per dimension: (B, F, D) -> (B, D) (the FM identity)."""
    return 0.5 * (fields.sum(1).square() - fields.square().sum(1))


class DeepFM(CtrModel):
    def __init__(self, vocab_sizes: dict[str, int], options: ModelOptions) -> None:
        super().__init__()
        self.first_order = FirstOrder(vocab_sizes)
        self.fields = FieldEmbeddings(vocab_sizes, options.embedding_dim)
        sizes = options.mlp or DEFAULT_MLP
        self.deep = mlp([self.fields.n_fields * options.embedding_dim, *sizes], options.dropout)
        self.output = nn.Linear(sizes[-1], 1)

    def parts(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        fields = self.fields(batch)
        fm = pairwise_interactions(fields).sum(-1)
        return self.deep(fields.flatten(1)), self.first_order(batch) + fm
