"""`llm4rec compare` / `llm4rec report`: one table for both sides, resumable, checked before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm4rec.cli import main
from llm4rec.compare.config import ExperimentConfig
from llm4rec.compare.methods import parse_method, parse_methods
from llm4rec.config import from_dict
from llm4rec.errors import ConfigError

LLM = """
llm:
  seeds: [0]
  backbone: {{model_name_or_path: {backbone}}}
  lora: {{r: 4, alpha: 8}}
  train: {{epochs: 1, batch_size: 8, learning_rate: 0.005}}
  long_term: {{periods: 3}}
  samples: {{history_fit: 32, recent_fit: 24, val: 24}}
  ensemble: {{grid: [0.3, 0.7]}}
"""


CTR = "{pretrain_periods: 2, train: {epochs: 2}}"


def experiment(tmp_path: Path, methods: list[str], backbone: Path | None = None, ctr: str = CTR, **top) -> Path:
    """A config sized for a test: 6 periods of the synthetic ML-100K, tests on 4-5, 40 samples each."""
    data = tmp_path / "data.yaml"
    data.write_text("name: ml-100k\nhistory_length: 3\nperiods: {n_periods: 6}\n")
    settings = {"first_test_period": 4, "test_samples": 40, "seeds": "[0]", **top}
    lines = [f"data: {data}", f"methods: [{', '.join(methods)}]", *(f"{k}: {v}" for k, v in settings.items())]
    text = "\n".join(lines) + f"\nctr: {ctr}\n"
    if backbone is not None:
        text += LLM.format(backbone=backbone)
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    return path


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory``: its bytes and modification time."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file()
    }


# ---------------------------------------------------------------- method names and the config


def test_the_shipped_experiment_configs_load():
    from llm4rec.compare.config import load_experiment

    paths = sorted(Path(__file__).parents[1].glob("configs/experiments/*.yaml"))
    assert [p.name for p in paths] == ["ml-100k-cold-items.yaml", "ml-100k-quick.yaml", "ml-100k.yaml"]
    for path in paths[1:]:
        config = load_experiment(str(path))
        assert {s.side for s in config.specs} >= {"llm", "ctr"}
        assert config.lsat.samples.test == config.test_samples  # the LLM side is scored on the shared rows
    cold = load_experiment(str(paths[0]))  # the CTR side on every tested sample, with the side features
    assert cold.lsat is None and cold.test_samples is None and "EmerG-IU" in [s.name for s in cold.specs]
    assert cold.ctr_config.features.side_features == ["age", "gender", "occupation", "zip", "year"]
    default = load_experiment(str(paths[2]))
    assert (default.llm_seeds, default.ctr_seeds, default.tested_periods) == ([0, 1, 2], [0, 1, 2], [8, 9])
    assert (
        default.lsat.backbone.model_name_or_path == "runs/smollm2-135m"
        and default.lsat.fetch_backbone == "smollm2-135m"
    )
    one_seed = load_experiment(str(paths[2]), {"seeds": [1]})  # --seeds: the sides' own seeds give way
    assert (one_seed.llm_seeds, one_seed.ctr_seeds) == ([1], [1])


def test_method_names_parse_for_both_sides():
    assert parse_method("Popularity").side == "reference"
    assert parse_method("LLM-FT").entry.family == "FT"
    assert parse_method("LSAT-ta-dare_ties").entry.merge_mode == "dare_ties"
    bu = parse_method("DeepFM-BU3+ReLoop2")
    assert (bu.model, bu.entry.config_name, bu.entry.window, bu.entry.with_memory) == ("DeepFM", "BU+ReLoop2", 3, True)
    assert parse_method("EmbMLP-ASMG-GRU").entry.config_name == "ASMG-GRU"
    assert parse_method("DIN-ReLoop2").entry.config_name == "ReLoop2"


@pytest.mark.parametrize("name", ["FR", "DeepFM-BU", "DeepFM-IU+ReLoop2", "Foo-IU", "LSAT-ta-mean", "DeepFM-Nope"])
def test_an_unknown_method_name_lists_the_valid_ones(name):
    with pytest.raises(ConfigError, match=r"is not a method; LLM methods: \['LLM-FR'.*Model in \['MF'"):
        parse_method(name)


def test_a_method_listed_twice_is_refused():
    with pytest.raises(ConfigError, match=r"\['DeepFM-IU'\] listed more than once"):
        parse_methods(["DeepFM-IU", "LLM-FR", "DeepFM-IU"])


def test_sections_refuse_what_the_top_level_sets():
    base = {"methods": ["LLM-FR"], "llm": {"backbone": {"model_name_or_path": "x"}}}
    with pytest.raises(ConfigError, match=r"llm: \['seed'\] are set at the top level"):
        from_dict(ExperimentConfig, {**base, "llm": {**base["llm"], "seed": 3}})
    with pytest.raises(ConfigError, match="samples.test: the tested rows are the experiment's test_samples"):
        from_dict(ExperimentConfig, {**base, "llm": {**base["llm"], "samples": {"test": 10}}})
    with pytest.raises(ConfigError, match="incremental.methods: list the methods"):
        from_dict(ExperimentConfig, {"methods": ["MF-IU"], "ctr": {"incremental": {"methods": ["SPMF"]}}})
    with pytest.raises(ConfigError, match="K <= 7"):
        from_dict(ExperimentConfig, {"methods": ["MF-IU"], "ctr": {"pretrain_periods": 8}})


def test_a_setting_changes_the_key_of_the_methods_that_use_it_only():
    def keys(ctr: dict) -> dict[str, str]:
        config = from_dict(ExperimentConfig, {"methods": ["DeepFM-IU", "DeepFM-ReLoop2", "DeepFM-BU3"], "ctr": ctr})
        return {s.name: config.unit_key(s, 0, "data") for s in config.specs}

    before, after = keys({}), keys({"incremental": {"reloop2": {"weight": 0.7}}})
    assert before["DeepFM-IU"] == after["DeepFM-IU"] and before["DeepFM-BU3"] == after["DeepFM-BU3"]
    assert before["DeepFM-ReLoop2"] != after["DeepFM-ReLoop2"]
    assert keys({"train": {"learning_rate": 0.01}})["DeepFM-IU"] != before["DeepFM-IU"]


# ---------------------------------------------------------------- bad input fails before training


def test_unknown_method_fails_before_anything_runs(prepared, tmp_path, capsys):
    config = experiment(tmp_path, ["DeepFM-IU", "DeepFM-Magic"])
    assert main(["compare", "--config", str(config), "--out", str(tmp_path / "out"), "-q"]) == 2
    error = capsys.readouterr().err
    assert "'DeepFM-Magic' is not a method" in error and "LLM-FR" in error and "SPMF" in error
    assert not (tmp_path / "out").exists()


def test_an_out_dir_of_another_dataset_is_refused_before_training(prepared, tmp_path, capsys):
    out = tmp_path / "out"
    config = experiment(tmp_path, ["MF-IU"])
    assert main(["compare", "--config", str(config), "--out", str(out), "-q"]) == 0
    manifest = json.loads((out / "experiment.json").read_text())
    manifest["dataset"]["data"]["name"] = "ml-1m"
    (out / "experiment.json").write_text(json.dumps(manifest))
    before = snapshot(out / "runs")
    assert main(["compare", "--config", str(config), "--out", str(out), "--methods", "MF-IU,MF-FR", "-q"]) == 2
    assert "holds results of dataset 'ml-1m', and this experiment runs on 'ml-100k'" in capsys.readouterr().err
    assert snapshot(out / "runs") == before  # nothing trained, nothing written

    other = tmp_path / "lsat-out"
    other.mkdir()
    (other / "results.json").write_text("[]")
    assert main(["compare", "--config", str(config), "--out", str(other), "-q"]) == 2
    assert "holds results.json of another command" in capsys.readouterr().err


# ---------------------------------------------------------------- resume, reuse, report


def test_an_interrupted_comparison_resumes_and_reuses_finished_results_byte_for_byte(
    prepared, tiny_backbone_dir, tmp_path, monkeypatch, one_thread
):
    from llm4rec.compare import runner
    from llm4rec.llm.lsat import SingleAdapterMethod

    out = tmp_path / "out"
    config = experiment(tmp_path, ["DeepFM-IU", "LLM-FR", "MF-FR"], backbone=tiny_backbone_dir)
    fit = SingleAdapterMethod.fit

    def ctrl_c_in_second_period(self, timeline, period):
        if period == 4:  # LLM-FR: period 4 is tested and saved, Ctrl-C while fitting for period 5
            raise KeyboardInterrupt
        return fit(self, timeline, period)

    monkeypatch.setattr(SingleAdapterMethod, "fit", ctrl_c_in_second_period)
    assert main(["compare", "--config", str(config), "--out", str(out), "-q"]) == 130
    runs = out / "runs"
    assert sorted(p.name for p in (runs / "DeepFM-IU").glob("*/period_*.json")) == ["period_4.json", "period_5.json"]
    assert [p.name for p in (runs / "LLM-FR").glob("*/period_*.json")] == ["period_4.json"]
    assert not (runs / "MF-FR").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written
    for path in runs.rglob("*.json"):
        json.loads(path.read_text())  # every file that exists reads back
    finished = snapshot(runs / "DeepFM-IU") | {f"LLM-FR/{k}": v for k, v in snapshot(runs / "LLM-FR").items()}

    monkeypatch.setattr(SingleAdapterMethod, "fit", fit)
    built, scored = [], []
    ctr_method, predict = runner.CtrSide.method, SingleAdapterMethod.predict_proba
    monkeypatch.setattr(
        runner.CtrSide, "method", lambda self, spec, seed: built.append(spec.name) or ctr_method(self, spec, seed)
    )
    monkeypatch.setattr(  # the tested period of the scored samples, less one: the period the method fitted through
        SingleAdapterMethod,
        "predict_proba",
        lambda self, s: scored.append(int(s["period"].iloc[0]) - 1) or predict(self, s),
    )
    assert main(["compare", "--config", str(config), "--out", str(out), "-q"]) == 0
    assert built == ["MF-FR"]  # the finished CTR run is not even rebuilt
    assert scored == [4]  # LLM-FR: fitted through 3 and 4 again (adapters from the store), only period 5 scored
    again = snapshot(runs / "DeepFM-IU") | {f"LLM-FR/{k}": v for k, v in snapshot(runs / "LLM-FR").items()}
    for name, (content, mtime) in finished.items():
        if name.endswith(("period_4.json", "period_5.json", ".csv", ".safetensors")):
            assert again[name] == (content, mtime), f"{name} was rewritten"
    results = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["period"]) for r in results} == {
        (m, p) for m in ("DeepFM-IU", "LLM-FR", "MF-FR") for p in (4, 5, "mean")
    }
    assert all(r["n"] == 40 for r in results if r["period"] != "mean")
    assert "llm4rec.compare" in (out / "compare.log").read_text()


def test_report_rebuilds_identical_tables_and_a_changed_setting_reruns_only_its_method(
    prepared, tmp_path, capsys, one_thread
):
    out = tmp_path / "out"
    config = experiment(tmp_path, ["DeepFM-IU", "DeepFM-ReLoop2", "MF-BU2", "Popularity"], seeds="[0, 1]")
    assert main(["compare", "--config", str(config), "--out", str(out), "-q"]) == 0
    tables = {name: (out / name).read_bytes() for name in ("results.json", "results.csv", "results.md")}
    md = tables["results.md"].decode()
    assert "mean ± std over 2 seeds" in md and "| DeepFM-IU | test | 2 |" in md
    assert "| Popularity | test | 1 |" in md  # deterministic: one seed
    assert "on the same 40 samples of each tested period" in md
    for path in [*(out / n for n in tables), out / "auc_per_period.png", out / "auc_mean.png"]:
        path.unlink()
    assert main(["report", str(out), "-q"]) == 0
    assert {name: (out / name).read_bytes() for name in tables} == tables
    assert (out / "auc_per_period.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "auc_mean.png").read_bytes()[:4] == b"\x89PNG"

    runs = out / "runs"
    before = snapshot(runs)
    ctr = "{pretrain_periods: 2, train: {epochs: 2}, incremental: {reloop2: {weight: 0.9}}}"
    config = experiment(tmp_path, ["DeepFM-IU", "DeepFM-ReLoop2", "MF-BU2", "Popularity"], ctr=ctr, seeds="[0, 1]")
    capsys.readouterr()
    assert main(["compare", "--config", str(config), "--out", str(out), "-q"]) == 0
    assert "4 results computed, 10 reused" in capsys.readouterr().err  # ReLoop2's 2 seeds x 2 periods
    after = snapshot(runs)
    assert {k: v for k, v in after.items() if k in before} == before  # old results untouched
    new = {k.split("/")[0] for k in set(after) - set(before)}
    assert new == {"DeepFM-ReLoop2"}


def test_report_also_rebuilds_the_output_of_other_commands(prepared, tmp_path):
    out = tmp_path / "popularity"
    assert main(["popularity", "--out", str(out), "-q"]) == 0
    rows = json.loads((out / "results.json").read_text())
    (out / "results.md").unlink()
    assert main(["report", str(out), "-q"]) == 0
    assert json.loads((out / "results.json").read_text()) == rows
    assert "| Popularity | test | 0 |" in (out / "results.md").read_text()
    assert (out / "auc_mean.png").is_file() and (out / "auc_per_period.png").is_file()
    assert main(["report", str(tmp_path / "nothing-here")]) == 2


def test_the_progress_eta_weighs_each_side_by_its_own_time_per_period(monkeypatch):
    from llm4rec.compare import runner

    clock = iter([0.0, 0.0, 100.0])  # bar created, clock started, one LLM period done 100 s later
    monkeypatch.setattr(runner.time, "perf_counter", lambda: next(clock))
    runs = [
        runner.PlannedRun(parse_method("LLM-FR"), 0, "k1", Path("a"), {}),
        runner.PlannedRun(parse_method("DeepFM-IU"), 0, "k2", Path("b"), {}),
        runner.PlannedRun(parse_method("DeepFM-IU"), 1, "k3", Path("c"), {7: None}),  # one period stored
    ]
    bar = runner.ProgressBar(runs, n_periods=2, enabled=False)
    assert bar.eta() == 2 * 45.0 + 3 * 2.0  # priors: 2 LLM periods, 3 CTR periods left
    bar.clock_from_now()
    bar.done("llm")
    assert bar.eta() == 1 * 100.0 + 3 * 2.0  # the LLM side's measured 100 s per period replaces its prior
