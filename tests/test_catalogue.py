"""The method catalogues: every entry builds through a view of the sections it declares, every declared section
is part of the resume key, an undeclared read fails, and the docs' method list is the catalogues' own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llm4rec.catalogue import ConfigView, MethodEntry, UndeclaredSection, keyed_settings
from llm4rec.compare.config import ExperimentConfig
from llm4rec.compare.methods import catalogue_markdown, parse_method
from llm4rec.config import from_dict
from llm4rec.ctr import catalogue as ctr
from llm4rec.ctr.config import CtrConfig
from llm4rec.llm import catalogue as llm

ARRIVING_TIMELINE = {"n": 1200, "n_periods": 4}


def ctr_config(**changes) -> CtrConfig:
    return from_dict(CtrConfig, {"pretrain_periods": 2, "data": {"periods": {"n_periods": 4}}, **changes})


def every_ctr_method() -> list[ctr.CtrMethod]:
    names = [n.replace("BU<w>", "BU2") for n in ctr.method_names()]
    return [ctr.parse_method(n) for n in names]


def set_path(config, path: str, value) -> None:
    *parents, last = path.split(".")
    for part in parents:
        config = getattr(config, part)
    object.__setattr__(config, last, value)


@pytest.mark.parametrize("method", every_ctr_method(), ids=lambda m: m.name)
def test_every_ctr_method_builds_from_the_sections_it_declares(method, features):
    config = ctr_config(window=method.window or 3)
    built = ctr.build_method(method, "DeepFM", features, config, seed=0)  # an undeclared read raises
    assert built.name == f"DeepFM-{method.name}"
    assert parse_method(built.name).entry == method  # the row name parses back to the same method


@pytest.mark.parametrize("method", every_ctr_method(), ids=lambda m: m.name)
def test_every_declared_ctr_section_changes_the_key(method):
    config = ctr_config()
    before = ctr.key_settings(method, config)
    for path in method.sections:
        changed = ctr_config()
        set_path(changed, path, "changed")
        assert ctr.key_settings(method, changed) != before, f"{method.name}: {path} is not in its key"


@pytest.mark.parametrize("entry", list(llm.ENTRIES.values()), ids=lambda e: e.name)
def test_every_declared_llm_section_changes_the_compare_key(entry):
    def experiment():
        return from_dict(
            ExperimentConfig,
            {"methods": [entry.name], "first_test_period": 7, "llm": {"backbone": {"model_name_or_path": "x"}}},
        )

    before = experiment()
    key = before.unit_key(before.specs[0], 0, "data")
    for path in llm.sections_of(entry):
        changed = experiment()
        set_path(changed.lsat, path, "changed")
        assert changed.unit_key(changed.specs[0], 0, "data") != key, f"{entry.name}: {path} is not in its key"
    seeded = experiment()
    assert seeded.unit_key(seeded.specs[0], 1, "data") != key  # the seed is keyed apart, not dropped


def test_a_builder_reading_an_undeclared_section_fails_at_once(features, monkeypatch):
    def sneaky(model, features, view, seed):
        return view.incremental.sml  # declared: incremental.replay only

    monkeypatch.setitem(
        ctr.ENTRIES, "Sneaky", MethodEntry("Sneaky", "reads more than it says", ("incremental.replay",), sneaky)
    )
    with pytest.raises(UndeclaredSection, match=r"DeepFM-Sneaky reads config section 'incremental.sml'"):
        ctr.build_method("Sneaky", "DeepFM", features, ctr_config())


def test_a_view_answers_declared_paths_only_and_cannot_be_changed():
    config = ctr_config()
    view = ConfigView(config, ["train", "incremental.asmg"], "test")
    assert view.train is config.train and view.incremental.asmg is config.incremental.asmg
    with pytest.raises(UndeclaredSection, match="'incremental.replay'"):
        _ = view.incremental.replay
    with pytest.raises(UndeclaredSection, match="'model'"):
        _ = view.model
    with pytest.raises(UndeclaredSection, match="may not change"):
        view.train = None
    settings = keyed_settings(config, ["train", "incremental.asmg"], exclude=["train.seed"])
    assert settings == {
        "train": dataclasses.asdict(config.train),
        "incremental": {"asmg": dataclasses.asdict(config.incremental.asmg)},
    }


class FakeStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, role: str, period: int) -> Path:
        return self.root / role / f"period_{period}"


class FakeSession:
    """Enough of a LoraSession for the LSAT methods' own logic: trained adapters are paths, margins are seeded."""

    def __init__(self, timeline, root: Path) -> None:
        self.timeline, self.store, self.is_main, self.trained = timeline, FakeStore(root), False, []

    def ensure_trained(self, path, train_rows, val_rows, max_train_samples, max_val_samples, description,
                       start_from=None, train_changes=None):  # fmt: skip
        self.trained.append(description["role"])
        return path

    def margins(self, paths, rows, passes="one"):
        rng = np.random.default_rng(len(rows))
        return rng.normal(size=(len(paths), len(rows)))


