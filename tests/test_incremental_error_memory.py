"""ReLoop2: the sketch's readout against brute force, the exact memory, and test-then-write in the period method."""

import numpy as np
import pandas as pd
import pytest
import torch

from llm4rec.config import from_dict
from llm4rec.ctr.catalogue import build_method
from llm4rec.ctr.config import CtrConfig
from llm4rec.errors import ConfigError, DataError
from llm4rec.eval.protocol import run_protocol
from llm4rec.incremental.config import ReLoop2Config
from llm4rec.incremental.error_memory import ErrorSketch, ExactErrorMemory, compensate
from llm4rec.incremental.reloop import ReLoop2Method

pytestmark = pytest.mark.usefixtures("one_thread")


def stored(n=400, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(n, dim))
    labels = (rng.random(n) < 0.6).astype(float)
    predictions = rng.random(n)
    return hidden, labels, predictions


def test_sketch_readout_equals_brute_force_average_over_shared_buckets():
    hidden, labels, predictions = stored()
    sketch = ErrorSketch(dim=6, n_arrays=7, n_bits=3, seed=1)
    sketch.write(hidden[:150], labels[:150], predictions[:150])  # streamed in two writes
    sketch.write(hidden[150:], labels[150:], predictions[150:])
    queries = np.random.default_rng(2).normal(size=(50, 6))

    def bucket(vector, array):
        planes = sketch.planes[:, array * 3 : (array + 1) * 3]
        return sum(1 << bit for bit in range(3) if vector @ planes[:, bit] > 0)

    stored_buckets = [[bucket(vector, array) for array in range(7)] for vector in hidden]
    expected = []
    for query in queries:
        query_buckets = [bucket(query, array) for array in range(7)]
        errors = [
            labels[i] - predictions[i]
            for array in range(7)
            for i in range(len(hidden))
            if stored_buckets[i][array] == query_buckets[array]
        ]
        expected.append(np.mean(errors) if errors else 0.0)
    np.testing.assert_allclose(sketch.read(queries), expected, atol=1e-12)
    assert len(sketch) == 400
    sketch.reset()
    assert len(sketch) == 0 and np.array_equal(sketch.read(queries), np.zeros(50))


def test_sketch_is_local_and_takes_torch_tensors():
    sketch = ErrorSketch(dim=4, n_arrays=20, n_bits=8, seed=0)
    vector = torch.tensor([[1.0, 2.0, -0.5, 0.3]])
    sketch.write(vector, [1.0], [0.2])  # an LLM hidden state arrives as a torch tensor
    assert sketch.read(vector * 3) == pytest.approx([0.8])  # same direction: the same buckets
    assert sketch.read(-vector) == pytest.approx([0.0])  # opposite: every bit differs, nothing shared


def test_exact_memory_attends_over_the_top_k_by_cosine_similarity():
    hidden, labels, predictions = stored(n=60)
    memory = ExactErrorMemory(dim=6, capacity=50, top_k=5, temperature=0.5)
    memory.write(hidden, labels, predictions)
    assert len(memory) == 50  # the newest 50 kept
    keys, errors = hidden[10:], labels[10:] - predictions[10:]
    query = np.random.default_rng(3).normal(size=(1, 6))
    similarity = (keys @ query[0]) / np.linalg.norm(keys, axis=1) / np.linalg.norm(query)
    top = np.argsort(-similarity)[:5]
    weights = np.exp(similarity[top] / 0.5) / np.exp(similarity[top] / 0.5).sum()
    assert memory.read(query)[0] == pytest.approx(float(weights @ errors[top]))


def test_compensation_is_clamped():
    assert list(compensate(np.array([0.9, 0.1, 0.5]), np.array([0.5, -0.5, 0.2]), 0.5)) == [1.0, 0.0, 0.6]


def test_too_many_sketch_bits_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"incremental.reloop2.n_bits: L must be in 1..24"):
        from_dict(ReLoop2Config, {"n_bits": 25})
    with pytest.raises(ConfigError, match="out of 1..24"):
        ErrorSketch(dim=4, n_bits=30)


class RowHidden:
    """A base method whose hidden vector carries the sample's row number, and a constant probability."""

    name = "Fake-IU"

    def __init__(self):
        self.fits = []

    def fit(self, timeline, period):
        self.fits.append(period)

    def hidden_and_proba(self, samples: pd.DataFrame):
        rows = samples.index.to_numpy().astype(float)
        return np.stack([rows, np.ones_like(rows), (rows % 7) - 3], axis=1), np.full(len(rows), 0.5)


