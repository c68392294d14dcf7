"""SML: the transfer module's shapes and sharing, which part each phase trains, and the period schedule."""

import numpy as np
import pytest
import torch

from llm4rec.ctr.models import build_model
from llm4rec.errors import ConfigError
from llm4rec.eval.protocol import run_protocol
from llm4rec.incremental.config import SmlConfig
from llm4rec.incremental.params import relative_error, table_names, trainable_parameters, warm_start
from llm4rec.incremental.sml import ParameterTransfer, SmlMethod, TransferModule, TransferredModel
from tests.conftest import tiny_ctr_options

pytestmark = pytest.mark.usefixtures("one_thread")

TINY, FAST = tiny_ctr_options()
ARRIVING_TIMELINE = {"n": 2500, "n_periods": 5}  # for conftest's timeline


def two_models():
    torch.manual_seed(0)
    model = build_model("DeepFM", {"user": 12, "item": 20, "genre": 5}, TINY)
    previous = trainable_parameters(model)
    new = {name: value + 0.1 * torch.randn_like(value) for name, value in previous.items()}
    return model, previous, new


def test_transfer_keeps_shapes_and_shares_one_module_across_ids():
    model, previous, new = two_models()
    transfer = TransferModule({n: v.shape for n, v in new.items()}, table_names(model), SmlConfig())
    out = transfer(previous, new)
    assert {n: v.shape for n, v in out.items()} == {n: v.shape for n, v in new.items()}
    item = "fields.item.weight"
    previous[item][5], new[item][5] = previous[item][3], new[item][3]  # two ids with the same inputs ...
    out = transfer(previous, new)
    assert torch.equal(out[item][5], out[item][3])  # ... get the same output: one module for the whole table
    # The stack is [prev; new; prev * new]: changing the previous value alone changes the output.
    changed = transfer({**previous, item: previous[item] + 1}, new)
    assert not torch.allclose(changed[item], out[item])


def test_each_phase_trains_its_own_part_and_warm_start_copies_the_new_parameters():
    model, previous, new = two_models()
    transfer = TransferModule({n: v.shape for n, v in new.items()}, table_names(model), SmlConfig())
    with torch.no_grad():
        before = float(relative_error(transfer(previous, new), new))
    error = warm_start(transfer, lambda: transfer(previous, new), new, steps=100)
    assert error < 0.1 * before and error < 0.05
    base_phase = TransferredModel(model, previous, new, transfer, train_new=True)
    trained = {n for n, p in base_phase.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("new.") for n in trained)
    transfer_phase = TransferredModel(model, previous, new, transfer, train_new=False)
    trained = {n for n, p in transfer_phase.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("transfer.") for n in trained)
    assert not any(n.startswith("_template") for n, _ in transfer_phase.named_parameters())


def test_sml_schedule_over_periods(timeline, features):
    method = SmlMethod("DeepFM", features, TINY, FAST, SmlConfig(warm_start_steps=30))
    rows = run_protocol(method, timeline, first_test_period=1, progress=False)
    assert method.name == "DeepFM-SML" and all(0.5 < r.auc < 1 for r in rows)
    assert [r.served_by for r in rows] == ["pre-trained", "DeepFM-IU", "", ""]  # the plain-IU period says so
    # Fit 0 pre-trains, fit 1 is plain IU (nothing to train f on), fit 2 creates f (warm start), fit 3 reuses it.
    assert sorted(method.extra_reports) == [2, 3]
    assert "warm_start_error" in method.extra_reports[2] and "warm_start_error" not in method.extra_reports[3]
    table = timeline.table
    for (
        period,
        report,
    ) in method.extra_reports.items():  # f learns towards period t's rows (the row rule), stops on val_t
        in_period = table["period"] == period
        assert report["transfer"]["n_train"] == len(timeline.training_positions(period, period))
        assert report["transfer"]["n_val"] == int((in_period & (table["split"] == "val")).sum())
    # The served model holds f(W_{t-1}, W_hat_t).
    with torch.no_grad():
        served = method.transfer(method.pair.previous, method.pair.new)
    assert all(torch.allclose(dict(method.model.named_parameters())[n], v) for n, v in served.items())
    p = method.predict_proba(timeline.period(4))
    assert np.isfinite(p).all()


def test_the_product_channel_is_normalised_by_the_previous_row_norm():
    """[prev; new; prev * new / ||prev||]: per id of a table, over the whole tensor of a dense parameter."""
    transfer = ParameterTransfer(groups=3, channels=[2, 2], hidden=4)
    seen = []
    transfer.conv1.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    previous = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    new = torch.tensor([[1.0, 2.0, 5.0], [1.0, 1.0, 3.0]])
    transfer(previous, new)
    stacked = seen[0]  # (rows, groups, 3)
    torch.testing.assert_close(stacked[..., 0], previous)
    torch.testing.assert_close(stacked[..., 1], new)
    by_hand = torch.tensor([[3 * 1 / 5, 4 * 2 / 5, 0.0], [0.0, 0.0, 2 * 3 / 2]])
    torch.testing.assert_close(stacked[..., 2], by_hand)


def test_base_parameters_train_through_f_at_the_base_rate(timeline, features, monkeypatch):
    from llm4rec.incremental import sml

    rates = []
    original = sml.fit

    def recording(model, *args, learning_rate=None, **kwargs):
        f_trains = any(p.requires_grad for p in model.transfer.parameters())
        rates.append((type(model).__name__, f_trains, learning_rate))
        return original(model, *args, learning_rate=learning_rate, **kwargs)

    monkeypatch.setattr(sml, "fit", recording)
    method = SmlMethod("EmbMLP", features, TINY, FAST, SmlConfig(warm_start_steps=5, base_learning_rate=0.02))
    for period in range(4):
        method.fit(timeline, period)
    # fits 2 and 3: f towards t at its own rate (f trains), then W_hat_t through f at the base rate (f frozen)
    assert rates == [("TransferredModel", True, 0.001), ("TransferredModel", False, 0.02)] * 2
    with pytest.raises(ConfigError, match="incremental.sml.base_learning_rate: must be > 0"):
        SmlConfig(base_learning_rate=0)
