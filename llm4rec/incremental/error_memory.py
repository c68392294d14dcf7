"""ReLoop2's error memory (Zhu et al., "ReLoop2: Building Self-Adaptive Recommendation Models via Responsive
Error Compensation Loop", KDD 2023, Sec. 3.2), model-agnostic.

A memory is written with (hidden vector, label, base prediction) triples and
read with hidden vectors; it knows nothing of the model that made them, so a
CTR model's last hidden layer and an LLM's hidden state serve alike. The read
is an error estimate for each query,

    y_err(q) = mean label - mean base prediction over the stored samples similar to q,

and the compensated output is clamp(y_base + lambda * y_err, 0, 1) (:func:`compensate`).

Two memories:

- :class:`ErrorSketch` (Sec. 3.2.2): a RACE sketch (Coleman & Shrivastava, WWW 2020). K arrays, each
  indexed by L SimHash bits of the hidden vector (2^L buckets); every bucket holds the count and the sums
  of label and base prediction of the samples hashed to it. The read pools the query's K buckets:
  y_err = (sum of labels - sum of predictions) / count, over the K buckets together. Each stored sample
  counts once per array whose bucket it shares with the query, so its weight is the number of such arrays,
  K times the SimHash collision probability (1 - angle / pi)^L in expectation: a kernel-weighted average
  over the memory, O(K) per read and write, constant memory.
- :class:`ExactErrorMemory` (Sec. 3.2.1): the newest ``capacity`` samples kept as they are; the read
  attends over the top-k by cosine similarity, weights softmax(similarity / temperature).
"""

from __future__ import annotations

import numpy as np

from llm4rec.errors import ConfigError
from llm4rec.incremental.config import MAX_SKETCH_BITS, ReLoop2Config


def _as_matrix(hidden, dtype=np.float64) -> np.ndarray:
    """(n, H) ``dtype`` from a numpy array or a torch tensor (the LLM side hands over torch hidden states)."""
    if hasattr(hidden, "detach"):
        hidden = hidden.detach().float().cpu().numpy()
    return np.atleast_2d(np.asarray(hidden, dtype=dtype))


class ErrorSketch:
    """The RACE-style LSH sketch of (hidden, label, base prediction): K arrays of 2^L buckets."""

    def __init__(self, dim: int, n_arrays: int = 100, n_bits: int = 10, seed: int = 0) -> None:
        if not 1 <= n_bits <= MAX_SKETCH_BITS:
            raise ConfigError(f"error sketch: L = {n_bits} bits per array is out of 1..{MAX_SKETCH_BITS}")
        if n_arrays < 1 or dim < 1:
            raise ConfigError(f"error sketch: need K >= 1 arrays and dim >= 1, got K = {n_arrays}, dim = {dim}")
        self.dim, self.n_arrays, self.n_bits = dim, n_arrays, n_bits
        # SimHash: bit l of array k = [w_kl . h > 0], w_kl Gaussian (sign-random-projection LSH for cosine).
        # Hashed in float32: a float64 product of a batch of LLM hidden states with the planes cost more than the
        # bucket updates together (54 ms against 2 for 16 x 576 x 1000 here); the planes are drawn in float64, as
        # always, and rounded, so a bit flips only where a projection is within float32 rounding of zero.
        self.planes = np.random.default_rng(seed).standard_normal((dim, n_arrays * n_bits)).astype(np.float32)
        self.powers = 1 << np.arange(n_bits, dtype=np.int64)
        self.counts = np.zeros((n_arrays, 1 << n_bits))
        self.label_sums = np.zeros_like(self.counts)
        self.prediction_sums = np.zeros_like(self.counts)

    def buckets(self, hidden) -> np.ndarray:
        """(n, K) bucket index of every vector in every array."""
        hidden = _as_matrix(hidden, np.float32)
        if hidden.shape[1] != self.dim:
            raise ConfigError(f"error sketch: hidden vectors have {hidden.shape[1]} dims, the sketch {self.dim}")
        bits = (hidden @ self.planes > 0).reshape(len(hidden), self.n_arrays, self.n_bits)
        return bits.astype(np.int64) @ self.powers

    def _flat(self, hidden) -> np.ndarray:
        """Bucket positions in the flattened (K * 2^L) arrays, one row per vector."""
        return self.buckets(hidden) + np.arange(self.n_arrays) * self.counts.shape[1]

    def write(self, hidden, labels, predictions) -> None:
        self._write_at(self._flat(hidden), labels, predictions)

    def read_then_write(self, hidden, labels, predictions) -> np.ndarray:
        """:meth:`read` of a batch, then its :meth:`write` (test-then-write), hashing the vectors once."""
        flat = self._flat(hidden)
        error = self._read_at(flat)
        self._write_at(flat, labels, predictions)
        return error

    def _write_at(self, flat: np.ndarray, labels, predictions) -> None:
        flat = flat.reshape(-1)  # sample-major: sample i's K buckets are consecutive
        per_bucket = {
            "counts": None,
            "label_sums": np.repeat(np.asarray(labels, dtype=np.float64), self.n_arrays),
            "prediction_sums": np.repeat(np.asarray(predictions, dtype=np.float64), self.n_arrays),
        }
        for name, weights in per_bucket.items():
            table = getattr(self, name)
            table += np.bincount(flat, weights=weights, minlength=table.size).reshape(table.shape)

    def read(self, hidden) -> np.ndarray:
        """Error estimate per vector: pooled (labels - predictions) / count over its K buckets; 0 if all empty."""
        return self._read_at(self._flat(hidden))

    def _read_at(self, flat: np.ndarray) -> np.ndarray:
        count = self.counts.reshape(-1)[flat].sum(1)
        error = self.label_sums.reshape(-1)[flat].sum(1) - self.prediction_sums.reshape(-1)[flat].sum(1)
        return np.divide(error, count, out=np.zeros(len(count)), where=count > 0)

    def reset(self) -> None:
        for table in (self.counts, self.label_sums, self.prediction_sums):
            table.fill(0.0)

    def __len__(self) -> int:
        return int(self.counts[0].sum())  # every sample lands in exactly one bucket of array 0


