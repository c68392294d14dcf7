"""Wide&Deep: a wide linear part over the sparse ids plus a deep MLP over their embeddings."""

from __future__ import annotations

import torch
from torch import nn

from llm4rec.ctr.models.base import Batch, CtrModel, FieldEmbeddings, FirstOrder, ModelOptions, mlp

DEFAULT_MLP = [64, 32]


class WideDeep(CtrModel):
    def __init__(self, vocab_sizes: dict[str, int], options: ModelOptions) -> None:
        super().__init__()
        self.wide = FirstOrder(vocab_sizes)
        self.fields = FieldEmbeddings(vocab_sizes, options.embedding_dim)
        sizes = options.mlp or DEFAULT_MLP
        self.deep = mlp([self.fields.n_fields * options.embedding_dim, *sizes], options.dropout)
        self.output = nn.Linear(sizes[-1], 1)

    def parts(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.deep(self.fields(batch).flatten(1)), self.wide(batch)
