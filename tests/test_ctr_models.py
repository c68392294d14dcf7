"""Every CTR model learns a planted signal, scores OOV ids, grows its tables, and trains repeatably."""

import numpy as np
import pytest
import torch

from llm4rec.config import from_dict
from llm4rec.ctr.config import CtrConfig
from llm4rec.ctr.features import OOV, PAD
from llm4rec.ctr.models import MODELS, build_model
from llm4rec.ctr.models.base import ModelOptions
from llm4rec.ctr.train import CtrTrainConfig, fit, predict_proba, take
from llm4rec.errors import ConfigError
from llm4rec.eval import metrics

VOCAB = {"user": 62, "item": 82, "genre": 7}  # 60 users, 80 items, 5 genres (+ padding and OOV)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def planted_task(n=6000, seed=0):
    """Labels from latent user x item factors, item quality and a history match (the user's liked items
    share the target's taste group): a signal every model can pick up in its own way."""
    rng = np.random.default_rng(seed)
    users = rng.integers(2, VOCAB["user"], n)
    items = rng.integers(2, VOCAB["item"], n)
    user_taste = rng.integers(0, 2, VOCAB["user"])
    item_group = rng.integers(0, 2, VOCAB["item"])
    quality = rng.normal(0, 1, VOCAB["item"])
    logit = 1.5 * quality[items] + 2.0 * np.where(user_taste[users] == item_group[items], 1, -1)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    # History: items of the user's taste group, some slots empty.
    same_group = [np.flatnonzero(item_group == g) for g in (0, 1)]
    history = np.stack([rng.choice(same_group[user_taste[u]], 10) for u in users])
    history[rng.random(history.shape) < 0.3] = PAD
    genres = np.stack([item_group[items] + 2, rng.integers(2, VOCAB["genre"], n)], axis=1)
    tensors = {
        "user": torch.from_numpy(users),
        "item": torch.from_numpy(items),
        "genres": torch.from_numpy(genres),
        "history": torch.from_numpy(history),
        "label": torch.from_numpy(labels),
    }
    cut = int(0.8 * n)
    return take(tensors, torch.arange(cut)), take(tensors, torch.arange(cut, n))


SMALL = ModelOptions(embedding_dim=8, mlp=[16, 8], attention_mlp=[8])
FAST = CtrTrainConfig(epochs=6, patience=2, batch_size=256, learning_rate=0.01)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_learns_the_planted_signal(name):
    train, test = planted_task()
    torch.manual_seed(0)
    model = build_model(name, VOCAB, SMALL)
    report = fit(model, train, test, FAST, seed=0)
    auc = metrics.auc(test["label"].numpy(), predict_proba(model, test))
    assert auc > 0.8, f"{name}: AUC {auc:.3f} after {len(report.val_auc)} epochs"


@pytest.mark.parametrize("name", list(MODELS))
def test_hidden_output_and_tables_are_exposed(name):
    train, _ = planted_task(n=80)
    torch.manual_seed(0)
    model = build_model(name, VOCAB, SMALL)
    hidden, extra = model.parts(train)
    assert hidden.shape == (64, model.hidden_dim)  # 80% of 80 samples
    assert torch.allclose(model(train), model.output(hidden).squeeze(-1) + extra)
    tables = model.embedding_tables()
    assert {t.vocab for t in tables.values()} >= {"user", "item"}
    assert all(t.num == VOCAB[t.vocab] for t in tables.values())


@pytest.mark.parametrize("name", list(MODELS))
def test_oov_ids_score_and_growing_keeps_old_rows(name):
    train, _ = planted_task(n=256)
    torch.manual_seed(0)
    model = build_model(name, VOCAB, SMALL)
    fit(model, train, None, CtrTrainConfig(epochs=1, batch_size=64))
    before = predict_proba(model, train)
    old = {key: table.weight.detach().clone() for key, table in model.embedding_tables().items()}
    model.grow({"user": 70, "item": 90, "genre": 9})
    for key, table in model.embedding_tables().items():
        assert table.num == {"user": 70, "item": 90, "genre": 9}[table.vocab]
        assert torch.equal(table.weight[: len(old[key])], old[key])
    assert np.allclose(predict_proba(model, train), before)  # old ids score as before
    unseen = {key: torch.full_like(values, OOV) for key, values in train.items() if key != "label"}
    unseen["label"] = train["label"]
    p = predict_proba(model, unseen)
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    model.train()
    fit(model, train, None, CtrTrainConfig(epochs=1, batch_size=64))  # and it still trains after growing


def test_same_seed_same_model():
    train, test = planted_task(n=2000)
    aucs, weights = [], []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model("DIN", VOCAB, SMALL)
        fit(model, train, test, FAST, seed=3)
        aucs.append(metrics.auc(test["label"].numpy(), predict_proba(model, test)))
        weights.append(model.fields.item.weight.detach().clone())
    assert aucs[0] == aucs[1] and torch.equal(weights[0], weights[1])


def test_early_stopping_keeps_the_best_epoch():
    train, test = planted_task(n=2000)
    torch.manual_seed(0)
    model = build_model("MF", VOCAB, SMALL)
    report = fit(model, train, test, CtrTrainConfig(epochs=30, patience=2, batch_size=128, learning_rate=0.05), seed=0)
    best = max(report.val_auc)
    assert report.val_auc[report.best_epoch - 1] == best
    assert metrics.auc(test["label"].numpy(), predict_proba(model, test)) == pytest.approx(best)
    assert len(report.val_auc) < 30 and len(report.val_auc) - report.best_epoch == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"models": ["MF", "FM"]}, "models: unknown model 'FM'; available models: ['MF', 'EmbMLP'"),
        ({"models": []}, "name at least one model"),
        ({"updates": ["IU", "SPMF"]}, "updates: expected a non-empty list drawn from ['IU', 'BU', 'FR']"),
        ({"features": {"history_length": 0}}, "features.history_length: must be >= 1"),
        ({"model": {"embedding_dim": 0}}, "model.embedding_dim: must be an integer in 1..1024"),
        ({"model": {"mlp": []}}, "model.mlp: expected a non-empty list of positive layer sizes"),
        ({"model": {"mlp": [64, 0]}}, "model.mlp: expected a non-empty list of positive layer sizes"),
        ({"model": {"mlp": "64-32"}}, "model.mlp"),
        ({"model": {"attention_mlp": [-1]}}, "model.attention_mlp"),
        ({"model": {"dropout": 1.0}}, "model.dropout"),
        ({"pretrain_periods": 10}, "pretrain_periods: with 10 periods, K must be in 1..9"),
        ({"window": 0}, "window: BU-w needs w >= 1"),
        ({"train": {"batch_size": 0}}, "train.batch_size: must be >= 1"),
        ({"random_split": {"fractions": [0.8, 0.2]}}, "random_split.fractions"),
        ({"modle": {}}, "unknown key(s) ['modle']"),
    ],
)
def test_bad_configs_say_what_is_allowed(data, message):
    with pytest.raises(ConfigError) as error:
        from_dict(CtrConfig, data)
    assert message in str(error.value)


def test_unknown_model_name_in_code_is_an_error():
    with pytest.raises(ConfigError, match="unknown model 'GBDT'; available models"):
        build_model("GBDT", VOCAB)