class ExactErrorMemory:
    """The newest ``capacity`` samples as they are; reads attend over the top-k by cosine similarity."""

    def __init__(self, dim: int, capacity: int = 20_000, top_k: int = 50, temperature: float = 0.1) -> None:
        self.dim, self.capacity, self.top_k, self.temperature = dim, capacity, top_k, temperature
        self.reset()

    def reset(self) -> None:
        self.keys = np.empty((0, self.dim))
        self.errors = np.empty(0)  # label - base prediction

    def write(self, hidden, labels, predictions) -> None:
        keys = _as_matrix(hidden)
        keys = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
        errors = np.asarray(labels, dtype=np.float64) - np.asarray(predictions, dtype=np.float64)
        self.keys = np.concatenate([self.keys, keys])[-self.capacity :]
        self.errors = np.concatenate([self.errors, errors])[-self.capacity :]

    def read(self, hidden) -> np.ndarray:
        """Attention-weighted error of the top-k most similar stored samples; 0 while the memory is empty."""
        query = _as_matrix(hidden)
        if len(self.errors) == 0:
            return np.zeros(len(query))
        query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
        similarity = query @ self.keys.T
        k = min(self.top_k, similarity.shape[1])
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        logits = np.take_along_axis(similarity, top, axis=1) / self.temperature
        weights = np.exp(logits - logits.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        return (weights * self.errors[top]).sum(1)

    def read_then_write(self, hidden, labels, predictions) -> np.ndarray:
        """:meth:`read` of a batch, then its :meth:`write` (test-then-write)."""
        error = self.read(hidden)
        self.write(hidden, labels, predictions)
        return error

    def __len__(self) -> int:
        return len(self.errors)


ErrorMemory = ErrorSketch | ExactErrorMemory


def build_memory(config: ReLoop2Config, dim: int, seed: int = 0) -> ErrorMemory:
    if config.memory == "sketch":
        return ErrorSketch(dim, config.n_arrays, config.n_bits, seed)
    return ExactErrorMemory(dim, config.capacity, config.top_k, config.temperature)


def compensate(base_probability: np.ndarray, error: np.ndarray, weight: float) -> np.ndarray:
    """ReLoop2's output: clamp(y_base + lambda * y_err, 0, 1)."""
    return np.clip(np.asarray(base_probability, dtype=np.float64) + weight * error, 0.0, 1.0)
