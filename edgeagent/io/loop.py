"""The I/O thread: poll → read → dispatch → complete → tick, nothing else.

One frame's path: socket (receive timestamp) → :func:`~edgeagent.wire.parse_frame` → its source's
slot (:mod:`edgeagent.io.slots`) → an idle infer request (zero copy): at one request a short job is run
on this thread (``Engine.run``, on a single CPU) or started and waited for
(``Engine.wait``); at more, started, and OpenVINO's callback → completion deque + eventfd wake
→ REQ reply, then PUB result (:mod:`edgeagent.io.results`)
→ accounting, latency hook, window meter (:mod:`edgeagent.io.meter`) → at each window end the
controller (:mod:`edgeagent.control`), whose target level goes to the switcher; the switcher's
compiled model comes back through :meth:`IOLoop.post` and is swapped in once no job is in flight.

Why one thread: ZeroMQ sockets are not thread-safe, the ROUTER that receives an imagezmq request
must also send its reply, and every thread hand-off costs tens of microseconds on a small edge CPU.
While every request is busy, frames wait in their slots; it blocks on inference only when the level
has one request (nothing else could start meanwhile): for a short job, by running it, as a hand-written
hub's blocking ``infer()`` does; for a longer one, in WAIT_SLICE_MS slices once it may end.

Ownership: everything in :class:`IOLoop` belongs to the I/O thread, except the thread-safe entry
points :meth:`IOLoop.post` and :meth:`IOLoop.request_stop`, and the fields other threads read:
``in_flight`` and ``last_progress_s`` (plain numbers: GIL-atomic), ``view`` (an immutable snapshot,
replaced at each swap) and ``stopped`` (an Event).
"""

from __future__ import annotations

import collections
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import zmq

from edgeagent import frigate
from edgeagent.accounting import Accounting
from edgeagent.config import Config, ModelConfig, SLAConfig
from edgeagent.control import Controller
from edgeagent.detect import FAMILIES, Decoder, check_outputs, read_labels
from edgeagent.engine import Compiled, Completion, Engine, size_name
from edgeagent.errors import BadFrame
from edgeagent.io.meter import WindowMeter
from edgeagent.io.results import Timing, encode_result
from edgeagent.io.slots import JobTimer, Slots
from edgeagent.io.sockets import Sockets, recv_message, split_envelope
from edgeagent.logs import RateLimiter, q
from edgeagent.models import DYNAMIC, NMS_ROWS, Geometry, ModelInfo, SizeKey, geometry
from edgeagent.switcher import NewSize, SizeDropped, Swap, SwitchFailed
from edgeagent.wire import Frame, FrameLimits, error_reply, parse_frame

log = logging.getLogger("edgeagent.io")

TICK_MS = 100  # the loop checks for stop, failed jobs, peer events and window ends at least this often
WAIT_SLICE_MS = 10  # waiting on a single busy request, the loop looks at its sockets and inbox this often
WAIT_MARGIN_NS = 500_000  # it starts waiting on the request this long before the job's earliest end
# ... and polls its sockets first only for jobs at least this long: for shorter ones the extra wake-up a job
# costs more than it tells (on 2 vCPUs it preempts inference: bench latency p50 +3-5 % at a 3 ms job), and
# a frame read after the wait is overstated by at most this much (after a job it ran itself: that job).
POLL_DURING_JOBS_OVER_NS = 5_000_000
# At one request where the I/O thread's CPUs are the inference CPUs (1 CPU: engine.split_cpus), it runs a
# job itself when 95 % of the recent ones took at most this long (not while no job has been seen: the first
# jobs after a start, a level switch or an idle spell are started and waited for; nor on the any-size graph:
# a 1080p frame's job there took ~45 ms where the estimate from 224x224 jobs said 3.6): longer ones are
# waited for, so that what comes meanwhile is read and stamped within WAIT_SLICE_MS and the inbox (stop,
# swaps) is seen.
INLINE_JOBS_UP_TO_NS = 5_000_000
WINDOW_CHECK_NS = 5_000_000  # window ends, source expiry and the CPU reading are looked at this often
MAX_BURST = 256  # messages read from one socket at once after a wait on a busy request, or while stopping


@dataclass(frozen=True)
class NewSLA:
    """Inbox event (a reload): the SLA and controller settings to use from now on."""

    sla: SLAConfig


@dataclass(frozen=True)
class ReloadModel:
    """Inbox event (a reload): compile this model at the running level and swap it in."""

    model: ModelConfig


@dataclass(frozen=True)
class FrigateModelSaved:
    """Inbox event: a model Frigate pushed was written to ``path`` (None: it could not be)."""

    envelope: list[Any] | None
    sock: Any
    path: str | None


Event = Swap | SwitchFailed | NewSize | SizeDropped | NewSLA | ReloadModel | FrigateModelSaved
EVICTED_COOLDOWN_NS = 30_000_000_000  # a size evicted for max_sizes is not compiled again sooner (no churn)


@dataclass(frozen=True)
class LoopView:
    """The running configuration as other threads see it (replaced at each swap)."""

    level: int
    exec: dict[str, Any]  # the compiled model's streams, requests, batch, threads, precision
    switches: int = 0
    last_switch_s: float = 0.0
    auth_refused: int = 0
    disconnects: int = 0  # peers libzmq dropped or that left (a message above the hard cap shows here)
    sizes: tuple[str, ...] = ()  # frame sizes with a graph of their own ("1280x720/bgr")
    size_compiles: int = 0
    any_size_frames: int = 0  # frames served by the any-size graph while their own compiled
    frigate_handshakes: int = 0


