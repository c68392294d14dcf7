"""What every CTR model shares: growing embedding tables, the field stack, an MLP, the model base class.

A batch is a dict of tensors: ``user`` (B,), ``item`` (B,), ``genres`` (B, G)
and ``history`` (B, L) hold embedding indices (0 = padding, 1 = OOV, see
:mod:`llm4rec.ctr.features`), and so does one (B,) tensor per side feature
(``features.side_features``, none by default), named like it; ``vocab_sizes``
then has one entry per side feature too, which is how a model knows them.

Every model computes a last hidden representation ``h`` (B, H) and a logit
``output(h) + extra``, where ``output`` is one ``nn.Linear(H, 1)`` (the final
layer) and ``extra`` holds the parts that bypass it (biases, wide / FM terms).
ReLoop2 keys its memory on ``h``; MEGG takes gradients of ``output`` and of
embedding rows (:meth:`CtrModel.embedding_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from llm4rec.ctr.features import OOV, PAD
from llm4rec.ctr.side_features import side_fields
from llm4rec.errors import ConfigError

Batch = dict[str, torch.Tensor]
INIT_STD = 0.01


@dataclass
class ModelOptions:
    """Sizes shared by all models; each model reads the ones it uses."""

    embedding_dim: int = 16
    mlp: list[int] | None = None  # hidden sizes of the deep part; None: each model's own default
    dropout: float = 0.0
    cross_layers: int = 2  # DCN / DCNv2
    attention_mlp: list[int] = field(default_factory=lambda: [36])  # DIN's activation unit
    # EmerG's GNN depth (layer l: interactions of order l + 1); keyed only when set, so older keys stay.
    gnn_layers: int = field(default=3, metadata={"keyed_when_set": True})

    def __post_init__(self) -> None:
        if not 1 <= self.embedding_dim <= 1024:
            raise ConfigError(f"model.embedding_dim: must be an integer in 1..1024, got {self.embedding_dim}")
        for name in ("mlp", "attention_mlp"):
            sizes = getattr(self, name)
            if sizes is None:
                continue
            if not sizes or any(s < 1 for s in sizes):
                raise ConfigError(
                    f"model.{name}: expected a non-empty list of positive layer sizes such as [64, 32], got {sizes}"
                )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout: expected a value in [0, 1), got {self.dropout}")
        if self.cross_layers < 1:
            raise ConfigError(f"model.cross_layers: must be >= 1, got {self.cross_layers}")
        if not 1 <= self.gnn_layers <= 8:
            raise ConfigError(f"model.gnn_layers: must be an integer in 1..8, got {self.gnn_layers}")


class GrowingEmbedding(nn.Module):
    """An embedding table over one vocabulary ('user', 'item', 'genre' or a side feature) that can add rows.

    Padding and OOV rows start at zero: padding is never trained (its gradient
    is dropped), and OOV is only trained if training data holds OOV ids, so an
    id never seen contributes nothing rather than noise.
    """

    def __init__(self, vocab: str, num: int, dim: int) -> None:
        super().__init__()
        self.vocab, self.dim = vocab, dim
        self.weight = nn.Parameter(self._new_rows(num, start=0))

    def _new_rows(self, num: int, start: int) -> torch.Tensor:
        """Rows drawn on the CPU (torch's CPU random stream: the same rows whatever device the table is on)."""
        rows = torch.randn(num, self.dim) * INIT_STD
        special = [index - start for index in (PAD, OOV) if start <= index < start + num]
        rows[special] = 0.0
        return rows

    @property
    def num(self) -> int:
        return self.weight.shape[0]

    def grow(self, num: int) -> None:
        """Append rows up to ``num``, on the table's device; existing rows keep their values and indices."""
        if num > self.num:
            extra = self._new_rows(num - self.num, start=self.num).to(self.weight)
            self.weight = nn.Parameter(torch.cat([self.weight.data, extra]))

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(index, self.weight, padding_idx=PAD)


def masked_mean(vectors: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Mean over the non-padding positions of (B, L, D) ``vectors``; zeros where all are padding."""
    mask = (index != PAD).unsqueeze(-1).to(vectors.dtype)
    return (vectors * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear + ReLU (+ dropout) for each consecutive pair of ``sizes`` (input size first)."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def side_tables(vocab_sizes: dict[str, int], dim: int) -> nn.ModuleDict:
    """One table per side feature in ``vocab_sizes`` (empty when there are none: no parameters, no draws
    from the random stream, so a model without side features is built exactly as before they existed)."""
    return nn.ModuleDict({name: GrowingEmbedding(name, vocab_sizes[name], dim) for name in side_fields(vocab_sizes)})


class FieldEmbeddings(nn.Module):
    """The fields every model sees: user, item, mean of item genres, mean of history items, then one per side
    feature (none by default).

    History items share the item table, as in DIN and ASMG's base model.
    """

    def __init__(self, vocab_sizes: dict[str, int], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.user = GrowingEmbedding("user", vocab_sizes["user"], dim)
        self.item = GrowingEmbedding("item", vocab_sizes["item"], dim)
        self.genre = GrowingEmbedding("genre", vocab_sizes["genre"], dim)
        self.side = side_tables(vocab_sizes, dim)

    @property
    def n_fields(self) -> int:
        return 4 + len(self.side)

    def genres(self, batch: Batch) -> torch.Tensor:
        return masked_mean(self.genre(batch["genres"]), batch["genres"])

    def side_vectors(self, batch: Batch) -> list[torch.Tensor]:
        """(B, D) per side feature, in field order."""
        return [table(batch[name]) for name, table in self.side.items()]

    def forward(self, batch: Batch) -> torch.Tensor:
        """(B, n_fields, D): user, item, pooled genres, pooled history, the side features."""
        history = masked_mean(self.item(batch["history"]), batch["history"])
        fields = [self.user(batch["user"]), self.item(batch["item"]), self.genres(batch), history]
        return torch.stack([*fields, *self.side_vectors(batch)], dim=1)


class FirstOrder(nn.Module):
    """Sum of one learned weight per id (user, item, each genre, each history item, each side feature's
    value) plus a bias: the linear part of Wide&Deep, DeepFM and NFM."""

    def __init__(self, vocab_sizes: dict[str, int]) -> None:
        super().__init__()
        self.user = GrowingEmbedding("user", vocab_sizes["user"], 1)
        self.item = GrowingEmbedding("item", vocab_sizes["item"], 1)
        self.genre = GrowingEmbedding("genre", vocab_sizes["genre"], 1)
        self.history = GrowingEmbedding("item", vocab_sizes["item"], 1)
        self.bias = nn.Parameter(torch.zeros(1))
        self.side = side_tables(vocab_sizes, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        genres = masked_mean(self.genre(batch["genres"]), batch["genres"])
        history = masked_mean(self.history(batch["history"]), batch["history"])
        total = self.user(batch["user"]) + self.item(batch["item"]) + genres + history
        for name, table in self.side.items():
            total = total + table(batch[name])
        return total.squeeze(-1) + self.bias


class CtrModel(nn.Module):
    """Base class: subclasses build ``self.output = nn.Linear(H, 1)`` and implement :meth:`parts`."""

    output: nn.Linear

    def parts(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | float]:
        """(last hidden representation (B, H), logit terms that bypass the final layer (B,) or 0.0)."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits (B,)."""
        hidden, extra = self.parts(batch)
        return self.output(hidden).squeeze(-1) + extra

    @property
    def hidden_dim(self) -> int:
        return self.output.in_features

    def embedding_tables(self) -> dict[str, GrowingEmbedding]:
        """Every embedding table by module name (e.g. ``fields.item``); ``.vocab`` says which ids index it."""
        return {name: module for name, module in self.named_modules() if isinstance(module, GrowingEmbedding)}

    def grow(self, vocab_sizes: dict[str, int]) -> None:
        """Give every table a row for each id the encoders now know (old rows unchanged)."""
        for table in self.embedding_tables().values():
            table.grow(vocab_sizes[table.vocab])
