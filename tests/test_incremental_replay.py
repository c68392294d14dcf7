"""Replay: the reservoir, SPMF's sampling weights, MEGG's GGscore (against brute force) and keep-both-ends."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from llm4rec.config import from_dict
from llm4rec.ctr.models import build_model
from llm4rec.errors import ConfigError
from llm4rec.eval.protocol import run_protocol
from llm4rec.incremental.config import ReplayConfig
from llm4rec.incremental.replay import (
    ReplayMethod,
    Reservoir,
    ggscores,
    keep_both_ends,
    reference_gradient,
    spmf_probabilities,
)
from tests.conftest import tiny_ctr_options

pytestmark = pytest.mark.usefixtures("one_thread")

TINY, FAST = tiny_ctr_options(attention_mlp=[4])


def test_reservoir_keeps_a_uniform_fraction_of_everything_seen():
    reservoir = Reservoir(0.25, np.random.default_rng(0))
    for start in range(0, 40_000, 10_000):
        reservoir.add(np.arange(start, start + 10_000))
        assert len(reservoir.rows) == round(0.25 * (start + 10_000))
    assert len(np.unique(reservoir.rows)) == len(reservoir.rows)
    # Every quarter of the stream (each a period) is equally represented.
    assert np.allclose(np.bincount(reservoir.rows // 10_000), 2500)


def test_spmf_draws_the_lowest_scored_positives_first():
    scores = np.array([0.9, 0.1, 0.5, 0.3])
    p = spmf_probabilities(scores)
    assert np.isclose(p.sum(), 1)
    assert list(np.argsort(-p)) == [1, 3, 2, 0]  # lowest score, highest probability
    assert np.isclose(p[1] / p[0], np.exp(3 / 4))  # exp(rank / N) with ranks 3 and 0


def test_keep_both_ends_returns_exactly_the_extremes():
    scores = np.random.default_rng(0).normal(size=101)
    kept = keep_both_ends(scores, 10)
    order = np.argsort(scores)
    assert set(kept) == set(order[:5]) | set(order[-5:])
    odd = keep_both_ends(scores, 7)  # the extra one goes to the positive end
    assert set(odd) == set(order[:3]) | set(order[-4:])
    assert sorted(keep_both_ends(scores[:4], 9)) == [0, 1, 2, 3]


def brute_force_ggscores(model, pool) -> np.ndarray:
    """Per sample: the full autograd gradient of its own loss, kept on its user / item rows and the final layer,
    dotted with the pool's mean-loss gradient on the same coordinates. One Python loop per sample."""
    reference = reference_gradient(model, pool)
    params = dict(model.named_parameters())
    scores = []
    for i in range(len(pool["label"])):
        one = {k: v[i : i + 1] for k, v in pool.items()}
        loss = F.binary_cross_entropy_with_logits(model(one), one["label"])
        grads = torch.autograd.grad(loss, [params[n] for n in reference], allow_unused=True)
        total = 0.0
        for name, g in zip(reference, grads, strict=True):
            if g is None:
                continue
            if name.startswith("output."):
                total += float((g * reference[name]).sum())
            else:
                row = one[model.get_submodule(name.removesuffix(".weight")).vocab][0]
                total += float((g[row] * reference[name][row]).sum())
        scores.append(total)
    return np.array(scores)


@pytest.mark.parametrize("name", ["EmbMLP", "DeepFM", "DIN"])
def test_ggscore_equals_brute_force_per_sample_gradients(features, name):
    encoders = features.new_encoders()
    rows = np.arange(120)
    encoders.grow(features, rows)
    torch.manual_seed(0)
    model = build_model(name, encoders.vocab_sizes(), TINY)
    with torch.no_grad():  # away from the initialisation, so that every gradient term is sizeable
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    pool = encoders.encode(features, rows)
    fast = ggscores(model, pool, chunk_size=32)  # chunks of unequal fill: 120 = 3 x 32 + 24
    slow = brute_force_ggscores(model, pool)
    assert np.abs(slow).max() > 1e-3
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-7)


def test_replay_mixes_ratio_times_new_samples_from_past_periods(timeline, features):
    for selection in ("Reservoir", "SPMF", "MEGG"):
        method = ReplayMethod("EmbMLP", selection, features, TINY, FAST, ReplayConfig(0.5, 0.4), seed=0)
        calls = []

        def recording(new_rows, select=method.select, calls=calls):
            replayed = select(new_rows)
            calls.append((new_rows, replayed))
            return replayed

        method.select = recording
        run_protocol(method, timeline, first_test_period=1, progress=False)
        assert method.name == f"EmbMLP-{selection}" and len(calls) == 2  # fits at periods 1 and 2
        periods = timeline.table["period"].to_numpy()
        for new_rows, replayed in calls:
            period = periods[new_rows[0]]
            assert len(replayed) == pytest.approx(0.4 * len(new_rows), abs=2)
            assert (periods[replayed] < period).all() and len(np.unique(replayed)) == len(replayed)
        assert [r["replayed"] for r in method.extra_reports.values()][0] == 0  # pre-training replays nothing


def test_replay_ratio_out_of_range_is_a_clear_error():
    for ratio in (0, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"incremental.replay.ratio: expected a value in \(0, 1\]"):
            from_dict(ReplayConfig, {"ratio": ratio})
    with pytest.raises(ConfigError, match="reservoir_fraction"):
        ReplayConfig(reservoir_fraction=0.0)
