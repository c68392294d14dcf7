"""Replay: the reservoirs (Algorithm R's uniformity by chi-square), SPMF's sampling weights, MEGG's GGscore
(against brute force, from the penultimate-epoch snapshot) and keep-both-ends."""

import copy

import numpy as np
import pytest
import torch
from scipy import stats
from torch.nn import functional as F

from llm4rec.config import from_dict
from llm4rec.ctr import updates
from llm4rec.ctr.models import build_model
from llm4rec.ctr.train import CtrTrainConfig, fit
from llm4rec.errors import ConfigError
from llm4rec.eval.protocol import run_protocol
from llm4rec.incremental.config import ReplayConfig
from llm4rec.incremental.replay import ReplayMethod, ggscores, reference_gradient
from llm4rec.incremental.reservoir import (
    FractionReservoir,
    Reservoir,
    build_reservoir,
    keep_both_ends,
    spmf_probabilities,
)
from tests.conftest import tiny_ctr_options

pytestmark = pytest.mark.usefixtures("one_thread")

TINY, FAST = tiny_ctr_options(attention_mlp=[4])


def test_reservoir_keeps_a_uniform_fraction_of_everything_seen():
    reservoir = FractionReservoir(0.25, np.random.default_rng(0))
    for start in range(0, 40_000, 10_000):
        reservoir.add(np.arange(start, start + 10_000))
        assert len(reservoir.rows) == round(0.25 * (start + 10_000))
    assert len(np.unique(reservoir.rows)) == len(reservoir.rows)
    # Every quarter of the stream (each a period) is equally represented.
    assert np.allclose(np.bincount(reservoir.rows // 10_000), 2500)


def test_reservoir_never_exceeds_its_capacity_and_holds_unique_rows_seen():
    reservoir, seen = Reservoir(1000, np.random.default_rng(0)), 0
    for size in (300, 500, 10, 2500, 0, 1200, 7):  # fills, straddles the capacity, then one period > capacity
        reservoir.add(np.arange(seen, seen + size))
        seen += size
        assert reservoir.n_seen == seen and len(reservoir.rows) == min(1000, seen)
        assert len(np.unique(reservoir.rows)) == len(reservoir.rows)
        assert ((reservoir.rows >= 0) & (reservoir.rows < seen)).all()
        if seen <= 1000:  # until full it keeps everything
            assert sorted(reservoir.rows) == list(range(seen))


class KeepFirst:
    """A deliberately biased sampler: the first C items offered, the rest never."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity, self.rows = capacity, np.empty(0, dtype=np.int64)

    def add(self, rows: np.ndarray) -> None:
        self.rows = np.concatenate([self.rows, rows])[: self.capacity]


def inclusion_p_value(sampler, n_items=2000, capacity=200, repeats=400) -> float:
    """Stream ``n_items`` through ``sampler(capacity, rng)`` in 7 uneven chunks, ``repeats`` times with
    independent seeds; the chi-square p-value of how often each item ends in it (expected R C / N each)."""
    chunks = np.split(np.arange(n_items), np.cumsum([1, 150, 120, 600, 3, 826]))  # 300 left for the last
    counts = np.zeros(n_items)
    for seed in range(repeats):
        reservoir = sampler(capacity, np.random.default_rng([seed, 7]))
        for chunk in chunks:
            reservoir.add(chunk)
        assert len(reservoir.rows) == capacity
        counts[reservoir.rows] += 1
    assert counts.sum() == repeats * capacity
    return stats.chisquare(counts).pvalue  # f_exp defaults to the mean, R C / N


def test_reservoir_sampling_keeps_every_item_with_the_same_probability():
    assert inclusion_p_value(Reservoir) > 0.001
    assert inclusion_p_value(KeepFirst) < 0.001  # the check can fail: a biased sampler does


def test_build_reservoir_follows_the_config():
    rng = np.random.default_rng(0)
    capacity = build_reservoir(ReplayConfig(reservoir_capacity=7), rng)
    assert isinstance(capacity, Reservoir) and capacity.capacity == 7 and capacity.rng is rng
    fraction = build_reservoir(ReplayConfig(reservoir="fraction", reservoir_fraction=0.3), rng)
    assert isinstance(fraction, FractionReservoir) and fraction.fraction == 0.3


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


def test_ggscore_of_the_rating_task_uses_its_squared_error(features):
    """The rating task's GGscore: gradients of (sigmoid(logit) - rescaled rating)^2, written out here by hand for
    the reference (the pool's mean) and for each sample, against ggscores(task="rating")."""
    encoders = features.new_encoders()
    rows = np.arange(60)
    encoders.grow(features, rows)
    torch.manual_seed(0)
    model = build_model("DeepFM", encoders.vocab_sizes(), TINY)
    pool = encoders.encode(features, rows)
    pool["label"] = torch.from_numpy((features.rating[rows] - 1) / 4).float()
    params = dict(model.named_parameters())
    own = {f"{n}.weight": t.vocab for n, t in model.embedding_tables().items() if t.vocab in ("user", "item")}
    names = [*own, *(n for n in params if n.startswith("output."))]
    mean_loss = ((torch.sigmoid(model(pool)) - pool["label"]) ** 2).mean()
    reference = dict(zip(names, torch.autograd.grad(mean_loss, [params[n] for n in names]), strict=True))
    expected = []
    for i in range(len(rows)):
        one = {k: v[i : i + 1] for k, v in pool.items()}
        loss = ((torch.sigmoid(model(one)) - one["label"]) ** 2).mean()
        grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True))
        total = sum(float((grads[n] * reference[n]).sum()) for n in names if n not in own)
        for name, vocab in own.items():  # the sample's own row of each user / item table
            row = one[vocab][0]
            total += float((grads[name][row] * reference[name][row]).sum())
        expected.append(total)
    got = ggscores(model, pool, chunk_size=16, task="rating")
    assert np.abs(expected).max() > 1e-6
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-9)
    assert not np.allclose(ggscores(model, pool, chunk_size=16), got)  # the ctr task's BCE gives other scores


