import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from llm4rec.eval import metrics


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    n = 3000
    users = rng.integers(0, 50, n)
    y = (rng.random(n) < 0.3 + 0.01 * (users % 40)).astype(int)
    p = np.round(np.clip(0.5 * y + rng.random(n) * 0.7, 0, 1), 2)  # rounded: many ties
    return y, p, users


def test_auc_logloss_match_sklearn(scored):
    y, p, _ = scored
    assert metrics.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert metrics.logloss(y, p) == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), abs=1e-12)


def test_gauc_hand_computed():
    # user a: pairs (pos .9 vs neg .1) (pos .9 vs neg .95) (pos .5 vs .1) (pos .5 vs .95) -> 2/4 = 0.5, n = 4
    # user b: pos .3 vs negs .3 (tie, 1/2) and .2 -> 1.5/2 = 0.75, n = 3
    # user c: only positives -> skipped; user d: only negatives -> skipped
    users = ["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d"]
    y = [1, 0, 1, 0, 1, 0, 0, 1, 1, 0]
    p = [0.9, 0.1, 0.5, 0.95, 0.3, 0.3, 0.2, 0.4, 0.6, 0.7]
    assert metrics.gauc(y, p, users) == pytest.approx((4 * 0.5 + 3 * 0.75) / 7)


def test_gauc_equals_weighted_per_user_sklearn(scored):
    y, p, users = scored
    total, weight = 0.0, 0
    for u in np.unique(users):
        mask = users == u
        if len(np.unique(y[mask])) == 2:
            total += mask.sum() * roc_auc_score(y[mask], p[mask])
            weight += mask.sum()
    assert metrics.gauc(y, p, users) == pytest.approx(total / weight, abs=1e-12)


def test_single_class_gives_nan():
    assert math.isnan(metrics.auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(metrics.gauc([1, 0, 1], [0.1, 0.2, 0.3], ["a", "b", "c"]))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.auc([0, 1], [0.1])
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.logloss([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="one-dimensional"):
        metrics.gauc([[0, 1]], [[0.1, 0.2]], [["a", "a"]])


def test_logloss_is_finite_for_confident_mistakes():
    assert math.isfinite(metrics.logloss([1, 0], [0.0, 1.0]))


def test_rmse_against_sklearn_and_by_hand():
    from sklearn.metrics import mean_squared_error

    y, prediction = np.array([1.0, 3.0, 5.0, 4.0]), np.array([1.5, 2.0, 4.0, 4.0])
    assert metrics.rmse(y, prediction) == pytest.approx(np.sqrt((0.25 + 1 + 1 + 0) / 4))
    assert metrics.rmse(y, prediction) == pytest.approx(np.sqrt(mean_squared_error(y, prediction)))
    assert np.isnan(metrics.rmse([], []))
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.rmse([1.0], [1.0, 2.0])
