"""The cold-start warm-up protocol: the item split and rounds, what each stage may learn from, MetaEmb, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from llm4rec.config import from_dict
from llm4rec.ctr.coldstart import (
    ROUNDS,
    ColdStartConfig,
    WarmUpRun,
    coldstart_features,
    coldstart_samples,
    split_items,
)
from llm4rec.ctr.config import CtrConfig
from llm4rec.data.tables import RecDataset, canonical_interactions, canonical_items
from llm4rec.errors import ConfigError
from llm4rec.eval import metrics


def popularity_dataset(seed: int = 0) -> RecDataset:
    """Items 1-6 have 60 ratings each (old), items 7-18 have 12-20 (new), items 19-20 three (left out)."""
    rng = np.random.default_rng(seed)
    counts = {**{i: 60 for i in range(1, 7)}, **{i: 12 + (i % 5) * 2 for i in range(7, 19)}, 19: 3, 20: 3}
    items = np.concatenate([[i] * n for i, n in counts.items()])
    rng.shuffle(items)
    quality = rng.normal(0, 1.2, 21)
    rating = np.clip(np.round(3 + quality[items] + rng.normal(0, 0.7, len(items))), 1, 5)
    raw = pd.DataFrame({"user_id": rng.integers(1, 30, len(items)), "item_id": items, "rating": rating,
                        "timestamp": 1_000_000 + np.arange(len(items)) * 60})  # fmt: skip
    catalogue = pd.DataFrame({"item_id": np.arange(1, 21), "title": [f"Movie {i} (199{i % 10})" for i in range(1, 21)],
                              "genres": [["A"] if i % 3 else ["B", "C"] for i in range(1, 21)],
                              "year": [1990 + i % 4 for i in range(1, 21)]})  # fmt: skip
    return RecDataset("ml-100k", canonical_interactions(raw, "popularity"), canonical_items(catalogue, "popularity"))


CONFIG = {"old_item_min": 40, "k": 3, "min_test": 2}


def tiny_config(models=("DeepFM",), **coldstart) -> CtrConfig:
    return from_dict(
        CtrConfig,
        {"protocol": "coldstart", "models": list(models), "coldstart": {**CONFIG, **coldstart},
         "features": {"history_length": 5, "side_features": ["year"]}, "model": {"embedding_dim": 4},
         "train": {"epochs": 2, "batch_size": 64}},
    )  # fmt: skip


def test_the_split_sends_each_new_items_samples_to_the_rounds_in_time_order():
    samples = coldstart_samples(popularity_dataset(), 3.0)
    split = split_items(samples, from_dict(ColdStartConfig, CONFIG))
    assert list(split.old_items) == [str(i) for i in range(1, 7)]
    assert sorted(split.new_items, key=int) == [str(i) for i in range(7, 19)]  # 19, 20: fewer than 3 K + 2
    item = samples["item_id"].to_numpy()
    for new in split.new_items:
        own = np.flatnonzero(item == new)  # in time order
        assert list(split.rounds["warm-a"][np.isin(split.rounds["warm-a"], own)]) == list(own[:3])
        assert list(split.rounds["warm-b"][np.isin(split.rounds["warm-b"], own)]) == list(own[3:6])
        assert list(split.rounds["warm-c"][np.isin(split.rounds["warm-c"], own)]) == list(own[6:9])
        assert list(split.test[np.isin(split.test, own)]) == list(own[9:])
    old = np.concatenate([split.base_train, split.base_val])
    assert set(item[old]) == set(split.old_items) and split.base_train.max() < split.base_val.min()  # val: newest


def test_no_round_reaches_training_before_its_round_and_the_test_never_does():
    dataset = popularity_dataset()
    config = tiny_config(models=("DeepFM",), warm_ups=["base"])
    samples = coldstart_samples(dataset, 3.0)
    split = split_items(samples, config.coldstart)
    table = coldstart_features(dataset, samples, split, config.features)
    run = WarmUpRun("DeepFM", "base", table, split, config, seed=0, device="cpu")
    run.fit_base()
    cold = run.predict()
    assert [set(r) for r in run.trained_rows] == [set(split.base_train)]
    for i, round_name in enumerate(ROUNDS[1:]):
        run.warm(round_name)
        learnt = np.concatenate(run.trained_rows)
        later = [split.rounds[r] for r in ROUNDS[i + 2 :]]
        assert not np.isin(learnt, np.concatenate([split.test, *later])).any()
        assert set(run.trained_rows[-1]) == set(split.rounds[round_name])
    assert not np.allclose(run.predict(), cold)  # the rounds did change the new items' scores
    # The test rows' labels enter no history: a history holds positives, and the test's are zeroed in the source.
    assert (table.history >= 0).any()
    label = samples["label"].to_numpy().copy()
    label[split.test] = 0
    rebuilt = coldstart_features(dataset, samples.assign(label=label), split, config.features)
    np.testing.assert_array_equal(rebuilt.history, table.history)  # the test labels never mattered to a history


def test_a_warm_up_round_updates_only_the_item_id_embeddings():
    dataset = popularity_dataset()
    config = tiny_config(warm_ups=["base"])
    samples = coldstart_samples(dataset, 3.0)
    split = split_items(samples, config.coldstart)
    run = WarmUpRun("DeepFM", "base", coldstart_features(dataset, samples, split, config.features), split, config, 0,
                    "cpu")  # fmt: skip
    run.fit_base()
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    run.warm("warm-a")
    changed = {
        n for n, p in run.model.named_parameters() if p.shape != before[n].shape or not torch.equal(p, before[n])
    }
    assert changed == {n for n, t in run.model.embedding_tables().items() if t.vocab == "item" for n in [f"{n}.weight"]}


def test_metaemb_learns_without_moving_the_base_model_and_fills_the_new_items_rows():
    dataset = popularity_dataset()
    config = tiny_config(warm_ups=["MetaEmb"], metaemb={"epochs": 2, "items_per_batch": 3})
    samples = coldstart_samples(dataset, 3.0)
    split = split_items(samples, config.coldstart)
    table = coldstart_features(dataset, samples, split, config.features)
    from accelerate.utils import set_seed

    set_seed(0)
    base = WarmUpRun("DeepFM", "base", table, split, config, 0, "cpu")
    base.fit_base()
    set_seed(0)  # as the protocol seeds every run: the same base model, then the generator
    meta = WarmUpRun("DeepFM", "MetaEmb", table, split, config, 0, "cpu")
    meta.fit_base()
    new_rows = torch.as_tensor(meta.encoders.items.transform(np.unique(table.item[split.test])))
    for (name, p), (_, q) in zip(base.model.named_parameters(), meta.model.named_parameters(), strict=True):
        if name == "fields.item.weight":
            old = torch.ones(len(p), dtype=torch.bool)
            old[new_rows] = False
            torch.testing.assert_close(p[old], q[old])  # old items' rows as trained
            assert not torch.allclose(p[new_rows], q[new_rows])  # new items' rows generated
        else:
            torch.testing.assert_close(p, q)
    generated = meta.model.fields.item.weight[new_rows]
    genres = table.item_genres[np.unique(table.item[split.test])][:, 0]
    same = genres[:, None] == genres[None, :]  # items with the same features get the same embedding
    years = table.side["year"].codes[np.unique(table.item[split.test])]
    same &= years[:, None] == years[None, :]
    i, j = np.argwhere(np.triu(same, 1))[0]
    torch.testing.assert_close(generated[i], generated[j])


def test_bad_settings_name_the_option():
    samples = coldstart_samples(popularity_dataset(), 3.0)
    with pytest.raises(ConfigError, match=r"coldstart.k: K = 20 is larger than a new item's samples allow"):
        from_dict(ColdStartConfig, {"old_item_min": 40, "k": 20})
    with pytest.raises(ConfigError, match="coldstart.old_item_min: the split leaves no new items"):
        split_items(samples, from_dict(ColdStartConfig, {"old_item_min": 11, "k": 3, "min_test": 2}))
    with pytest.raises(ConfigError, match="coldstart.old_item_min: no item has more than 500"):
        split_items(samples, from_dict(ColdStartConfig, {"old_item_min": 500, "k": 3, "min_test": 2}))
    with pytest.raises(ConfigError, match="coldstart.warm_ups"):
        from_dict(ColdStartConfig, {"warm_ups": ["MWUF"]})
    with pytest.raises(ConfigError, match="incremental.methods apply to protocol 'periods' only"):
        from_dict(CtrConfig, {"protocol": "coldstart", "incremental": {"methods": ["SPMF"]}, "updates": []})


def test_f1_at_the_mean_score_is_sklearns_f1_with_that_threshold():
    y, p = np.array([1, 0, 1, 1, 0, 0]), np.array([0.9, 0.8, 0.4, 0.35, 0.1, 0.2])  # mean 0.458
    assert metrics.f1_at_mean(y, p) == pytest.approx(f1_score(y, [1, 1, 0, 0, 0, 0]))
    assert metrics.f1_at_mean(y, p) == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))  # tp 1, fp 1, fn 2


def test_a_run_scores_every_round_for_every_method_and_writes_its_table(tmp_path, capsys):
    from llm4rec.ctr.coldstart import run_coldstart
    from llm4rec.ctr.coldstart_report import print_and_write
    from llm4rec.eval.report import read_results

    config = tiny_config(models=("DeepFM", "EmerG"), warm_ups=["base"])
    config = from_dict(CtrConfig, {**_as_dict(config), "emerg": {"meta_epochs": 1, "min_samples": 4}})
    rows, report = run_coldstart(popularity_dataset(), config, seed=0, progress=False)
    assert [(r.method, r.period) for r in rows] == [(m, r) for m in ("DeepFM-base", "EmerG") for r in ROUNDS]
    assert all(0 <= r.auc <= 1 and 0 <= r.f1 <= 1 and r.n == report["split"]["test"] for r in rows)
    print_and_write(config, rows, report, 1.0, str(tmp_path))
    assert "| EmerG | 1 |" in capsys.readouterr().out
    assert [r.period for r in read_results(tmp_path)] == [r.period for r in rows]
    assert (tmp_path / "auc_per_round.png").stat().st_size > 0


def _as_dict(config) -> dict:
    import dataclasses

    data = dataclasses.asdict(config)
    data["data"] = {"name": config.data.name}
    return {k: v for k, v in data.items() if k in ("protocol", "models", "coldstart", "features", "model", "train")}


def test_the_shipped_coldstart_configs_load():
    from pathlib import Path

    from llm4rec.config import load_yaml

    for path in sorted(Path(__file__).parents[1].glob("configs/ctr/*coldstart.yaml")):
        config = from_dict(CtrConfig, load_yaml(path), where=str(path))
        assert config.protocol == "coldstart" and "EmerG" in config.models and config.run_seeds == [0, 1, 2]
