"""What the benchmarks run on: token sequences with labels, the two answer tokens and a pad token.

Throughput depends on how many tokens there are and how their lengths vary
(padding), not on which tokens they are. ``synthetic_data`` draws random ids
at prompt lengths like ML-100K's (period 6 under the ``scratch-ml-100k``
tokenizer: mean 167 tokens, 5-95% 128-187, range 95-255, the first 69 the
same instruction in every prompt), so the benchmark runs anywhere, a GPU
machine without the dataset included. ``prompt_data``
takes real prompts of a dataset period, tokenized by a backbone's tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm4rec.errors import ConfigError


@dataclass(frozen=True)
class LengthSpec:
    """Prompt lengths: a normal(mean, sd) clipped to [low, high]."""

    mean: float = 167.0
    sd: float = 18.0
    low: int = 95
    high: int = 255

    @classmethod
    def parse(cls, text: str) -> LengthSpec:
        """'MEAN:SD:LOW:HIGH', e.g. '167:18:95:255'."""
        try:
            mean, sd, low, high = text.split(":")
            spec = cls(float(mean), float(sd), int(low), int(high))
        except ValueError:
            raise ConfigError(f"--lengths: expected MEAN:SD:LOW:HIGH such as 167:18:95:255, got {text!r}") from None
        if not 2 <= spec.low <= spec.high or spec.sd < 0:
            raise ConfigError(f"--lengths: need 2 <= LOW <= HIGH and SD >= 0, got {text!r}")
        return spec

    def __str__(self) -> str:
        return f"{self.mean:g}:{self.sd:g}:{self.low}:{self.high}"


@dataclass
class BenchData:
    sequences: list[list[int]]
    labels: np.ndarray  # 1 = positive answer
    answer_ids: tuple[int, int]
    pad_id: int
    tokenizer: object  # pads batches for the peer's data collator
    source: str

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(s) for s in self.sequences])

    def head(self, n: int) -> BenchData:
        return BenchData(self.sequences[:n], self.labels[:n], self.answer_ids, self.pad_id, self.tokenizer, self.source)

    def as_samples(self):
        """A samples ``datasets.Dataset`` (``input_ids``, ``label``) as :func:`llm4rec.llm.train.train_lora` takes."""
        import datasets

        return datasets.Dataset.from_dict({"input_ids": self.sequences, "label": self.labels.tolist()})


def padding_tokenizer(pad_id: int = 0):
    """A tokenizer that only pads (``tokenizer.pad``, as Hugging Face data collators call it) for synthetic ids."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<pad>": pad_id, "<unk>": pad_id + 1}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")


def synthetic_data(
    n: int, vocab_size: int, lengths: LengthSpec = LengthSpec(), shared_prefix: int = 69, seed: int = 0
) -> BenchData:
    """``n`` random prompts with lengths from ``lengths``, all beginning with the same ``shared_prefix`` tokens
    (a template's instruction: 69 tokens of ML-100K's prompts), random labels; pad id 0, answers 2 and 3."""
    if vocab_size < 16:
        raise ConfigError(f"synthetic data need a vocabulary of at least 16 tokens, got {vocab_size}")
    if not 0 <= shared_prefix < lengths.low:
        raise ConfigError(f"shared prefix {shared_prefix}: must be shorter than the shortest prompt ({lengths.low})")
    rng = np.random.default_rng(seed)
    sizes = np.clip(np.rint(rng.normal(lengths.mean, lengths.sd, n)), lengths.low, lengths.high).astype(int)
    prefix = rng.integers(4, vocab_size, shared_prefix).tolist()
    sequences = [prefix + rng.integers(4, vocab_size, size - shared_prefix).tolist() for size in sizes]
    labels = rng.integers(0, 2, n)
    source = f"synthetic ids, lengths {lengths}, shared prefix {shared_prefix}"
    return BenchData(sequences, labels, (2, 3), 0, padding_tokenizer(0), source)


def prompt_data(backbone_dir: str, n: int, dataset: str = "ml-100k", period: int = 6) -> BenchData:
    """The first ``n`` prompts of ``dataset``'s ``period``, tokenized by the backbone's tokenizer (its answer
    tokens too), in the period's own (time) order."""
    from llm4rec.data.config import default_data_config, load_timeline
    from llm4rec.llm.backbone import BackboneConfig, answer_token_ids, load_tokenizer
    from llm4rec.llm.prompts import load_template, template_for_dataset
    from llm4rec.llm.samples import build_samples

    config = default_data_config(dataset)
    timeline = load_timeline(config)
    template = load_template(template_for_dataset(config.name))
    tokenizer = load_tokenizer(BackboneConfig(backbone_dir))
    rows = timeline.period(period).head(n)
    samples = build_samples(rows, timeline.items, template, tokenizer)
    return BenchData(
        samples["input_ids"],
        np.asarray(samples["label"]),
        answer_token_ids(tokenizer, template),
        tokenizer.pad_token_id,
        tokenizer,
        f"{dataset} period {period} prompts, {backbone_dir} tokenizer",
    )
