"""Config loading: defaults, file + overrides, and errors that name file, key, value, expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeagent import config
from edgeagent.errors import EXIT_CONFIG, EXIT_MODEL, EXIT_USAGE, ConfigError
from tests.helpers import run_cli


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return p


def test_example_config_is_valid_and_equals_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, config.EXAMPLE))
    assert cfg == config.Config()


def test_flags_override_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[sla]\np99_ms = 20\nadaptive = true\n[model]\nframe_size = [640, 480]\n")
    cfg = config.load(p, {"sla.p99_ms": 12.5, "model.mean": "1,2,3", "engine.cpus": "0"})
    assert cfg.sla.p99_ms == 12.5 and cfg.sla.adaptive is True
    assert cfg.model.frame_size == (640, 480)
    assert cfg.model.mean == (1.0, 2.0, 3.0)
    assert cfg.engine.cpus == (0,)


def test_frame_size_accepts_wxh() -> None:
    assert config.load(None, {"model.frame_size": "640x480"}).model.frame_size == (640, 480)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[sla]\np99_msec = 3\n", "unknown key 'sla.p99_msec'"),
        ("[slaa]\np99_ms = 3\n", "unknown section '[slaa]'"),
        ("[sla]\np99_ms = 'fast'\n", "key 'sla.p99_ms' = 'fast': expected a number"),
        ("[sla]\np99_ms = -1\n", "key 'sla.p99_ms' = -1.0: expected a number of milliseconds"),
        ("[ingest]\nlisten = 5\n", "key 'ingest.listen' = 5: expected a list of strings"),
        ("[ingest]\nreply = 'maybe'\n", "expected one of 'json', 'ok'"),
        ("[model]\nmean = [1, 2]\n", "key 'model.mean' = (1.0, 2.0): expected 1 or 3"),
        ("[metrics]\nlisten = 'nohost'\n", "key 'metrics.listen' = 'nohost': expected HOST:PORT"),
        ("[sla\n", "invalid TOML"),
        ("sla = 3\n", "'sla' must be a table"),
    ],
)
def test_errors_name_file_key_value(tmp_path: Path, text: str, needle: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(p)
    assert str(p) in str(err.value)
    assert needle in str(err.value)


def test_override_error_names_command_line() -> None:
    with pytest.raises(ConfigError, match=r"command line: key 'sla.headroom' = 2.0: expected a fraction"):
        config.load(None, {"sla.headroom": 2.0})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(Path("/nonexistent/agent.toml"))


def test_cli_exit_codes(tmp_path: Path) -> None:
    bad = write(tmp_path, "[sla]\nwindow = 1\n")
    r = run_cli("run", "--config", str(bad))
    assert r.returncode == EXIT_CONFIG
    assert "unknown key 'sla.window'" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    r = run_cli("run", "--no-such-flag")
    assert r.returncode == EXIT_USAGE and "unrecognized arguments" in r.stderr

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage not a model")
    no_sockets = ["--metrics", "", "--listen", "", "--pull", "", "--connect", "tcp://127.0.0.1:1", "--results", ""]
    for model, message in ((tmp_path / "missing.onnx", "model file not found"), (corrupt, "cannot read model")):
        r = run_cli("run", "--model", str(model), *no_sockets)
        assert r.returncode == EXIT_MODEL and message in r.stderr and model.name in r.stderr, r.stderr


def test_config_check_and_example(tmp_path: Path) -> None:
    r = run_cli("config", "example")
    assert r.returncode == 0 and "[sla]" in r.stdout
    good = write(tmp_path, r.stdout)
    r = run_cli("config", "check", str(good))
    assert r.returncode == 0 and ": ok" in r.stdout
    bad = write(tmp_path, "[engine]\nmax_batch = 3\n")
    r = run_cli("config", "check", str(bad))
    assert r.returncode == EXIT_CONFIG and "engine.max_batch" in r.stderr


def test_non_finite_and_out_of_range_numbers_are_rejected() -> None:
    for key, value in (
        ("ingest.max_frame_age_ms", "nan"),
        ("engine.batch_wait_ms", "inf"),
        ("sla.p99_ms", "nan"),
        ("ingest.rcvhwm", 2**40),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            config.load(None, {key: value})


def test_a_flag_can_fix_a_file_value(tmp_path: Path) -> None:
    p = write(tmp_path, "[sla]\np99_ms = -5\n")
    assert config.load(p, {"sla.p99_ms": 20.0}).sla.p99_ms == 20.0


def test_json_logs_keep_the_record_level_when_a_field_is_called_level() -> None:
    import json as json_mod
    import logging

    from edgeagent.logs import _JSONFormatter

    record = logging.LogRecord("edgeagent.x", logging.WARNING, __file__, 1, "event=window level=3 p99_ms=4", (), None)
    out = json_mod.loads(_JSONFormatter().format(record))
    assert (out["level"], out["field_level"], out["event"], out["p99_ms"]) == ("warning", "3", "window", "4")
