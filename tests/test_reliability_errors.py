"""Reliability: every bad input is one line ``llm4rec: error: ...`` (exit 2) naming the file or option and what to
do, never a traceback. By where the bad input comes from: output paths, Amazon source files, adapters and
backbones, damaged cache entries, seeds."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llm4rec.cli import main
from llm4rec.errors import ConfigError, DataError, Llm4recError
from tests.test_sources import meta, review, write_books

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, *needles: str) -> str:
    """The command's stderr: one ``llm4rec: error:`` line holding every needle, no traceback."""
    err = capsys.readouterr().err
    assert err.startswith("llm4rec: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def one_line(error: pytest.ExceptionInfo, *needles: str) -> str:
    """A library-level error's message: one line holding every needle."""
    message = str(error.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(999))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.fixture
def nothing_runs(monkeypatch):
    """Loading data or a model fails the test: a bad --out must be refused before any of it."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("data or a model was loaded before the output path was checked")

    import llm4rec.data.config
    import llm4rec.data.fetch
    import llm4rec.data.store
    import llm4rec.llm.backbone

    for module, name in [
        (llm4rec.data.config, "load_timeline"),
        (llm4rec.data.config, "load_dataset"),
        (llm4rec.data.store, "load_dataset"),
        (llm4rec.data.fetch, "fetch_ml100k"),
        (llm4rec.llm.backbone, "load_backbone"),
    ]:
        monkeypatch.setattr(module, name, refuse)


# ---------------------------------------------------------------- 1. output paths, checked before anything runs


def compare_config(tmp_path: Path, out: Path | None = None) -> Path:
    data = tmp_path / "data.yaml"
    data.write_text("name: ml-100k\nhistory_length: 3\nperiods: {n_periods: 6}\n")
    path = tmp_path / "experiment.yaml"
    text = f"data: {data}\nmethods: [Popularity, MF-IU]\nfirst_test_period: 4\ntest_samples: 40\n"
    text += "ctr: {pretrain_periods: 2, train: {epochs: 1}}\n"
    path.write_text(text + (f"out: {out}\n" if out is not None else ""))
    return path


def ctr_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "ctr.yaml"
    path.write_text(
        "data: {name: ml-100k, periods: {n_periods: 5}}\nmodels: [MF]\nupdates: [IU]\npretrain_periods: 2\n"
        "model: {embedding_dim: 4, mlp: [8]}\ntrain: {epochs: 1, batch_size: 256}\n" + extra
    )
    return path


OUT_DIR_COMMANDS = {
    "compare": lambda tmp_path: ["compare", "--config", str(compare_config(tmp_path)), "-q"],
    "ctr": lambda tmp_path: ["ctr", "--config", str(ctr_config(tmp_path)), "-q"],
    "popularity": lambda tmp_path: ["popularity", "-q"],
    "lsat": lambda tmp_path: ["lsat", "--config", str(ROOT / "configs/lsat/ml-100k-scratch.yaml"), "-q"],
    "train": lambda tmp_path: ["train", "--config", str(ROOT / "configs/llm/ml-100k-lora.yaml"), "-q"],
    "fewshot": lambda tmp_path: ["fewshot", "--config", str(ROOT / "configs/llm/ml-100k-fewshot.yaml"), "-q"],
    "backbone build": lambda tmp_path: ["backbone", "build", "-q"],
    "backbone fetch": lambda tmp_path: ["backbone", "fetch", "smollm2-135m", "-q"],
}


@pytest.mark.usefixtures("nothing_runs", "restore_threads")
@pytest.mark.parametrize("where", ["is a file", "under a file"])
@pytest.mark.parametrize("command", sorted(OUT_DIR_COMMANDS))
def test_an_out_directory_that_cannot_be_made_is_refused_first(tmp_path, capsys, command, where):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a directory\n")
    out = blocker if where == "is a file" else blocker / "run"
    assert main([*OUT_DIR_COMMANDS[command](tmp_path), "--out", str(out)]) == 2
    one_line_error(capsys, f"--out {out}", f"{blocker} is a file")
    assert blocker.read_text() == "not a directory\n"


@pytest.mark.usefixtures("nothing_runs")
def test_a_compare_config_out_that_is_a_file_is_refused_first(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    config = compare_config(tmp_path, out=blocker)
    assert main(["compare", "--config", str(config), "-q"]) == 2
    one_line_error(capsys, f"{config}: out {blocker}", f"{blocker} is a file")


PREDICT = ["predict", "--model", "some-model", "--dataset", "ml-100k", "--period", "1", "-q"]


@pytest.mark.usefixtures("nothing_runs")
@pytest.mark.parametrize(
    ("option", "blocked", "message"),
    [
        ("--out", "dir", "is a directory"),
        ("--out", "file/preds.csv", "is a file"),
        ("--merge-into-base", "file", "is a file"),
    ],
)
def test_predict_output_paths_are_checked_before_the_model_loads(tmp_path, capsys, option, blocked, message):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    argv = [*PREDICT, "--out", str(tmp_path / "preds.csv")]
    if option == "--merge-into-base":
        argv += ["--adapter", str(tmp_path / "adapter")]
    argv += [option, str(tmp_path / blocked)]
    assert main(argv) == 2
    one_line_error(capsys, f"{option} {tmp_path / blocked}", message)


@pytest.mark.usefixtures("nothing_runs")
@pytest.mark.parametrize(("blocked", "message"), [("dir", "is a directory"), ("file/plot.png", "file is a file")])
def test_a_stats_plot_path_that_cannot_be_written_is_refused_first(tmp_path, capsys, blocked, message):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    assert main(["data", "stats", "ml-100k", "--plot", str(tmp_path / blocked)]) == 2
    one_line_error(capsys, f"--plot {tmp_path / blocked}", message)


# ---------------------------------------------------------------- config and results files we read back

CONFIG_DAMAGE = {"not UTF-8": b"models: [\xff]\n", "not YAML": b"models: [MF\n  updates: IU\n"}


@pytest.mark.parametrize("damage", sorted(CONFIG_DAMAGE))
def test_a_damaged_config_file_is_one_line(tmp_path, capsys, damage):
    config = tmp_path / "ctr.yaml"
    config.write_bytes(CONFIG_DAMAGE[damage])
    assert main(["ctr", "--config", str(config)]) == 2
    one_line_error(capsys, f"config file {config}")


@pytest.mark.parametrize("text", [b"{", b"[1]", b'[{"nope": 1}]', b"\xff"])
def test_a_damaged_results_file_is_one_line(tmp_path, capsys, text):
    (tmp_path / "results.json").write_bytes(text)
    assert main(["report", str(tmp_path)]) == 2
    one_line_error(capsys, str(tmp_path / "results.json"), "run the command that wrote it again")


@pytest.mark.parametrize("text", [b"{", b"[]", b"\xff"])
def test_a_damaged_ensemble_manifest_names_its_file(tmp_path, text):
    from llm4rec.llm.ensemble import read_ensemble

    (tmp_path / "llm4rec.json").write_bytes(text)
    with pytest.raises(ConfigError) as error:
        read_ensemble(tmp_path)
    one_line(error, str(tmp_path / "llm4rec.json"))


@pytest.mark.parametrize("text", [b"{", b"[]", b"\xff"])
def test_a_damaged_stored_adapter_record_means_train_again(tmp_path, text):
    from llm4rec.llm.adapter_store import stored_key

    (tmp_path / "llm4rec.json").write_bytes(text)
    assert stored_key(tmp_path) is None


# ---------------------------------------------------------------- 2. Amazon source files

LOOSE = {"min_user_reviews": 1, "user_fraction": 1.0, "min_title_interactions": 1}


def amazon_dir(tmp_path: Path, gz: bool = True) -> Path:
    reviews = [review(f"u{u}", f"b{b}", 5.0 - b, 1_500_000_000 + 10 * u + b) for u in range(4) for b in range(3)]
    return write_books(tmp_path / "amazon", reviews, [meta(f"b{b}", f"Book {b}", ["Books"]) for b in range(3)], gz=gz)


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle - 4 : middle + 4] = bytes(b ^ 0xFF for b in data[middle - 4 : middle + 4])
    path.write_bytes(bytes(data))


GZ_DAMAGE = {
    "not gzip": lambda path: path.write_bytes(b'{"asin": "b0", "title": "Book 0"}\n'),
    "truncated": _truncate,
    "corrupt": _flip_middle,
    "random bytes": lambda path: path.write_bytes(b"\x1f\x8b\x08\x00" + np.random.default_rng(0).bytes(200)),
    "empty": _empty,
}


@pytest.mark.parametrize("stem", ["Books_5", "meta_Books"])
@pytest.mark.parametrize("damage", sorted(GZ_DAMAGE))
def test_a_damaged_json_gz_names_the_file(tmp_path, damage, stem):
    from llm4rec.data.amazon import AmazonBooksFilters, read_amazon_books

    directory = amazon_dir(tmp_path)
    path = directory / f"{stem}.json.gz"
    GZ_DAMAGE[damage](path)
    with pytest.raises(DataError) as error:
        read_amazon_books(directory, AmazonBooksFilters(**LOOSE))
    one_line(error, str(path))


def test_a_damaged_json_gz_through_the_cli(tmp_path, capsys):
    directory = amazon_dir(tmp_path)
    GZ_DAMAGE["truncated"](directory / "Books_5.json.gz")
    argv = ["data", "prepare", "amazon-books", "--path", str(directory), "--min-user-reviews", "1"]
    assert main([*argv, "--user-fraction", "1", "--min-title-interactions", "1"]) == 2
    one_line_error(capsys, str(directory / "Books_5.json.gz"), "download it again")


@pytest.mark.parametrize("gz", [False, True], ids=["json", "json.gz"])
def test_a_title_that_is_not_utf8_names_the_file(tmp_path, gz):
    from llm4rec.data.amazon import AmazonBooksFilters, read_amazon_books

    directory = amazon_dir(tmp_path, gz=gz)
    path = directory / ("meta_Books.json.gz" if gz else "meta_Books.json")
    lines = b"".join(
        json.dumps(meta(f"b{b}", f"Book {b}")).encode().replace(b"Book 1", b"Book \xff\xfe 1") + b"\n" for b in range(3)
    )
    path.write_bytes(gzip.compress(lines) if gz else lines)
    with pytest.raises(DataError) as error:
        read_amazon_books(directory, AmazonBooksFilters(**LOOSE))
    one_line(error, str(path), "UTF-8")


# ---------------------------------------------------------------- 3. adapters and backbones


@pytest.fixture(scope="module")
def pristine_adapter(tmp_path_factory, tiny_backbone_dir, movie_template) -> Path:
    """A LoRA adapter of the tiny backbone, saved by llm4rec once per module (tests damage copies of it)."""
    from llm4rec.llm.adapters import save_adapter
    from llm4rec.llm.backbone import BackboneConfig, load_backbone
    from llm4rec.llm.train import LoraSettings, attach_lora

    backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    model = attach_lora(backbone.model, LoraSettings(r=4))
    return save_adapter(model, tmp_path_factory.mktemp("adapter") / "adapter", backbone, movie_template, 128, {})


@pytest.fixture
def adapter(pristine_adapter, tmp_path) -> Path:
    return Path(shutil.copytree(pristine_adapter, tmp_path / "adapter"))


def _wrong_shapes(path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    save_file({name: torch.zeros(t.shape[0] + 1, t.shape[1]) for name, t in load_file(path).items()}, path)


def _rewrite_json(change):
    def rewrite(path: Path) -> None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return rewrite


ADAPTER_DAMAGE = {
    "weights truncated": ("adapter_model.safetensors", _truncate),
    "weights random bytes": ("adapter_model.safetensors", _random_bytes),
    "weights empty": ("adapter_model.safetensors", _empty),
    "weights of other shapes": ("adapter_model.safetensors", _wrong_shapes),
    "config not JSON": ("adapter_config.json", lambda p: p.write_text('{"r": 4,')),
    "config not a mapping": ("adapter_config.json", lambda p: p.write_text("[4, 8]")),
    "config r not a number": ("adapter_config.json", _rewrite_json(lambda d: d.update(r="four"))),
    "config unknown peft_type": ("adapter_config.json", _rewrite_json(lambda d: d.update(peft_type="NOPE"))),
    "config without peft_type": ("adapter_config.json", _rewrite_json(lambda d: d.pop("peft_type"))),
    "config of other modules": ("adapter_config.json", _rewrite_json(lambda d: d.update(target_modules=["nope"]))),
    "config not UTF-8": ("adapter_config.json", lambda p: p.write_bytes(b'{"r": "\xff"}')),
    "llm4rec.json not a mapping": ("llm4rec.json", lambda p: p.write_text("[]")),
}


@pytest.mark.parametrize("damage", sorted(ADAPTER_DAMAGE))
def test_a_damaged_adapter_names_its_file(backbone, adapter, damage):
    from llm4rec.llm.adapters import load_adapter

    name, change = ADAPTER_DAMAGE[damage]
    change(adapter / name)
    with pytest.raises(ConfigError) as error:
        load_adapter(backbone, adapter)
    one_line(error, str(adapter / name))


def test_a_damaged_adapter_through_predict(prepared_quietly, tiny_backbone_dir, adapter, tmp_path, capsys):
    ADAPTER_DAMAGE["weights truncated"][1](adapter / "adapter_model.safetensors")
    argv = ["predict", "--model", str(tiny_backbone_dir), "--adapter", str(adapter), "--period", "1"]
    assert main([*argv, "--out", str(tmp_path / "p.csv"), "-q"]) == 2
    one_line_error(capsys, str(adapter / "adapter_model.safetensors"))


BACKBONE_DAMAGE = {
    "weights truncated": ("model.safetensors", _truncate),
    "weights random bytes": ("model.safetensors", _random_bytes),
    "weights empty": ("model.safetensors", _empty),
    "config not JSON": ("config.json", lambda p: p.write_text('{"model_type": "llama",')),
}


@pytest.mark.parametrize("damage", sorted(BACKBONE_DAMAGE))
def test_a_damaged_backbone_names_its_file(tiny_backbone_dir, movie_template, tmp_path, damage):
    from llm4rec.llm.backbone import BackboneConfig, load_backbone

    directory = Path(shutil.copytree(tiny_backbone_dir, tmp_path / "backbone"))
    name, change = BACKBONE_DAMAGE[damage]
    change(directory / name)
    with pytest.raises(ConfigError) as error:
        load_backbone(BackboneConfig(str(directory)), movie_template)
    one_line(error, str(directory / name))


# ---------------------------------------------------------------- 4. damaged cache entries


def _first(directory: Path, pattern: str) -> Path:
    return next(iter(sorted(directory.glob(pattern))))


SAMPLES_DAMAGE = {
    "arrow truncated": lambda d: _truncate(_first(d, "*.arrow")),
    "arrow missing": lambda d: _first(d, "*.arrow").unlink(),
    "arrow random bytes": lambda d: _random_bytes(_first(d, "*.arrow")),
    "state.json not JSON": lambda d: (d / "state.json").write_text("{"),
    "dataset_info.json not JSON": lambda d: (d / "dataset_info.json").write_text("{"),
}


@pytest.mark.parametrize("damage", sorted(SAMPLES_DAMAGE))
def test_a_damaged_samples_cache_says_how_to_rebuild(cache, tiny_backbone_dir, planted_timeline, movie_template,
                                                     damage):  # fmt: skip
    from llm4rec.llm.backbone import BackboneConfig, load_tokenizer
    from llm4rec.llm.samples import build_samples

    tokenizer = load_tokenizer(BackboneConfig(str(tiny_backbone_dir)))
    rows = planted_timeline.period(1, "val")
    build_samples(rows, planted_timeline.items, movie_template, tokenizer, 128)
    (entry,) = (cache / "samples").iterdir()
    SAMPLES_DAMAGE[damage](entry)
    with pytest.raises(DataError) as error:
        build_samples(rows, planted_timeline.items, movie_template, tokenizer, 128)
    one_line(error, str(entry), "delete")


STORE_DAMAGE = {
    "interactions truncated": lambda d: _truncate(d / "interactions.parquet"),
    "interactions random bytes": lambda d: (d / "interactions.parquet").write_bytes(b"PAR1" * 50),
    "items missing": lambda d: (d / "items.parquet").unlink(),
    "items of other columns": lambda d: __import__("pandas").DataFrame({"x": [1]}).to_parquet(d / "items.parquet"),
    "meta.json not JSON": lambda d: (d / "meta.json").write_text("{"),
    "meta.json not a mapping": lambda d: (d / "meta.json").write_text("[1]"),
    "meta.json not UTF-8": lambda d: (d / "meta.json").write_bytes(b'{"name": "\xff"}'),
}


@pytest.mark.usefixtures("prepared_quietly")
@pytest.mark.parametrize("damage", sorted(STORE_DAMAGE))
def test_a_damaged_prepared_dataset_says_how_to_rebuild(cache, capsys, damage):
    directory = cache / "datasets" / "ml-100k"
    STORE_DAMAGE[damage](directory)
    assert main(["data", "stats", "ml-100k"]) == 2
    one_line_error(capsys, str(directory), "llm4rec data prepare ml-100k --force")


@pytest.mark.parametrize("text", [b"{", b"[]", b'{"auc": "\xff"}', b'{"nope": 1}'])
def test_a_damaged_compare_period_file_runs_its_period_again(tmp_path, text):
    from llm4rec.compare.store import ResultStore

    run_dir = tmp_path / "runs" / "MF-IU" / "seed_0-abc"
    run_dir.mkdir(parents=True)
    (run_dir / "period_4.json").write_bytes(text)
    assert ResultStore(tmp_path).finished(run_dir, [4, 5]) == {}


@pytest.mark.parametrize("text", [b"{", b"[]", b'{"dataset": "\xff"}', b'{"dataset": 3}'])
def test_a_damaged_compare_manifest_is_one_line(tmp_path, text):
    from llm4rec.compare.store import MANIFEST, ResultStore

    (tmp_path / MANIFEST).write_bytes(text)
    with pytest.raises(Llm4recError) as error:
        ResultStore(tmp_path).check_dataset({"name": "ml-100k"}, "f")
    one_line(error, str(tmp_path / MANIFEST))


# ---------------------------------------------------------------- 5. seeds outside numpy's range

SEED_RANGE = "0 .. 4294967295"


@pytest.mark.parametrize("seeds", ["99999999999", "0,-1", "4294967296"])
def test_seeds_option_out_of_range(tmp_path, capsys, seeds):
    assert main(["ctr", "--config", str(ctr_config(tmp_path)), f"--seeds={seeds}", "-q"]) == 2
    one_line_error(capsys, "--seeds", SEED_RANGE)


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize(("extra", "field"), [("seeds: [0, -1]", "seeds"), ("seed: 4294967296", "seed")])
def test_ctr_config_seeds_out_of_range(tmp_path, capsys, extra, field):
    config = ctr_config(tmp_path, extra + "\n")
    assert main(["ctr", "--config", str(config), "-q"]) == 2
    one_line_error(capsys, f"{field}:", SEED_RANGE)


def test_the_highest_seed_is_accepted():
    from llm4rec.command_options import parse_seeds

    assert parse_seeds("0,4294967295") == [0, 4294967295]


def _seed_configs():
    from llm4rec.data.amazon import AmazonBooksFilters
    from llm4rec.llm.backbone import BackboneConfig
    from llm4rec.llm.fewshot import FewShotConfig
    from llm4rec.llm.lsat_config import ScratchBuildConfig, TaskArithmeticConfig
    from llm4rec.llm.train import LoraTrainConfig

    return {
        "fewshot seeds": (lambda: FewShotConfig(BackboneConfig("b"), seeds=[0, -1]), "seeds"),
        "train.seed": (lambda: LoraTrainConfig(seed=-1), "train.seed"),
        "task_arithmetic.seed": (lambda: TaskArithmeticConfig(seed=2**32), "task_arithmetic.seed"),
        "build_backbone.seed": (lambda: ScratchBuildConfig(seed=-5), "build_backbone.seed"),
        "amazon seed": (lambda: AmazonBooksFilters(seed=-1), "seed"),
    }


@pytest.mark.parametrize("name", ["fewshot seeds", "train.seed", "task_arithmetic.seed", "build_backbone.seed",
                                  "amazon seed"])  # fmt: skip
def test_config_seeds_out_of_range(name):
    build, field = _seed_configs()[name]
    with pytest.raises(ConfigError) as error:
        build()
    one_line(error, field, SEED_RANGE)


def test_amazon_seed_option_out_of_range(tmp_path, capsys):
    argv = ["data", "prepare", "amazon-books", "--path", str(amazon_dir(tmp_path)), "--seed=-1"]
    assert main(argv) == 2
    one_line_error(capsys, "seed", SEED_RANGE)


def test_backbone_build_seed_out_of_range(tmp_path, capsys, nothing_runs):
    assert main(["backbone", "build", "--out", str(tmp_path / "b"), "--seed=-1"]) == 2
    one_line_error(capsys, "--seed", SEED_RANGE)


@pytest.mark.usefixtures("nothing_runs")
def test_compare_config_seeds_out_of_range(tmp_path, capsys):
    config = compare_config(tmp_path)
    config.write_text(config.read_text() + "seeds: [-1]\n")
    assert main(["compare", "--config", str(config), "--out", str(tmp_path / "out"), "-q"]) == 2
    one_line_error(capsys, "seeds", SEED_RANGE)
