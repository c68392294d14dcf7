"""ASMG: the batched GRU equals per-coordinate GRU cells, ASMG-Linear (0, 0, 1) reproduces the last model, and
the method trains on the past only, keeps IU's model chain and warms up before serving."""

import math

import numpy as np
import pytest
import torch

from llm4rec.config import from_dict
from llm4rec.ctr.config import CtrConfig
from llm4rec.ctr.train import predict_proba
from llm4rec.ctr.updates import CtrUpdateMethod
from llm4rec.errors import ConfigError
from llm4rec.eval.protocol import run_protocol
from llm4rec.incremental.config import AsmgConfig
from llm4rec.incremental.meta import AsmgMethod, CoordinateGRU, LinearMetaGenerator, _key
from llm4rec.incremental.params import align_tables, table_names, trainable_parameters, with_parameters
from tests.conftest import tiny_ctr_options

pytestmark = pytest.mark.usefixtures("one_thread")

TINY, FAST = tiny_ctr_options()
ARRIVING_TIMELINE = {"n": 3000, "n_periods": 6}  # for conftest's timeline
META = AsmgConfig(sequence_length=2, epochs=2, warm_start_steps=20)


@pytest.fixture(scope="module")
def iu_models(timeline, features):
    """IU's models through periods 2, 3, 4 (pre-trained on 0..1 before them): parameters and the method."""
    torch.manual_seed(0)
    method = CtrUpdateMethod("DeepFM", "IU", features, TINY, FAST)
    sequence = []
    method.fit(timeline, 1)
    for period in (2, 3, 4):
        method.fit(timeline, period)
        sequence.append(trainable_parameters(method.model))
    return sequence, method


def test_batched_gru_equals_one_gru_cell_per_coordinate():
    torch.manual_seed(0)
    cell = CoordinateGRU(groups=5, hidden=3)
    sequence = torch.randn(4, 5, 7)  # 4 steps of (groups, rows)
    h = torch.zeros(5, 7, 3)
    batched = []
    for x in sequence:
        h, y = cell.step(x, h)
        batched.append(y)

    @torch.no_grad()
    def reference(group: int, xs: list[float]) -> list[float]:
        """Eq. (4)-(5) for one coordinate, with the weights of its group, in plain scalar loops."""
        w_in, bias = cell.input_weight[group, 0], cell.bias[group, 0]
        w_gate, w_cand = cell.gate_weight[group], cell.candidate_weight[group]
        state, out = torch.zeros(3), []
        for x in xs:
            r = torch.sigmoid(x * w_in[0:3] + bias[0:3] + state @ w_gate[:, 0:3])
            z = torch.sigmoid(x * w_in[3:6] + bias[3:6] + state @ w_gate[:, 3:6])
            candidate = torch.tanh(x * w_in[6:9] + bias[6:9] + (r * state) @ w_cand)
            state = (1 - z) * state + z * candidate
            out.append(float(state @ cell.out_weight[group, :, 0] + cell.out_bias[group, 0]))
        return out

    for group in range(5):
        for row in range(7):
            expected = reference(group, [float(x[group, row]) for x in sequence])
            got = [y[group, row].item() for y in batched]
            assert got == pytest.approx(expected, abs=1e-6)


def test_asmg_linear_with_weights_0_0_1_reproduces_the_last_model(timeline, iu_models):
    sequence, method = iu_models
    tables = table_names(method.model)
    groups = {name: (value.shape[1] if name in tables else value.numel()) for name, value in sequence[-1].items()}
    generator = LinearMetaGenerator(groups, tables, length=3)
    aligned = align_tables(sequence, tables)
    with torch.no_grad():
        for logits in generator.logits.values():
            logits[:2] = -math.inf  # softmax weights (0, 0, 1)
        generated = generator(aligned)
    assert all(torch.equal(generated[name], sequence[-1][name]) for name in sequence[-1])
    samples = method.encode(timeline.period(5).index.to_numpy())
    last = with_parameters(method.model, sequence[-1])
    assert np.array_equal(
        predict_proba(with_parameters(method.model, generated), samples), predict_proba(last, samples)
    )
    with torch.no_grad():  # zero logits: the plain average of the three models
        for logits in generator.logits.values():
            logits.zero_()
        average = generator(aligned)
    name = "deep.0.weight"
    assert torch.allclose(average[name], sum(p[name] for p in sequence) / 3, atol=1e-7)


