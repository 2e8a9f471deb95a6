"""The level controller: the adaptive policy's state, fed one window at a time on the I/O thread.

The level-change protocol, end to end (each step names the one thread that does it):

1. **decide** (I/O thread): the window meter closes a window stamped with the level and swap epoch it
   ran at; :meth:`Controller.on_window` feeds it to :func:`~edgeagent.tuner.decide` and returns a
   target level, or None.
2. **request** (I/O thread): the loop hands the target to the switcher (:meth:`Switcher.request`);
   the controller marks it pending and judges no window until the request is settled.
3. **compile** (the switcher's thread): the compiled-model cache or a fresh compile, off the hot path.
4. **queue** (switcher → I/O thread): the compiled model is posted to the loop's inbox, or, if the
   compile failed, the failure is (the controller then backs that level off: :meth:`on_failed`; a
   failed reload, which absorbs a pending level request, settles it: :meth:`on_cancelled`). A reload
   is requested at the pending target level when there is one, so it never undoes a level change.
5. **drain** (I/O thread): no new job starts while a swap is queued; frames wait in their slots.
6. **swap** (I/O thread): once no job is in flight, the engine activates the new model's requests,
   the swap epoch increments and the window meter restarts at the new level.
7. **confirm** (I/O thread): :meth:`Controller.on_swapped` records the running level; windows are
   judged again from the next one, which ran entirely at that level.

Owner: every method runs on the I/O thread. Other threads read :attr:`Controller.view`, an immutable
snapshot replaced (never mutated) after each change.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import psutil

from edgeagent.config import SLAConfig
from edgeagent.logs import q
from edgeagent.tuner import Decision, ExecLevel, TunerState, WindowStats, decide, level_failed

log = logging.getLogger("edgeagent.control")


@dataclass(frozen=True)
class ControllerView:
    """What the status command, metrics and sd_notify read (any thread)."""

    running: int = 0  # the level whose requests run now
    pending: int | None = None  # the level requested and not yet swapped in or failed
    windows: int = 0
    windows_violating: int = 0
    last_window: WindowStats | None = None
    last_decision: Decision | None = None
    interference: float = 0.0


class Controller:
    def __init__(
        self, sla: SLAConfig, ladder: Sequence[ExecLevel], level: int, interference: Callable[[], float]
    ) -> None:
        """``sla``: the policy (its ``adaptive`` says whether to act at all); ``level``: the level that
        runs at start; ``interference``: other processes' share of the CPUs since its last call."""
        self.sla = sla
        self.ladder = list(ladder)
        self._interference = interference
        self.state = TunerState(level=level)
        self.view = ControllerView(running=level)

    def set_sla(self, sla: SLAConfig) -> None:
        """A reload: the new policy applies from the next window (the tuner state and memory stay)."""
        self.sla = sla

    def on_window(self, ws: WindowStats) -> int | None:
        """Count and judge one closed window; returns the level to switch to, or None."""
        v = self.view
        ws = replace(ws, interference=self._interference())
        violating = v.windows_violating + (0 if ws.met(self.sla.p99_ms) else 1)
        self.view = v = replace(
            v, windows=v.windows + 1, windows_violating=violating, last_window=ws, interference=ws.interference
        )
        if not self.sla.adaptive or v.pending is not None or ws.level != v.running:
            return None  # not adapting, or a window of a level that is on its way out
        self.state, decision = decide(self.state, ws, self.ladder, self.sla)
        previous = v.last_decision
        # Every change is logged; a hold only when its reason changes (not once per window).
        if decision.action != "hold" or previous is None or _shape(previous.reason) != _shape(decision.reason):
            log.info(
                "event=tuner_decision action=%s from=%d to=%d p99_ms=%.2f interference=%.2f reason=%s",
                decision.action,
                decision.from_level,
                decision.to_level,
                ws.p99_ms,
                ws.interference,
                q(decision.reason),
            )
        target = decision.to_level if decision.action != "hold" else None
        self.view = replace(v, last_decision=decision, pending=target)
        return target

    def on_swapped(self, level: int) -> None:
        """Confirm: ``level`` runs now (the one requested, or one a reload brought)."""
        if self.state.level != level:
            self.state = replace(self.state, level=level)
        self.view = replace(self.view, running=level, pending=None)

    def on_cancelled(self) -> None:
        """The request was settled without a swap (a failed reload absorbed it): the running level stays."""
        if self.state.level != self.view.running:
            self.state = replace(self.state, level=self.view.running)
        self.view = replace(self.view, pending=None)

    def on_failed(self, level: int) -> None:
        """``level`` could not be compiled: keep off it (and above it) for the longest back-off."""
        self.state = level_failed(self.state, level, self.view.running, self.sla)
        self.view = replace(self.view, pending=None)


class HostInterference:
    """Share of the CPUs that other processes used (or the hypervisor stole) since the last call: a CPU
    hog or throttling. psutil, system-wide minus this process. Called by the I/O thread per window."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        psutil.cpu_percent(None)  # the first call starts the interval
        self._proc.cpu_percent(None)

    def __call__(self) -> float:
        busy = psutil.cpu_percent(None) / 100
        own = self._proc.cpu_percent(None) / 100 / (psutil.cpu_count() or 1)
        return float(max(0.0, min(1.0, busy - own)))


def _shape(reason: str) -> str:
    """A reason without its numbers: holds are logged when this changes, not every window."""
    return re.sub(r"[0-9.]+", "#", reason)
