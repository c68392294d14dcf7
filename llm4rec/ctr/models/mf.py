"""Matrix factorisation: logit = <user, item> + user bias + item bias + global bias."""

from __future__ import annotations

import torch
from torch import nn

from llm4rec.ctr.models.base import Batch, CtrModel, GrowingEmbedding, ModelOptions


class MF(CtrModel):
    def __init__(self, vocab_sizes: dict[str, int], options: ModelOptions) -> None:
        super().__init__()
        dim = options.embedding_dim
        self.user = GrowingEmbedding("user", vocab_sizes["user"], dim)
        self.item = GrowingEmbedding("item", vocab_sizes["item"], dim)
        self.user_bias = GrowingEmbedding("user", vocab_sizes["user"], 1)
        self.item_bias = GrowingEmbedding("item", vocab_sizes["item"], 1)
        # The hidden representation is user * item (elementwise); a frozen all-ones final layer sums it into
        # the dot product, and the layer's bias is the global bias.
        self.output = nn.Linear(dim, 1)
        nn.init.ones_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        self.output.weight.requires_grad_(False)

    def parts(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.user(batch["user"]) * self.item(batch["item"])
        biases = self.user_bias(batch["user"]) + self.item_bias(batch["item"])
        return hidden, biases.squeeze(-1)
