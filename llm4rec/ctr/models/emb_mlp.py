"""Embedding&MLP, the base model of ASMG: user, item, genre and mean-pooled history embeddings -> MLP (20-10)."""

from __future__ import annotations

import torch
from torch import nn

from llm4rec.ctr.models.base import Batch, CtrModel, FieldEmbeddings, ModelOptions, mlp

DEFAULT_MLP = [20, 10]


class EmbMLP(CtrModel):
    def __init__(self, vocab_sizes: dict[str, int], options: ModelOptions) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(vocab_sizes, options.embedding_dim)
        sizes = options.mlp or DEFAULT_MLP
        self.deep = mlp([self.fields.n_fields * options.embedding_dim, *sizes], options.dropout)
        self.output = nn.Linear(sizes[-1], 1)

    def parts(self, batch: Batch) -> tuple[torch.Tensor, float]:
        return self.deep(self.fields(batch).flatten(1)), 0.0
