"""Runs never serve a stale or wrong result and never share a directory: one writer per run directory, the
backbone's identity in the resume key, NaN scores an error before any metric, trust_remote_code announced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llm4rec.cli import main
from llm4rec.errors import DataError, Llm4recError
from llm4rec.run_lock import LOCK_FILE, RunDirectoryBusy, RunLock


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_writer_is_refused_with_the_first_ones_pid(tmp_path):
    with RunLock(tmp_path / "out", "llm4rec compare"):
        assert json.loads((tmp_path / "out" / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirectoryBusy, match=rf"in use by another run \(llm4rec compare, pid {os.getpid()} on"):
            RunLock(tmp_path / "out").acquire()
    assert not (tmp_path / "out" / LOCK_FILE).exists()  # released on exit


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(ZeroDivisionError), RunLock(tmp_path):
        _ = 1 / 0
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, caplog):
    import socket

    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    with caplog.at_level("WARNING"), RunLock(tmp_path) as lock:
        assert lock.held
    assert "no longer runs" in caplog.text


def test_a_lock_from_another_host_names_the_file_to_delete(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(RunDirectoryBusy, match=rf"delete {tmp_path / LOCK_FILE}"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("command", ["compare", "lsat", "ctr"])
def test_a_run_refuses_a_directory_in_use_before_training(command, prepared_quietly, tmp_path, capsys):
    out = tmp_path / "out"
    text = {
        "compare": "methods: [MF-IU]\nfirst_test_period: 8\ntest_samples: 50\nctr: {pretrain_periods: 5}\n",
        "lsat": "backbone: {model_name_or_path: nowhere}\nlong_term: {periods: 6}\n",
        "ctr": "models: [MF]\nupdates: [IU]\npretrain_periods: 8\n",
    }[command]
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with RunLock(out):
        assert main([command, "--config", str(config), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{out} is in use by another run" in err and f"pid {os.getpid()}" in err
    assert sorted(p.name for p in out.iterdir()) == []  # nothing was written


def test_the_backbone_identity_follows_its_files_not_its_path(tmp_path):
    from llm4rec.compare.config import ExperimentConfig
    from llm4rec.config import from_dict
    from llm4rec.llm.backbone import BackboneConfig
    from llm4rec.llm.backbone_identity import backbone_identity

    def write(directory: Path, weights: bytes) -> Path:
        directory.mkdir(parents=True)
        (directory / "config.json").write_text('{"model_type": "llama"}')
        (directory / "model.safetensors").write_bytes(weights)
        (directory / "llm4rec.json").write_text(json.dumps({"seconds": float(len(str(directory)))}))  # notes only
        return directory

    big = np.random.default_rng(0).bytes(6 * 1024 * 1024)  # hashed by blocks
    one, same = write(tmp_path / "a", big), write(tmp_path / "elsewhere" / "b", big)
    assert backbone_identity(BackboneConfig(str(one))) == backbone_identity(BackboneConfig(str(same)))
    changed = bytearray(big)
    changed[-1] ^= 1  # the last block is always read
    other = write(tmp_path / "c", bytes(changed))
    assert backbone_identity(BackboneConfig(str(other))) != backbone_identity(BackboneConfig(str(one)))
    truncated = write(tmp_path / "d", big[:-10])
    assert backbone_identity(BackboneConfig(str(truncated))) != backbone_identity(BackboneConfig(str(one)))

    config = from_dict(ExperimentConfig, {"methods": ["LLM-FR"], "llm": {"backbone": {"model_name_or_path": "x"}}})
    config.backbone_identity = backbone_identity(BackboneConfig(str(one)))
    key = config.unit_key(config.specs[0], 0, "data")
    config.backbone_identity = backbone_identity(BackboneConfig(str(other)))
    assert config.unit_key(config.specs[0], 0, "data") != key  # same path, other model: its results rerun


def test_nan_scores_are_an_error_before_any_metric_and_the_predictions_are_written(planted_timeline, tmp_path):
    from llm4rec.llm.run import predict_period

    rows = planted_timeline.period(2).iloc[:20]
    samples = {"input_ids": [[1, 2]] * len(rows)}
    p = np.linspace(0.1, 0.9, len(rows))
    p[3] = np.nan
    out = tmp_path / "p.csv"
    with pytest.raises(DataError, match=rf"1 of 20 scores are NaN or infinite .* the predictions are in {out}"):
        predict_period(None, None, planted_timeline, rows, samples, "predict", out, scorer=lambda _: p)
    assert pd.read_csv(out)["p"].isna().sum() == 1


def test_the_protocol_refuses_nan_scores_before_the_metrics(planted_timeline):
    from llm4rec.eval.protocol import run_protocol

    class Diverged:
        name = "diverged"

        def fit(self, timeline, period):
            pass

        def predict_proba(self, samples):
            return np.full(len(samples), np.nan)

    with pytest.raises(Llm4recError, match=r"diverged: \d+ of \d+ scores are NaN or infinite, before any metric"):
        run_protocol(Diverged(), planted_timeline, 3, 3, progress=False)


def test_trust_remote_code_is_announced(tiny_backbone_dir, movie_template, caplog):
    from llm4rec.llm.backbone import BackboneConfig, load_backbone

    with caplog.at_level("WARNING"):
        load_backbone(BackboneConfig(str(tiny_backbone_dir), trust_remote_code=True), movie_template)
    assert f"trust_remote_code is on: the Python code that comes with {tiny_backbone_dir} will run" in caplog.text


def test_a_temporary_directory_left_by_a_killed_writer_is_removed_by_the_next(tmp_path):
    from llm4rec.io import atomic_directory

    target = tmp_path / "ml-100k"
    stale = tmp_path / f".ml-100k.{dead_pid()}-0badc0de.tmp"  # what a SIGKILLed `data prepare` leaves
    stale.mkdir()
    (stale / "interactions.parquet").write_bytes(b"half")
    running = tmp_path / f".ml-100k.{os.getpid()}-00000000.tmp"  # a writer that still runs: not ours to remove
    running.mkdir()
    with atomic_directory(target) as tmp:
        (tmp / "done").write_text("x")
    assert (target / "done").exists() and not stale.exists() and running.exists()