@pytest.mark.parametrize("name", ["LLM-FR", "LLM-FT", "LSAT-long", "LSAT-short", "LSAT-ensemble"])
def test_every_llm_method_fits_and_scores_from_the_sections_it_declares(name, timeline, tmp_path):
    from llm4rec.llm.lsat_config import LsatConfig

    config = from_dict(
        LsatConfig,
        {"backbone": {"model_name_or_path": "x"}, "long_term": {"periods": 1}, "first_test_period": 2,
         "data": {"periods": {"n_periods": 4}}, "samples": {"val": 50}},
    )  # fmt: skip
    session = FakeSession(timeline, tmp_path)
    method = llm.build_method(llm.ENTRIES[name], session, config)
    method.fit(timeline, 2)  # every config read of the fit goes through the view
    p = method.predict_proba(timeline.period(3))
    assert len(p) == len(timeline.period(3)) and np.all((p >= 0) & (p <= 1))
    assert session.trained  # it trained (or reused) adapters through the session


def test_the_llm_families_and_names_come_from_the_catalogue():
    from llm4rec.llm.lsat_config import LsatConfig

    config = from_dict(
        LsatConfig, {"backbone": {"model_name_or_path": "x"}, "task_arithmetic": {"modes": ["ties", "exact"]}}
    )
    assert llm.FAMILIES == ("FR", "FT", "LSAT", "SD-LoRA", "SD-LoRA-RR", "SD-LoRA-KD")
    assert llm.DEFAULT_FAMILIES == ("FR", "FT", "LSAT")  # what a config without `methods` runs
    assert config.method_names() == [
        "FR",
        "FT",
        "LSAT-long",
        "LSAT-short",
        "LSAT-ensemble",
        "LSAT-ta-ties",
        "LSAT-ta-exact",
    ]
    assert {e.lsat_name for e in llm.ENTRIES.values()} >= set(config.method_names())


def test_docs_list_the_catalogues_methods():
    page = (Path(__file__).parents[1] / "docs" / "methods.md").read_text(encoding="utf-8")
    marker = "<!-- generated by `llm4rec methods`: do not edit below -->\n"
    assert page.split(marker, 1)[1] == catalogue_markdown(), "docs/methods.md is stale: rerun `llm4rec methods`"


def test_ctr_config_names_are_checked_against_the_catalogue():
    from llm4rec.errors import ConfigError

    with pytest.raises(ConfigError, match=r"incremental.methods: unknown method 'Nope'"):
        ctr_config(incremental={"methods": ["Nope"]})
    with pytest.raises(ConfigError, match="IU is an update mode; list it under `updates`"):
        ctr_config(incremental={"methods": ["IU"]})
    assert ctr_config(incremental={"methods": ["BU+ReLoop2", "SPMF"]}).incremental.methods == ["BU+ReLoop2", "SPMF"]
    assert pd.Series(ctr.method_names()).is_unique
