"""Newest-frame slots: where valid frames wait for an idle infer request. Pure: no ZeroMQ, no clock.

Each source has one slot holding its newest frame; a newer frame replaces the waiting one (the caller
drops the old one as ``stale``), so nothing queues without bound and the frame that goes to inference
is always the freshest. :meth:`Slots.take` forms the next job: frames older than ``max_age_ns`` are
handed back as expired, and a partial batch waits (bounded by ``batch_wait_ns``) for more sources.

Owner: the I/O thread. Times are ``time.monotonic_ns()`` values passed in by the caller, so every
rule here is unit-tested without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from edgeagent.wire import Frame


@dataclass
class Take:
    """What :meth:`Slots.take` decided: ``frames`` to start as one job (oldest-waiting first; empty
    when nothing should start now) and ``expired`` frames the caller drops as ``expired``."""

    frames: list[Frame] = field(default_factory=list)
    expired: list[Frame] = field(default_factory=list)


class Slots:
    def __init__(self) -> None:
        self._frames: dict[str, Frame] = {}

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: Frame) -> Frame | None:
        """Make ``frame`` its source's waiting frame; returns the frame it replaced (now stale), if any."""
        old = self._frames.get(frame.source)
        self._frames[frame.source] = frame
        return old

    def _oldest_rx_ns(self) -> int:
        return min(f.rx_ns for f in self._frames.values())

    def take(self, now_ns: int, batch: int, batch_wait_ns: int, max_age_ns: int = 0) -> Take:
        """The next job of at most ``batch`` frames, oldest-waiting first.

        Frames that waited longer than ``max_age_ns`` (0: no limit) are removed and returned as
        expired first: they would be late whatever job they joined. With ``batch`` > 1 and fewer
        waiting sources than ``batch``, nothing starts until the oldest frame has waited
        ``batch_wait_ns`` (then a partial batch goes).
        """
        out = Take()
        if max_age_ns:
            for source, frame in list(self._frames.items()):
                if now_ns - frame.rx_ns > max_age_ns:
                    out.expired.append(self._frames.pop(source))
        if not self._frames:
            return out
        if batch > 1 and len(self._frames) < batch and now_ns - self._oldest_rx_ns() < batch_wait_ns:
            return out
        for source in sorted(self._frames, key=lambda s: self._frames[s].rx_ns)[:batch]:
            out.frames.append(self._frames.pop(source))
        return out

    def wait_ns(self, now_ns: int, batch: int, batch_wait_ns: int) -> int | None:
        """How long until :meth:`take` would start a partial batch that is waiting now (for the I/O
        thread's poll timeout); None when no partial batch is waiting."""
        if batch <= 1 or not self._frames or len(self._frames) >= batch:
            return None
        return max(0, self._oldest_rx_ns() + batch_wait_ns - now_ns)

    def remove_if(self, pred: Callable[[Frame], bool]) -> list[Frame]:
        """Remove and return the waiting frames for which ``pred`` holds (e.g. a frame size a reloaded
        model no longer takes); with ``lambda f: True`` at shutdown."""
        gone = [f for f in self._frames.values() if pred(f)]
        for f in gone:
            del self._frames[f.source]
        return gone
