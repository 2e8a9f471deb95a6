"""Newest-frame slots: replacement, oldest-first jobs, batch forming, expiry (clock passed in)."""

from __future__ import annotations

import numpy as np

from edgeagent.config import SourceConfig
from edgeagent.io.slots import JobTimer, Slots
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


def serve_rounds(slots: Slots, rounds: int, order: list[str], capacity: int, jitter: bool = False) -> dict[str, int]:
    """Each round every source in ``order`` sends one frame, then ``capacity`` single-frame jobs start."""
    import random

    rng = random.Random(7)
    served = dict.fromkeys(order, 0)
    t = 0.0
    for r in range(rounds):
        senders = list(order)
        if jitter:
            rng.shuffle(senders)
        for source in senders:
            t += 0.1
            slots.put(frame(source, t, seq=r))
        for _ in range(capacity):
            for f in slots.take(int(t * MS) + 1, 1, 0).frames:
                served[f.source] += 1
    return served


def test_equal_cameras_in_a_fixed_phase_get_equal_shares() -> None:
    # Oldest-first would serve cam0 in every round: its frame always arrives first.
    served = serve_rounds(Slots(), 400, ["cam0", "cam1", "cam2", "cam3"], capacity=1)
    assert set(served.values()) == {100}, served
    jittered = serve_rounds(Slots(), 400, ["cam0", "cam1", "cam2", "cam3"], capacity=1, jitter=True)
    assert max(jittered.values()) - min(jittered.values()) <= 1, jittered


def test_weights_share_results_in_proportion_and_priority_goes_first() -> None:
    weighted = Slots({"door": SourceConfig(weight=2.0)})
    served = serve_rounds(weighted, 300, ["lot", "door", "yard"], capacity=2)
    assert served["door"] == 300 and served["lot"] + served["yard"] == 300  # 2:1:1 of 2 per round
    assert abs(served["lot"] - served["yard"]) <= 1
    prio = Slots({"door": SourceConfig(priority=1)})
    served = serve_rounds(prio, 100, ["lot", "door", "yard"], capacity=1)
    assert served == {"lot": 0, "door": 100, "yard": 0}


def test_an_idle_source_banks_no_credit() -> None:
    slots = Slots()
    served = serve_rounds(slots, 50, ["a", "b"], capacity=1)
    assert served == {"a": 25, "b": 25}
    # "new" arrives now: it starts at the current virtual time, not at 0, so it does not monopolise.
    later = serve_rounds(slots, 60, ["a", "b", "new"], capacity=1)
    assert max(later.values()) - min(later.values()) <= 1, later


def test_frames_that_cannot_make_their_deadline_are_late_and_feasible_ones_run() -> None:
    slots = Slots()
    slots.put(frame("old", 0))
    slots.put(frame("fresh", 15))
    take = slots.take(20 * MS, 1, 0, sla_ns=30 * MS, job_ns=12 * MS)  # old: 20 + 12 > 30; fresh: 32 <= 45
    assert [f.source for f in take.late] == ["old"] and [f.source for f in take.frames] == ["fresh"]
    slots.put(frame("x", 0))
    unknown = slots.take(29 * MS, 1, 0, sla_ns=30 * MS, job_ns=0)  # no estimate yet: everything is feasible
    assert unknown.late == [] and [f.source for f in unknown.frames] == ["x"]
    slots.put(frame("y", 0))
    assert slots.take(29 * MS, 1, 0, sla_ns=0, job_ns=12 * MS).frames[0].source == "y"  # no SLA: no deadline


def test_a_partial_batch_stops_waiting_when_a_frame_would_become_late() -> None:
    slots = Slots()
    slots.put(frame("a", 0))
    # batch wait 20 ms, but a's deadline (30 ms) minus the job (25 ms) leaves 5 ms, less 2 ms of slack
    # for a poll that wakes late: the wait ends at 3 ms, and a take a millisecond after that still runs a.
    assert slots.wait_ns(1 * MS, 4, 20 * MS, sla_ns=30 * MS, job_ns=25 * MS) == 2 * MS
    assert slots.take(2 * MS, 4, 20 * MS, sla_ns=30 * MS, job_ns=25 * MS).frames == []
    take = slots.take(4 * MS, 4, 20 * MS, sla_ns=30 * MS, job_ns=25 * MS)
    assert [f.source for f in take.frames] == ["a"] and take.late == []


def test_job_timer_is_a_high_percentile_of_recent_jobs_and_expires() -> None:
    timer = JobTimer(size=10, min_samples=3, stale_ns=1000 * MS, percent=90)
    assert timer.estimate_ns(0) == 0
    timer.observe(5 * MS, 1 * MS)
    timer.observe(6 * MS, 2 * MS)
    assert timer.estimate_ns(2 * MS) == 0  # too few samples: unknown
    for i in range(20):  # the ring keeps the last 10: one slow job among them is the 90th percentile
        timer.observe((50 if i == 15 else 7) * MS, (3 + i) * MS)
    assert timer.estimate_ns(30 * MS) == 7 * MS
    timer.observe(50 * MS, 31 * MS)
    assert timer.estimate_ns(31 * MS) == 50 * MS  # two slow of ten: the 90th percentile is slow
    assert timer.estimate_ns(31 * MS + 1001 * MS) == 0  # no job for longer than stale_ns: measure again
    timer.observe(9 * MS, 2000 * MS)
    timer.reset()
    assert timer.estimate_ns(2000 * MS) == 0


