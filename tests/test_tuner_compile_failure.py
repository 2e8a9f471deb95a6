"""A level that cannot be compiled is avoided by the controller (agent.py reports it via level_failed)."""

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
