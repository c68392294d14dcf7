"""DCN and DCN-v2: a cross network beside a deep MLP, both over the concatenated field embeddings x0.

Cross layer l (v1):  x_{l+1} = x0 * (x_l . w_l) + b_l + x_l   (one weight vector per layer)
Cross layer l (v2):  x_{l+1} = x0 * (W_l x_l + b_l) + x_l     (a full matrix per layer)
The final layer reads [cross output, deep output].
"""

from __future__ import annotations

import torch
from torch import nn

from llm4rec.ctr.models.base import Batch, CtrModel, FieldEmbeddings, ModelOptions, mlp

DEFAULT_MLP = [64, 32]


class CrossLayer(nn.Module):
    def __init__(self, width: int, full_rank: bool) -> None:
        super().__init__()
        self.full_rank = full_rank
        self.weight = nn.Linear(width, width if full_rank else 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.weight(x) + self.bias + x


class DCN(CtrModel):
    full_rank = False

    def __init__(self, vocab_sizes: dict[str, int], options: ModelOptions) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(vocab_sizes, options.embedding_dim)
        width = self.fields.n_fields * options.embedding_dim
        self.cross = nn.ModuleList(CrossLayer(width, self.full_rank) for _ in range(options.cross_layers))
        sizes = options.mlp or DEFAULT_MLP
        self.deep = mlp([width, *sizes], options.dropout)
        self.output = nn.Linear(width + sizes[-1], 1)

    def parts(self, batch: Batch) -> tuple[torch.Tensor, float]:
        x0 = self.fields(batch).flatten(1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return torch.cat([x, self.deep(x0)], dim=1), 0.0


class DCNv2(DCN):
    full_rank = True
