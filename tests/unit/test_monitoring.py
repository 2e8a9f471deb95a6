"""monitoring/: the Prometheus rules pass `promtool check rules` and their unit tests
(monitoring/tests/*.yml), every alert has a test in which it fires and one in which it stays quiet,
the example Prometheus config loads them, and the Grafana dashboard is importable and provisionable
and every query in it parses.

The promtool tests skip where promtool is missing (.ci/run installs Debian's prometheus package).
That the rules and the dashboard name only metrics the agent exports is checked against a real
agent in tests/e2e/test_monitoring.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import (
    DASHBOARD,
    MONITORING,
    RULES,
    Rule,
    dashboard_exprs,
    grafana_to_promql,
    read_rules,
    replace_exprs,
)

UNIT_TESTS = sorted((MONITORING / "tests").glob("*.yml"))


@pytest.fixture()
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (.ci/run installs Debian's prometheus package)")
    return path


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_rules_check_and_pass_their_unit_tests(promtool: str) -> None:
    check = run(promtool, "check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    assert len(UNIT_TESTS) >= 4
    test = run(promtool, "test", "rules", *map(str, UNIT_TESTS))
    assert test.returncode == 0, test.stdout + test.stderr


def test_example_prometheus_config_loads_the_rules(promtool: str) -> None:
    check = run(promtool, "check", "config", str(MONITORING / "prometheus.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 rule files found" in check.stdout


def mutated_failures(promtool: str, tmp_path: Path, mutate: str) -> subprocess.Popen[str]:
    """Start the unit tests against a copy of the rules in which ``mutate`` (with {expr}) replaces
    every alert's expression; the copy sits where the tests' ``../edgeagent-rules.yml`` points."""
    (tmp_path / "tests").mkdir(parents=True)
    for t in UNIT_TESTS:
        shutil.copy(t, tmp_path / "tests" / t.name)

    def alerts_only(rule: Rule) -> str | None:
        return mutate.format(expr=rule.expr) if rule.kind == "alert" else None

    (tmp_path / RULES.name).write_text(replace_exprs(RULES.read_text(), alerts_only))
    tests = [str(tmp_path / "tests" / t.name) for t in UNIT_TESTS]
    cmd = [promtool, "test", "rules", *tests]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_every_alert_has_a_test_that_fires_and_one_that_stays_quiet(promtool: str, tmp_path: Path) -> None:
    """Two mutants of the rules: every alert never firing, then every alert also firing whenever
    its expression is empty. Each alert must fail a unit test in both: a broken expression that
    silences an alert, or makes it fire when it should not, cannot pass."""
    alerts = {r.name for r in read_rules(RULES.read_text()) if r.kind == "alert"}
    assert len(alerts) >= 9, alerts
    mutants = {
        "never fires": "vector(1) == 0",
        "fires when quiet": "({expr})\nor on () vector(1)",
    }
    # Both at once: promtool is single-threaded and there are two CPUs at least.
    running = {what: mutated_failures(promtool, tmp_path / str(i), m) for i, (what, m) in enumerate(mutants.items())}
    for what, proc in running.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0 and "FAILED" in out, f"{what}: the unit tests passed:\n{out}"
        caught = set(re.findall(r"alertname: (\w+), time:", out))
        assert not re.search(r"rule: |err: ", out), f"{what}: the mutant did not evaluate:\n{out}"
        assert caught == alerts, f"alerts whose unit tests pass when it {what}: {sorted(alerts - caught)}"


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """Every query of the dashboard, with Grafana's variables filled in, written as a recording rule:
    `promtool check rules` parses each one."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 20
    rules = "groups:\n  - name: dashboard\n    rules:\n" + "".join(
        f"      - record: dashboard:query_{i}:check  # {where}\n        expr: {json.dumps(grafana_to_promql(expr))}\n"
        for i, (where, expr) in enumerate(exprs.items())
    )
    (tmp_path / "dashboard.yml").write_text(rules)
    check = run(promtool, "check", "rules", str(tmp_path / "dashboard.yml"))
    assert check.returncode == 0, check.stdout + check.stderr + rules


def test_dashboard_is_importable_and_provisionable() -> None:
    """The same file works imported in the UI and provisioned from disk: a fixed uid, no database
    id, no import-time inputs (provisioning cannot fill `${DS_...}`), every query on the
    `datasource` template variable; panel ids unique, panels inside the 24-column grid, no overlap."""
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] == "edgeagent" and d["id"] is None and "__inputs" not in d
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    on_variable = {"type": "prometheus", "uid": "${datasource}"}
    panels = [p for top in d["panels"] for p in (top, *top.get("panels", []))]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        if p["type"] != "row":
            assert p["datasource"] == on_variable, p["title"]
            assert p["targets"] and all(t["datasource"] == on_variable for t in p["targets"]), p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] >= 1 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == on_variable, v["name"]