class IOLoop:
    def __init__(
        self,
        cfg: Config,
        sockets: Sockets,
        engine: Engine,
        compiled: Compiled,
        level: int,
        accounting: Accounting,
        controller: Controller,
        request_switch: Callable[[int, ModelConfig | None, tuple[SizeKey, ...]], None],
        on_latency: Callable[[Timing], None] | None = None,
        request_size: Callable[[int, SizeKey], None] | None = None,
    ) -> None:
        """``request_switch(level, model, sizes)``: hands a level change (or a reload) to the switcher,
        with the frame sizes in use; ``request_size(uid, key)``: asks it for a graph for one more size."""
        self.ingest_cfg = cfg.ingest
        self.results_cfg = cfg.results
        self.engine_cfg = cfg.engine
        self.sla: SLAConfig = cfg.sla
        self.sockets = sockets
        self.engine = engine
        self.accounting = accounting
        self.controller = controller
        self._request_switch = request_switch
        self._request_size = request_size
        self._size_requested: set[SizeKey] = set()
        self._size_failed: set[SizeKey] = set()  # failed to compile at the running compile: not asked again
        self._size_evicted: dict[SizeKey, int] = {}  # evicted for max_sizes → when
        self.max_sizes = cfg.model.max_sizes
        self.sources_cfg = cfg.sources
        self.on_latency = on_latency
        self.limits = FrameLimits(cfg.ingest.max_message_bytes, cfg.ingest.max_header_bytes)
        self.slots = Slots(cfg.sources)
        self._next_expiry_ns = 0
        self._next_cpu_ns = 0
        self.job_timer = JobTimer()
        self._set_sla(cfg.sla)
        self._level_estimates: dict[int, dict[int, int]] = {}  # level → its job timer's last estimates
        self.job_timer.streams = compiled.level.streams
        self.meter = WindowMeter(time.monotonic_ns(), level)
        self.rate = RateLimiter(cfg.log.rate_limit_s)
        self._initial = compiled
        self._level = level
        self._epoch = 0
        self._exec_info: dict[str, Any] = {"level": level, **compiled.describe()}
        self._output_names: tuple[str, ...] = ()
        self._n_model_outputs = 0
        self._decoder: Decoder | None = None
        self._geo: dict[tuple[int, int], Geometry] = {}
        self._labels = read_labels(cfg.results.labels) if cfg.results.labels else None
        self.frigate_cfg = cfg.frigate
        self.model_cfg = cfg.model
        self._set_model_info(compiled.info)
        self._seq: dict[str, int] = {}
        self._swap: Swap | None = None  # compiled and queued: no job starts until it is swapped in
        self._inbox: collections.deque[Event] = collections.deque()
        self._completions: collections.deque[int] = collections.deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # True while the I/O thread is in (or about to enter) its poll: only then does a finished job
        # need the eventfd to wake it. Set before the loop looks at the completions, cleared after the
        # poll, so a job that finishes in between is either seen or wakes the poll (GIL-ordered).
        self._parked = False
        self._wait_from_ns = 0  # one request busy: poll the sockets until then, then wait on the request
        self._rx_floor_ns = 0  # set by a job run on this thread: when it began (see _dispatch)
        self._stopping = False
        self._next_window_check_ns = 0
        self._next_peer_check_ns = 0
        self._thread: threading.Thread | None = None
        # Read by other threads.
        self.io_cpu_ns = 0
        self.inline_cpu_ns = 0  # CPU time of the jobs this thread ran itself (Engine.run)
        self.in_flight = 0
        self.last_progress_s = time.monotonic()
        static = tuple(size_name(k) for k in compiled.sizes if k != DYNAMIC)
        self.view = LoopView(level, compiled.describe(), sizes=static)
        self.stopped = threading.Event()

    # ------------------------------------------------------------------ other threads
    def start(self, io_cpus: tuple[int, ...] | None = None) -> None:
        """Start the I/O thread (pinned to ``io_cpus`` when given). The sockets must be bound."""
        self._thread = threading.Thread(target=self.run, args=(io_cpus,), name="edgeagent-io", daemon=True)
        self._thread.start()

    def post(self, event: Event) -> None:
        """Queue an event for the I/O thread (thread-safe: a deque append and an eventfd write)."""
        self._inbox.append(event)
        self._wake()

    def request_stop(self) -> None:
        self._stopping = True
        self._wake()

    def join(self, timeout_s: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    def stall_s(self, now_s: float) -> float:
        """Seconds a running job has gone without a completion (0 with no job in flight): the watchdog's
        and the stall metric's measure. Any thread. ``in_flight`` is read before ``last_progress_s``: a
        completion in between makes the stall shorter, never a false one."""
        if self.in_flight == 0:
            return 0.0
        return max(0.0, now_s - self.last_progress_s)

    def _wake(self) -> None:
        # The eventfd is never closed: a late OpenVINO callback or post() may still write to it after
        # the loop has ended, and a closed descriptor number could meanwhile belong to another file.
        try:
            os.eventfd_write(self._wake_fd, 1)
        except BlockingIOError:  # the counter is saturated (unread for 2**64 - 2 wakes): awake anyway
            pass

    def _on_done(self, job: int) -> None:
        """OpenVINO's callback thread (or the I/O thread itself): hand the finished job's number over;
        wake the I/O thread only when it is parked in its poll (a busy one finds it before it polls)."""
        self._completions.append(job)
        if self._parked:
            self._wake()

    # ------------------------------------------------------------------ the I/O thread
    def run(self, io_cpus: tuple[int, ...] | None = None) -> None:
        try:
            if io_cpus:
                os.sched_setaffinity(0, io_cpus)
            self.engine.activate(self._initial, self._on_done)
            # Peer events (monitor sockets) are not polled: they are read every TICK_MS (see _tick).
            poller = zmq.Poller()
            kinds = dict(self.sockets.ingest)
            for s in kinds:
                poller.register(s, zmq.POLLIN)
            poller.register(self._wake_fd, zmq.POLLIN)
            wake_fd = self._wake_fd
            waiting = self.slots.waiting
            next_failed_check_ns = 0
            while not self._stopping:
                poll_ms = TICK_MS  # how long a poll may block (with one request busy: until the wait below)
                waiting_on_job = self.in_flight and self.engine.waits and not self._completions and not self._inbox
                if waiting_on_job:
                    poll_ms = (self._wait_from_ns - time.monotonic_ns()) // 1_000_000  # whole ms: poll's unit
                if waiting_on_job and poll_ms <= 0:
                    # One infer request, busy, and its job may end any moment: nothing can start before it
                    # does, so wait on the request itself (no callback, no thread hop: see Engine.wait), in
                    # slices. Then read everything that came meanwhile, stamped as received when the wait
                    # began: a frame's time in the agent is never understated.
                    rx_floor_ns = time.monotonic_ns()
                    self._wait_on_job(WAIT_SLICE_MS)
                    if self._completions:  # its result out first: what came meanwhile is read right after
                        self._handle_completions()
                    events = poller.poll(0)
                    burst = MAX_BURST
                elif self._rx_floor_ns:
                    # This thread ran a job itself (Engine.run): read what came meanwhile, stamped as received
                    # when that job began.
                    rx_floor_ns, self._rx_floor_ns = self._rx_floor_ns, 0
                    events = poller.poll(0)
                    burst = MAX_BURST
                else:
                    # Frames and control events as they come; with one request busy, only until shortly
                    # before its job's earliest end (then the wait above).
                    rx_floor_ns = 0
                    self._parked = True
                    if self._completions or self._inbox:
                        timeout_ms = 0
                    else:
                        timeout_ms = min(poll_ms, self._poll_timeout_ms() if self.engine.batch > 1 else TICK_MS)
                    events = poller.poll(timeout_ms)
                    self._parked = False
                    burst = 1
                if self._completions:
                    self._handle_completions()
                now_ns = time.monotonic_ns()
                if self.in_flight and now_ns >= next_failed_check_ns:
                    next_failed_check_ns = now_ns + TICK_MS * 1_000_000
                    self._completions_done(self.engine.failed_jobs())
                if self._inbox or self._swap is not None:
                    self._handle_inbox()
                for s, _ev in events:
                    kind = kinds.get(s)
                    if kind is not None:
                        self._read(s, kind, burst=burst, rx_floor_ns=rx_floor_ns)
                    elif s == wake_fd:
                        _drain_eventfd(wake_fd)
                if waiting:
                    self._dispatch()
                if now_ns >= self._next_window_check_ns:
                    self._tick(now_ns)
            self._shutdown(poller)
        finally:
            self.sockets.close()
            self.stopped.set()

    def _wait_on_job(self, timeout_ms: int) -> None:
        """One request, busy: wait up to ``timeout_ms`` for its job (Engine.wait); done, it is queued as a
        completion, as OpenVINO's callback queues one at more requests."""
        job = self.engine.wait(timeout_ms)
        if job is not None:
            self._completions.append(job)

    def _poll_timeout_ms(self) -> int:
        """Until a partial batch must start (called at batch > 1), else TICK_MS."""
        if self._swap is None and self.engine.idle and self.slots.waiting:
            now_ns = time.monotonic_ns()
            job_ns = self.job_timer.estimate_ns(now_ns, self.in_flight)
            wait_ns = self.slots.wait_ns(now_ns, self.engine.batch, self._batch_wait_ns, self._sla_ns, job_ns)
            if wait_ns is not None:
                return max(0, min(TICK_MS, wait_ns // 1_000_000 + 1))
        return TICK_MS

    def _set_sla(self, sla: SLAConfig) -> None:
        """The SLA and what the hot path derives from it (computed here, not per frame)."""
        self.sla = sla
        self._sla_ns = int(sla.p99_ms * 1e6)  # each frame's deadline is its receipt + this
        # How long a partial batch may wait for more sources: a small, bounded share of the SLA.
        ms = self.engine_cfg.batch_wait_ms or 0.1 * sla.p99_ms
        self._batch_wait_ns = int(min(ms, 0.25 * sla.p99_ms) * 1e6)
        self._max_age_ns = int(self.ingest_cfg.max_frame_age_ms * 1e6)
        self.job_timer.stale_ns = int(sla.window_s * 1e9)

    # ---- read
    def _read(
        self, sock: zmq.Socket[Any], kind: str, stopping: bool = False, burst: int = MAX_BURST, rx_floor_ns: int = 0
    ) -> None:
        """Read and handle up to ``burst`` messages from ``sock``. Polling, the loop reads one per socket per
        wake: its next poll is the check for more (and sees finished jobs too), where asking the socket
        again after every message cost a zmq_poll or a failed receive per message, and a REQ camera, the
        common case, never has a second message waiting (measured with ``edgeagent bench hotpath``).
        After waiting on a busy request it reads all that came meanwhile, with ``rx_floor_ns`` (when the
        wait began) as their receipt time."""
        frigate_kind = kind == "frigate"
        routed = frigate_kind or kind == "listen"
        for _ in range(burst):
            parts = recv_message(sock)
            if parts is None:
                return
            # After a job this thread ran (its start: _rx_floor_ns), anything read was there during it.
            rx_ns = rx_floor_ns or self._rx_floor_ns or time.monotonic_ns()
            envelope: list[Any] | None = None
            if routed:
                parts, envelope = split_envelope(parts)
            try:
                if frigate_kind:
                    fresh_slot = self._accept_frigate(parts, envelope, sock, rx_ns, stopping)
                else:
                    frame = parse_frame(parts, self.limits, rx_ns)
                    fresh_slot = self._admit(frame, envelope, sock, stopping)
            except BadFrame as bad:
                self._reject(bad, envelope, sock, frigate_kind)
            except Exception as exc:  # a bug: counted and answered, never the end of the thread
                log.exception("event=ingest_failed")
                internal = BadFrame("internal", f"{type(exc).__name__} while handling the message")
                self._reject(internal, envelope, sock, frigate_kind)
            else:
                if fresh_slot and self.engine.idle and (burst == 1 or not self._runs_next_job()):
                    # An idle request: start at once, before reading the next message. Not a job this
                    # thread would run itself in a burst: the burst is read first (its frames compete).
                    self._dispatch()
            if self._completions:
                # A job finished during the burst: publish it and start the next one now, not after up to
                # MAX_BURST more messages (under a camera flood that wait idled the request for ~20 ms).
                self._handle_completions()
                if self.slots.waiting:
                    self._dispatch()

    def _admit(self, frame: Frame, envelope: list[Any] | None, sock: zmq.Socket[Any], stopping: bool) -> bool:
        """One parsed frame: count it and put it in its slot. True when it filled an empty slot (worth
        starting a job at once)."""
        if self.sources_cfg and frame.encoding == "raw" and frame.pix in ("bgr", "bgrx") and frame.fmt != "frigate":
            src = self.sources_cfg.get(frame.source)
            if src is not None and src.pixel_format == "rgb":
                frame.pix = "rgb" if frame.pix == "bgr" else "rgbx"
        frame.envelope = envelope
        frame.reply_sock = sock if envelope is not None else None
        if not self.accounting.admit(frame.source, frame.rx_ns):
            raise BadFrame("sources", f"more than {self.ingest_cfg.max_sources} sources", frame.source)
        if frame.seq < 0:
            frame.seq = self._seq.get(frame.source, -1) + 1
        self._seq[frame.source] = frame.seq
        if stopping:
            self._drop(frame, "shutdown")
            return False
        old = self.slots.put(frame)
        if old is not None:
            self._drop(old, "stale")
        return old is None

    def _accept_frigate(
        self, parts: list[Any], envelope: list[Any] | None, sock: zmq.Socket[Any], rx_ns: int, stopping: bool
    ) -> bool:
        """One Frigate request (see :mod:`edgeagent.frigate`): a handshake or a model push is answered
        here; an inference request becomes a frame of the source ``frigate``, one slot per socket."""
        msg = frigate.parse(parts, self.frigate_cfg, self.limits, rx_ns)
        if isinstance(msg, frigate.Handshake):
            ours = os.path.basename(self.engine.active.info.path) if self.engine.active else ""
            available = not self.frigate_cfg.accept_models or msg.model_name == ours
            self.view = replace(self.view, frigate_handshakes=self.view.frigate_handshakes + 1)
            if self.rate.allow(f"frigate:{msg.model_name}") is not None:
                log.info(
                    "event=frigate_handshake model_name=%s serving=%s available=%s",
                    q(msg.model_name),
                    q(ours),
                    available,
                )
            self._reply(sock, envelope, frigate.handshake_reply(available))
            return False
        if isinstance(msg, frigate.ModelPush):
            self._frigate_push(msg, envelope, sock)
            return False
        msg.slot_key = f"{frigate.SOURCE}#{envelope[-2].hex() if envelope and len(envelope) > 1 else ''}"
        msg.timeout_ns = int(self.frigate_cfg.request_timeout_ms * 1e6)
        return self._admit(msg, envelope, sock, stopping)

    def _frigate_push(self, push: frigate.ModelPush, envelope: list[Any] | None, sock: zmq.Socket[Any]) -> None:
        """Frigate sends its model file: refused unless frigate.accept_models; else saved (on a thread: a
        large file must not hold the frames up) and reloaded like SIGHUP, off the hot path."""
        cfg = self.frigate_cfg
        if not cfg.accept_models or push.data.nbytes > cfg.max_model_bytes:
            why = "frigate.accept_models is off" if not cfg.accept_models else f"over {cfg.max_model_bytes} bytes"
            log.warning("event=frigate_model_refused model_name=%s reason=%s", q(push.model_name), q(why))
            self._reply(sock, envelope, frigate.push_reply(False))
            return
        data = push.data  # a view of the received message (kept alive by it): no copy on this thread
        path = frigate.model_dir(cfg) / push.model_name

        def save() -> None:
            try:
                # Started here, it would inherit this thread's pin (one CPU): the process's CPUs instead.
                os.sched_setaffinity(0, os.sched_getaffinity(os.getpid()))
                path.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as fh:
                    fh.write(data)
                os.replace(fh.name, path)
                ok = True
            except OSError as exc:
                log.error("event=frigate_model_save_failed path=%s error=%s", q(str(path)), q(exc.strerror or str(exc)))
                ok = False
            self.post(FrigateModelSaved(envelope, sock, str(path) if ok else None))

        threading.Thread(target=save, name="edgeagent-frigate-save", daemon=True).start()

    def _frigate_saved(self, ev: FrigateModelSaved) -> None:
        self._reply(ev.sock, ev.envelope, frigate.push_reply(ev.path is not None))
        if ev.path is not None:
            log.info("event=frigate_model_saved path=%s reload=true", q(ev.path))
            self.model_cfg = replace(self.model_cfg, path=ev.path)
            self._reload(self.model_cfg)

    def _reload(self, model: ModelConfig) -> None:
        """Compile ``model`` (SIGHUP, a Frigate push) with the sizes in use, at the level a pending change
        is heading to, so the reload does not undo it."""
        pending = self.controller.view.pending
        self._request_switch(self._level if pending is None else pending, model, self.engine.size_keys())

    def _peer_events(self, monitor: zmq.Socket[Any]) -> None:
        for ev in self.sockets.events(monitor):
            if ev.what == "refused":
                self.view = replace(self.view, auth_refused=self.view.auth_refused + 1)
                self._warn("refused", f"event=peer_refused endpoint={q(ev.endpoint)} reason=authentication")
                continue
            self.view = replace(self.view, disconnects=self.view.disconnects + 1)
            cause = f"closed by the peer, or a message above ingest.max_message_bytes ({self.limits.max_payload_bytes})"
            suppressed = self.rate.allow(f"disconnected:{ev.endpoint}")
            if suppressed is not None:  # info: REQ cameras that close their socket disconnect too
                log.info(
                    "event=peer_disconnected kind=%s endpoint=%s peer=%s cause=%s%s%s",
                    ev.kind,
                    q(ev.endpoint),
                    q(ev.peer),
                    q(cause),
                    " reconnected=true" if ev.kind == "connect" else "",
                    f" suppressed={suppressed}" if suppressed else "",
                )

    # ---- answers
    def _reply(self, sock: zmq.Socket[Any] | None, envelope: list[Any] | None, body: bytes | list[bytes]) -> None:
        if sock is None or envelope is None:
            return
        try:
            self.sockets.reply(sock, envelope, body)
        except zmq.ZMQError as exc:  # peer gone or its pipe full: nothing else to do for it
            self._warn("reply_failed", f"event=reply_failed error={q(exc)}")

    def _reject(self, bad: BadFrame, envelope: list[Any] | None, sock: zmq.Socket[Any], frigate_kind: bool) -> None:
        label = self.accounting.label(bad.source)
        self.accounting.rejected(label, bad.reason)
        self._warn(
            f"reject:{bad.reason}:{label}",
            f"event=frame_rejected source={q(bad.source or '-')} reason={bad.reason} detail={q(bad.detail)}",
        )
        self._reply(sock, envelope, _error_body(frigate_kind, bad.reason, bad.detail, bad.source))

    def _drop(self, frame: Frame, reason: str) -> None:
        self.accounting.dropped(self.accounting.label(frame.source), reason)
        self.meter.frame_dropped()
        body = _error_body(frame.fmt == "frigate", reason, f"frame {frame.seq} {reason}", frame.source)
        self._reply(frame.reply_sock, frame.envelope, body)

    def _warn(self, key: str, message: str) -> None:
        suppressed = self.rate.allow(key)
        if suppressed is not None:
            log.warning("%s%s", message, f" suppressed={suppressed}" if suppressed else "")

    # ---- dispatch
    def _dispatch(self) -> None:
        """Start jobs while an infer request is idle and frames are waiting. None while a swap is queued, or
        after a job run on this thread until the sockets are read again (what came meanwhile competes for
        the next job, and its receipt time is bounded by that one job)."""
        if self._swap is not None or self._rx_floor_ns:
            return
        engine, slots, timer = self.engine, self.slots, self.job_timer
        while engine.idle and slots.waiting:
            now_ns = time.monotonic_ns()
            job_ns = timer.estimate_ns(now_ns, self.in_flight)
            free_ns = timer.estimate_ns(now_ns, 0) if self.in_flight else job_ns
            take = slots.take(
                now_ns, engine.batch, self._batch_wait_ns, self._max_age_ns, self._sla_ns, job_ns, free_ns
            )
            for frame in take.expired:
                self._drop(frame, "expired")
            for frame in take.late:
                self._warn(
                    f"late:{frame.source}",
                    f"event=frame_late source={q(frame.source)} waited_ms={(now_ns - frame.rx_ns) / 1e6:.2f} "
                    f"job_estimate_ms={free_ns / 1e6:.2f} sla_ms={self.sla.p99_ms:g} level={self._level}",
                )
                self._drop(frame, "late")
            if not take.frames:
                return  # nothing waiting, or a partial batch waiting (bounded) for more sources
            key = take.frames[0].key
            any_size = not engine.has_size(key)
            if engine.inline and not any_size and 0 < job_ns <= INLINE_JOBS_UP_TO_NS:
                # One request and a short job (95 % of the recent ones; not while unknown; not on the any-size
                # graph, whose time depends on the frame's size): run it on this thread, as a hand-written
                # hub's blocking infer() does (no thread hop either way), and send its result at once. What
                # came meanwhile is read next, stamped as received when the job began (never understated,
                # overstated by at most the job).
                self._started(now_ns, True)
                cpu_ns = time.thread_time_ns()
                try:
                    job = engine.run(take.frames)
                except RuntimeError as exc:  # its input tensor could not be made: nothing ran
                    self.in_flight -= 1
                    self.meter.busy(False, now_ns)
                    self._refused(take.frames, exc)
                    continue
                self.inline_cpu_ns += time.thread_time_ns() - cpu_ns  # the job's, not the loop's own
                self._completions.append(job)
                self._rx_floor_ns = now_ns
                self._handle_completions()
                return
            try:
                engine.submit(take.frames)
            except RuntimeError as exc:  # OpenVINO refused the job: answer and count, keep going
                self._refused(take.frames, exc)
                continue
            if any_size:  # counted, and a graph of their own asked for
                self.view = replace(self.view, any_size_frames=self.view.any_size_frames + len(take.frames))
                self._maybe_request_size(key, now_ns)
            if engine.waits:
                # Poll the sockets while a long job surely runs; wait on it from shortly before it may end.
                earliest_ns = timer.earliest_ns()
                self._wait_from_ns = now_ns + (
                    earliest_ns - WAIT_MARGIN_NS if earliest_ns > POLL_DURING_JOBS_OVER_NS else 0
                )
            self._started(now_ns, not engine.idle)

    def _refused(self, frames: list[Frame], exc: RuntimeError) -> None:
        """OpenVINO refused a job before it ran: its frames are answered and counted as 'error'."""
        self._warn("submit_failed", f"event=submit_failed error={q(str(exc)[:200])}")
        for f in frames:
            self._drop(f, "error")

    def _runs_next_job(self) -> bool:
        """Whether this thread would run the next job itself (see _dispatch)."""
        if not self.engine.inline:
            return False
        return 0 < self.job_timer.estimate_ns(time.monotonic_ns(), 0) <= INLINE_JOBS_UP_TO_NS

    def _started(self, now_ns: int, busy: bool) -> None:
        """A job started at ``now_ns``; ``busy``: every job slot is taken now."""
        if self.in_flight == 0:
            # The watchdog's clock: "no completion for too long while a job runs" starts at this job,
            # not at the last completion before an idle gap (which made a new job look stalled).
            self.last_progress_s = time.monotonic()
        self.in_flight += 1
        if busy:
            self.meter.busy(True, now_ns)

    # ---- complete
    def _handle_completions(self) -> None:
        completions, complete = self._completions, self.engine.complete
        while completions:
            self._completed(complete(completions.popleft()))

    def _completions_done(self, completions: list[Completion]) -> None:
        for c in completions:
            self._completed(c)

    def _completed(self, c: Completion) -> None:
        self.in_flight -= 1
        now_ns = time.monotonic_ns()
        if c.error is not None:
            self._warn("infer_error", f"event=inference_failed frames={len(c.frames)} error={q(c.error)}")
            for f in c.frames:  # never leave a frame unaccounted or a REQ sender waiting
                self._drop(f, "error")
        else:
            for frame, outputs in zip(c.frames, c.outputs):
                try:
                    self._publish(frame, outputs, c)
                except Exception:  # a bug: counted and answered, never the end of the thread
                    log.exception("event=publish_failed source=%s seq=%d", q(frame.source), frame.seq)
                    self._drop(frame, "error")
            self.job_timer.observe(now_ns - c.submit_ns, now_ns, c.ahead, int(c.infer_ms * 1e6))
        # The job's bookkeeping after its results are out (what senders wait for), as of its end (now_ns).
        self.meter.busy(False, now_ns)
        self.last_progress_s = now_ns / 1e9  # time.monotonic()'s clock

    def _publish(self, frame: Frame, outputs: list[np.ndarray], c: Completion) -> None:
        now_ns = time.monotonic_ns()
        rx_ns = frame.rx_ns
        timing = Timing((now_ns - rx_ns) / 1e6, (c.submit_ns - rx_ns) / 1e6, c.infer_ms)
        rc = self.results_cfg
        det = None
        if self._decoder is not None:
            try:
                det = self._decoder(outputs, self._geometry(frame))
            except ValueError as exc:  # outputs that do not decode: the frame is served, without boxes
                self._warn("decode", f"event=decode_failed family={rc.postprocess} error={q(str(exc)[:200])}")
        model_outputs = outputs[: self._n_model_outputs]  # the network's own (not the in-graph NMS)
        body = encode_result(
            frame,
            model_outputs,
            timing,
            now_ns,
            time.time_ns() if frame.sent_wall_ns is not None else 0,
            self._exec_info,
            self._output_names,
            rc.topk if rc.postprocess == "topk" else 0,
            det.json_text(self._labels) if det is not None else None,
        )
        # The waiting REQ sender first, then subscribers, then bookkeeping: latency is what they see.
        if frame.envelope is not None:
            if frame.fmt == "frigate":
                self._reply(frame.reply_sock, frame.envelope, frigate.reply(det, frame.image.shape[:2]))
            else:
                self._reply(frame.reply_sock, frame.envelope, b"OK" if self.ingest_cfg.reply == "ok" else body)
        frame.envelope = None  # answered: a failure below is counted, never answered a second time
        parts: list[Any] = [frame.source.encode(), body]
        if rc.send_outputs:
            parts.extend(model_outputs)
        self.sockets.publish(parts)
        self.accounting.processed(frame.source, timing.total_ms > self.sla.p99_ms)
        self.meter.frame_done(timing.total_ms)
        if self.on_latency is not None:
            try:
                self.on_latency(timing)
            except Exception:  # a metrics hook must never cost a frame or the thread
                if self.rate.allow("hook:on_latency") is not None:
                    log.exception("event=hook_failed hook=on_latency")

    # ---- control: inbox, swap, window
    def _handle_inbox(self) -> None:
        while self._inbox:
            ev = self._inbox.popleft()
            if isinstance(ev, Swap):
                self._swap = ev  # the newest wins; applied below once no job is in flight
            elif isinstance(ev, SwitchFailed):
                if ev.reload:
                    self.controller.on_cancelled()
                else:
                    self.controller.on_failed(ev.level)
            elif isinstance(ev, NewSize):
                self._add_size(ev)
            elif isinstance(ev, SizeDropped):
                self._size_requested.discard(ev.key)
                if ev.failed:
                    self._size_failed.add(ev.key)
            elif isinstance(ev, FrigateModelSaved):
                self._frigate_saved(ev)
            elif isinstance(ev, NewSLA):
                self._set_sla(ev.sla)
                self.controller.set_sla(ev.sla)
            else:
                self._reload(ev.model)
        if self._swap is not None and self.in_flight == 0:
            self._apply_swap(self._swap)
            self._swap = None

    def _apply_swap(self, swap: Swap) -> None:
        """Drained: activate the new model's requests, start a new window, confirm to the controller."""
        compiled = swap.compiled
        old = self.engine.active
        try:
            self.engine.activate(compiled, self._on_done)
        except RuntimeError as exc:  # e.g. no memory for the new requests: the old ones keep running
            log.error("event=swap_failed level=%d reload=%s error=%s", swap.level, swap.reload, q(str(exc)[:200]))
            if swap.reload:
                self.controller.on_cancelled()
            else:
                self.controller.on_failed(swap.level)
            return
        self._size_requested.clear()  # sizes still without a graph are asked for again at the new compile
        self._size_failed.clear()
        now_ns = time.monotonic_ns()
        old_level = self._level
        self._level = swap.level
        self._epoch += 1
        self.meter.restart(now_ns, swap.level, self._epoch)
        # Another level, other job times: what this level measured when it last ran (else the level just
        # left, scaled) stands in until its own jobs are seen. A reload is another model: nothing carries.
        if swap.reload:
            self._level_estimates.clear()
            self.job_timer.reset()
        else:
            self._level_estimates[old_level] = left = self.job_timer.estimates()
            prior = self._level_estimates.get(swap.level)
            if not prior and old is not None:
                # A level not run before: scale the one just left by the work per job per stream (a
                # stream gets 1/streams of the CPUs, a job is batch frames); a guess until 3 jobs are seen.
                was, new = old.level, compiled.level
                scale = (new.batch * new.streams) / (was.batch * was.streams)
                prior = {ahead: int(ns * scale) for ahead, ns in left.items()}
            self.job_timer.reset(prior)
        self.job_timer.streams = compiled.level.streams
        self.controller.on_swapped(swap.level)
        self._exec_info = {"level": swap.level, **compiled.describe()}
        self._set_model_info(compiled.info)
        switch_s = (now_ns - swap.posted_ns) / 1e9
        self.view = replace(
            self.view,
            level=swap.level,
            exec=compiled.describe(),
            switches=self.view.switches + 1,
            last_switch_s=switch_s,
            sizes=tuple(size_name(k) for k in self.engine.size_keys()),
        )
        log.info(
            "event=level_switched level=%d %s switch_ms=%.2f reload=%s from=%s",
            swap.level,
            " ".join(f"{k}={v}" for k, v in compiled.describe().items()),
            switch_s * 1e3,
            swap.reload,
            q(old.level.describe() if old else "-"),
        )

    def _geometry(self, frame: Frame) -> Geometry:
        hw = frame.image.shape[:2]
        geo = self._geo.get(hw)
        if geo is None:
            if len(self._geo) > 64:
                self._geo.clear()
            assert self.engine.active is not None
            geo = self._geo[hw] = geometry(hw, self.engine.active.info)
        return geo

    def _set_model_info(self, info: ModelInfo) -> None:
        """The running model's outputs and input size: output names, the detection decoder."""
        rc = self.results_cfg
        names = [n for n, _t, _s in info.outputs]
        self._n_model_outputs = names.index(NMS_ROWS) if NMS_ROWS in names else len(names)
        self._output_names = tuple(names[: self._n_model_outputs])
        self._geo = {}
        self._decoder = None
        if rc.postprocess in FAMILIES:
            why = check_outputs(rc.postprocess, info.outputs)
            if why is not None:
                log.error("event=postprocess_off model=%s error=%s", q(info.path), q(why))
            else:
                names = [n for n, _t, _s in info.outputs]
                rows = names.index(NMS_ROWS) if NMS_ROWS in names else None
                self._decoder = Decoder(
                    rc.postprocess, info.model_hw, rc.score_threshold, rc.iou_threshold, rc.max_detections, rows=rows
                )

    def _maybe_request_size(self, key: SizeKey, now_ns: int) -> None:
        """Ask the switcher for a graph for ``key`` frames: once at a time, never again after it failed
        at this compile, and not within EVICTED_COOLDOWN_NS of its eviction (more live sizes than
        max_sizes would otherwise compile for ever)."""
        if key in self._size_requested or key in self._size_failed or self._request_size is None:
            return
        if now_ns - self._size_evicted.get(key, -EVICTED_COOLDOWN_NS) < EVICTED_COOLDOWN_NS:
            return
        if self.engine.active is not None:
            self._size_requested.add(key)
            self._request_size(self.engine.active.uid, key)

    def _add_size(self, ev: NewSize) -> None:
        """A graph for one more frame size: frames of that size run on it from their next job."""
        self._size_requested.discard(ev.key)
        try:
            evicted = self.engine.add_size(ev.uid, ev.key, ev.model, self.max_sizes)
        except RuntimeError as exc:  # e.g. no memory for its requests: that size stays on the any-size graph
            log.error("event=size_add_failed size=%s error=%s", size_name(ev.key), q(str(exc)[:200]))
            self._size_failed.add(ev.key)
            return
        if evicted is None:
            return  # compiled for a model or level that no longer runs
        now_ns = time.monotonic_ns()
        for key in evicted:
            self._size_evicted[key] = now_ns
            log.info("event=size_evicted size=%s reason=max_sizes max_sizes=%d", size_name(key), self.max_sizes)
        self.view = replace(
            self.view,
            sizes=tuple(size_name(k) for k in self.engine.size_keys()),
            size_compiles=self.view.size_compiles + 1,
        )

    def _expire_sources(self, now_ns: int) -> None:
        """Once a second: sources silent for ingest.source_idle_s give up their place."""
        if now_ns < self._next_expiry_ns:
            return
        self._next_expiry_ns = now_ns + 1_000_000_000
        self.slots.prune()
        self._size_evicted = {k: t for k, t in self._size_evicted.items() if now_ns - t < EVICTED_COOLDOWN_NS}
        for source in self.accounting.expire(now_ns, int(self.ingest_cfg.source_idle_s * 1e9)):
            self._seq.pop(source, None)
            log.info("event=source_expired source=%s idle_s=%g", q(source), self.ingest_cfg.source_idle_s)

    def _tick(self, now_ns: int) -> None:
        """At most every WINDOW_CHECK_NS (and at least every TICK_MS): this thread's CPU time, peer events,
        source expiry, and the window's end (its statistics go to the controller)."""
        self._next_window_check_ns = now_ns + WINDOW_CHECK_NS
        if now_ns >= self._next_cpu_ns:  # a syscall, not a vDSO read: every 50 ms, not every iteration
            self._next_cpu_ns = now_ns + 50_000_000
            # This thread's own CPU time, without inference it ran itself (read by the metrics thread).
            self.io_cpu_ns = time.thread_time_ns() - self.inline_cpu_ns
        if now_ns >= self._next_peer_check_ns:  # not polled with the frames: a check per socket per frame
            self._next_peer_check_ns = now_ns + TICK_MS * 1_000_000
            for m in self.sockets.monitors:
                self._peer_events(m)
        self._expire_sources(now_ns)
        ws = self.meter.close_if_due(now_ns, self.sla)
        if ws is None:
            return
        met = ws.met(self.sla.p99_ms)
        log.log(
            logging.DEBUG if met else logging.INFO,
            "event=window level=%d frames=%d dropped=%d p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f max_ms=%.2f "
            "goodput_fps=%.1f busy=%.2f met=%s",
            ws.level,
            ws.frames,
            ws.dropped,
            ws.p50_ms,
            ws.p95_ms,
            ws.p99_ms,
            ws.max_ms,
            ws.goodput_fps,
            ws.busy_fraction,
            met,
        )
        try:
            target = self.controller.on_window(ws)
        except Exception:  # a policy bug must not stop the frames: log it, keep the level
            if self.rate.allow("controller") is not None:
                log.exception("event=controller_failed")
            return
        if target is not None:
            self._request_switch(target, None, self.engine.size_keys())

    # ---- stop
    def _shutdown(self, poller: zmq.Poller) -> None:
        """Stop taking frames, finish in-flight jobs, answer everyone, publish what completed."""
        for frame in self.slots.remove_if(lambda f: True):
            self._drop(frame, "shutdown")
        deadline = time.monotonic() + 4.0
        while (self.in_flight > 0 or self._completions) and time.monotonic() < deadline:
            if self.in_flight and self.engine.waits and not self._completions:
                self._wait_on_job(20)  # one request: no callback comes, its job is waited for
            events = dict(poller.poll(0 if self._completions else 20))
            if self._wake_fd in events:
                _drain_eventfd(self._wake_fd)
            self._handle_completions()
            self._completions_done(self.engine.failed_jobs())  # OpenVINO calls no callback for a failed job
            for s, kind in self.sockets.ingest:  # answer late requests instead of leaving senders waiting
                if s in events:
                    self._read(s, kind, stopping=True)
        for s, kind in self.sockets.ingest:
            self._read(s, kind, stopping=True)
        if self.in_flight:
            log.error("event=shutdown_incomplete in_flight=%d", self.in_flight)


def _error_body(frigate_kind: bool, reason: str, detail: str, source: str | None) -> bytes | list[bytes]:
    """What a sender gets for a rejected or dropped message: Frigate, the zero result (any other reply
    would end its detector); everyone else, the named reason."""
    return frigate.ZERO_REPLY if frigate_kind else error_reply(reason, detail, source)


def _drain_eventfd(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass
