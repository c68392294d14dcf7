"""EmerG: the item-specific graph comes from item features, the GNN computes the interactions it claims,
the meta-learning inner loop and the warm-up move only item-specific rows, and it is a plain CTR model too."""

import numpy as np
import pytest
import torch

from llm4rec.ctr.emerg_train import EmergTrainConfig, adapt, meta_step, meta_train, shared_parameters, warm_up
from llm4rec.ctr.features import OOV, PAD
from llm4rec.ctr.models import build_model
from llm4rec.ctr.models.base import ModelOptions
from llm4rec.ctr.models.emerg import EmerG, InteractionGNN
from llm4rec.ctr.train import CtrTrainConfig, fit, predict_proba, take
from llm4rec.errors import ConfigError
from llm4rec.eval import metrics

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

VOCAB = {"user": 12, "item": 14, "genre": 6, "year": 5}  # ids from 2; 0 padding, 1 OOV
SMALL = ModelOptions(embedding_dim=4, mlp=[8], gnn_layers=2)
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def item_features(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Genres (two slots) and year of each item: items 2 and 3 share both, 4 differs in genres, 5 in year."""
    genres = {2: [2, 3], 3: [2, 3], 4: [4, 0], 5: [2, 3]}
    years = {2: 2, 3: 2, 4: 2, 5: 3}
    return (
        np.array([genres.get(int(i), [2 + int(i) % 4, 0]) for i in items]),
        np.array([years.get(int(i), 2 + int(i) % 3) for i in items]),
    )


def samples(items, n_per_item=6, seed=0, history_items=(10, 11)) -> dict[str, torch.Tensor]:
    """``n_per_item`` samples of each item, labels from user taste x item genre; histories hold only
    ``history_items`` (so a test can tell history rows from the tasks' own)."""
    rng = np.random.default_rng(seed)
    item = np.repeat(np.asarray(items), n_per_item)
    user = rng.integers(2, VOCAB["user"], len(item))
    genres, year = item_features(item)
    history = rng.choice([PAD, *history_items], (len(item), 3))
    label = ((user % 2 == genres[:, 0] % 2) ^ (rng.random(len(item)) < 0.2)).astype(np.float32)
    arrays = {"user": user, "item": item, "genres": genres, "history": history, "year": year, "label": label}
    return {name: torch.from_numpy(np.asarray(values)) for name, values in arrays.items()}


def model(seed=0) -> EmerG:
    torch.manual_seed(seed)
    return build_model("EmerG", VOCAB, SMALL)


def snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in net.named_parameters()}


def test_the_graph_comes_from_the_items_features_not_its_id():
    net = model()
    batch = samples([2, 3, 4, 5], n_per_item=1)
    batch["user"] = torch.tensor([2, 3, 4, 5])  # the graph is the item's: the user does not enter it
    graph = net.graph(batch)
    assert graph.shape == (4, net.fields.n_fields, net.fields.n_fields)
    assert ((graph > 0) & (graph < 1)).all()
    assert torch.equal(graph[0], graph[1])  # same genres and year, different ids: the same graph
    assert not torch.allclose(graph[0], graph[2])  # other genres
    assert not torch.allclose(graph[0], graph[3])  # other year
    # After training the items have graph offsets of their own, but the hypernetwork's part stays a
    # function of the features.
    fit(net, samples([2, 3, 4, 5]), None, CtrTrainConfig(epochs=2, batch_size=8, learning_rate=0.05))
    scores = net.graph_scores(batch)
    assert torch.equal(scores[0], scores[1]) and not torch.allclose(scores[0], scores[2])
    assert net.graph_offset.weight[2:6].abs().sum() > 0


@pytest.mark.parametrize("self_loops", [True, False])
def test_the_gnn_on_a_fully_connected_graph_computes_the_interactions_by_hand(self_loops):
    """3 fields, dim 2, W = I: on the complete graph every field's message is s = e_0 + e_1 + e_2 (without
    self loops s - e_f), so layer 1 = e_f * s (order 2) and layer 2 = e_f * s * s (order 3)."""
    gnn = InteractionGNN(dim=2, layers=2)
    with torch.no_grad():
        for weight in gnn.weights:
            weight.weight.copy_(torch.eye(2))
    e = torch.tensor([[[1.0, 2.0], [3.0, 1.0], [2.0, 2.0]]])  # positive, so LeakyReLU is the identity
    graph = torch.ones(1, 3, 3) - (0 if self_loops else torch.eye(3))
    h0, h1, h2 = gnn(graph, e)
    if self_loops:  # s = [6, 5] for every field
        expected_h1 = [[6.0, 10.0], [18.0, 5.0], [12.0, 10.0]]
        expected_h2 = [[36.0, 50.0], [108.0, 25.0], [72.0, 50.0]]
    else:  # messages [5, 3], [3, 4], [4, 3]
        expected_h1 = [[5.0, 6.0], [9.0, 4.0], [8.0, 6.0]]
        expected_h2 = [[25.0, 18.0], [27.0, 16.0], [32.0, 18.0]]
    assert torch.equal(h0, e)
    assert torch.equal(h1, torch.tensor([expected_h1]))
    assert torch.equal(h2, torch.tensor([expected_h2]))


def test_the_gnn_weights_an_interaction_by_its_edges():
    """Layer 1 of field f is e_f * sum_j A[f, j] (e_j W): with one edge 0 -> 2 of weight 0.5 it is
    0.5 * e_0 * (e_2 W) at field 0 and zero elsewhere; W acts before the sum."""
    gnn = InteractionGNN(dim=2, layers=1)
    w = torch.tensor([[1.0, 2.0], [0.0, -1.0]])  # nn.Linear computes x @ weight.T
    with torch.no_grad():
        gnn.weights[0].weight.copy_(w)
    e = torch.tensor([[[1.0, 2.0], [3.0, 1.0], [2.0, -2.0]]])
    graph = torch.zeros(1, 3, 3)
    graph[0, 0, 2] = 0.5
    _, h1 = gnn(graph, e)
    e2w = e[0, 2] @ w.T  # [2 - 4, 0 + 2] = [-2, 2]
    assert torch.equal(h1[0, 0], 0.5 * e[0, 0] * e2w)  # last layer: no activation, the sign is kept
    assert torch.equal(h1[0, 1:], torch.zeros(2, 2))


def test_the_inner_loop_adapts_only_the_tasks_item_rows_and_leaves_the_module_alone():
    net = model()
    support = samples([2, 3, 4], n_per_item=4)
    before = snapshot(net)
    adapted, cold_loss = adapt(net, support, EmergTrainConfig(inner_lr=0.5, inner_steps=2))
    assert all(torch.equal(param, before[name]) for name, param in net.named_parameters())  # not mutated
    assert set(adapted) == set(EmerG.item_specific) == {"fields.item.weight", "graph_offset.weight"}
    assert cold_loss.item() > 0
    tasks = [2, 3, 4]
    others = [i for i in range(VOCAB["item"]) if i not in tasks]
    for name, table in adapted.items():
        assert torch.equal(table[others], before[name][others])  # history items, padding, OOV: the module's
        assert (table[tasks] != 0).any(dim=1).all()  # every task's rows moved off their cold start


def test_the_outer_step_trains_the_shared_parameters_and_not_the_tasks_rows():
    net = model()
    config = EmergTrainConfig(inner_lr=0.5)
    support, query = samples([2, 3, 4], n_per_item=4, seed=1), samples([2, 3, 4], n_per_item=4, seed=2)
    optimizer = torch.optim.Adam(shared_parameters(net), lr=0.01)
    before = snapshot(net)
    meta_step(net, optimizer, support, query, config)
    after = snapshot(net)
    for name in ("hypernetwork.1.weight", "gnn.weights.0.weight", "output.weight", "fields.user.weight"):
        assert not torch.equal(after[name], before[name]), name
    # A task's rows start cold, so the outer loss does not depend on their values: they stay. History
    # items' rows are shared and do train; graph offsets never do in meta-training.
    items = after["fields.item.weight"]
    assert torch.equal(items[[2, 3, 4]], before["fields.item.weight"][[2, 3, 4]])
    assert not torch.equal(items[[10, 11]], before["fields.item.weight"][[10, 11]])
    assert torch.equal(after["graph_offset.weight"], before["graph_offset.weight"])


def test_second_order_differentiates_through_the_inner_step():
    first, second = model(), model()
    support, query = samples([2, 3], seed=1), samples([2, 3], seed=2)
    for net, order in ((first, False), (second, True)):
        config = EmergTrainConfig(inner_lr=0.5, second_order=order)
        meta_step(net, torch.optim.SGD(shared_parameters(net), lr=0.1), support, query, config)
    # The inner gradient's own gradient reaches the shared parameters (here most visibly the readout).
    assert (first.output.weight - second.output.weight).abs().max() > 1e-5


def test_meta_train_reports_its_tasks_and_keeps_the_best_epoch():
    net = model()
    train = samples([2, 3, 4, 5, 6, 7], n_per_item=8)
    train = take(train, torch.cat([torch.arange(0, 48), torch.tensor([0])]))  # item 2 once more: 9 rows
    short = samples([8], n_per_item=3)  # fewer than min_samples: not a task
    tensors = {name: torch.cat([train[name], short[name]]) for name in train}
    val = samples([2, 3, 4, 5], seed=5)
    config = EmergTrainConfig(meta_epochs=3, tasks_per_step=4)
    report = meta_train(net, tensors, config, val=val, seed=0)
    assert (report.n_tasks, report.n_support, report.n_query) == (6, 5 * 4 + 4, 5 * 4 + 5)  # 9 rows: 4 + 5
    assert report.steps == 3 * 2 and len(report.val_auc) == 3 and report.best_epoch >= 1
    assert report.to_dict()["n_tasks"] == 6
    p = predict_proba(net, val)
    assert ((p > 0) & (p < 1)).all()
    with pytest.raises(ConfigError, match="emerg.min_samples: no item has 4 or more samples"):
        meta_train(model(), short, config)


def test_meta_train_stops_when_the_val_auc_has_not_improved_for_patience_epochs(monkeypatch):
    import llm4rec.ctr.emerg_train as emerg_train

    aucs = iter([0.6, 0.7, 0.65, 0.68, 0.69, 0.9])  # best at epoch 2, then 3 epochs without a gain
    monkeypatch.setattr(emerg_train.metrics, "auc", lambda labels, scores: next(aucs))
    train = samples([2, 3, 4, 5], n_per_item=8)
    report = meta_train(model(), train, EmergTrainConfig(meta_epochs=6, tasks_per_step=4, patience=3), val=train)
    assert report.val_auc == [0.6, 0.7, 0.65, 0.68, 0.69] and report.best_epoch == 2
    aucs = iter([0.6, 0.5, 0.4])
    report = meta_train(model(), train, EmergTrainConfig(meta_epochs=3, tasks_per_step=4, patience=None), val=train)
    assert len(report.val_auc) == 3 and report.best_epoch == 1


def test_warm_up_moves_only_the_new_items_rows_and_fits_them():
    net = model()
    fit(net, samples([2, 3, 4, 5]), None, CtrTrainConfig(epochs=2, batch_size=8, learning_rate=0.05))
    new = samples([6, 7], n_per_item=5, seed=3, history_items=(2, 3))  # histories read old items' rows
    loss_before = metrics.logloss(new["label"].numpy(), predict_proba(net, new))
    before = snapshot(net)
    warm_up(net, new, EmergTrainConfig(warm_steps=12, warm_lr=0.05))
    after = snapshot(net)
    for name in after:
        if name in EmerG.item_specific:
            assert not torch.equal(after[name][[6, 7]], before[name][[6, 7]]), name
            rest = [i for i in range(VOCAB["item"]) if i not in (6, 7)]
            assert torch.equal(after[name][rest], before[name][rest]), name
        else:
            assert torch.equal(after[name], before[name]), name
    assert metrics.logloss(new["label"].numpy(), predict_proba(net, new)) < loss_before


def test_it_trains_with_the_standard_fit_and_grows_without_moving_old_scores():
    net = model()
    train, val = samples([2, 3, 4, 5, 6], n_per_item=10), samples([2, 3, 4, 5, 6], seed=4)
    report = fit(net, train, val, CtrTrainConfig(epochs=3, batch_size=16, learning_rate=0.02), seed=0)
    assert report.best_epoch >= 1
    p = predict_proba(net, val)
    assert ((p > 0) & (p < 1)).all()
    net.grow({**VOCAB, "item": VOCAB["item"] + 3, "genre": VOCAB["genre"] + 1})
    assert net.fields.item.num == net.graph_offset.num == VOCAB["item"] + 3
    assert torch.equal(net.graph_offset.weight[VOCAB["item"] :], torch.zeros(3, net.graph_offset.dim))
    assert np.allclose(predict_proba(net, val), p)
    unseen = dict(val, item=torch.full_like(val["item"], OOV))
    assert np.isfinite(predict_proba(net, unseen)).all()


@pytest.mark.parametrize("device", DEVICES)
def test_meta_training_and_warm_up_run_on_the_device_given(device):
    net = model().to(device)
    tensors = {name: values.to(device) for name, values in samples([2, 3, 4, 5], n_per_item=6).items()}
    meta_train(net, tensors, EmergTrainConfig(meta_epochs=1), val=tensors)
    new = {name: values.to(device) for name, values in samples([6, 7], seed=3).items()}
    warm_up(net, new, EmergTrainConfig(warm_steps=2))
    assert all(param.device.type == torch.device(device).type for param in net.parameters())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"inner_lr": 0}, "emerg.inner_lr: must be > 0"),
        ({"meta_lr": -1.0}, "emerg.meta_lr: must be > 0"),
        ({"warm_steps": 0}, "emerg.warm_steps: must be >= 1"),
        ({"support_share": 1.0}, "emerg.support_share: expected a value in (0, 1)"),
        ({"support_weight": 2.0}, "emerg.support_weight: expected a value in [0, 1]"),
        ({"min_samples": 1}, "emerg.min_samples: must be >= 2"),
        ({"patience": 0}, "emerg.patience: must be >= 1 or null"),
    ],
)
def test_bad_training_options_name_the_field(changes, message):
    with pytest.raises(ConfigError) as error:
        EmergTrainConfig(**changes)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_gnn_layers_is_checked_and_only_keyed_when_set():
    with pytest.raises(ConfigError, match=r"model.gnn_layers: must be an integer in 1\.\.8, got 0"):
        ModelOptions(gnn_layers=0)
    from llm4rec.catalogue import keyed_settings
    from llm4rec.ctr.config import CtrConfig

    assert "gnn_layers" not in keyed_settings(CtrConfig(), ["model"])["model"]
    assert keyed_settings(CtrConfig(model=ModelOptions(gnn_layers=2)), ["model"])["model"]["gnn_layers"] == 2
