"""The device option: one resolver (llm4rec.devices) for both sides; the CTR config's `device` and the commands'
--device reach every CTR model, every incremental strategy's own modules and every feature tensor; a bad
device is one clear line; and the device stays out of the compare resume key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from llm4rec.cli import main
from llm4rec.config import from_dict
from llm4rec.ctr import catalogue
from llm4rec.ctr import updates as ctr_updates
from llm4rec.ctr.config import CtrConfig
from llm4rec.ctr.models import MODELS
from llm4rec.devices import check_device, resolve_device
from llm4rec.errors import ConfigError
from llm4rec.eval.protocol import run_protocol

pytestmark = pytest.mark.usefixtures("one_thread")

ARRIVING_TIMELINE = {"n": 1500, "n_periods": 5}  # for conftest's timeline and features
HISTORY_LENGTH = 4
# The CPU always; a GPU too where torch sees one (the same checks then hold on CUDA).
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
STRATEGIES = ["Reservoir", "SPMF", "MEGG", "IncCTR", "ReLoop2", "ASMG-GRU", "ASMG-Linear", "SML"]
EXPERIMENTS = Path(__file__).resolve().parents[1] / "configs" / "experiments"


def tiny_config(**changes) -> CtrConfig:
    """conftest's tiny_ctr_options as a CtrConfig over 5 periods (pre-train on period 0, test 1..4), with the
    strategies' own training cut short; ASMG with k = 1 trains its generator from the second update on."""
    return from_dict(
        CtrConfig,
        {
            "data": {"periods": {"n_periods": 5}},
            "pretrain_periods": 1,
            "features": {"history_length": HISTORY_LENGTH},
            "model": {"embedding_dim": 4, "mlp": [8, 4], "attention_mlp": [4]},
            "train": {"epochs": 2, "patience": 1, "batch_size": 256, "learning_rate": 0.01},
            "incremental": {
                "asmg": {"sequence_length": 1, "epochs": 1, "warm_start_steps": 5, "warm_up": 1},
                "sml": {"warm_start_steps": 5},
                "replay": {"megg_chunk_size": 64},
            },
            **changes,
        },
    )


