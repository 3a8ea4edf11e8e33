"""QuantConfig: validation before any work, per-layer checks, JSON round trip."""

import json

import pytest

from decoupleq.config import QuantConfig


@pytest.mark.parametrize("field, value", [
    ("bits", 5), ("bits", True), ("group_size", 0), ("group_size", -2), ("damping", -0.1),
    ("method", "awq"), ("integer_step", "sgd"), ("scale_dtype", "int8"), ("max_iter", -1),
    ("early_stop_frac", 2.0), ("clip_grid", (1.0, 1.5)), ("row_chunk", 0),
])
def test_invalid_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        QuantConfig(**{field: value})


def test_grid_and_groups():
    config = QuantConfig(bits=2, group_size=64)
    assert (config.qmin, config.qmax) == (-2, 1)
    assert (QuantConfig(bits=4).qmin, QuantConfig(bits=4).qmax) == (-8, 7)
    assert config.num_groups(256) == 4
    assert QuantConfig(group_size=-1).num_groups(100) == 1
    assert QuantConfig(group_size=50).num_groups(100) == 2


def test_check_layer_names_the_layer():
    with pytest.raises(ValueError, match="mlp.down_proj.*group_size 64.*100"):
        QuantConfig(group_size=64).check_layer("mlp.down_proj", 100)
    QuantConfig(group_size=-1).check_layer("any", 100)


def test_json_round_trip():
    config = QuantConfig(bits=3, group_size=32, symmetric=True, clip_search=True, clip_grid=[1.0, 0.9])
    again = QuantConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match="bitz"):
        QuantConfig.from_dict({"bitz": 2})
