"""User and item features as CTR fields (``features.side_features``): off by default, leaving every model's
inputs as they were; when set, fields every model embeds, unknown values through the OOV index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llm4rec.config import from_dict
from llm4rec.ctr import catalogue
from llm4rec.ctr.config import CtrConfig
from llm4rec.ctr.features import OOV, FeatureConfig, build_feature_table, known_by
from llm4rec.ctr.models import MODELS, build_model
from llm4rec.ctr.models.base import ModelOptions
from llm4rec.ctr.side_features import SIDE_FEATURES, age_group, decade, zip_region
from llm4rec.ctr.train import CtrTrainConfig, fit, predict_proba
from llm4rec.ctr.updates import CtrUpdateMethod, timeline_features
from llm4rec.data.periods import PeriodConfig, build_timeline
from llm4rec.data.tables import RecDataset, canonical_items, canonical_users
from llm4rec.errors import ConfigError
from tests.conftest import synthetic_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

TINY = ModelOptions(embedding_dim=4, mlp=[8], attention_mlp=[4])
ONE_EPOCH = CtrTrainConfig(epochs=1, patience=1, batch_size=256)
USER_AND_ITEM = ["age", "gender", "occupation", "zip", "year"]
BASE_FIELDS = {"user", "item", "genres", "history", "label"}


def featured_dataset() -> RecDataset:
    """The synthetic dataset with a users table (user 1 absent from it, user 2 without an age) and item years
    (item 1 without one)."""
    dataset = synthetic_dataset(n=1500)
    ids = sorted(dataset.interactions["user_id"].unique(), key=int)
    users = pd.DataFrame(
        {
            "user_id": ids,
            "age": [str(10 + int(u)) for u in ids],
            "gender": ["MF"[int(u) % 2] for u in ids],
            "occupation": [["writer", "artist", "other"][int(u) % 3] for u in ids],
            "zip": [f"{int(u) % 10}0000" for u in ids],
        }
    )
    users.loc[users["user_id"] == "2", "age"] = ""
    users = users[users["user_id"] != "1"]
    items = dataset.items.assign(year=[None if i == "1" else str(1960 + int(i)) for i in dataset.items["item_id"]])
    return RecDataset(
        dataset.name,
        dataset.interactions,
        canonical_items(items, "items"),
        users=canonical_users(users, "users", dataset.interactions["user_id"]),
    )


@pytest.fixture(scope="module")
def timeline():
    return build_timeline(featured_dataset(), PeriodConfig(n_periods=4))


def test_tokens():
    assert [age_group(a) for a in (1, 17, 18, 24, 25, 49, 50, 56, 73)] == [
        "<18", "<18", "18-24", "18-24", "25-34", "45-49", "50-55", "56+", "56+",
    ]  # fmt: skip
    assert decade(1995) == "1990s" and decade(2000) == "2000s"
    assert zip_region("85711") == "8" and zip_region("t8h1n") == "T"


def test_default_leaves_the_features_as_they_were(timeline):
    assert FeatureConfig().side_features == []
    table = timeline_features(timeline, 3.0, FeatureConfig())
    assert table.side == {}
    encoders = table.new_encoders()
    rows = np.arange(len(table))
    encoders.grow(table, rows)
    assert set(encoders.encode(table, rows[:10])) == BASE_FIELDS
    assert set(encoders.vocab_sizes()) == {"user", "item", "genre"}
    for name in MODELS:
        torch.manual_seed(0)
        model = build_model(name, encoders.vocab_sizes(), TINY)
        assert not any(".side." in n or n.startswith("side.") for n, _ in model.named_parameters()), name
    # The option at its default stays out of resume keys: results computed before it keep theirs.
    method = catalogue.parse_method("IU", windowed=False)
    assert catalogue.key_settings(method, CtrConfig())["features"] == {"history_length": 30, "max_genres": 8}
    keyed = catalogue.key_settings(method, from_dict(CtrConfig, {"features": {"side_features": ["age"]}}))
    assert keyed["features"]["side_features"] == ["age"]


def test_the_option_adds_one_field_per_feature(timeline):
    table = timeline_features(timeline, 3.0, FeatureConfig(side_features=USER_AND_ITEM))
    assert list(table.side) == USER_AND_ITEM
    assert table.side["gender"].names.tolist() == ["F", "M"]
    encoders = table.new_encoders()
    rows = np.arange(len(table))
    encoders.grow(table, rows)
    tensors = encoders.encode(table, rows)
    assert set(tensors) == BASE_FIELDS | set(USER_AND_ITEM)
    assert all(tensors[name].shape == tensors["user"].shape for name in USER_AND_ITEM)
    assert set(encoders.vocab_sizes()) == {"user", "item", "genre", *USER_AND_ITEM}
    # A sample's token is its user's (or item's) value.
    users = timeline.dataset.users.set_index("user_id")
    for row in range(0, len(table), 97):
        user = table.user_names[table.user[row]]
        if user in users.index:
            code = table.side_codes("occupation", np.array([row]))[0]
            assert table.side["occupation"].names[code] == users.loc[user, "occupation"]


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_and_predicts_with_side_features(timeline, name):
    table = timeline_features(timeline, 3.0, FeatureConfig(side_features=USER_AND_ITEM))
    method = CtrUpdateMethod(name, "FR", table, TINY, ONE_EPOCH, seed=0)
    method.fit(timeline, 1)
    if hasattr(method.model, "fields"):  # MF adds the features to its user and item vectors instead
        assert method.model.fields.n_fields == 4 + len(USER_AND_ITEM)
    assert {t.vocab for t in method.model.embedding_tables().values()} >= {"age", "year"}
    probability = method.predict_proba(timeline.table[timeline.table["period"] == 2])
    assert np.isfinite(probability).all() and ((probability > 0) & (probability < 1)).all()
    # The features reach the logit: another age token for the same samples changes the scores.
    tensors = method.encode(np.flatnonzero(timeline.table["period"].to_numpy() == 2))
    before = predict_proba(method.model, tensors)
    with torch.no_grad():
        for table_ in method.model.embedding_tables().values():
            if table_.vocab == "age":
                table_.weight[2:] += 1.0
    assert not np.allclose(predict_proba(method.model, tensors), before)


def test_missing_features_fall_back_to_the_unknown_index(timeline):
    table = timeline_features(timeline, 3.0, FeatureConfig(side_features=["age", "gender", "year"]))
    encoders = table.new_encoders()
    rows = np.arange(len(table))
    encoders.grow(table, rows)
    tensors = encoders.encode(table, rows)
    users = table.user_names[table.user]
    items = table.item_names[table.item]
    assert (tensors["age"][users == "1"] == OOV).all() and (users == "1").any()  # not in the users table
    assert (tensors["gender"][users == "1"] == OOV).all()
    assert (tensors["age"][users == "2"] == OOV).all() and (users == "2").any()  # age missing
    assert (tensors["gender"][users == "2"] > OOV).all()  # its gender is known
    assert (tensors["year"][items == "1"] == OOV).all() and (items == "1").any()  # no year
    assert (tensors["age"][(users != "1") & (users != "2")] > OOV).all()
    # A value never seen while growing is unknown too, and an earlier vocabulary sees later values as unknown.
    fresh = table.new_encoders()
    first = np.flatnonzero(timeline.table["period"].to_numpy() == 0)
    fresh.grow(table, first)
    later = fresh.encode(table, rows)
    unseen = ~np.isin(table.side_codes("year", rows), table.side_codes("year", first))
    assert (later["year"][unseen] == OOV).all()
    seen_then = known_by(tensors, fresh.vocab_sizes())
    assert (seen_then["year"] < fresh.vocab_sizes()["year"]).all()
    torch.manual_seed(0)
    model = build_model("DeepFM", encoders.vocab_sizes(), TINY)
    fit(model, tensors, tensors, ONE_EPOCH, seed=0)  # OOV rows train without error


def test_bad_options():
    with pytest.raises(ConfigError, match=r"features\.side_features: unknown feature\(s\) \['height'\]; available"):
        from_dict(CtrConfig, {"features": {"side_features": ["age", "height"]}})
    with pytest.raises(ConfigError, match=r"features\.side_features: a feature is listed twice"):
        FeatureConfig(side_features=["age", "age"])
    assert list(SIDE_FEATURES) == ["age", "gender", "occupation", "zip", "year", "brand"]


def test_a_feature_the_dataset_lacks_is_a_config_error():
    dataset = synthetic_dataset(n=600)  # no users table, no years, like Amazon's users
    samples = dataset.interactions
    with pytest.raises(ConfigError, match=r"features\.side_features: 'age' is known for no user of this dataset"):
        build_feature_table(samples, samples, dataset.items, 5, 4, dataset.users, ["age"])
    with pytest.raises(ConfigError, match=r"'brand' is known for no item"):
        build_feature_table(samples, samples, dataset.items, 5, 4, dataset.users, ["brand"])
