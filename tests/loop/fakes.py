"""The I/O loop in-process: real ZeroMQ sockets over inproc://, a fake or a real engine.

The fake engine runs the real batch assembly and output split (``batch_input``/``split_outputs``) but
finishes a job only when the test says so, so batching, expiry, draining and swaps are driven event
by event, with no timing assumption.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from edgeagent.accounting import Accounting
from edgeagent.config import Config, EngineConfig, FrigateConfig, IngestConfig, ResultsConfig, SLAConfig
from edgeagent.control import Controller
from edgeagent.engine import Completion, batch_input, split_outputs
from edgeagent.io.loop import IOLoop
from edgeagent.io.sockets import Sockets
from edgeagent.models import ModelInfo
from edgeagent.switcher import Swap
from edgeagent.tuner import ExecLevel, derive_ladder
from edgeagent.wire import Frame, encode_native

LADDER = derive_ladder(2, 2, 2, 1, max_batch=4)  # (1,1,1) (1,2,1) (2,3,1) (2,3,2) (2,3,4)
_ids = itertools.count()


def info(hw: tuple[int, int] = (8, 8)) -> ModelInfo:
    return ModelInfo("fake", "fake", "input", (1, 3, *hw), hw, False, None, None, (("mean", "f32", (1, 1)),))


@dataclass
class FakeCompiled:
    """What the loop reads of a compiled model."""

    level: ExecLevel
    info: ModelInfo = field(default_factory=info)
    streams: int = 1
    sizes: dict[Any, Any] = field(default_factory=dict)
    uid: int = 0

    def describe(self) -> dict[str, Any]:
        return {"streams": self.streams, "requests": self.level.requests, "batch": self.level.batch}


class FakeEngine:
    """The engine's owner-thread interface. Output per frame: the mean of its image (so a result can be
    matched to its frame), through the real batch stacking, padding and split."""

    def __init__(self, wait_at_one_request: bool = False, inline: bool = False) -> None:
        """``wait_at_one_request``: like the real engine, no callback at a level of one request, where the
        loop waits for its job (:meth:`wait`); the default calls back at every level, so tests drive
        completions as they arrive from another thread. ``inline``: like the real engine on a single CPU, the
        loop runs a level-one job on its own thread (:meth:`run` blocks until the test finishes it)."""
        self.wait_at_one_request = wait_at_one_request or inline
        self.inline_at_one_request = inline
        self.waits = False
        self.inline = False
        self.released = False  # the harness is closing: jobs run inline end (a real job always ends)
        self.inline_jobs = 0  # how many jobs the loop ran through run()
        self._errors: dict[int, str] = {}  # finished jobs that failed
        self.active: FakeCompiled | None = None
        self.idle: list[int] = []
        self.jobs: dict[int, tuple[list[Frame], np.ndarray, int, int]] = {}  # frames, input, submit, ahead
        self.started: list[list[Frame]] = []  # every job's frames, in start order (any thread reads)
        self.activations: list[FakeCompiled] = []
        self._on_done: Callable[[int], None] | None = None
        self._lock = threading.Lock()  # jobs are started by the I/O thread and finished by the test's
        self._finished: set[int] = set()  # told done, not yet completed: a callback fires once per job
        self._finished_ns: dict[int, int] = {}  # when the test finished each: its run time, as OpenVINO's
        self._finished_cv = threading.Condition(self._lock)

    @property
    def batch(self) -> int:
        return self.active.level.batch if self.active else 1

    def activate(self, compiled: FakeCompiled, on_done: Callable[[int], None]) -> None:
        assert not self.jobs, "activated with jobs in flight"
        self.active = compiled
        self.waits = self.wait_at_one_request and compiled.level.requests == 1
        self.inline = self.inline_at_one_request and compiled.level.requests == 1
        self.idle = list(range(compiled.level.requests))[::-1]
        self._on_done = on_done
        self.activations.append(compiled)

    def submit(self, frames: list[Frame]) -> None:
        data = batch_input([f.image for f in frames], self.batch)
        with self._lock:
            job = self.idle.pop()
            self.jobs[job] = (frames, data, time.monotonic_ns(), len(self.jobs))
            self.started.append(frames)

    def finish(self, n: int = 1, error: str | None = None) -> None:
        """Test thread: let the ``n`` oldest running jobs finish (OpenVINO's callback thread's part);
        ``error``: they fail. As with OpenVINO, a failed job gets no callback: at more than one request
        the loop finds it by polling (:meth:`failed_jobs`); waited for or run inline, it completes with
        the error."""
        assert self._on_done is not None
        with self._lock:
            running = sorted((j for j in self.jobs if j not in self._finished), key=lambda j: self.jobs[j][2])[:n]
            self._finished.update(running)
            now_ns = time.monotonic_ns()
            for job in running:
                self._finished_ns[job] = now_ns
                if error is not None:
                    self._errors[job] = error
            self._finished_cv.notify_all()
        if not self.waits and error is None:
            for job in running:
                self._on_done(job)

    def run(self, frames: list[Frame]) -> int:
        """The I/O thread, when :attr:`inline`: the job runs until the test finishes it (or the harness
        closes); returns it, done."""
        self.submit(frames)
        with self._lock:
            self.inline_jobs += 1
            job = max(self.jobs, key=lambda j: self.jobs[j][2])
            while job not in self._finished and not self.released:
                self._finished_cv.wait(0.05)
            if job not in self._finished:
                self._finished.add(job)
                self._finished_ns[job] = time.monotonic_ns()
            return job

    def release(self) -> None:
        with self._lock:
            self.released = True
            self._finished_cv.notify_all()

    def wait(self, timeout_ms: int) -> int | None:
        """The I/O thread, when :attr:`waits`: the running job once the test has finished it, else None
        after ``timeout_ms``."""
        with self._lock:
            job = next(iter(self.jobs))
            if job not in self._finished:
                self._finished_cv.wait(timeout_ms / 1000)
            return job if job in self._finished else None

    def complete(self, job: int) -> Completion:
        with self._lock:
            frames, data, submit_ns, ahead = self.jobs.pop(job)
            self._finished.discard(job)
            ran_ms = (self._finished_ns.pop(job, submit_ns) - submit_ns) / 1e6
            self.idle.append(job)
            error = self._errors.pop(job, None)
        if error is not None:
            return Completion(frames, [], submit_ns, 0.0, error=error)
        means = data.reshape(data.shape[0], -1).mean(axis=1, keepdims=True).astype(np.float32)
        return Completion(frames, split_outputs([means], len(frames), self.batch), submit_ns, ran_ms, ahead=ahead)

    def failed_jobs(self) -> list[Completion]:
        """Jobs that failed, once the test failed them (the loop polls this while jobs run)."""
        if self.waits:
            return []  # waited for or run inline: complete() reports the error
        with self._lock:
            failed = [j for j in self.jobs if j in self._errors]
        return [self.complete(j) for j in failed]

    def has_size(self, key: tuple[int, int, str]) -> bool:
        """The model's own size has a graph; any other runs "on the any-size graph" (the fake runs every
        size alike: the loop's size requests are what is tested with it; graphs, with the real engine)."""
        assert self.active is not None
        return key == (*self.active.info.frame_hw, "bgr")

    def size_keys(self) -> tuple[tuple[int, int, str], ...]:
        return ()


