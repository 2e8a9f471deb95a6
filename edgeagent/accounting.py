"""Frame accounting per source: received = processed + dropped + rejected (+ still in the agent).

Written by the I/O thread only, read by the metrics and status threads through :meth:`snapshot`.
The lock guards the table's shape (a source added or expired) against a reader iterating it; counting
a frame of a known source is a plain increment (one writer; the GIL makes each increment whole), so
the hot path takes no lock. A snapshot taken between a frame's receipt and its outcome counts it as
in the agent, as it is.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

UNKNOWN_SOURCE = "-"  # a message rejected before its source name could be read
OVERFLOW_SOURCE = "_overflow"  # sources beyond ingest.max_sources (bounded label cardinality)
EXPIRED_SOURCE = "_expired"  # the counts of sources that went silent and gave up their place
_SPECIAL = (UNKNOWN_SOURCE, OVERFLOW_SOURCE, EXPIRED_SOURCE)


@dataclass
class SourceCounts:
    received: int = 0
    processed: int = 0
    over_sla: int = 0  # of the processed: results published later than the SLA after receipt
    dropped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "processed": self.processed,
            "over_sla": self.over_sla,
            "dropped": dict(self.dropped),
            "rejected": dict(self.rejected),
        }


class Accounting:
    """Counters per source; sources beyond ``max_sources`` are folded into one label, and a source
    silent for longer than the idle limit gives its place up (:meth:`expire`): its counts move to
    ``_expired``, so totals stay exact while the label set stays bounded."""

    def __init__(self, max_sources: int) -> None:
        self.max_sources = max_sources
        self._lock = threading.Lock()
        self._sources: dict[str, SourceCounts] = {}
        self._seen: dict[str, int] = {}  # named source → when it last sent (monotonic ns)
        self._named = 0

    def label(self, source: str | None) -> str:
        """The label a frame is counted under (admits a new source while there is room)."""
        if source is None:
            return UNKNOWN_SOURCE
        if source in self._sources and source not in _SPECIAL:
            return source
        return source if self._named < self.max_sources and source not in _SPECIAL else OVERFLOW_SOURCE

    def expire(self, now_ns: int, idle_ns: int) -> list[str]:
        """Free the places of sources silent for ``idle_ns`` (``now_ns``: ``time.monotonic_ns()``); returns
        them. A result of an expired source published afterwards counts under its name again."""
        gone = [s for s, t in self._seen.items() if now_ns - t > idle_ns]
        if gone:
            with self._lock:
                into = self._get(EXPIRED_SOURCE)
                for s in gone:
                    c = self._sources.pop(s, None)
                    del self._seen[s]
                    self._named -= c is not None
                    if c is not None:
                        into.received += c.received
                        into.processed += c.processed
                        into.over_sla += c.over_sla
                        into.dropped.update(c.dropped)
                        into.rejected.update(c.rejected)
        return gone

    def idle_s(self, now_ns: int) -> dict[str, float]:
        """Seconds since each live source last sent (any thread: a copy of a dict of ints)."""
        return {s: round((now_ns - t) / 1e9, 3) for s, t in dict(self._seen).items()}

    def _get(self, label: str) -> SourceCounts:
        counts = self._sources.get(label)
        if counts is None:
            counts = self._sources[label] = SourceCounts()
            if label not in _SPECIAL:  # a new place: it expires like any (even one re-created by a late result)
                self._named += 1
                self._seen.setdefault(label, time.monotonic_ns())
        return counts

    def admit(self, source: str, now_ns: int) -> bool:
        """A frame of ``source`` arrived at ``now_ns`` (``time.monotonic_ns()``): counted as received under
        its name and True, or False (nothing counted) when the source has no place (more than
        ``max_sources``, or a reserved name): the caller rejects it as ``sources``."""
        c = self._sources.get(source)
        if c is None or source in _SPECIAL:
            label = self.label(source)
            if label == OVERFLOW_SOURCE:
                return False
            with self._lock:
                c = self._get(label)
        c.received += 1
        self._seen[source] = now_ns
        return True

    def _touch(self, label: str) -> None:
        if label not in _SPECIAL:
            self._seen[label] = time.monotonic_ns()

    def rejected(self, label: str, reason: str) -> None:
        """A message that was received and refused (counts it as received too)."""
        with self._lock:
            self._touch(label)
            c = self._get(label)
            c.received += 1
            c.rejected[reason] += 1

    def dropped(self, label: str, reason: str) -> None:
        with self._lock:
            self._get(label).dropped[reason] += 1

    def processed(self, source: str, over_sla: bool = False) -> None:
        """One result published for a frame of ``source`` (``over_sla``: later than the SLA after its
        frame was received); counted under its label (its name, unless it expired meanwhile and the
        table has filled up since)."""
        c = self._sources.get(source)
        if c is None:
            with self._lock:
                c = self._get(self.label(source))
        c.processed += 1
        if over_sla:
            c.over_sla += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {s: c.as_dict() for s, c in self._sources.items()}

    @staticmethod
    def totals(snapshot: dict[str, dict[str, Any]]) -> dict[str, int]:
        out = {"received": 0, "processed": 0, "dropped": 0, "rejected": 0}
        for c in snapshot.values():
            out["received"] += c["received"]
            out["processed"] += c["processed"]
            out["dropped"] += sum(c["dropped"].values())
            out["rejected"] += sum(c["rejected"].values())
        return out
