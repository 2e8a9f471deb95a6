"""The policy core over synthetic latency traces: no sleeps, no OpenVINO."""

from __future__ import annotations

import math

import pytest

from edgeagent.tuner import (
    ExecLevel,
    SLAPolicy,
    TunerState,
    WindowStats,
    backoffs,
    decide,
    derive_ladder,
    summarize_window,
)

POLICY = SLAPolicy(p99_ms=30.0, min_frames=50, headroom=0.8, up_windows=2, idle_windows=3)
LADDER = derive_ladder(2, 2, 2, 1)


def win(p99: float, frames: int = 100, dropped: int = 10, busy: float = 1.0, i: int = 0) -> WindowStats:
    return WindowStats(float(i), 1.0, frames, dropped, p99 * 0.6, p99 * 0.9, p99, p99 * 1.1, busy,
                       frames if p99 <= 30 else int(frames * 0.9))


def run(state: TunerState, windows: list[WindowStats], ladder: list[ExecLevel] = LADDER) -> list[tuple[str, int]]:
    out = []
    for w in windows:
        state, d = decide(state, w, ladder, POLICY)
        out.append((d.action, d.to_level))
    return out


@pytest.mark.parametrize("cpus", [1, 2, 4, 8, 16, 64])
def test_ladder_is_derived_ordered_and_bounded(cpus: int) -> None:
    tput = max(1, cpus // 2) if cpus > 2 else cpus
    ladder = derive_ladder(cpus, cpus, tput, 1, max_batch=4)
    assert ladder[0] == ExecLevel(1, 1, 1)
    assert len(set(ladder)) == len(ladder) <= 10
    assert all(lv.streams <= min(cpus, tput) and lv.requests <= 2 * lv.streams for lv in ladder)
    keys = [(lv.streams * lv.batch, lv.requests) for lv in ladder]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert max(lv.streams for lv in ladder) == min(cpus, tput)
    assert [lv.batch for lv in ladder if lv.batch > 1] == [2, 4]
    no_batch = derive_ladder(cpus, cpus, tput, 1, allow_batch=False)
    assert all(lv.batch == 1 for lv in no_batch) and no_batch == ladder[: len(no_batch)]


def test_ladder_on_this_machine_class_and_limits() -> None:
    assert derive_ladder(2, 2, 2, 1, max_batch=1) == [ExecLevel(1, 1, 1), ExecLevel(1, 2, 1), ExecLevel(2, 3, 1)]
    assert [lv.streams for lv in derive_ladder(64, 64, 32, 1, allow_batch=False)] == [1, 1, 2, 4, 8, 16, 32]
    # The device's RANGE_FOR_STREAMS caps the streams even when the hint would pick more.
    assert max(lv.streams for lv in derive_ladder(16, 4, 8, 1)) == 4
    with pytest.raises(ValueError, match="n_cpus=0"):
        derive_ladder(0, 1, 1, 1)


def test_summarize_window_nearest_rank_and_goodput() -> None:
    w = summarize_window([float(v) for v in range(100, 0, -1)], 3, 0.5, 10.0, 2.0, 95.0)
    assert (w.p50_ms, w.p95_ms, w.p99_ms, w.max_ms) == (50.0, 95.0, 99.0, 100.0)
    assert w.in_sla == 95 and w.goodput_fps == 47.5 and w.offered_fps == 51.5
    assert w.met(99.0) and not w.met(98.9)
    empty = summarize_window([], 0, 0.0, 1.0, 1.0, 30.0)
    assert empty.frames == 0 and math.isnan(empty.p99_ms) and empty.met(30.0) and empty.goodput_fps == 0


def test_steps_up_only_with_demand_and_headroom() -> None:
    assert run(TunerState(), [win(20), win(20)]) == [("hold", 0), ("up", 1)]
    assert run(TunerState(), [win(20, dropped=0, busy=0.5)] * 3) == [("hold", 0)] * 3  # no demand
    assert run(TunerState(), [win(26)] * 3) == [("hold", 0)] * 3  # 26 > 0.8 x 30: no headroom
    assert run(TunerState(), [win(20, frames=10)] * 3) == [("hold", 0)] * 3  # too few frames to judge
    assert run(TunerState(), [win(20, dropped=0, busy=0.9)] * 2)[-1] == ("up", 1)  # busy is demand too


def test_top_level_holds() -> None:
    top = len(LADDER) - 1
    assert run(TunerState(level=top), [win(10)] * 4) == [("hold", top)] * 4


def test_steps_down_at_once_and_backs_off_exponentially() -> None:
    state = TunerState(level=2)
    state, d = decide(state, win(35), LADDER, POLICY)
    assert (d.action, d.to_level) == ("down", 1) and "backed off for 2 windows" in d.reason
    assert backoffs(state) == {2: 2}
    # Good windows at level 1, but level 2 is in back-off: hold until it expires.
    state, d = decide(state, win(20, dropped=5), LADDER, POLICY)
    state, d = decide(state, win(20, dropped=5, i=1), LADDER, POLICY)
    assert d.action == "hold" and ("back-off" in d.reason or "broke the SLA" in d.reason)
    # Breaking it again doubles the back-off.
    state = TunerState(level=2, backoff_count={2: 1})
    state, d = decide(state, win(35), LADDER, POLICY)
    assert "backed off for 4 windows" in d.reason


def test_panic_goes_straight_to_level_zero() -> None:
    _, d = decide(TunerState(level=3), win(90), derive_ladder(8, 8, 4, 1), POLICY)
    assert (d.action, d.to_level) == ("down", 0)


def test_broken_at_level_zero_holds() -> None:
    _, d = decide(TunerState(), win(50), LADDER, POLICY)
    assert d.action == "hold" and "level 0" in d.reason


def test_memory_blocks_reprobe_at_same_load_but_not_lower() -> None:
    state = TunerState(level=2)
    state, _ = decide(state, win(35, frames=100, dropped=20), LADDER, POLICY)  # broke at 120 fps offered
    for i in range(4):  # past the 2-window back-off
        state, d = decide(state, win(20, frames=100, dropped=20, i=i), LADDER, POLICY)
    assert d.action == "hold" and "broke the SLA" in d.reason
    state, d = decide(state, win(20, frames=70, dropped=5), LADDER, POLICY)  # 75 fps: lower load
    assert (d.action, d.to_level) == ("up", 2)


def test_steps_down_when_demand_is_gone() -> None:
    out = run(TunerState(level=2), [win(10, dropped=0, busy=0.1)] * 6)
    assert out == [("hold", 2), ("hold", 2), ("down", 1), ("hold", 1), ("hold", 1), ("down", 0)]


def test_no_oscillation_under_constant_load_near_the_boundary() -> None:
    """Plant: level → p99 at a constant saturating load; SLA 30 ms; level 2 cannot meet it."""
    plant = {0: 21.0, 1: 23.0, 2: 36.0, 3: 45.0, 4: 60.0}
    ladder = derive_ladder(2, 2, 2, 1, max_batch=4)
    state = TunerState()
    levels, broken, changes = [], 0, 0
    for i in range(200):
        lv = state.level
        w = win(plant[lv] if lv < 1 else plant[lv] * (0.97 + 0.06 * ((i * 7) % 5) / 4), dropped=15, i=i)
        broken += not w.met(30)
        state, d = decide(state, w, ladder, POLICY)
        changes += d.action != "hold"
        levels.append(state.level)
    assert changes <= 12, changes
    assert broken / 200 < 0.05
    assert levels.count(1) > 150  # it found and stays at the best level that meets the SLA


def test_policy_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"SLAPolicy\.headroom = 1\.5"):
        SLAPolicy(p99_ms=30, headroom=1.5)
