"""monitoring/ against a real agent: the rules and the Grafana dashboard select only metrics the
agent exports, and the SLO rules find the bucket at the agent's SLA in a real scrape (promtool
evaluates them on it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import (
    DASHBOARD,
    RULES,
    dashboard_exprs,
    promql_metric_names,
    read_rules,
    scrape_after_windows,
)

IMG = np.random.default_rng(7).integers(0, 256, (224, 224, 3), dtype=np.uint8)
SLA_MS = 12.5  # off the coarse bucket grid, so the SLA bucket's `le` is one the agent derived from it


def samples(text: str) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def test_rules_and_dashboard_against_a_real_scrape(start_agent: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f"[sla]\np99_ms = {SLA_MS}\nwindow_s = 0.2\nmin_frames = 5\n")
    agent = start_agent("--config", str(cfg))
    text = scrape_after_windows(agent, IMG).text
    exported = {s.name for s in samples(text)}

    rules = read_rules(RULES.read_text())
    recorded = {r.name for r in rules if r.kind == "record"}
    for rule in rules:
        unknown = promql_metric_names(rule.expr) - recorded - exported - {"up"}  # `up`: Prometheus' own
        assert not unknown, f"{rule.name} selects metrics the agent does not export: {sorted(unknown)}"
    queries = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    named = set()
    for where, expr in queries.items():
        names = promql_metric_names(expr)
        assert names, f"dashboard {where}: no metric in {expr!r}"
        assert names <= exported, f"dashboard {where} selects metrics the agent does not export: {names - exported}"
        named |= names
    # The dashboard shows what the issue asks for (histogram percentiles against the SLA line, the
    # controller, cameras, compiles, process).
    for name in (
        "edgeagent_latency_seconds_bucket",
        "edgeagent_sla_p99_seconds",
        "edgeagent_window_goodput_fps",
        "edgeagent_level",
        "edgeagent_level_switches_total",
        "edgeagent_frames_total",
        "edgeagent_last_compile_seconds",
        "edgeagent_process_cpu_seconds_total",
        "edgeagent_process_resident_memory_bytes",
    ):
        assert name in named, name

    # The SLO rules on this scrape: promtool finds the bucket whose `le` is the agent's SLA (as
    # Prometheus formats it in count_values) and counts the frames over it.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (.ci/run installs Debian's prometheus package)")
    wanted = ("edgeagent_latency_seconds_bucket", "edgeagent_latency_seconds_count", "edgeagent_sla_p99_seconds")
    series = [s for s in samples(text) if s.name in wanted]
    sla_s = next(s.value for s in series if s.name == "edgeagent_sla_p99_seconds")
    assert sla_s == SLA_MS / 1000
    count = next(s.value for s in series if s.name == "edgeagent_latency_seconds_count")
    within = [s.value for s in series if s.name.endswith("_bucket") and float(s.labels["le"]) == sla_s]
    assert len(within) == 1, f"no bucket at the SLA {sla_s}: {[s.labels for s in series]}"
    labels = {"job": "edgeagent", "instance": "real"}

    def selector(name: str, extra: dict[str, str]) -> str:
        return name + "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in {**labels, **extra}.items()) + "}"

    input_series = "".join(
        f"      - series: {json.dumps(selector(s.name, s.labels))}\n        values: '{s.value!r}x2'\n" for s in series
    )
    test = (
        f"rule_files: [{json.dumps(str(RULES))}]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n"
        f"    input_series:\n{input_series}"
        "    promql_expr_test:\n      - expr: edgeagent:frames_over_sla:total\n        eval_time: 1m\n"
        f"        exp_samples:\n          - labels: {json.dumps(selector('edgeagent:frames_over_sla:total', {}))}\n"
        f"            value: {count - within[0]!r}\n"
    )
    (tmp_path / "scrape_test.yml").write_text(test)
    out = subprocess.run([promtool, "test", "rules", str(tmp_path / "scrape_test.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr + test
