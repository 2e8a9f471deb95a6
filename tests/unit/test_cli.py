"""`edgeagent run --help` reads like a well-kept CLI, and every flag still sets its config key."""

from __future__ import annotations

import pytest

from edgeagent import cli, config


def run_help(capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["run", "--help"]) == 0
    return capsys.readouterr().out


def entries(text: str) -> dict[str, str]:
    """Option → its help entry (metavar and text, wrapped lines joined) from argparse's help."""
    out: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            out[current] = line.strip()
        elif current is not None and line.startswith("   "):
            out[current] += " " + line.strip()
        else:
            current = None
    return out


def test_run_help_groups_metavars_defaults_examples(capsys: pytest.CaptureFixture[str]) -> None:
    text = run_help(capsys)
    assert "CFG__" not in text and "cfg__" not in text
    assert text.startswith("usage: edgeagent run [--config FILE] [options]")
    headings = [ln[:-1] for ln in text.splitlines() if ln and not ln.startswith(" ") and ln.endswith(":")]
    assert headings == [
        "options",
        "model",
        "ingest",
        "results",
        "Frigate",
        "SLA",
        "engine",
        "metrics",
        "security",
        "logging",
        "examples",
    ]
    help_of = entries(text)
    defaults = config.Config()
    for flag, key, kw in cli.RUN_FLAGS:
        assert flag in help_of, flag
        entry = help_of[flag]
        metavar = kw.get("metavar") or ("{" + ",".join(kw["choices"]) + "}" if "choices" in kw else None)
        if metavar:
            assert entry.startswith(f"{flag} {metavar} "), entry
        section, name = key.split(".")
        value = getattr(getattr(defaults, section), name)
        # Every flag says what it does when not given: the config default, or what unset means.
        assert "(default: " in entry or (kw.get("action") == "store_const" and value is None), entry
    # Shown defaults are the config dataclasses' own.
    assert "(default: tcp://*:5555)" in help_of["--listen"]
    assert "(default: tcp://127.0.0.1:5556)" in help_of["--results"]
    assert f"(default: {defaults.sla.p99_ms:g})" in help_of["--sla-p99-ms"]
    assert f"(default: {defaults.metrics.listen})" in help_of["--metrics"]
    assert "(default: on)" in help_of["--adaptive"] and "(default: off)" in help_of["--static"]
    assert text.count("\n  edgeagent run") >= 3  # the examples


def test_every_run_flag_sets_its_config_key() -> None:
    parser = cli.build_parser()
    args = [
        "run",
        "--model",
        "m.xml",
        "--frame-size",
        "640x480",
        "--bgr",
        "--listen",
        "tcp://127.0.0.1:1",
        "--listen",
        "tcp://127.0.0.1:2",
        "--pull",
        "",
        "--max-frame-age-ms",
        "50",
        "--sla-p99-ms",
        "12.5",
        "--adaptive",
        "--metrics",
        "",
        "--curve-exempt",
        "listen",
    ]
    assert cli.overrides_from(parser.parse_args(args)) == {
        "model.path": "m.xml",
        "model.frame_size": "640x480",
        "model.rgb": False,
        "ingest.listen": ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"],
        "ingest.pull": [],
        "ingest.max_frame_age_ms": 50.0,
        "sla.p99_ms": 12.5,
        "sla.adaptive": True,
        "metrics.listen": "",
        "security.curve_exempt": ["listen"],
    }
    keys = {key for _flag, key, _kw in cli.RUN_FLAGS}
    assert {k.split(".")[0] for k in keys} == set(cli.RUN_GROUPS)
    for key in keys:  # every key exists in the config
        section, name = key.split(".")
        assert hasattr(getattr(config.Config(), section), name), key
