"""Newest-frame slots: replacement, oldest-first jobs, batch forming, expiry (clock passed in)."""

from __future__ import annotations

import numpy as np

from edgeagent.io.slots import Slots
from edgeagent.wire import Frame

MS = 1_000_000


def frame(source: str, rx_ms: float, seq: int = 0) -> Frame:
    return Frame(source, seq, np.zeros((2, 2, 3), np.uint8), int(rx_ms * MS), None, "native", "raw")


def test_a_newer_frame_replaces_the_waiting_one() -> None:
    slots = Slots()
    first = frame("a", 0, seq=1)
    assert slots.put(first) is None
    assert slots.put(frame("a", 1, seq=2)) is first  # the caller drops it as stale
    assert len(slots) == 1
    assert [f.seq for f in slots.take(2 * MS, 1, 0).frames] == [2]
    assert len(slots) == 0


def test_jobs_take_the_oldest_waiting_frames_first() -> None:
    slots = Slots()
    for source, t in (("b", 5), ("a", 3), ("c", 9)):
        slots.put(frame(source, t))
    assert [f.source for f in slots.take(10 * MS, 2, 0).frames] == ["a", "b"]
    assert [f.source for f in slots.take(10 * MS, 2, 0).frames] == ["c"]  # no wait configured: partial goes
    assert slots.take(10 * MS, 2, 0).frames == []


def test_a_partial_batch_waits_for_more_sources_then_goes() -> None:
    slots = Slots()
    slots.put(frame("a", 0))
    slots.put(frame("b", 1))
    assert slots.take(2 * MS, 4, 3 * MS).frames == []  # 2 of 4, oldest waited 2 ms < 3 ms
    assert slots.wait_ns(2 * MS, 4, 3 * MS) == 1 * MS
    assert len(slots) == 2
    slots.put(frame("c", 2))
    slots.put(frame("d", 2))
    assert [f.source for f in slots.take(2 * MS, 4, 3 * MS).frames] == ["a", "b", "c", "d"]  # full: no wait
    slots.put(frame("e", 10))
    assert slots.take(12 * MS, 4, 3 * MS).frames == []
    assert [f.source for f in slots.take(13 * MS, 4, 3 * MS).frames] == ["e"]  # waited its 3 ms: goes alone
    assert slots.wait_ns(13 * MS, 4, 3 * MS) is None  # nothing waiting
    slots.put(frame("f", 20))
    assert slots.wait_ns(40 * MS, 4, 3 * MS) == 0  # overdue: poll without waiting
    assert slots.wait_ns(40 * MS, 1, 3 * MS) is None  # batch 1 never waits


def test_expired_frames_are_handed_back_and_never_fill_a_job() -> None:
    slots = Slots()
    slots.put(frame("old", 0))
    slots.put(frame("new", 8))
    take = slots.take(10 * MS, 4, 0, max_age_ns=5 * MS)
    assert [f.source for f in take.expired] == ["old"]
    assert [f.source for f in take.frames] == ["new"]
    slots.put(frame("x", 20))
    take = slots.take(30 * MS, 1, 0, max_age_ns=0)  # 0: no age limit
    assert take.expired == [] and [f.source for f in take.frames] == ["x"]


def test_remove_if_takes_only_matching_frames() -> None:
    slots = Slots()
    slots.put(frame("a", 0))
    big = Frame("b", 0, np.zeros((4, 4, 3), np.uint8), 0, None, "native", "raw")
    slots.put(big)
    gone = slots.remove_if(lambda f: f.image.shape[:2] != (2, 2))
    assert gone == [big] and len(slots) == 1
    assert [f.source for f in slots.remove_if(lambda f: True)] == ["a"] and len(slots) == 0
