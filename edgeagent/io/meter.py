"""The window meter: what one control window saw, closed into a :class:`~edgeagent.tuner.WindowStats`.

Owner: the I/O thread. Times are ``time.monotonic_ns()`` values passed in, so it is unit-tested
without sleeping. A window runs at exactly one execution level: :meth:`WindowMeter.restart` is
called at every swap and discards the partial window (its frames ran at the old level), so a closed
window carries the level and swap epoch it was measured at and nobody has to compare switch counters.
"""

from __future__ import annotations

from dataclasses import replace

from edgeagent.tuner import SLAPolicy, WindowStats, summarize_window


class WindowMeter:
    def __init__(self, now_ns: int, level: int = 0, epoch: int = 0) -> None:
        self.restart(now_ns, level, epoch)

    def restart(self, now_ns: int, level: int, epoch: int) -> None:
        """Start a new window at ``level`` (swap number ``epoch``), forgetting the current one."""
        self.level = level
        self.epoch = epoch
        self._start_ns = now_ns
        self._latencies_ms: list[float] = []
        self._dropped = 0
        self._busy_ns = 0
        self._busy_since_ns: int | None = None

    def frame_done(self, total_ms: float) -> None:
        """A result went out ``total_ms`` after its frame was received."""
        self._latencies_ms.append(total_ms)

    def frame_dropped(self) -> None:
        """A valid frame left without a result (stale, expired, error ...)."""
        self._dropped += 1

    def busy(self, all_busy: bool, now_ns: int) -> None:
        """Every infer request is busy from ``now_ns`` on (True), or one is idle again (False).
        The busy fraction is the controller's evidence of demand."""
        if all_busy and self._busy_since_ns is None:
            self._busy_since_ns = now_ns
        elif not all_busy and self._busy_since_ns is not None:
            self._busy_ns += now_ns - self._busy_since_ns
            self._busy_since_ns = None

    def close_if_due(self, now_ns: int, policy: SLAPolicy) -> WindowStats | None:
        """The finished window once ``policy.window_s`` has passed, else None. A window with fewer than
        ``policy.min_frames`` results is extended (up to 5x) so that its p99 means something."""
        dur_s = (now_ns - self._start_ns) / 1e9
        if dur_s < policy.window_s:
            return None
        n = len(self._latencies_ms)
        if 0 < n < policy.min_frames and dur_s < 5 * policy.window_s:
            return None
        busy_ns = self._busy_ns
        if self._busy_since_ns is not None:
            busy_ns += now_ns - self._busy_since_ns
        ws = summarize_window(
            self._latencies_ms, self._dropped, busy_ns / (dur_s * 1e9), now_ns / 1e9, dur_s, policy.p99_ms
        )
        still_busy = self._busy_since_ns is not None
        level, epoch = self.level, self.epoch
        self.restart(now_ns, level, epoch)
        if still_busy:
            self._busy_since_ns = now_ns
        return replace(ws, level=level, epoch=epoch)
