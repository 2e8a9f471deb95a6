"""``edgeagent bench hotpath`` runs the real I/O loop and the ZeroMQ floor side by side, and every frame
of both gets its reply and its published result."""

from __future__ import annotations

import argparse

from edgeagent.bench import hotpath


def test_bench_hotpath_measures_the_agent_and_the_floor_and_answers_every_frame() -> None:
    r = hotpath.run(argparse.Namespace(rounds=2, per_round=40, json=None))
    assert r["us_per_frame"] > 0 and r["floor_us_per_frame"] > 0
    lo, hi = r["own_us_per_frame_range"]
    assert lo <= r["own_us_per_frame"] <= hi
    # Round 0 (warm-up) and two measured rounds of 40 frames each for the agent; two for the floor.
    assert r["results_received"] == 3 * 40
    assert r["floor_results_received"] == 2 * 40