def held_tensors(obj, seen: set[int] | None = None) -> list[tuple[str, torch.Tensor]]:
    """(path, tensor) of every tensor ``obj`` holds: the parameters and buffers of every module it keeps, and
    loose tensors in its attributes, dicts, lists and dataclasses (snapshots, pairs, GRU states)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [("", obj)]
    if isinstance(obj, torch.nn.Module):
        named = [*obj.named_parameters(), *obj.named_buffers()]
        return [(name, value) for name, value in named]
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("llm4rec."):
        items = vars(obj).items()
    else:
        return []
    return [(f"{key}.{path}".rstrip("."), t) for key, value in items for path, t in held_tensors(value, seen)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("model", "method"),
    [*((m, "IU") for m in MODELS), *(("EmbMLP", s) for s in STRATEGIES)],
    ids=lambda value: value,
)
def test_every_model_and_strategy_runs_on_the_device_it_is_given(timeline, features, model, method, device):
    built = catalogue.build_method(method, model, features, tiny_config(device=device), seed=0)
    run_protocol(built, timeline, first_test_period=1, seed=0, progress=False)  # fits 0..3, scores 1..4
    base = getattr(built, "base", built)  # ReLoop2 wraps its base; its memory is host numpy by design
    assert base.device == torch.device(device)
    own = {
        "MEGG": base.__dict__.get("snapshot"),
        "IncCTR": base.__dict__.get("teacher"),
        "ASMG-GRU": base.__dict__.get("generator"),
        "ASMG-Linear": base.__dict__.get("generator"),
        "SML": base.__dict__.get("transfer"),
    }
    if method in own:
        assert own[method] is not None, f"{method}: its own module was never made"
    tensors = held_tensors(base)
    assert len(tensors) >= 6  # MF holds the fewest: four tables and its final layer
    elsewhere = [path for path, t in tensors if t.device.type != torch.device(device).type]
    assert not elsewhere, f"{model}-{method}: not on {device}: {elsewhere[:5]}"
    encoded = base.encode(timeline.table.index.to_numpy()[:50])
    assert {name: t.device.type for name, t in encoded.items()} == dict.fromkeys(encoded, torch.device(device).type)


def test_the_config_device_reaches_every_method_builder(features, monkeypatch):
    asked = []

    def spy(name, where="device"):
        asked.append(name)
        return resolve_device(name, where)

    monkeypatch.setattr(ctr_updates, "resolve_device", spy)
    config = tiny_config()  # device: auto, the default (the classes' own default is cpu)
    names = [*catalogue.UPDATE_MODES, *STRATEGIES, "IncCTR+ReLoop2"]
    for name in names:
        catalogue.build_method(name, "EmbMLP", features, config, seed=0)
    assert asked == ["auto"] * len(names)


def test_auto_is_accelerates_choice_and_names_are_parsed():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected and resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert tiny_config().device == "auto"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tpu9", "--device: unknown device 'tpu9'; expected cpu, cuda or cuda:N (or auto)"),
        ("gpu", "--device: unknown device 'gpu'; expected cpu, cuda or cuda:N (or auto)"),
        ("meta", "--device: unknown device 'meta'"),
        ("cuda:x", "--device: unknown device 'cuda:x'"),
    ],
)
def test_an_unknown_device_is_one_clear_line(name, message):
    with pytest.raises(ConfigError) as error:
        resolve_device(name, "--device")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_cuda_without_a_gpu_or_past_the_last_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^device: 'cuda' asks for a GPU, but no CUDA GPU is visible .*use cpu$"):
        check_device("cuda", "device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1", "device")
    with pytest.raises(ConfigError, match=r"'cuda:2' asks for GPU 2, but 2 are visible \(0\.\.1\)"):
        check_device("cuda:2", "device")


def test_the_config_refuses_a_bad_device_on_load(monkeypatch):
    with pytest.raises(ConfigError, match=r"^device: unknown device 'gpu'; expected cpu, cuda or cuda:N"):
        tiny_config(device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        tiny_config(device="cuda")
    experiment = {"methods": ["EmbMLP-IU"], "first_test_period": 7, "ctr": {"device": "gpu"}}
    from llm4rec.compare.config import ExperimentConfig

    with pytest.raises(ConfigError, match=r"device: unknown device 'gpu'"):
        from_dict(ExperimentConfig, experiment)


@pytest.mark.parametrize("command", ["ctr", "compare"])
@pytest.mark.parametrize(("device", "message"), [("tpu9", "unknown device 'tpu9'"), ("cuda", "no CUDA GPU")])
def test_a_bad_device_option_exits_2_with_one_line(command, device, message, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = (
        Path(__file__).resolve().parents[1] / "configs" / "ctr" / "ml-100k.yaml"
        if command == "ctr"
        else EXPERIMENTS / "ml-100k-quick.yaml"
    )
    assert main([command, "--config", str(config), "--device", device]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("llm4rec: error: --device: ")
        and message in err
        and "Traceback" not in err
        and err.count("\n") == 1
    )


@pytest.mark.parametrize("command", ["ctr", "compare"])
def test_help_lists_the_device_option(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "--device" in capsys.readouterr().out


def test_compare_device_sets_the_ctr_side_only_and_keeps_every_key():
    from llm4rec.compare.config import ExperimentConfig, load_experiment

    methods = ["DeepFM-IU", "EmbMLP-BU3", "DeepFM-FR", "EmbMLP-MEGG", "DeepFM-IncCTR+ReLoop2", "EmbMLP-ASMG-GRU",
               "DeepFM-SML", "Popularity"]  # fmt: skip
    path, overrides = str(EXPERIMENTS / "ml-100k.yaml"), {"methods": methods}
    assert load_experiment(path, overrides, {"device": "cpu"}).ctr_config.device == "cpu"
    assert load_experiment(path, overrides).ctr_config.device == "auto"

    def keys(**ctr) -> dict[str, str]:
        config = from_dict(ExperimentConfig, {"methods": methods, "first_test_period": 7, "ctr": ctr})
        return {s.name: config.unit_key(s, 0, "data") for s in config.specs}

    # The keys these runs had at the commit before the device option (fe2682a): a comparison directory made
    # then is reused, on any device. A deliberate change of a method's settings or defaults changes its key
    # (and this pin) on purpose.
    before = {
        "DeepFM-IU": "d165e9ce397e",
        "EmbMLP-BU3": "1660dc6c504f",
        "DeepFM-FR": "8c7feade75e7",
        "EmbMLP-MEGG": "4fed1b5ff3ee",
        "DeepFM-IncCTR+ReLoop2": "5c13b6ffb4e5",
        "EmbMLP-ASMG-GRU": "22248ad2fd72",
        "DeepFM-SML": "097d8f6ea7e4",
        "Popularity": "ee733c1aac6f",
    }
    assert keys() == keys(device="cpu") == keys(device="auto") == before
    config = tiny_config(device="cpu")
    for method in [catalogue.parse_method(n.replace("<w>", "3")) for n in catalogue.method_names()]:
        assert "device" not in str(catalogue.key_settings(method, config))


def test_the_benchmarks_use_the_shared_resolver(monkeypatch):
    from llm4rec.bench.ctr import CtrBenchSettings, bench_ctr
    from llm4rec.bench.settings import LlmBenchSettings

    with pytest.raises(ConfigError, match="--device: unknown device 'tpu9'"):
        CtrBenchSettings(device="tpu9")
    record = bench_ctr(CtrBenchSettings(models=["DIN"], rows=2000, device="auto"))[0]
    assert record["train_samples_per_s"] > 0 and record["score_samples_per_s"] > 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for settings in (CtrBenchSettings, LlmBenchSettings):
        with pytest.raises(ConfigError, match="--device: 'cuda' asks for a GPU, but no CUDA GPU is visible"):
            settings(device="cuda")
