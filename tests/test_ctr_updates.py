"""IU / BU-w / FR over periods: which data each update trains on, new ids in the next period, repeatability."""

import numpy as np
import pytest

from llm4rec.ctr.features import OOV
from llm4rec.ctr.models.base import ModelOptions
from llm4rec.ctr.train import CtrTrainConfig
from llm4rec.ctr.updates import CtrUpdateMethod
from llm4rec.errors import ConfigError, DataError
from llm4rec.eval.protocol import run_protocol

SMALL = ModelOptions(embedding_dim=8, mlp=[16, 8], attention_mlp=[8])
FAST = CtrTrainConfig(epochs=3, patience=1, batch_size=256, learning_rate=0.01)
ARRIVING_TIMELINE = {"n": 4000, "n_periods": 5}  # for conftest's timeline and features
HISTORY_LENGTH = 10


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def method(features, model="MF", mode="IU", **kwargs):
    return CtrUpdateMethod(model, mode, features, SMALL, FAST, **kwargs)


def test_each_mode_trains_on_its_window(timeline, features):
    table = timeline.table

    def n_train(first, period):
        """train_first..train_period plus val_{first-1}..val_{period-1}: the timeline's row rule."""
        trains = (table["period"] >= first) & (table["period"] <= period) & (table["split"] == "train")
        vals = (table["period"] >= first - 1) & (table["period"] < period) & (table["split"] == "val")
        return int(trains.sum() + vals.sum())

    expected = {
        "IU": {1: n_train(0, 1), 2: n_train(2, 2), 3: n_train(3, 3)},
        "BU": {1: n_train(0, 1), 2: n_train(1, 2), 3: n_train(2, 3)},  # w = 2
        "FR": {1: n_train(0, 1), 2: n_train(0, 2), 3: n_train(0, 3)},
    }
    for mode, sizes in expected.items():
        m = method(features, mode=mode, window=2)
        run_protocol(m, timeline, first_test_period=2, progress=False)
        assert m.name == {"IU": "MF-IU", "BU": "MF-BU2", "FR": "MF-FR"}[mode]
        assert {p: r.n_train for p, r in m.reports.items()} == sizes
        val = {p: int(((table["period"] == p) & (table["split"] == "val")).sum()) for p in sizes}
        assert {p: r.n_val for p, r in m.reports.items()} == val


@pytest.mark.parametrize("model", ["EmbMLP", "DIN"])
def test_trained_on_t_scores_t_plus_1_with_new_ids(timeline, features, model):
    m = method(features, model=model, mode="IU")
    m.fit(timeline, 1)
    known_items = len(m.encoders.items.known_codes())
    test = timeline.period(2)
    encoded = m.encoders.encode(features, test.index.to_numpy())
    assert (encoded["item"] == OOV).sum() > 0 and (encoded["user"] == OOV).sum() > 0  # new ids in period 2
    p = m.predict_proba(test)
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    # The encoders knew only ids of periods 0..1: no id of a later period leaked in.
    seen = set(timeline.through(1)["item_id"]) | {i for h in timeline.through(1)["history_item_ids"] for i in h}
    assert set(features.item_names[m.encoders.items.known_codes()]) <= seen
    # Next period: the encoders append, the model grows, old indices stay put.
    old_codes = m.encoders.items.known_codes().copy()
    m.fit(timeline, 2)
    assert np.array_equal(m.encoders.items.known_codes()[:known_items], old_codes)
    assert m.model.fields.item.num == m.encoders.items.size > known_items + 2


def test_models_beat_chance_over_periods(timeline, features):
    for mode in ("IU", "FR"):
        rows = run_protocol(method(features, mode=mode), timeline, first_test_period=2, progress=False)
        assert np.mean([r.auc for r in rows]) > 0.7, mode  # item quality is planted


