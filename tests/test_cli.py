import json
import shutil
import subprocess

import pytest

from llm4rec.cli import build_parser, main

SUBCOMMANDS = [[], ["data"], ["data", "prepare"], ["data", "stats"], ["popularity"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "llm4rec")
def test_every_command_has_help(words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    assert "usage: llm4rec" in capsys.readouterr().out


def test_parser_knows_every_listed_command():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert {"data", "popularity"} <= set(choices)


def test_console_script_is_installed():
    exe = shutil.which("llm4rec")
    assert exe, "the llm4rec console script is not on PATH; install the package with pip"
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("llm4rec ")


def test_prepare_stats_and_popularity_on_a_local_copy(cache, ml100k_dir, tmp_path, capsys):
    assert main(["data", "prepare", "ml-100k", "--path", str(ml100k_dir)]) == 0
    assert "2,400 interactions" in capsys.readouterr().out
    assert main(["data", "stats", "ml-100k", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["n_interactions"] == 2400 and stats["n_users"] == 40
    assert {"n_items", "positive_rate", "periods"} <= set(stats)
    assert [p["index"] for p in stats["periods"]] == list(range(10))
    assert set(stats["periods"][0]) == {"index", "start", "end", "n_train", "n_val", "positive_rate"}
    assert sum(p["n_train"] + p["n_val"] for p in stats["periods"]) == 2400

    config = tmp_path / "five.yaml"
    config.write_text("name: ml-100k\nperiods:\n  n_periods: 5\n")
    out_dir = tmp_path / "results"
    assert main(["popularity", "--config", str(config), "--out", str(out_dir), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "| Popularity | 4 |" in printed and "| Popularity | mean |" in printed
    assert {p.name for p in out_dir.iterdir()} == {
        "results.json",
        "results.csv",
        "results.md",
        "auc_per_period.png",
        "auc_mean.png",
    }
    assert (out_dir / "auc_per_period.png").read_bytes().startswith(b"\x89PNG")

    plot = tmp_path / "periods.png"
    assert main(["data", "stats", "ml-100k", "--plot", str(plot)]) == 0
    assert plot.read_bytes().startswith(b"\x89PNG") and "period" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "prepare", "ml-20m"], "unknown dataset 'ml-20m'"),
        (["data", "prepare", "ml-1m"], "pass --path"),
        (["data", "prepare", "ml-1m", "--path", "/nonexistent/ml-1m"], "/nonexistent/ml-1m"),
        (["data", "prepare", "ml-100k", "--user-fraction", "0.5"], "apply to amazon-books only"),
        (["data", "stats", "ml-1m"], "llm4rec data prepare ml-1m"),
        (["popularity", "--config", "/nonexistent.yaml"], "does not exist"),
    ],
)
def test_errors_are_one_clear_line(cache, argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm4rec: error:") and message in err
    assert "Traceback" not in err
