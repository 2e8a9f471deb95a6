"""The I/O loop in-process: batches (one frame size per batch), the batch-forming wait, expired drops, reloads, and the
level-change protocol (request → queue → drain → swap → confirm), event by event with a fake engine."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zmq

from edgeagent.io import loop as loop_module
from edgeagent.switcher import SizeDropped, SwitchFailed
from edgeagent.wire import encode_native

from .fakes import FakeEngine, Harness, image, swap_to

MS = 1_000_000


def saturate_until_a_level_request(h: Harness) -> int:
    """Windows with results and every request busy (demand) until the controller asks for a level;
    then one more frame starts and stays in flight. Returns the frames sent."""
    seq = 0
    deadline = time.monotonic() + 20
    while not h.switch_requests:
        assert time.monotonic() < deadline, "no level request"
        h.send("cam", seq, image(seq % 250))
        seq += 1
        h.wait(f"frame {seq} started", lambda n=seq: len(h.engine.started) == n)  # type: ignore[misc]
        h.engine.finish()
        h.wait(f"frame {seq} done", lambda n=seq: h.counts("cam")["processed"] == n)  # type: ignore[misc]
    h.send("cam", seq, image(seq % 250))
    h.wait("the last job", lambda: len(h.engine.started) == seq + 1)
    return seq + 1


def test_a_batch_level_stacks_sources_into_one_job_and_splits_results_per_frame(
    harness: Callable[..., Harness],
) -> None:
    h = harness(level=4, batch_wait_ms=10_000)  # batch 4; a partial batch would wait for ever here
    for i, value in enumerate((10, 20, 30, 40)):
        h.send(f"cam{i}", 0, image(value))
    h.wait("one job", lambda: len(h.engine.started) == 1)
    assert [f.source for f in h.engine.started[0]] == ["cam0", "cam1", "cam2", "cam3"]
    h.engine.finish()
    results = h.collect(4)
    by_source = {r["source"]: r for r in results}
    for i, value in enumerate((10, 20, 30, 40)):
        r = by_source[f"cam{i}"]
        assert r["output0"].tolist() == [[float(value)]]  # each frame got its own row, not a neighbour's
        assert r["exec"]["batch"] == 4 and r["exec"]["level"] == 4
    h.wait("accounting", lambda: all(h.counts(f"cam{i}")["processed"] == 1 for i in range(4)))


def test_a_partial_batch_waits_for_more_sources_then_goes_padded(harness: Callable[..., Harness]) -> None:
    wait_ms = 150.0
    h = harness(level=4, batch_wait_ms=wait_ms)
    t0 = time.monotonic_ns()
    h.send("a", 0, image(7))
    h.send("b", 0, image(9))
    h.wait("a partial batch", lambda: len(h.engine.started) == 1)
    frames = h.engine.started[0]
    job_start_ns = h.engine.jobs[next(iter(h.engine.jobs))][2]
    assert [f.source for f in frames] == ["a", "b"]
    assert job_start_ns - frames[0].rx_ns >= wait_ms * MS  # it waited its bounded time for more sources
    assert job_start_ns - t0 >= wait_ms * MS
    h.engine.finish()
    results = h.collect(2)
    assert sorted(float(r["output0"][0, 0]) for r in results) == [7.0, 9.0]  # padded rows were not published
    assert len(h.results) == 2


def test_frames_older_than_max_frame_age_are_dropped_as_expired_and_answered(
    harness: Callable[..., Harness],
) -> None:
    h = harness(level=0, max_frame_age_ms=50.0)
    h.send("busy", 0, image(1))
    h.wait("the first job", lambda: len(h.engine.started) == 1)
    d = h.dealer()
    d.send_multipart([b"", *encode_native("late", 0, image(2))])
    h.wait_read_while_busy("the late frame received", lambda: h.counts("late")["received"] == 1)
    time.sleep(0.08)  # longer than max_frame_age_ms while the only request is busy
    h.engine.finish()
    assert d.poll(10_000)
    reply = json.loads(d.recv_multipart()[-1])
    assert (reply["status"], reply["reason"], reply["source"]) == ("dropped", "expired", "late")
    h.wait("accounting", lambda: h.counts("late")["dropped"] == {"expired": 1})
    assert h.counts("busy")["processed"] == 1 and len(h.engine.started) == 1  # the expired frame never ran
    d.close()


def test_a_newer_frame_replaces_a_waiting_one_as_stale(harness: Callable[..., Harness]) -> None:
    h = harness(level=0)
    h.send("cam", 0, image(1))
    h.wait("the first job", lambda: len(h.engine.started) == 1)
    for seq in (1, 2, 3):
        h.send("cam", seq, image(1 + seq))
    h.wait_read_while_busy("all received", lambda: h.counts("cam")["received"] == 4)
    h.engine.finish()
    h.wait("the newest frame started", lambda: len(h.engine.started) == 2)
    assert h.engine.started[1][0].seq == 3
    h.engine.finish()
    assert [r["seq"] for r in h.collect(2)] == [0, 3]
    h.wait("accounting", lambda: h.counts("cam")["processed"] == 2)  # counted right after publishing
    assert h.counts("cam")["dropped"] == {"stale": 2}


def test_level_change_protocol_drains_then_swaps_and_loses_no_frame(harness: Callable[..., Harness]) -> None:
    h = harness(level=0, adaptive=True, window_s=0.05, min_frames=1, up_windows=1, busy_demand=0.01)
    # 1-2. decide + request: saturated windows with results ask the switcher for level 1.
    n = saturate_until_a_level_request(h)
    assert h.switch_requests == [(1, None)] and h.controller.view.pending == 1
    # 3-4. compiled and queued; 5. drain: while the old job runs, no new job starts.
    h.loop.post(swap_to(1))
    h.send("cam", n, image(1))
    h.wait_read_while_busy(f"frame {n} received", lambda: h.counts("cam")["received"] == n + 1)
    time.sleep(0.05)
    assert len(h.engine.started) == n and len(h.engine.activations) == 1
    # 6. swap once the in-flight job finishes; 7. confirm: the controller and the view follow.
    h.engine.finish()
    h.wait("the swap", lambda: len(h.engine.activations) == 2)
    h.wait("the waiting frame started at the new level", lambda: len(h.engine.started) == n + 1)
    assert h.loop.view.level == 1 and h.loop.view.switches == 1 and h.controller.view.running == 1
    assert h.controller.view.pending is None and h.loop.meter.level == 1 and h.loop.meter.epoch == 1
    h.engine.finish()
    results = h.collect(n + 1)
    assert [(r["exec"]["level"], r["exec"]["requests"]) for r in results[-2:]] == [(0, 1), (1, 2)]
    assert [r["seq"] for r in results] == list(range(n + 1))  # none lost, none repeated, in order
    h.wait("accounting", lambda: h.counts("cam")["processed"] == n + 1)
    assert h.counts("cam")["received"] == n + 1 and not h.counts("cam")["dropped"]


def test_a_failed_compile_clears_the_request_and_the_level_stays(harness: Callable[..., Harness]) -> None:
    h = harness(level=0, adaptive=True, window_s=0.05, min_frames=1, up_windows=1, busy_demand=0.01)
    n = saturate_until_a_level_request(h)
    h.loop.post(SwitchFailed(1, reload=False, error="no memory"))
    h.finish_if_inline()  # a job the I/O thread runs itself: it reads its inbox after the job
    h.wait("the request settled", lambda: h.controller.view.pending is None)
    assert h.controller.state.backoff_until.get(1, 0) > h.controller.state.window_index
    h.engine.finish()
    assert h.collect(n)[-1]["exec"]["level"] == 0 and len(h.engine.activations) == 1
    assert h.switch_requests == [(1, None)]  # level 1 is backed off: not asked for again at once


def test_a_reload_to_a_model_of_another_size_still_serves_waiting_frames(harness: Callable[..., Harness]) -> None:
    h = harness(level=0)
    h.send("a", 0, image(1))
    h.wait("the first job", lambda: len(h.engine.started) == 1)
    d = h.dealer()
    d.send_multipart([b"", *encode_native("b", 0, image(2, hw=(10, 12)))])  # waits: the only request is busy
    h.wait_read_while_busy("b waiting", lambda: h.counts("b")["received"] == 1)
    h.loop.post(swap_to(0, hw=(10, 12)))  # a reloaded model with another input size
    h.engine.finish()
    h.wait("b started on the new model", lambda: len(h.engine.started) == 2 and len(h.engine.activations) == 2)
    h.engine.finish()
    assert d.poll(10_000)
    reply = json.loads(d.recv_multipart()[-1])
    assert (reply["source"], reply["seq"]) == ("b", 0) and "reason" not in reply
    assert [r["seq"] for r in h.collect(2)] == [0, 0]
    d.close()


def test_frames_of_different_sizes_or_pixel_formats_never_share_a_batch(harness: Callable[..., Harness]) -> None:
    h = harness(level=4, batch_wait_ms=0.0)  # batch 4, no batch-forming wait
    h.send("a", 0, image(1))  # starts alone: the engine is idle
    h.wait("the first job", lambda: len(h.engine.started) == 1)
    small, big, gray = image(2), image(3, hw=(12, 16)), np.full((8, 8), 4, np.uint8)
    for name, img in (("b", small), ("c", big), ("d", small), ("e", gray), ("f", big)):
        h.send(name, 0, img)
    h.wait("all waiting or started", lambda: sum(h.counts(n)["received"] for n in "bcdef") == 5)
    deadline = time.monotonic() + 30
    while len(h.results) < 6:  # finish whatever runs until every frame has its result
        assert time.monotonic() < deadline, f"{len(h.results)} of 6 results"
        h.engine.finish(3)
        try:
            h.collect(len(h.results) + 1, timeout_s=0.2)
        except AssertionError:
            pass
    for job in h.engine.started:
        assert len({f.key for f in job}) == 1, [f.key for f in job]
    assert sorted(f.source for job in h.engine.started for f in job) == list("abcdef")
    means = {r["source"]: r["output0"].ravel()[0] for r in h.results}
    assert means == {"a": 1.0, "b": 2.0, "c": 3.0, "d": 2.0, "e": 4.0, "f": 3.0}


def test_every_frame_is_accounted_for_under_a_flood_at_a_batch_level(harness: Callable[..., Harness]) -> None:
    h = harness(level=4, batch_wait_ms=1.0)
    sent = 0
    for seq in range(60):
        for cam in range(3):
            h.send(f"cam{cam}", seq, image(seq))
            sent += 1
        if seq % 5 == 0:
            h.engine.finish(3)
    received = lambda: sum(h.counts(f"cam{c}")["received"] for c in range(3))  # noqa: E731
    h.wait("all received", lambda: received() == sent)

    def settled() -> bool:
        h.engine.finish(3)
        counts: list[dict[str, Any]] = [h.counts(f"cam{c}") for c in range(3)]
        return all(c["received"] == c["processed"] + sum(c["dropped"].values()) for c in counts)

    h.wait("every frame processed or dropped", settled)
    processed = sum(h.counts(f"cam{c}")["processed"] for c in range(3))
    results = h.collect(processed)
    assert all(float(r["output0"][0, 0]) == r["seq"] for r in results)  # each result is its own frame's
    assert processed > 0 and np.all([len(job) <= 4 for job in h.engine.started])


def test_a_frame_that_can_no_longer_make_the_sla_is_dropped_as_late_and_answered(
    harness: Callable[..., Harness],
) -> None:
    h = harness(level=0, p99_ms=200.0)
    for seq in range(3):  # three jobs of >= 100 ms: the job-time estimate is >= 100 ms
        h.send("warm", seq, image(seq))
        h.wait(f"job {seq}", lambda n=seq: len(h.engine.started) == n + 1)  # type: ignore[misc]
        time.sleep(0.1)
        h.engine.finish()
    h.wait("three results", lambda: h.counts("warm")["processed"] == 3)
    h.send("busy", 0, image(9))
    h.wait("the busy job", lambda: len(h.engine.started) == 4)
    d = h.dealer()
    d.send_multipart([b"", *encode_native("cam", 0, image(5))])
    h.wait("the waiting frame", lambda: h.counts("cam")["received"] == 1)
    time.sleep(0.15)  # waited 150 ms of a 200 ms SLA; the job would take >= 100 ms more: it cannot make it
    h.engine.finish()
    assert d.poll(10_000)
    reply = json.loads(d.recv_multipart()[-1])
    assert (reply["status"], reply["reason"], reply["source"]) == ("dropped", "late", "cam")
    assert len(h.engine.started) == 4  # it never ran
    h.wait("accounting", lambda: h.counts("cam")["dropped"] == {"late": 1})
    # A frame that can still make it runs (the request is idle: no wait, only the job).
    d.send_multipart([b"", *encode_native("cam", 1, image(6))])
    h.wait("the feasible frame started", lambda: len(h.engine.started) == 5)
    h.engine.finish()
    assert d.poll(10_000) and json.loads(d.recv_multipart()[-1])["status"] == "ok"
    d.close()


def test_a_frame_that_would_be_late_behind_a_running_job_waits_for_it_instead_of_queueing_behind_it(
    harness: Callable[..., Harness],
) -> None:
    h = harness(level=1, p99_ms=300.0)  # one stream, two infer requests
    for seq in range(3):  # three lone jobs of >= 200 ms: a job alone takes >= 200 ms, one behind it >= 400 ms
        h.send("warm", seq, image(seq))
        h.wait(f"job {seq}", lambda n=seq: len(h.engine.started) == n + 1)  # type: ignore[misc]
        time.sleep(0.2)
        h.engine.finish()
        h.wait(f"result {seq}", lambda n=seq: h.counts("warm")["processed"] == n + 1)  # type: ignore[misc]
    h.send("busy", 0, image(9))
    h.wait("the busy job", lambda: len(h.engine.started) == 4)
    d = h.dealer()
    d.send_multipart([b"", *encode_native("cam", 0, image(5))])
    h.wait("the waiting frame", lambda: h.counts("cam")["received"] == 1)
    time.sleep(0.03)
    # A request is idle, but behind the busy job the frame would finish after its 300 ms deadline: it waits.
    assert len(h.engine.started) == 4 and h.loop.in_flight == 1
    h.engine.finish()  # the busy job is done: alone, the frame can still make it
    h.wait("the frame started", lambda: len(h.engine.started) == 5)
    assert [f.source for f in h.engine.started[4]] == ["cam"] and h.engine.jobs[next(iter(h.engine.jobs))][3] == 0
    h.engine.finish()
    assert d.poll(10_000) and json.loads(d.recv_multipart()[-1])["status"] == "ok"
    h.wait("accounting", lambda: h.counts("cam")["processed"] == 1 and h.counts("cam")["dropped"] == {})
    d.close()


def test_the_watchdog_clock_starts_with_the_first_job_after_an_idle_gap(harness: Callable[..., Harness]) -> None:
    h = harness(level=0)
    h.send("cam", 0, image(1))
    h.wait("job 0", lambda: len(h.engine.started) == 1)
    h.engine.finish()
    h.wait("result 0", lambda: h.counts("cam")["processed"] == 1)
    time.sleep(0.05)  # idle: no job, no completion
    before = time.monotonic()
    h.send("cam", 1, image(2))
    h.wait("job 1", lambda: len(h.engine.started) == 2)
    assert h.loop.in_flight == 1 and h.loop.last_progress_s >= before  # not stalled since the idle gap
    h.engine.finish()


def test_a_failed_reload_settles_a_pending_level_request(harness: Callable[..., Harness]) -> None:
    from edgeagent.config import ModelConfig
    from edgeagent.io.loop import ReloadModel

    h = harness(level=0, adaptive=True, window_s=0.05, min_frames=1, up_windows=1, busy_demand=0.01)
    n = saturate_until_a_level_request(h)
    assert h.controller.view.pending == 1
    h.loop.post(ReloadModel(ModelConfig(path="/nonexistent.onnx")))
    h.finish_if_inline()  # a job the I/O thread runs itself: it reads its inbox after the job
    h.wait("the reload requested", lambda: len(h.switch_requests) == 2)
    assert h.switch_requests[1][0] == 1  # at the pending target: the reload must not undo the change
    h.loop.post(SwitchFailed(1, reload=True, error="model file not found"))
    h.wait("the request settled", lambda: h.controller.view.pending is None)
    h.engine.finish()
    assert h.collect(n)[-1]["exec"]["level"] == 0 and h.controller.view.running == 0


def test_a_frigate_request_older_than_frigates_timeout_is_dropped_late_with_the_zero_result(
    harness: Callable[..., Harness],
) -> None:
    h = harness(level=0, frigate_timeout_ms=50.0)
    h.send("a", 0, image(1))  # takes the only request
    h.wait("the first job", lambda: len(h.engine.started) == 1)
    r = h.ctx.socket(zmq.REQ)
    r.setsockopt(zmq.LINGER, 0)
    r.connect(h.frigate_ep)
    r.send_multipart([json.dumps({"shape": [1, 8, 8, 3], "dtype": "uint8", "model_type": "ssd"}).encode(), bytes(192)])
    h.wait_read_while_busy("the request waiting", lambda: h.counts("frigate")["received"] == 1)
    time.sleep(0.1)  # Frigate (timeout 50 ms) has given up on it by now
    h.engine.finish()
    assert r.poll(10_000)
    header, body = r.recv_multipart()
    assert json.loads(header) == {"shape": [20, 6], "dtype": "float32"} and body == bytes(480)
    h.wait("the late drop", lambda: h.counts("frigate")["dropped"] == {"late": 1})
    assert len(h.engine.started) == 1  # never inferred
    r.close()


def test_a_new_size_is_asked_for_once_again_after_a_drop_and_never_after_a_failure(
    harness: Callable[..., Harness],
) -> None:
    h = harness(level=0)
    big = (12, 16, "bgr")

    def serve(seq: int) -> None:
        h.send("a", seq, image(seq, hw=(12, 16)))
        h.wait(f"frame {seq} started", lambda: len(h.engine.started) == seq + 1)
        h.engine.finish()
        h.wait(f"frame {seq} done", lambda: h.counts("a")["processed"] == seq + 1)

    serve(0)
    serve(1)
    assert h.size_requests == [(0, big)]  # once while it is pending
    h.loop.post(SizeDropped(0, big, failed=False))  # pushed out of the switcher's queue
    serve(2)
    assert h.size_requests == [(0, big), (0, big)]  # asked again
    h.loop.post(SizeDropped(0, big, failed=True))
    serve(3)
    serve(4)
    assert len(h.size_requests) == 2  # a size that failed to compile is not asked for again
    assert h.loop.view.any_size_frames == 5


def a_frame_sent_during_a_long_job_is_read_as_it_comes(h: Harness) -> None:
    """Jobs known to take >= 300 ms: job 2 (cam) starts and the loop reads its sockets while it runs, so
    b's frame sent meanwhile is received during the job and stamped when it came (not at a wait's
    start); b's job starts once job 2 is finished (b's job is left running)."""
    assert h.loop.job_timer.earliest_ns() >= 300 * MS
    inline_jobs = h.engine.inline_jobs
    h.send("cam", 1, image(1))
    h.wait("job 2", lambda: len(h.engine.started) == 3)
    assert h.engine.inline_jobs == inline_jobs  # started, not run by the I/O thread
    before_ns = time.monotonic_ns()
    h.send("b", 1, image(3))
    h.wait("b received during the job", lambda: h.counts("b")["received"] == 2)
    h.engine.finish()
    h.wait("b started", lambda: len(h.engine.started) == 4)
    assert h.engine.started[3][0].rx_ns >= before_ns  # stamped when it came, not at a wait's start


def test_one_busy_request_frames_are_read_as_they_come_until_the_job_may_end_then_stamped_at_the_wait(
    harness: Callable[..., Harness],
) -> None:
    """Waited for at one request (no callback): while the job surely runs (before its shortest recent
    duration), the loop polls its sockets, so a frame is received and stamped as it comes; read after a
    wait on the request, a frame is stamped when that wait began, never later (its time in the agent is
    never understated)."""
    h = harness(level=0, engine=FakeEngine(wait_at_one_request=True))
    # The first job: its duration is not known yet, so the loop waits on it at once, in slices.
    h.send("cam", 0, image(1))
    h.wait("job 0", lambda: len(h.engine.started) == 1)
    assert h.engine.waits
    h.send("b", 0, image(2))
    h.wait("b received", lambda: h.counts("b")["received"] == 1)
    seen_ns = time.monotonic_ns()
    time.sleep(0.3)
    h.engine.finish()
    h.wait("b started", lambda: len(h.engine.started) == 2)
    b = h.engine.started[1][0]
    assert b.source == "b" and h.engine.started[0][0].rx_ns <= b.rx_ns
    assert seen_ns - b.rx_ns >= 5 * MS  # read at a slice's end (10 ms), stamped at its start
    time.sleep(0.3)
    h.engine.finish()
    h.wait("result b", lambda: h.counts("b")["processed"] == 1)
    # Jobs of >= 300 ms seen: for the next job's first ~300 ms the loop polls its sockets.
    a_frame_sent_during_a_long_job_is_read_as_it_comes(h)
    h.engine.finish()
    assert [r["source"] for r in h.collect(4)] == ["cam", "b", "cam", "b"]
    # Jobs get fast: the earliest end follows the engine's run time (the fake's: until finish()), not when
    # the loop saw the job done, or a loop that looks only after the old earliest end would never learn.
    for seq in (2, 3):
        h.send("cam", seq, image(1))
        h.wait(f"fast job {seq}", lambda n=seq: len(h.engine.started) == n + 3)  # type: ignore[misc]
        h.engine.finish()
        h.wait(f"fast result {seq}", lambda n=seq: h.counts("cam")["processed"] == n + 1)  # type: ignore[misc]
    assert h.loop.job_timer.earliest_ns() < 150 * MS


def test_one_request_short_jobs_run_on_the_io_thread_and_long_ones_are_waited_for_while_it_reads(
    harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the I/O thread shares the inference CPUs, it runs a job at one request itself (a hand-written
    hub's blocking infer()) once 95 % of the recent jobs were short: not while none was seen, not after a
    long one. A frame that came during a job it ran is read right after, stamped as received when that
    job began (never understated); during a job it waits for, it reads its sockets."""
    monkeypatch.setattr(loop_module, "INLINE_JOBS_UP_TO_NS", 200 * MS)  # "short": well apart from 300 ms
    h = harness(level=0, engine=FakeEngine(inline=True))

    def serve(source: str, seq: int) -> None:
        h.send(source, seq, image(1))
        h.wait(f"{source} {seq} started", lambda: len(h.engine.started) == len(done) + 1)
        h.engine.finish()
        done.append(seq)
        h.wait(f"{source} {seq} done", lambda: sum(h.counts(s)["processed"] for s in ("cam", "b")) == len(done))

    done: list[int] = []
    for seq in range(3):  # no job seen yet: started and waited for, until their time is known
        serve("cam", seq)
    assert h.engine.inline and h.engine.inline_jobs == 0
    # Known short now: job 3 runs on the I/O thread; b's frame sent meanwhile waits in ZeroMQ, unread.
    h.send("cam", 3, image(1))
    h.wait("job 3", lambda: len(h.engine.started) == 4)
    assert h.engine.inline_jobs == 1
    before_b_ns = time.monotonic_ns()
    h.send("b", 0, image(2))
    time.sleep(0.3)  # job 3 runs on: >= 300 ms, a long one
    assert h.counts("b")["received"] == 0
    h.engine.finish()
    h.wait("b started", lambda: len(h.engine.started) == 5)
    b = h.engine.started[4][0]
    assert b.source == "b" and h.engine.started[3][0].rx_ns <= b.rx_ns <= before_b_ns
    # After that long job, b's is started and waited for: the loop reads its sockets while it runs.
    h.send("cam", 4, image(1))
    h.wait("cam 4 received during b's job", lambda: h.counts("cam")["received"] == 5)
    assert h.engine.inline_jobs == 1
    h.engine.finish()
    h.wait("cam 4 started", lambda: len(h.engine.started) == 6)
    h.engine.finish()
    results = h.collect(6)
    assert [r["source"] for r in results] == ["cam"] * 4 + ["b", "cam"]
    assert results[4]["latency_ms"]["total"] >= 300  # b: since job 3 began, before b was even sent
    assert h.counts("cam")["dropped"] == {} and h.counts("b")["dropped"] == {}