class SpyMemory(ExactErrorMemory):
    """Logs the row numbers it is asked to read and to write, in order."""

    def __init__(self):
        super().__init__(dim=3, capacity=10_000, top_k=10)
        self.log = []

    def write(self, hidden, labels, predictions):
        self.log.append(("write", set(np.asarray(hidden)[:, 0].astype(int))))
        super().write(hidden, labels, predictions)

    def read(self, hidden):
        self.log.append(("read", set(np.asarray(hidden)[:, 0].astype(int))))
        return super().read(hidden)

    def reset(self):
        super().reset()
        if hasattr(self, "log"):
            self.log.append(("reset", set()))


def reloop(**config):
    method = ReLoop2Method(RowHidden(), ReLoop2Config(stream_batch_size=50, **config))
    method.memory = SpyMemory()
    return method


def test_a_test_samples_label_is_never_in_the_memory_when_it_is_scored(timeline):
    method = reloop()
    assert method.name == "Fake-ReLoop2"
    method.fit(timeline, 1)
    samples = timeline.period(2)
    method.predict_proba(samples)
    written: set[int] = set()
    for action, rows in method.memory.log:
        if action == "read":
            assert not rows & written  # nothing being scored has its label in the memory
            assert rows <= set(samples.index)
        elif action == "write":
            written |= rows
        else:
            written = set()
    assert set(samples.index) <= written  # and every test label went in after its batch was scored
    with pytest.raises(DataError, match="scored before"):
        method.predict_proba(samples)


def test_only_earlier_batches_labels_change_a_score(timeline):
    samples = timeline.period(2)
    order = np.argsort(samples["timestamp"].to_numpy(), kind="stable")

    def scores(labels):
        method = reloop(prefill_val=False)
        method.fit(timeline, 1)
        return method.predict_proba(samples.assign(label=labels))

    labels = samples["label"].to_numpy()
    base = scores(labels)
    last_flipped = labels.copy()
    last_flipped[order[-50:]] = 1 - last_flipped[order[-50:]]
    assert np.array_equal(scores(last_flipped), base)  # the last batch's labels reach no score
    first_flipped = labels.copy()
    first_flipped[order[:50]] = 1 - first_flipped[order[:50]]
    changed = scores(first_flipped)
    assert np.array_equal(changed[order[:50]], base[order[:50]])  # not its own scores ...
    assert not np.array_equal(changed[order[50:]], base[order[50:]])  # ... but later ones
    assert np.array_equal(base[order[:50]], np.full(50, 0.5))  # empty memory: the base prediction


def test_the_memory_is_reset_when_the_base_model_is_updated_or_never(timeline):
    for reset, grows in (("on_update", False), ("never", True)):
        method = reloop(reset=reset)
        method.fit(timeline, 1)
        method.predict_proba(timeline.period(2))
        method.fit(timeline, 2)
        n_val = len(timeline.period(2, "val"))
        assert (len(method.memory) > n_val) == grows
        assert method.base.fits == [1, 2]


def test_reloop2_runs_on_ctr_models_by_name(timeline, features):
    config = from_dict(
        CtrConfig,
        {
            "data": {"periods": {"n_periods": 4}},
            "models": ["DeepFM"],
            "pretrain_periods": 1,
            "model": {"embedding_dim": 4, "mlp": [8, 4]},
            "train": {"epochs": 2, "batch_size": 256, "learning_rate": 0.01},
            "incremental": {"methods": ["ReLoop2", "IncCTR+ReLoop2"], "reloop2": {"n_arrays": 20, "n_bits": 4}},
        },
    )
    plain = run_protocol(build_method("IU", "DeepFM", features, config), timeline, progress=False)
    for name, expected in (("ReLoop2", "DeepFM-ReLoop2"), ("IncCTR+ReLoop2", "DeepFM-IncCTR+ReLoop2")):
        method = build_method(name, "DeepFM", features, config)
        rows = run_protocol(method, timeline, progress=False)
        assert method.name == expected and all(0.5 < r.auc < 1 for r in rows)
    compensated = run_protocol(build_method("ReLoop2", "DeepFM", features, config), timeline, progress=False)
    assert [r.logloss for r in compensated] != [r.logloss for r in plain]
