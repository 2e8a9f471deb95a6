"""``bench sla``'s figures: what every peer is compared by, computed from synthetic result records."""

from __future__ import annotations

from edgeagent.bench.sla import _figures, _steady, _windows


def test_figures_count_in_sla_results_by_age_and_by_the_agents_own_latency_per_camera() -> None:
    # (t s, age ms, level, source, in-agent ms): cam-1's second result is 1 ms over a 10 ms SLA by age only.
    records = [(0.1, 5.0, 0, "cam-0", 4.0), (0.2, 9.0, 0, "cam-1", 8.0), (1.1, 11.0, 0, "cam-1", 9.5)]
    f = _figures(records, 10.0, 2.0)
    assert f["goodput_fps"] == 1.0 and f["throughput_fps"] == 1.5
    assert f["published_in_sla_pct"] == round(100 * 2 / 3, 2) and f["in_agent_in_sla_pct"] == 100.0
    assert f["per_camera"] == {"cam-0": {"results": 1, "in_sla": 1}, "cam-1": {"results": 2, "in_sla": 1}}
    assert f["camera_in_sla_max_over_min"] == 1.0


def test_windows_and_steady_state_figures() -> None:
    records = [(0.5, 50.0, 0, "a", 50.0), (1.5, 5.0, 1, "a", 5.0), (2.5, 6.0, 1, "a", 6.0)]
    windows = _windows(records, 1.0, 10.0, 3.0)
    assert [w["met"] for w in windows] == [False, True, True]
    row = {"goodput_fps": 1.0, "steady": {"goodput_fps": 2.0}}
    assert _steady(row)["goodput_fps"] == 2.0 and _steady({"goodput_fps": 1.0})["goodput_fps"] == 1.0
