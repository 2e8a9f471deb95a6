"""The level controller: judges windows only at the running level, one request at a time."""

from __future__ import annotations

import pytest

from edgeagent.config import SLAConfig
from edgeagent.control import Controller
from edgeagent.tuner import WindowStats, derive_ladder

LADDER = derive_ladder(2, 2, 2, 1, max_batch=4)  # (1,1,1) (1,2,1) (2,3,1) (2,3,2) (2,3,4)
SLA = SLAConfig(p99_ms=30.0, min_frames=10, up_windows=2, adaptive=True)


def window(p99_ms: float, level: int = 0, epoch: int = 0, dropped: int = 20) -> WindowStats:
    """A saturated window (drops: demand) with 100 frames at ``p99_ms``."""
    return WindowStats(0.0, 1.0, 100, dropped, p99_ms / 2, p99_ms, p99_ms, p99_ms, 1.0, 100, level=level, epoch=epoch)


def controller(sla: SLAConfig = SLA, level: int = 0) -> Controller:
    return Controller(sla, LADDER, level, interference=lambda: 0.25)


def test_climbs_one_request_at_a_time_and_waits_for_the_swap() -> None:
    c = controller()
    assert c.on_window(window(5)) is None  # 1 of 2 good windows
    assert c.on_window(window(5)) == 1  # up: requested
    assert c.view.pending == 1 and c.view.running == 0
    # Until the switch is settled, windows are counted but not judged: no second request.
    assert c.on_window(window(5)) is None and c.on_window(window(500)) is None
    assert c.view.windows == 4 and c.view.windows_violating == 1 and c.view.pending == 1
    c.on_swapped(1)
    assert (c.view.running, c.view.pending, c.state.level) == (1, None, 1)
    assert c.view.interference == pytest.approx(0.25) and c.view.last_window is not None
    assert c.on_window(window(5, level=1)) is None
    assert c.on_window(window(5, level=1)) == 2


def test_a_window_of_another_level_is_never_judged() -> None:
    c = controller(level=2)
    assert c.on_window(window(500, level=1)) is None  # would be a step down at level 2
    assert c.view.windows_violating == 1 and c.view.last_decision is None


def test_breaking_the_sla_steps_down_at_once() -> None:
    c = controller(level=3)
    assert c.on_window(window(45, level=3)) == 2
    assert c.view.last_decision is not None and c.view.last_decision.action == "down"


def test_a_failed_compile_backs_the_level_off_and_clears_the_request() -> None:
    c = controller()
    c.on_window(window(5))
    assert c.on_window(window(5)) == 1
    c.on_failed(1)
    assert (c.view.pending, c.state.level) == (None, 0)
    for _ in range(6):  # demand and headroom, but level 1 is in the longest back-off
        assert c.on_window(window(5)) is None
    assert "backed off" in c.view.last_decision.reason  # type: ignore[union-attr]


def test_not_adaptive_counts_windows_but_never_asks_for_a_level() -> None:
    c = controller(SLAConfig(p99_ms=30.0, min_frames=10, adaptive=False))
    for _ in range(5):
        assert c.on_window(window(5)) is None
    assert c.view.windows == 5 and c.view.last_decision is None
    c.set_sla(SLA)  # a reload turns it on: the next windows are judged with the new policy
    c.on_window(window(5))
    assert c.on_window(window(5)) == 1


def test_a_swap_the_controller_did_not_ask_for_is_followed() -> None:
    c = controller(level=2)
    c.on_swapped(0)  # e.g. a reload brought level 0
    assert c.state.level == 0 and c.view.running == 0
    assert c.on_window(window(500, level=0)) is None  # level 0: hold at the bottom


def test_a_request_absorbed_by_a_failed_reload_is_cancelled_and_adapting_goes_on() -> None:
    c = controller()
    c.on_window(window(5))
    assert c.on_window(window(5)) == 1
    c.on_cancelled()  # the reload that carried the request failed: nothing was swapped
    assert (c.view.pending, c.view.running, c.state.level) == (None, 0, 0)
    assert c.on_window(window(500)) is None  # judged again (a break at level 0 holds)
    assert c.view.last_decision is not None and "at level 0" in c.view.last_decision.reason
