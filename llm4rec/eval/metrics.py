"""Metrics shared by every method: AUC, gAUC, LogLoss, RMSE, and F1 at the mean score (cold-start warm-up).

AUC, LogLoss, RMSE and F1 delegate to scikit-learn. gAUC is ours because the
libraries disagree on it (see :func:`gauc`); it is computed for all users at
once from within-user ranks, so it stays fast on millions of rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, log_loss, roc_auc_score, root_mean_squared_error

# Probabilities are clipped before LogLoss so one confident mistake gives a
# large but finite loss, as in FuxiCTR and RecBole.
LOGLOSS_EPS = 1e-7


def _as_1d(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _check_same_length(**arrays: np.ndarray) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")


def _check_binary(y: np.ndarray) -> None:
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")


def auc(y, p) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    y, p = _as_1d("y", y), _as_1d("p", p)
    _check_same_length(y=y, p=p)
    _check_binary(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def gauc(y, p, users) -> float:
    """Group AUC: per-user AUC averaged with weights = the user's sample count.

    Definition used throughout llm4rec::

        gAUC = sum_u n_u * AUC_u / sum_u n_u,   over users u having both classes

    where n_u is the number of the user's samples (impressions) and AUC_u the
    ROC AUC of the user's own samples (ties count one half). Users whose samples
    are all positive or all negative have no AUC and are skipped, in the sum and
    in the weights. This is FuxiCTR's weighting; RecBole weights by positives and
    torch-rechub does not skip single-class users, so numbers differ from theirs.
    Returns NaN when no user has both classes.
    """
    y, p, users = _as_1d("y", y), _as_1d("p", p), _as_1d("users", users)
    _check_same_length(y=y, p=p, users=users)
    _check_binary(y)
    frame = pd.DataFrame({"user": users, "y": y.astype(np.int64), "p": p.astype(np.float64)})
    # Mann-Whitney: AUC_u = (sum of positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg),
    # with average ranks inside each user so ties count one half.
    frame["rank"] = frame.groupby("user", sort=False)["p"].rank(method="average")
    frame["pos_rank"] = frame["rank"] * frame["y"]
    per_user = frame.groupby("user", sort=False).agg(
        n=("y", "size"), n_pos=("y", "sum"), pos_rank_sum=("pos_rank", "sum")
    )
    n_neg = per_user["n"] - per_user["n_pos"]
    both = (per_user["n_pos"] > 0) & (n_neg > 0)
    if not both.any():
        return float("nan")
    per_user, n_neg = per_user[both], n_neg[both]
    user_auc = (per_user["pos_rank_sum"] - per_user["n_pos"] * (per_user["n_pos"] + 1) / 2) / (
        per_user["n_pos"] * n_neg
    )
    return float(np.average(user_auc, weights=per_user["n"]))


def logloss(y, p) -> float:
    """Binary cross-entropy, with probabilities clipped to [1e-7, 1 - 1e-7]."""
    y, p = _as_1d("y", y), _as_1d("p", p)
    _check_same_length(y=y, p=p)
    _check_binary(y)
    if len(y) == 0:
        return float("nan")
    return float(log_loss(y, np.clip(p, LOGLOSS_EPS, 1 - LOGLOSS_EPS), labels=[0, 1]))


def rmse(y, prediction) -> float:
    """Root mean squared error (rating prediction); NaN for no rows."""
    y, prediction = _as_1d("y", y), _as_1d("prediction", prediction)
    _check_same_length(y=y, prediction=prediction)
    if len(y) == 0:
        return float("nan")
    return float(root_mean_squared_error(y, prediction))


def f1_at_mean(y, p) -> float:
    """F1 of the positive class with a sample predicted positive when its score exceeds the mean score: the
    second metric of the cold-start warm-up papers (MWUF, EmerG), whose threshold adapts to each model's scale."""
    y, p = _as_1d("y", y), _as_1d("p", np.asarray(p, dtype=np.float64))
    _check_same_length(y=y, p=p)
    _check_binary(y)
    if len(y) == 0:
        return float("nan")
    return float(f1_score(y, (p > p.mean()).astype(int), zero_division=0.0))
