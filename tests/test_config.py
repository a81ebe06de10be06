import pytest

from unetq.config import PRESETS, StudyConfig, build_config, load_toml, to_toml
from unetq.errors import ConfigError


def test_override_parses_toml_values_and_plain_text():
    cfg = build_config(None, None, ["train.epochs=[3]", "train.learning_rate=0.01", "name=abc"])
    assert cfg.train.epochs == [3]
    assert cfg.train.learning_rate == 0.01
    assert cfg.name == "abc"


def test_bad_override_and_unknown_field_fail_with_one_line():
    with pytest.raises(ConfigError, match="section.key=value"):
        build_config(None, None, ["train.epochs"])
    with pytest.raises(ConfigError, match="train.epoch"):
        build_config(None, None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config("nope")


def test_toml_round_trip(tmp_path):
    cfg = build_config(None, None, ["data.mask_values={0 = 0, 255 = 1}", "data.limit=50"])
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    assert StudyConfig.model_validate(load_toml(path)) == cfg


@pytest.mark.parametrize("name", PRESETS)
def test_presets_validate(name):
    cfg = build_config(name)
    assert cfg.train.epochs and cfg.train.filters