@pytest.mark.parametrize("reservoir", ["capacity", "fraction"])
def test_replay_mixes_ratio_times_new_samples_from_past_periods(timeline, features, reservoir):
    config = ReplayConfig(reservoir, reservoir_capacity=300, reservoir_fraction=0.5, ratio=0.4, megg_ratio=0.4)
    for selection in ("Reservoir", "SPMF", "MEGG"):
        method = ReplayMethod("EmbMLP", selection, features, TINY, FAST, config, seed=0)
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
            period = periods[new_rows].max()  # new rows: train_t and val_{t-1}
            assert len(replayed) == pytest.approx(0.4 * len(new_rows), abs=2)
            assert (periods[replayed] < period).all() and len(np.unique(replayed)) == len(replayed)
            assert not np.isin(replayed, new_rows).any()  # val_{t-1} is new at t: learned once, not replayed
        assert len(np.unique(method.reservoir.rows)) == len(method.reservoir.rows)  # each row offered once
        assert [r["replayed"] for r in method.extra_reports.values()][0] == 0  # pre-training replays nothing


def test_replay_ratio_out_of_range_is_a_clear_error():
    for ratio in (0, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"incremental.replay.ratio: expected a value in \(0, 1\]"):
            from_dict(ReplayConfig, {"ratio": ratio})
        with pytest.raises(ConfigError, match=r"incremental.replay.megg_ratio: expected a value in \(0, 1\]"):
            from_dict(ReplayConfig, {"megg_ratio": ratio})
    with pytest.raises(ConfigError, match="reservoir_fraction"):
        ReplayConfig(reservoir_fraction=0.0)
    for capacity in (0, -5):
        with pytest.raises(ConfigError, match=r"incremental.replay.reservoir_capacity: must be >= 1"):
            ReplayConfig(reservoir_capacity=capacity)
    with pytest.raises(ConfigError, match=r"incremental.replay.reservoir: expected 'capacity' or 'fraction'"):
        ReplayConfig(reservoir="growing")
    with pytest.raises(ConfigError, match=r"incremental.replay.reservoir: expected one of"):
        from_dict(ReplayConfig, {"reservoir": "growing"}, "incremental.replay")