def test_tables_share_one_generator_per_dimension_and_new_ids_are_back_filled(iu_models):
    sequence, method = iu_models
    tables = table_names(method.model)
    assert "fields.item.weight" in tables and "deep.0.weight" not in tables
    aligned = align_tables(sequence, tables)
    item = "fields.item.weight"
    old_rows = sequence[0][item].shape[0]
    assert aligned[0][item].shape == sequence[-1][item].shape > sequence[0][item].shape
    assert torch.equal(aligned[0][item][old_rows:], aligned[1][item][old_rows:])  # first known value, carried back
    assert torch.equal(aligned[0][item][:old_rows], sequence[0][item])
    generator = LinearMetaGenerator({item: 4, "deep.0.weight": sequence[0]["deep.0.weight"].numel()}, tables, 3)
    assert generator.logits[_key(item)].shape == (3, 4)  # one weight per dimension, shared by every id


def asmg(features, kind="GRU", **meta):
    settings = {**META.__dict__, **meta}
    return AsmgMethod("DeepFM", kind, features, TINY, FAST, AsmgConfig(**settings))


@pytest.mark.parametrize("kind", ["GRU", "Linear"])
def test_asmg_keeps_ius_chain_trains_on_the_past_and_warms_up(timeline, features, iu_models, kind):
    method = asmg(features, kind)
    torch.manual_seed(0)
    served_is_iu, served_by = [], []
    for period in (1, 2, 3, 4):
        method.fit(timeline, period)
        served_is_iu.append(method.serving_model() is method.model)
        served_by.append(method.served_by)
    assert method.name == f"DeepFM-ASMG-{kind}"
    # The sequence holds the updated models only (not the one pre-trained at fit 1), and they are IU's: the
    # generator's own initialisation leaves torch's global RNG alone (a disturbed RNG moves every weight by
    # about 0.1). Equal to float32 rounding, not bit for bit: on an AVX2-only AMD EPYC the same IU training
    # run twice in one process ended 3.7e-9 apart in one weight (CPU kernels need not sum in one fixed order).
    assert [s.period for s in method.snapshots] == [2, 3, 4]
    for snapshot, expected in zip(method.snapshots, iu_models[0], strict=True):
        assert all(torch.allclose(snapshot.params[n], expected[n], rtol=0, atol=1e-6) for n in expected)
    # k = 2: trained at fits 3 and 4, serving from the second training on (warm_up = k).
    assert served_is_iu == [True, True, True, False]
    assert served_by == ["pre-trained", "DeepFM-IU", "DeepFM-IU", ""]
    assert [r["sequence"] for r in method.extra_reports.values()] == [[2], [2, 3]]
    # The newest generator training used periods 3 (all) and 4 (train split), validated on 4's val split only.
    table = timeline.table
    targets, val = method._targets(timeline, first=0)
    sizes = [len(t["label"]) for t in targets]
    expected = [int((table["period"] == 3).sum()), int(((table["period"] == 4) & (table["split"] == "train")).sum())]
    assert sizes == expected and len(val["label"]) == int(((table["period"] == 4) & (table["split"] == "val")).sum())
    test = timeline.period(5)
    p, iu_p = method.predict_proba(test), predict_proba(method.model, method.encode(test.index.to_numpy()))
    assert np.isfinite(p).all() and not np.allclose(p, iu_p)  # the generated model, not the last IU model


def test_gru_state_carries_over_the_truncated_sequence(timeline, features):
    method = asmg(features, sequence_length=1, warm_up=1)
    rows = run_protocol(method, timeline, first_test_period=2, progress=False)
    assert all(0.5 < r.auc < 1 for r in rows)
    # k = 1: each training starts from the state after the model before its sequence.
    assert set(method.states) == {1, 2}
    assert method.states[2]["fields.item.weight"].shape[:2] == (4, method.snapshots[1].vocab["item"])


def test_a_sequence_longer_than_the_periods_is_a_clear_error(timeline, features):
    data = {"data": {"periods": {"n_periods": 6}}, "pretrain_periods": 2, "incremental": {"methods": ["ASMG-GRU"]}}
    from_dict(CtrConfig, {**data, "incremental": {"methods": ["ASMG-GRU"], "asmg": {"sequence_length": 2}}})
    with pytest.raises(ConfigError, match=r"sequence_length: k = 3 needs k \+ 1 = 4 incrementally updated models"):
        from_dict(CtrConfig, data)  # pre-trained at 1, updated at periods 2, 3, 4: three models
    with pytest.raises(ConfigError, match="warm_up: 3 generator trainings"):
        from_dict(
            CtrConfig,
            {**data, "incremental": {"methods": ["ASMG-Linear"], "asmg": {"sequence_length": 1, "warm_up": 3}}},
        )
    with pytest.raises(ConfigError, match="k = 4 needs"):
        asmg(features, sequence_length=4).fit(timeline, 1)
