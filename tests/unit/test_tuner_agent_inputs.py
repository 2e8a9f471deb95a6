"""Inputs the agent adds to the pure policy: compile failures (level_failed) and CPU interference."""

from __future__ import annotations

from edgeagent.tuner import SLAPolicy, TunerState, WindowStats, backoffs, decide, derive_ladder, level_failed


def test_a_level_that_fails_to_compile_is_avoided() -> None:
    policy = SLAPolicy(p99_ms=30.0, min_frames=10)
    ladder = derive_ladder(4, 4, 2, 1)
    state = level_failed(TunerState(level=3, window_index=10), 3, 2, policy)
    assert state.level == 2 and backoffs(state) == {3: policy.backoff_max_windows}
    good = WindowStats(0.0, 1.0, 100, 20, 10.0, 12.0, 14.0, 15.0, 1.0, 100)  # demand, far within the SLA
    for _ in range(6):
        state, d = decide(state, good, ladder, policy)
        assert d.to_level <= 2, d


def test_a_failure_under_interference_does_not_block_once_it_eases() -> None:
    """A CPU hog broke level 2; when the hog stops the controller climbs back at the same load."""
    policy = SLAPolicy(p99_ms=30.0, min_frames=10, up_windows=1)
    ladder = derive_ladder(4, 4, 2, 1)
    hogged = WindowStats(0.0, 1.0, 100, 20, 20.0, 30.0, 45.0, 50.0, 1.0, 80, interference=0.6)
    state, d = decide(TunerState(level=2), hogged, ladder, policy)
    assert (d.action, d.to_level) == ("down", 1)
    calm_same_load = WindowStats(0.0, 1.0, 100, 20, 10.0, 12.0, 14.0, 15.0, 1.0, 100, interference=0.6)
    for _ in range(3):  # still hogged: the back-off passes, the memory keeps level 2 off at this load
        state, d = decide(state, calm_same_load, ladder, policy)
    assert d.action == "hold" and "broke the SLA" in d.reason
    eased = WindowStats(0.0, 1.0, 100, 20, 10.0, 12.0, 14.0, 15.0, 1.0, 100, interference=0.1)
    state, d = decide(state, eased, ladder, policy)
    assert (d.action, d.to_level) == ("up", 2)