def test_job_timer_keeps_jobs_started_behind_others_apart_and_takes_a_prior_at_a_switch() -> None:
    timer = JobTimer(size=8, min_samples=3, stale_ns=1000 * MS, percent=95)
    for i in range(8):  # one stream, two requests: alone a job takes 7-8 ms, behind another up to 15 ms
        timer.observe((7 + i % 2) * MS, i * MS, ahead=0)
    assert timer.estimate_ns(8 * MS, ahead=0) == 8 * MS
    assert timer.estimate_ns(8 * MS, ahead=1) == 16 * MS  # none measured behind one yet: one job more
    timer.streams = 2
    assert timer.estimate_ns(8 * MS, ahead=1) == 12 * MS  # ... on one of two streams
    timer.streams = 1
    for i in range(3):
        timer.observe((12 + i) * MS, (9 + i) * MS, ahead=1)
    assert timer.estimate_ns(12 * MS, ahead=1) == 14 * MS
    assert timer.estimate_ns(12 * MS, ahead=0) == 8 * MS  # jobs behind others do not inflate lone ones
    assert timer.estimate_ns(12 * MS, ahead=2) == 28 * MS
    # A level switch: the previous level's estimates stand in until this level has its own.
    timer.reset(prior=timer.estimates())
    assert timer.estimate_ns(20 * MS, ahead=1) == 14 * MS and timer.estimate_ns(20 * MS, ahead=0) == 8 * MS
    for i in range(3):
        timer.observe(20 * MS, (21 + i) * MS, ahead=0)
    assert timer.estimate_ns(24 * MS, ahead=0) == 20 * MS
    assert timer.estimate_ns(24 * MS, ahead=1) == 40 * MS  # measured here beats the prior
    assert timer.estimate_ns(24 * MS + 1001 * MS, ahead=1) == 0  # stale: prior and all forgotten


def test_a_frame_that_would_be_late_behind_running_jobs_waits_for_a_free_slot() -> None:
    slots = Slots()
    slots.put(frame("old", 0))
    slots.put(frame("new", 8))
    # SLA 20 ms; a job alone takes 8 ms, behind the running one 16 ms. At 10 ms "old" (deadline 20) can
    # start only once the running job is done, "new" (deadline 28) can start now.
    take = slots.take(10 * MS, 1, 0, sla_ns=20 * MS, job_ns=16 * MS, free_job_ns=8 * MS)
    assert [f.source for f in take.frames] == ["new"] and take.late == []
    slots.put(frame("new", 7))  # an older frame of "new" (deadline 27) than the one just started
    take = slots.take(12 * MS, 1, 0, sla_ns=20 * MS, job_ns=16 * MS, free_job_ns=8 * MS)
    assert take.frames == [] and take.late == [] and len(slots) == 2  # both wait: neither makes it now
    take = slots.take(12 * MS, 1, 0, sla_ns=20 * MS, job_ns=8 * MS)  # the running job is done
    assert [f.source for f in take.frames] == ["old"]  # 12 + 8 <= 20, and "new" was served last
    take = slots.take(13 * MS, 1, 0, sla_ns=20 * MS, job_ns=16 * MS, free_job_ns=8 * MS)
    assert take.frames == [] and take.late == []  # "new" waits: 13 + 16 > 27, 13 + 8 <= 27
    take = slots.take(24 * MS, 1, 0, sla_ns=20 * MS, job_ns=16 * MS, free_job_ns=8 * MS)
    assert [f.source for f in take.late] == ["new"]  # 24 + 8 > 27: late even with a free slot


def test_when_no_frame_could_make_the_sla_frames_are_served_not_dropped() -> None:
    slots = Slots()
    slots.put(frame("lone", 10))  # fresh: it has waited 0 ms, but the job alone takes 40 ms > SLA 30 ms
    take = slots.take(10 * MS, 1, 0, sla_ns=30 * MS, job_ns=40 * MS)
    assert take.late == [] and [f.source for f in take.frames] == ["lone"]


def test_job_timer_estimate_equals_the_percentile_of_the_ring_over_a_long_random_trace() -> None:
    import random

    from edgeagent.tuner import nearest_rank

    rng = random.Random(7)
    timer = JobTimer(size=16, min_samples=1, stale_ns=10**18, percent=90)
    window: list[int] = []
    for i in range(500):
        d = rng.choice([5, 6, 7, 7, 8, 30]) * MS + rng.randrange(1000)
        timer.observe(d, i * MS)
        window = [*window, d][-16:]
        assert timer.estimate_ns(i * MS) == int(nearest_rank(sorted(window), 90))


def test_job_timer_earliest_is_the_shortest_recent_run_time_openvino_reported() -> None:
    timer = JobTimer(size=4)
    assert timer.earliest_ns() == 0  # nothing seen
    for i, ran in enumerate((9, 5, 7, 8, 6, 10)):  # the 5 falls out of the last 4
        timer.observe(30 * MS, i * MS, ran_ns=ran * MS)  # seen done late: the run time counts, not that
    assert timer.earliest_ns() == 6 * MS
    timer.observe(2 * MS, 7 * MS)  # no run time reported: earliest unchanged
    assert timer.earliest_ns() == 6 * MS
    timer.reset()
    assert timer.earliest_ns() == 0
