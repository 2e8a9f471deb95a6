"""One place per setting: the example documents every key, [sla] is the policy, one error type."""

from __future__ import annotations

import dataclasses
import re

import pytest
import tomllib

from edgeagent import config
from edgeagent.errors import ConfigError, InvalidSetting
from edgeagent.tuner import SLAPolicy


def test_the_example_config_names_every_key_and_loads_to_the_defaults() -> None:
    documented = set(re.findall(r"^#? ?([a-z0-9_]+) = ", config.EXAMPLE, re.M))
    sections = [getattr(config, f.type) for f in dataclasses.fields(config.Config) if f.name != "sources"]
    for section in [*sections, config.SourceConfig]:
        for key in dataclasses.fields(section):
            assert key.name in documented, f"{section.__name__}.{key.name} is missing from the example config"
    assert config.build(tomllib.loads(config.EXAMPLE), "example") == config.Config()


def test_sla_section_is_the_controller_policy_with_its_own_checks() -> None:
    sla = config.load(None, {"sla.up_windows": 3, "sla.p99_ms": 12.0}).sla
    assert isinstance(sla, SLAPolicy) and (sla.up_windows, sla.p99_ms, sla.adaptive) == (3, 12.0, True)
    with pytest.raises(ConfigError, match=r"command line: key 'sla.backoff_max_windows' = 1: expected an integer >= "):
        config.load(None, {"sla.backoff_base_windows": 4, "sla.backoff_max_windows": 1})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("ingest.max_message_bytes", 2**31, "key 'ingest.max_message_bytes' = 2147483648: expected less than 2 GiB"),
        ("ingest.max_sources", 200_000, "key 'ingest.max_sources' = 200000: expected an integer <= 100000"),
        ("model.frame_size", "0x5", "key 'model.frame_size' = (0, 5): expected WIDTH,HEIGHT with 1 <= each <= 16384"),
    ],
)
def test_each_check_names_its_own_key(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(None, {key: value})
    assert expected in str(err.value)


def test_invalid_setting_carries_key_value_and_expectation() -> None:
    with pytest.raises(InvalidSetting) as err:
        config.IngestConfig(rcvhwm=0)
    assert (err.value.key, err.value.value) == ("rcvhwm", 0) and "1 .. 1000000" in err.value.expected


def test_sources_are_a_table_per_camera_with_checked_weight_and_priority() -> None:
    tree = {"sources": {"cam-door": {"weight": 2, "priority": 1}, "lot": {}}}
    cfg = config.build(tree, "t.toml")
    assert cfg.sources["cam-door"] == config.SourceConfig(weight=2.0, priority=1)
    assert cfg.sources["lot"] == config.DEFAULT_SOURCE
    with pytest.raises(ConfigError, match=r"t.toml: key 'sources.\"lot\".weight' = 0.0: expected a number in"):
        config.build({"sources": {"lot": {"weight": 0}}}, "t.toml")
    with pytest.raises(ConfigError, match=r"unknown key 'sources.\"lot\".wieght'"):
        config.build({"sources": {"lot": {"wieght": 1}}}, "t.toml")
    with pytest.raises(ConfigError, match=r"'sources.lot' must be a table"):
        config.build({"sources": {"lot": 3}}, "t.toml")