class Harness:
    """An IOLoop on its own thread, fed over inproc:// PUSH and REQ/DEALER sockets, results on a SUB."""

    def __init__(self, engine: Any, compiled: Any, level: int, cfg: Config, job_prior_ns: int = 0) -> None:
        """``job_prior_ns``: the job-time estimate before any job is seen (as after a level switch), e.g.
        so that the I/O thread runs the first job itself where it would run short ones."""
        n = next(_ids)
        self.ctx: zmq.Context[Any] = zmq.Context.instance()
        self.pull_ep, self.listen_ep, self.pub_ep, self.frigate_ep = (
            f"inproc://loop{n}-{k}" for k in ("pull", "listen", "pub", "frigate")
        )
        cfg = dataclasses.replace(
            cfg,
            ingest=dataclasses.replace(cfg.ingest, listen=(self.listen_ep,), pull=(self.pull_ep,), connect=()),
            results=dataclasses.replace(cfg.results, publish=self.pub_ep),
            frigate=dataclasses.replace(cfg.frigate, endpoints=(self.frigate_ep,)),
        )
        self.cfg = cfg
        self.engine = engine
        self.accounting = Accounting(cfg.ingest.max_sources)
        self.switch_requests: list[tuple[int, Any]] = []
        self.size_requests: list[tuple[int, Any]] = []
        self.controller = Controller(cfg.sla, LADDER, level, interference=lambda: 0.0)
        self.sockets = Sockets(cfg, 64 << 20, ctx=self.ctx)
        self.sockets.bind()
        self.loop = IOLoop(
            cfg,
            self.sockets,
            engine,
            compiled,
            level,
            self.accounting,
            self.controller,
            lambda lv, model, _sizes: self.switch_requests.append((lv, model)),
            request_size=lambda uid, key: self.size_requests.append((uid, key)),
        )
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(self.pub_ep)
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.connect(self.pull_ep)
        if job_prior_ns:
            self.loop.job_timer.reset({0: job_prior_ns})
        self.loop.start()
        self.results: list[dict[str, Any]] = []

    def send(self, source: str, seq: int, image: np.ndarray) -> None:
        self.push.send_multipart(encode_native(source, seq, image))

    def dealer(self) -> zmq.Socket[Any]:
        d = self.ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(self.listen_ep)
        return d

    def wait_read_while_busy(self, what: str, pred: Callable[[], bool]) -> None:
        """Wait for ``pred`` where the I/O thread reads its sockets while a job runs. Where it runs the job
        itself (:attr:`FakeEngine.inline`), it reads them once the job ends: the test goes on at once
        (what it sent waits in ZeroMQ and is read, stamped as received when the job began, right after)."""
        if not self.engine.inline:
            self.wait(what, pred)

    def finish_if_inline(self) -> None:
        """Finish the running job where the I/O thread runs it itself (it sees its inbox only after it)."""
        if self.engine.inline:
            self.engine.finish()

    def wait(self, what: str, pred: Callable[[], bool], timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; accounting {self.accounting.snapshot()}")
            time.sleep(0.002)

    def collect(self, n: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """Until ``n`` results have been published in all (with their first output appended)."""
        deadline = time.monotonic() + timeout_s
        while len(self.results) < n:
            assert self.sub.poll(max(1, int((deadline - time.monotonic()) * 1000))), f"{len(self.results)} of {n}"
            _topic, header, *tensors = self.sub.recv_multipart()
            h = json.loads(header)
            h["output0"] = np.frombuffer(tensors[0], np.float32).reshape(h["outputs"][0]["shape"]) if tensors else None
            self.results.append(h)
        return self.results

    def counts(self, source: str) -> dict[str, Any]:
        return self.accounting.snapshot().get(source, {"received": 0, "processed": 0, "dropped": {}, "rejected": {}})

    def close(self) -> None:
        if hasattr(self.engine, "release"):
            self.engine.release()
        self.loop.request_stop()
        assert self.loop.join(10), "the I/O thread did not stop"
        for s in (self.sub, self.push):
            s.close(linger=0)


def make_config(**sla: Any) -> Config:
    batch_wait_ms = sla.pop("batch_wait_ms", 0.0)
    max_frame_age_ms = sla.pop("max_frame_age_ms", 0.0)
    frigate_timeout_ms = sla.pop("frigate_timeout_ms", 200.0)
    return Config(
        ingest=IngestConfig(max_frame_age_ms=max_frame_age_ms),
        frigate=FrigateConfig(request_timeout_ms=frigate_timeout_ms),
        results=ResultsConfig(),
        engine=EngineConfig(batch_wait_ms=batch_wait_ms),
        sla=SLAConfig(**{"p99_ms": 1000.0, "window_s": 600.0, **sla}),
    )


def image(value: int, hw: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.full((*hw, 3), value, np.uint8)


def swap_to(level: int, hw: tuple[int, int] = (8, 8)) -> Swap:
    return Swap(FakeCompiled(LADDER[level], info(hw)), level, reload=hw != (8, 8), posted_ns=time.monotonic_ns())  # type: ignore[arg-type]
