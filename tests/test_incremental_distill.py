"""IncCTR: lambda = 0 is plain IU bit for bit; the distillation term pulls towards the previous model."""

import copy

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed
from torch.nn import functional as F

import llm4rec.incremental.distill as distill
from llm4rec.ctr.features import known_by
from llm4rec.ctr.train import TrainReport, predict_proba
from llm4rec.ctr.updates import CtrUpdateMethod
from llm4rec.errors import ConfigError
from llm4rec.incremental.config import IncCtrConfig
from llm4rec.incremental.distill import TEACHER, IncCtrMethod, distillation_loss
from tests.conftest import tiny_ctr_options

pytestmark = pytest.mark.usefixtures("one_thread")

TINY, FAST = tiny_ctr_options()


def fitted(method, timeline, periods=(1, 2, 3)):
    set_seed(0)
    for period in periods:
        method.fit(timeline, period)
    return method


def test_lambda_zero_is_plain_incremental_update(timeline, features):
    iu = fitted(CtrUpdateMethod("DeepFM", "IU", features, TINY, FAST), timeline)
    kd0 = fitted(IncCtrMethod("DeepFM", features, TINY, FAST, IncCtrConfig(kd_lambda=0.0)), timeline)
    kd = fitted(IncCtrMethod("DeepFM", features, TINY, FAST, IncCtrConfig(kd_lambda=0.5)), timeline)
    assert kd0.name == "DeepFM-IncCTR"
    iu_state, kd0_state, kd_state = (m.model.state_dict() for m in (iu, kd0, kd))
    assert all(torch.equal(iu_state[k], kd0_state[k]) for k in iu_state)
    assert not all(torch.equal(iu_state[k], kd_state[k]) for k in iu_state)
    test = timeline.period(3)
    assert np.array_equal(iu.predict_proba(test), kd0.predict_proba(test))


def test_the_loss_mixes_labels_and_teacher_probabilities():
    logits = torch.tensor([0.3, -1.2, 2.0])
    batch = {"label": torch.tensor([1.0, 0.0, 1.0]), TEACHER: torch.tensor([0.6, 0.4, 0.2])}

    def model(b):
        return logits

    for kd_lambda in (0.0, 0.2, 1.0):
        expected = (1 - kd_lambda) * F.binary_cross_entropy_with_logits(logits, batch["label"])
        expected += kd_lambda * F.binary_cross_entropy_with_logits(logits, batch[TEACHER])
        assert torch.isclose(distillation_loss(kd_lambda)(model, batch), expected)


def test_the_teacher_is_the_previous_periods_model_seeing_new_ids_as_unknown(timeline, features, monkeypatch):
    method = fitted(IncCtrMethod("EmbMLP", features, TINY, FAST), timeline, periods=(1,))
    period_1_model = copy.deepcopy(method.model)
    seen = {}

    def fake_fit(model, train, val, config, seed, loss):  # training itself is not under test here
        seen["train"] = train
        return TrainReport(n_train=len(train["label"]), n_val=len(val["label"]))

    monkeypatch.setattr(distill, "fit", fake_fit)
    method.fit(timeline, 2)
    train = seen["train"]
    assert (train["item"] >= method.previous_vocab["item"]).any()  # period 2 brings items period 1 never saw
    expected = predict_proba(period_1_model, known_by(train, method.previous_vocab))
    np.testing.assert_allclose(train[TEACHER].numpy(), expected, atol=1e-6)


def test_kd_lambda_outside_zero_one_is_an_error():
    with pytest.raises(ConfigError, match=r"incremental.inc_ctr.kd_lambda: expected a weight in \[0, 1\]"):
        IncCtrConfig(kd_lambda=1.5)