def test_a_frame_for_the_any_size_graph_is_never_run_by_the_io_thread(harness: Callable[..., Harness]) -> None:
    """Its job's time depends on the frame's size, not on the recent jobs': started and waited for."""
    h = harness(level=0, engine=FakeEngine(inline=True), job_prior_ns=MS)
    h.send("cam", 0, image(1))  # the model's own size (8x8): known short, run by the I/O thread
    h.wait("job 0", lambda: len(h.engine.started) == 1)
    h.engine.finish()
    h.send("big", 0, image(2, hw=(12, 16)))  # another size: the any-size graph
    h.wait("job 1", lambda: len(h.engine.started) == 2)
    h.send("cam", 1, image(3))
    h.wait("cam 1 read while the any-size job runs", lambda: h.counts("cam")["received"] == 2)
    assert h.engine.inline_jobs == 1
    h.engine.finish()
    h.wait("job 2", lambda: len(h.engine.started) == 3)
    h.engine.finish()
    assert [r["source"] for r in h.collect(3)] == ["cam", "big", "cam"]
    assert h.engine.inline_jobs == 2 and h.loop.view.any_size_frames == 1


def test_a_failed_inference_drops_its_frames_as_error_answers_them_and_the_next_frame_runs(
    harness: Callable[..., Harness],
) -> None:
    h = harness(level=1)  # two requests: at level 0 too (the fixture's modes run it waited and inline)
    d = h.dealer()
    d.send_multipart([b"", *encode_native("cam", 0, image(1))])
    h.wait("job 0", lambda: len(h.engine.started) == 1)
    h.engine.finish(error="RuntimeError: Infer Request failed (out of memory)")
    assert d.poll(10_000)
    reply = json.loads(d.recv_multipart()[-1])
    assert (reply["status"], reply["reason"], reply["source"]) == ("dropped", "error", "cam")
    h.wait("accounting", lambda: h.counts("cam")["dropped"] == {"error": 1})
    d.send_multipart([b"", *encode_native("cam", 1, image(2))])
    h.wait("job 1", lambda: len(h.engine.started) == 2)
    h.engine.finish()
    assert d.poll(10_000) and json.loads(d.recv_multipart()[-1])["status"] == "ok"
    h.wait("accounting", lambda: h.counts("cam")["processed"] == 1)
    assert h.counts("cam")["received"] == 2
    d.close()


def test_a_failed_inference_at_one_request_is_answered_in_every_engine_mode(harness: Callable[..., Harness]) -> None:
    h = harness(level=0)
    d = h.dealer()
    d.send_multipart([b"", *encode_native("cam", 0, image(1))])
    h.wait("job 0", lambda: len(h.engine.started) == 1)
    h.engine.finish(error="RuntimeError: Infer Request failed")
    assert d.poll(10_000)
    assert json.loads(d.recv_multipart()[-1])["reason"] == "error"
    h.wait("accounting", lambda: h.counts("cam")["dropped"] == {"error": 1})
    d.close()
