"""A short soak (the README figure uses 10 minutes): overload, then exact accounting and no growth."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_cli


def test_short_soak_under_3x_overload(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    r = run_cli(
        "bench",
        "soak",
        "--minutes",
        "0.33",
        "--warmup-s",
        "6",
        "--sample-s",
        "1",
        "--probe-s",
        "2",
        "--sla-p99-ms",
        "100",
        "--json",
        str(out),
        timeout=240,
    )
    assert out.exists(), f"bench soak wrote no result (exit {r.returncode}):\n{r.stdout}\n{r.stderr}"
    res = json.loads(out.read_text())
    goals = res["goals"]
    # bench soak exits 0 when every goal passed and 1 when one failed (soak.main); the exit code,
    # the goals it wrote and the goals it printed must say the same.
    failed = sorted(g for g, ok in goals.items() if not ok)
    assert r.returncode == (1 if failed else 0), (r.returncode, failed, r.stderr)
    printed = next(ln for ln in r.stdout.splitlines() if ln.startswith("goals"))
    assert all(f"{g}={'PASS' if ok else 'FAIL'}" in printed for g, ok in goals.items()), printed
    assert res["offered_fps"] >= 2.9 * res["level0_capacity_fps"]
    assert res["dropped"] > 0  # overloaded: stale frames were dropped, not queued
    assert goals["accounting_exact"], res
    assert goals["no_thread_growth"] and goals["no_fd_growth"], res
    # The two goals a 20 s run may miss without anything being wrong, bounded here instead:
    assert res["rss_growth_pct"] < 5, res  # 2 % is the 10-minute goal; 20 s is noisier
    # Fresh, not queued: a queueing agent's frames would age by seconds at 3x overload. The 100 ms
    # SLA is ~25 level-0 frame times on a Xeon with AMX (3.8 ms a frame); a slower CPU gets 25 of its own.
    frame_ms = 1000 / res["level0_capacity_fps"]
    assert res["age_p99_ms"] <= max(res["sla_p99_ms"], 25 * frame_ms), (res, frame_ms)
