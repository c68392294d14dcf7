"""NFM: bi-interaction pooling of the field embeddings (the FM pairwise terms kept as a vector) -> MLP,
plus first-order weights."""

from __future__ import annotations

import torch
from torch import nn

from llm4rec.ctr.models.base import Batch, CtrModel, FieldEmbeddings, FirstOrder, ModelOptions, mlp
from llm4rec.ctr.models.deepfm import pairwise_interactions

DEFAULT_MLP = [64, 32]


class NFM(CtrModel):
    def __init__(self, vocab_sizes: dict[str, int], options: ModelOptions) -> None:
        super().__init__()
        self.first_order = FirstOrder(vocab_sizes)
        self.fields = FieldEmbeddings(vocab_sizes, options.embedding_dim)
        sizes = options.mlp or DEFAULT_MLP
        self.deep = mlp([options.embedding_dim, *sizes], options.dropout)
        self.output = nn.Linear(sizes[-1], 1)

    def parts(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.deep(pairwise_interactions(self.fields(batch))), self.first_order(batch)