def test_fit_calls_on_epoch_end_once_per_epoch_run(features):
    encoders = features.new_encoders()
    rows = np.arange(300)
    encoders.grow(features, rows)
    train, val = encoders.encode(features, rows[:240]), encoders.encode(features, rows[240:])

    def trained(config, val_split, record):
        torch.manual_seed(0)
        model, calls = build_model("EmbMLP", encoders.vocab_sizes(), TINY), []

        def on_epoch_end(epoch, seen):
            assert seen is model
            calls.append(epoch)

        report = fit(model, train, val_split, config, seed=3, on_epoch_end=on_epoch_end if record else None)
        return model, calls, len(report.val_auc)

    all_epochs = CtrTrainConfig(epochs=4, patience=10, batch_size=64)
    early = CtrTrainConfig(epochs=30, patience=1, batch_size=64, learning_rate=0.05)
    for config, val_split in ((all_epochs, val), (CtrTrainConfig(epochs=3, batch_size=64), None), (early, val)):
        _, calls, n_epochs = trained(config, val_split, record=True)
        assert calls == list(range(1, n_epochs + 1))
    assert n_epochs < early.epochs  # the early-stopped run called it only for the epochs that ran
    with_callback, _, _ = trained(all_epochs, val, record=True)
    without, calls, _ = trained(all_epochs, val, record=False)
    assert calls == []
    for name, value in without.state_dict().items():  # the callback changes nothing
        assert torch.equal(with_callback.state_dict()[name], value)


def test_megg_scores_with_the_penultimate_epoch_snapshot(timeline, features, monkeypatch):
    train = CtrTrainConfig(epochs=3, patience=10, batch_size=256, learning_rate=0.01)
    method = ReplayMethod("EmbMLP", "MEGG", features, TINY, train, ReplayConfig(megg_ratio=0.6), seed=0)
    copies = []  # per training: the model after each of its epochs, captured by our own callback
    fit_with_snapshots = updates.fit

    def capturing_fit(*args, on_epoch_end, **kwargs):
        epochs = []
        copies.append(epochs)

        def both(epoch, model):
            epochs.append(copy.deepcopy(model))
            on_epoch_end(epoch, model)

        return fit_with_snapshots(*args, on_epoch_end=both, **kwargs)

    monkeypatch.setattr(updates, "fit", capturing_fit)  # what CtrUpdateMethod.train_period calls
    checked = []

    def checking(new_rows, select=method.select):
        candidates, before = method.candidates(new_rows), torch.get_rng_state()
        replayed = select(new_rows)
        after = torch.get_rng_state()
        assert len(copies[-1]) == 3  # the previous training ran all its epochs
        torch.set_rng_state(before)  # grow our copy with the same fresh rows as the method's snapshot
        snapshot = copy.deepcopy(copies[-1][1])  # after epoch 2 of 3
        snapshot.grow(method.encoders.vocab_sizes())
        torch.set_rng_state(after)
        pool, n = method.encode(candidates), round(0.6 * len(new_rows))
        by_hand = ggscores(snapshot, pool)
        np.testing.assert_array_equal(replayed, candidates[keep_both_ends(by_hand, n)])
        for final in (method.model, copies[-1][2]):  # the best epoch's model, the last epoch's
            assert not np.allclose(ggscores(final, pool), by_hand)
        checked.append(method.reports[max(method.reports)].best_epoch)
        return replayed

    method.select = checking
    torch.manual_seed(0)
    for period in range(3):
        method.fit(timeline, period)
    assert len(checked) == 2 and 2 not in checked  # the final model is never the snapshot itself


def test_megg_ratio_sets_how_many_samples_megg_replays(timeline, features):
    config = ReplayConfig(ratio=0.3, megg_ratio=0.9)
    for selection, ratio in (("MEGG", 0.9), ("Reservoir", 0.3)):
        method = ReplayMethod("EmbMLP", selection, features, TINY, FAST, config, seed=0)
        sizes = []

        def recording(new_rows, select=method.select, sizes=sizes):
            replayed = select(new_rows)
            sizes.append((len(new_rows), len(replayed)))
            return replayed

        method.select = recording
        torch.manual_seed(0)
        method.fit(timeline, 0)
        method.fit(timeline, 1)
        [(n_new, n_replayed)] = sizes
        assert n_replayed == round(ratio * n_new) and method.extra_reports[1]["replayed"] == n_replayed
