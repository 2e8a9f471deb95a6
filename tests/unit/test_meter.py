"""The window meter: window length, thin-window extension, busy fraction, level and epoch stamps."""

from __future__ import annotations

import math

import pytest

from edgeagent.io.meter import WindowMeter
from edgeagent.tuner import SLAPolicy

S = 1_000_000_000
POLICY = SLAPolicy(p99_ms=10.0, window_s=1.0, min_frames=4)


def test_a_window_closes_after_window_s_with_its_statistics() -> None:
    m = WindowMeter(0, level=2, epoch=5)
    for ms in (1.0, 2.0, 3.0, 20.0):
        m.frame_done(ms)
    m.frame_dropped()
    assert m.close_if_due(S - 1, POLICY) is None
    ws = m.close_if_due(S, POLICY)
    assert ws is not None
    assert (ws.frames, ws.dropped, ws.level, ws.epoch) == (4, 1, 2, 5)
    assert (ws.p50_ms, ws.max_ms, ws.in_sla) == (2.0, 20.0, 3)
    assert ws.duration_s == pytest.approx(1.0) and ws.t_end_s == pytest.approx(1.0)
    assert m.close_if_due(S + 1, POLICY) is None  # a new window started at the close


def test_a_thin_window_is_extended_up_to_five_times_but_an_empty_one_is_not() -> None:
    m = WindowMeter(0)
    m.frame_done(1.0)
    assert m.close_if_due(2 * S, POLICY) is None  # 1 of 4 frames: extended
    ws = m.close_if_due(5 * S, POLICY)
    assert ws is not None and ws.frames == 1 and ws.duration_s == pytest.approx(5.0)
    empty = m.close_if_due(6 * S, POLICY)
    assert empty is not None and empty.frames == 0 and math.isnan(empty.p99_ms) and empty.met(10.0)


def test_busy_fraction_counts_time_with_every_request_busy_across_windows() -> None:
    m = WindowMeter(0)
    m.busy(True, S // 4)
    m.busy(True, S // 2)  # already busy: the first start counts
    m.busy(False, 3 * S // 4)
    m.busy(True, 9 * S // 10)  # still busy when the window closes
    ws = m.close_if_due(S, POLICY)
    assert ws is not None and ws.busy_fraction == pytest.approx(0.6)
    m.busy(False, S + S // 10)
    ws = m.close_if_due(2 * S, POLICY)
    assert ws is not None and ws.busy_fraction == pytest.approx(0.1)  # the busy stretch carried over


def test_restart_at_a_swap_discards_the_partial_window_and_stamps_the_new_level() -> None:
    m = WindowMeter(0, level=0, epoch=0)
    m.frame_done(50.0)
    m.frame_dropped()
    m.busy(True, S // 2)
    m.restart(S // 2, level=1, epoch=1)
    for _ in range(4):
        m.frame_done(1.0)
    ws = m.close_if_due(S + S // 2, POLICY)
    assert ws is not None
    assert (ws.level, ws.epoch, ws.frames, ws.dropped, ws.max_ms, ws.busy_fraction) == (1, 1, 4, 0, 1.0, 0.0)