def test_same_seed_same_results(timeline, features):
    runs = [
        [r.auc for r in run_protocol(method(features, "DeepFM", "BU"), timeline, first_test_period=2, progress=False)]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    other = run_protocol(
        method(features, "DeepFM", "BU", seed=1), timeline, first_test_period=2, seed=1, progress=False
    )
    assert [r.auc for r in other] != runs[0]


def test_misuse_is_reported(timeline, features):
    with pytest.raises(ConfigError, match="update mode 'SML' is unknown"):
        method(features, mode="SML")
    with pytest.raises(DataError, match="before fit"):
        method(features).predict_proba(timeline.period(1))
    m = method(features)
    m.fit(timeline, 0)
    shuffled = timeline.period(1).reset_index(drop=True)  # no longer the timeline's row numbers
    with pytest.raises(DataError, match="rows of the timeline table"):
        m.predict_proba(shuffled)


def test_the_rating_task_fits_and_scores_the_rating(timeline, features):
    """train.task rating: the target is the rating rescaled to [0, 1], early stopping watches val RMSE, and the
    protocol scores RMSE on the 1..5 scale (LogLoss is not defined there; AUC ranks the label by the rating)."""
    from llm4rec.eval import metrics

    train = CtrTrainConfig(epochs=2, patience=1, batch_size=256, learning_rate=0.01, task="rating")
    m = CtrUpdateMethod("DeepFM", "IU", features, SMALL, train)
    rows = np.arange(50)
    np.testing.assert_allclose(m.encode(rows)["label"].numpy(), (timeline.table["rating"].to_numpy()[rows] - 1) / 4)
    results = run_protocol(m, timeline, first_test_period=2, progress=False)
    assert m.reports[1].val_rmse and not m.reports[1].val_auc and "val_rmse" in m.reports[1].to_dict()
    row = results[-1]
    samples = timeline.period(row.period)  # scored by the model trained through the period before
    p = m.predict_proba(samples)
    assert row.rmse == pytest.approx(metrics.rmse(samples["rating"].to_numpy(), 1 + 4 * p))
    assert row.rmse == pytest.approx(np.sqrt(np.mean((samples["rating"].to_numpy() - 1 - 4 * p) ** 2)))
    assert np.isnan(row.logloss) and 0 < row.auc < 1
    ctr = run_protocol(method(features, model="DeepFM"), timeline, first_test_period=2, progress=False)
    assert all(np.isnan(r.rmse) for r in ctr)  # the ctr task has no RMSE


def test_rating_task_errors():
    from llm4rec.config import from_dict
    from llm4rec.ctr.config import CtrConfig

    with pytest.raises(ConfigError, match="train.task: expected one of"):
        CtrTrainConfig(task="regression")
    with pytest.raises(ConfigError, match="train.rating_scale"):
        CtrTrainConfig(rating_scale=(5, 1))
    base = {"data": {"name": "ml-100k"}, "train": {"task": "rating"}}
    with pytest.raises(ConfigError, match=r"cannot be fitted by \['ReLoop2', 'SML'\]"):
        from_dict(CtrConfig, {**base, "incremental": {"methods": ["MEGG", "ReLoop2", "SML"]}})
    with pytest.raises(ConfigError, match="periods only"):
        from_dict(CtrConfig, {**base, "protocol": "random"})


def test_only_a_fit_at_the_pre_training_period_serves_the_shared_pre_trained_model(timeline, features):
    """K = 2: a fit at period 1 is the pre-training every method shares; FR first fitted later (a comparison's
    FR needs no burn-in) trains on more periods and is its own model."""
    from llm4rec.config import from_dict
    from llm4rec.ctr.catalogue import build_method
    from llm4rec.ctr.config import CtrConfig
    from llm4rec.eval.results import PRETRAINED

    config = from_dict(
        CtrConfig,
        {"data": {"name": "ml-100k", "periods": {"n_periods": 5}}, "pretrain_periods": 2, "models": ["MF"],
         "model": {"embedding_dim": 4}, "train": {"epochs": 1}},
    )  # fmt: skip
    iu, fr, late_fr = (build_method(name, "MF", features, config) for name in ("IU", "FR", "FR"))
    served = {"IU": [], "FR": [], "late FR": []}
    for period in (1, 2, 3):
        iu.fit(timeline, period)
        fr.fit(timeline, period)
        served["IU"].append(iu.served_by)
        served["FR"].append(fr.served_by)
    for period in (2, 3):
        late_fr.fit(timeline, period)
        served["late FR"].append(late_fr.served_by)
    assert served == {"IU": [PRETRAINED, "", ""], "FR": [PRETRAINED, "", ""], "late FR": ["", ""]}
