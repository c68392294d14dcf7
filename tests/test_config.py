from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llm4rec.config import from_dict, load_config
from llm4rec.data.config import DATA_PRESETS, DataConfig
from llm4rec.data.periods import PeriodConfig
from llm4rec.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", sorted(DATA_PRESETS))
def test_shipped_data_configs_equal_the_presets(name):
    assert load_config(DataConfig, CONFIGS / "data" / f"{name}.yaml") == DATA_PRESETS[name]


def test_unknown_key_lists_the_valid_ones(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text("name: ml-100k\nperiods:\n  n_period: 5\n")
    with pytest.raises(ConfigError) as error:
        load_config(DataConfig, path)
    message = str(error.value)
    assert str(path) in message and "periods" in message and "'n_period'" in message and "n_periods" in message


def test_wrong_types_and_values_are_named():
    with pytest.raises(ConfigError, match="periods.n_periods: expected int, got 'ten'"):
        from_dict(DataConfig, {"periods": {"n_periods": "ten"}})
    with pytest.raises(ConfigError, match="expected one of \\['count', 'time'\\]"):
        from_dict(DataConfig, {"periods": {"mode": "weekly"}})
    with pytest.raises(ConfigError, match="unknown dataset 'ml-20m'"):
        from_dict(DataConfig, {"name": "ml-20m"})
    with pytest.raises(ConfigError, match="expected int, got True"):
        from_dict(PeriodConfig, {"n_periods": True})


def test_ints_are_accepted_for_floats_and_nested_lists():
    @dataclass
    class Inner:
        weights: list[float] = field(default_factory=list)

    @dataclass
    class Outer:
        rate: float = 0.5
        inner: Inner = field(default_factory=Inner)
        name: str | None = None

    out = from_dict(Outer, {"rate": 1, "inner": {"weights": [1, 0.5]}, "name": None})
    assert out == Outer(1.0, Inner([1.0, 0.5]), None) and isinstance(out.rate, float)
    with pytest.raises(ConfigError, match=r"inner.weights\[1\]: expected float"):
        from_dict(Outer, {"inner": {"weights": [1, "x"]}})


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(DataConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(DataConfig, bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(DataConfig, bad)
