"""Frame accounting: the I/O thread counts without a lock; readers on other threads take snapshots."""

from __future__ import annotations

import sys
import threading

from edgeagent.accounting import EXPIRED_SOURCE, OVERFLOW_SOURCE, UNKNOWN_SOURCE, Accounting


def test_admit_counts_known_and_new_sources_and_refuses_beyond_max_sources_without_counting() -> None:
    acc = Accounting(max_sources=2)
    assert acc.admit("a", 1) and acc.admit("a", 2) and acc.admit("b", 3)
    assert not acc.admit("c", 4)  # no place: the caller rejects it (counted then, as rejected)
    for reserved in (OVERFLOW_SOURCE, EXPIRED_SOURCE, UNKNOWN_SOURCE):
        assert not acc.admit(reserved, 5)  # a camera cannot count itself under a reserved label
    snap = acc.snapshot()
    assert set(snap) == {"a", "b"}
    assert (snap["a"]["received"], snap["b"]["received"]) == (2, 1)
    assert acc.idle_s(3 + 1_000_000_000) == {"a": 1.0, "b": 1.0}  # admit records the receipt time given


def test_processed_counts_under_the_name_and_after_expiry_under_the_name_again() -> None:
    acc = Accounting(max_sources=1)
    assert acc.admit("a", 0)
    acc.processed("a", over_sla=True)
    assert acc.expire(10_000_000_000, 1_000_000_000) == ["a"]
    acc.processed("a")  # a result published after its source expired counts under its name again
    snap = acc.snapshot()
    assert snap[EXPIRED_SOURCE]["processed"] == 1 and snap[EXPIRED_SOURCE]["over_sla"] == 1
    assert snap["a"]["processed"] == 1 and snap["a"]["over_sla"] == 0
    assert acc.admit("b", 1) is False  # "a" holds the only place again


def test_snapshots_on_another_thread_while_sources_come_and_go_never_fail_and_totals_add_up() -> None:
    acc = Accounting(max_sources=64)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                for c in acc.snapshot().values():
                    assert c["received"] >= c["processed"]
                acc.idle_s(0)
            except BaseException as exc:  # reported by the test below
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # the GIL changes hands often: the reader sees the table mid-change
    t.start()
    n = 0
    for i in range(30_000):
        src = f"cam{i % 200}"
        if acc.admit(src, i):
            n += 1
            acc.processed(src)
        if i % 997 == 0:
            acc.expire(i, 0)  # everything silent for more than 0 ns gives its place up
    stop.set()
    t.join()
    sys.setswitchinterval(interval)
    assert not errors, errors[0]
    totals = Accounting.totals(acc.snapshot())
    assert totals["received"] == n == totals["processed"]
