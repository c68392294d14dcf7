"""EmerG (Wang et al., KDD 2024, arXiv 2407.10112): item-specific feature interactions for cold-start CTR.

A global interaction pattern (FM's every pair, DCN's cross layers) is learnt mostly from items with many
interactions, so a new item gets the pattern of the crowd. EmerG instead gives each item a feature graph of
its own: a hypernetwork maps the item's *features* (not its id, which a new item has no data for) to an
F x F adjacency over the fields, and a GNN whose l-th layer multiplies in one more round of messages runs
over it, so that layer l holds interactions of order l + 1 weighted by that item's edges:

    h(0) = field embeddings (B, F, D)
    h(l) = act(A h(0) W_l) * h(l-1)      (act: LeakyReLU, identity at the last layer)

A[f, j] says how much field j enters field f's interactions for this item; with act = identity the
entry of h(l) at field f is e_f times a product of l graph-weighted sums of the fields, a polynomial of
degree l + 1 in the embeddings.

The graph is sigmoid(hypernetwork(item features) + offset[item]): the offset is one F x F row per item,
zero for every item until trained, so a new item's graph is its features' graph. The item's embedding row
and its graph offset are the *item-specific* parameters (:attr:`EmerG.item_specific`): what the
meta-learning inner loop and the warm-up of :mod:`llm4rec.ctr.emerg_train` adapt per item, while the
hypernetwork, the GNN and everything else are shared. Plain :func:`llm4rec.ctr.train.fit` trains all of
it end to end, so EmerG also runs as an ordinary CTR model (``EmerG-IU``, ``EmerG-FR``).

Item features are the pooled genres and the item-side features of ``features.side_features`` (year,
brand) when present. Where this differs from the public code (LARS-research/EmerG): the hypernetwork is
one MLP emitting the whole graph (theirs: one small MLP per field row, fed a field one-hot) and does not
read the item-id embedding; the graph passes through a sigmoid (theirs is the raw output); every layer
uses the same graph (as their released code does; the paper derives higher-order graphs from it); and the
readout is one linear layer over every layer's output (theirs: self-attention across layers, then a
gated per-field sum), so that ``h`` is the concatenation of h(0)..h(L) and the logit is ``output(h)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from llm4rec.ctr.models.base import Batch, CtrModel, FieldEmbeddings, GrowingEmbedding, ModelOptions, mlp
from llm4rec.ctr.side_features import SIDE_FEATURES

DEFAULT_MLP = [32]  # the hypernetwork's hidden sizes


class GraphOffsets(GrowingEmbedding):
    """One F x F graph offset per item, every row starting at zero (new ones too): until an item's own
    samples move it, its graph is exactly what the hypernetwork makes of its features."""

    def _new_rows(self, num: int, start: int) -> torch.Tensor:
        return torch.zeros(num, self.dim)


class InteractionGNN(nn.Module):
    """The message passing above over a given graph; returns [h(0), ..., h(L)], layer l of order l + 1."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.weights = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(layers))

    def forward(self, graph: torch.Tensor, h0: torch.Tensor) -> list[torch.Tensor]:
        """``graph`` (B, F, F), ``h0`` (B, F, D)."""
        layers, h = [h0], h0
        for depth, weight in enumerate(self.weights, start=1):
            message = graph @ weight(h0)
            h = (message if depth == len(self.weights) else F.leaky_relu(message)) * h
            layers.append(h)
        return layers


class EmerG(CtrModel):
    # Parameters adapted per item (the rows of the items at hand) by emerg_train's inner loop and warm-up.
    item_specific = ("fields.item.weight", "graph_offset.weight")

    def __init__(self, vocab_sizes: dict[str, int], options: ModelOptions) -> None:
        super().__init__()
        dim = options.embedding_dim
        self.fields = FieldEmbeddings(vocab_sizes, dim)
        n_fields = self.fields.n_fields
        # The item's features: pooled genres, then the item-side features among the model's side fields.
        self.item_features = [name for name in self.fields.side if SIDE_FEATURES[name].owner == "item"]
        sizes = [(1 + len(self.item_features)) * dim, *(options.mlp or DEFAULT_MLP)]
        self.hypernetwork = nn.Sequential(mlp(sizes), nn.Linear(sizes[-1], n_fields * n_fields))
        self.graph_offset = GraphOffsets("item", vocab_sizes["item"], n_fields * n_fields)
        self.gnn = InteractionGNN(dim, options.gnn_layers)
        self.dropout = nn.Dropout(options.dropout)
        self.output = nn.Linear((options.gnn_layers + 1) * n_fields * dim, 1)

    def graph_scores(self, batch: Batch) -> torch.Tensor:
        """The hypernetwork's edge scores (B, F, F) from each sample's item features (before the offset)."""
        features = [self.fields.genres(batch), *(self.fields.side[name](batch[name]) for name in self.item_features)]
        n = self.fields.n_fields
        return self.hypernetwork(torch.cat(features, dim=1)).view(-1, n, n)

    def graph(self, batch: Batch) -> torch.Tensor:
        """Each sample's item-specific feature graph (B, F, F), edges in (0, 1)."""
        n = self.fields.n_fields
        return torch.sigmoid(self.graph_scores(batch) + self.graph_offset(batch["item"]).view(-1, n, n))

    def parts(self, batch: Batch) -> tuple[torch.Tensor, float]:
        layers = self.gnn(self.graph(batch), self.fields(batch))
        return self.dropout(torch.cat([h.flatten(1) for h in layers], dim=1)), 0.0
