"""Matrix factorisation: logit = <user, item> + user bias + item bias + global bias.

With side features, the user's vector is its id's plus its user features' (age, gender, ..), the item's its
id's plus its item features' (year, brand), as in SVDFeature; without them (the default) it is plain MF.
"""

from __future__ import annotations

import torch
from torch import nn

from llm4rec.ctr.models.base import Batch, CtrModel, GrowingEmbedding, ModelOptions, side_tables
from llm4rec.ctr.side_features import SIDE_FEATURES


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
        self.side = side_tables(vocab_sizes, dim)

    def _vector(self, owner: str, table: GrowingEmbedding, batch: Batch) -> torch.Tensor:
        vector = table(batch[owner])
        for name, side in self.side.items():
            if SIDE_FEATURES[name].owner == owner:
                vector = vector + side(batch[name])
        return vector

    def parts(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self._vector("user", self.user, batch) * self._vector("item", self.item, batch)
        biases = self.user_bias(batch["user"]) + self.item_bias(batch["item"])
        return hidden, biases.squeeze(-1)
