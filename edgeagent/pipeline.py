"""The frame path, top to bottom, on one I/O thread that owns every socket and the engine.

socket (receive timestamp) → :func:`parse_frame` → newest-frame slot per source → ``engine.submit``
(zero-copy, only when an infer request is idle) → OpenVINO callback → completion deque + eventfd wake
→ PUB result / ROUTER reply (end-to-end latency recorded) → latency window → ``on_window`` hook.

Why one thread: ZeroMQ sockets are not thread-safe and the ROUTER that receives an imagezmq request
must also send its reply; and every thread hand-off costs tens of microseconds on a small edge CPU.
The thread never blocks on inference: while all requests are busy, frames wait in their source's
slot, where a newer frame replaces (drops, counts) an older one — so no queue grows without bound and
the frame that goes to inference is always the freshest one.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from edgeagent.accounting import OVERFLOW_SOURCE, Accounting
from edgeagent.config import Config
from edgeagent.engine import Compiled, Completion, Engine
from edgeagent.errors import BadFrame, EndpointError
from edgeagent.logs import RateLimiter, q
from edgeagent.security import Guard
from edgeagent.tuner import WindowStats, summarize_window
from edgeagent.wire import Frame, FrameLimits, dumps, error_reply, parse_frame

log = logging.getLogger("edgeagent.pipeline")

TICK_MS = 100  # the loop checks for stop and window ends at least this often
MAX_BURST = 256  # messages read from one socket before looking at completions again


@dataclass
class LatencySample:
    source: str
    total_ms: float
    queue_ms: float
    infer_ms: float


class Pipeline:
    """Owns the sockets and the engine after :meth:`start`. Public methods other than ``run`` are
    thread-safe and meant for the agent's main thread."""

    def __init__(
        self,
        cfg: Config,
        engine: Engine,
        compiled: Compiled,
        level_index: int,
        accounting: Accounting,
        on_window: Callable[[WindowStats], None] | None = None,
        on_latency: Callable[[LatencySample], None] | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.accounting = accounting
        self.guard = guard
        self.on_window = on_window
        self.on_latency = on_latency
        self.limits = FrameLimits(compiled.info.frame_hw, cfg.ingest.max_header_bytes)
        # libzmq refuses (and disconnects) a peer whose message part exceeds this before Python sees it,
        # so no error reply can be sent: it must stay well above anything that deserves a named error.
        # 8x the largest acceptable frame: a float64 frame of the right shape still gets "dtype".
        self.max_message_bytes = cfg.ingest.max_message_bytes or (
            8 * self.limits.max_payload_bytes + cfg.ingest.max_header_bytes
        )
        self.ctx: zmq.Context[Any] = zmq.Context.instance()
        self.ingest: list[tuple[zmq.Socket[Any], str]] = []  # (socket, kind: router/sub/pull)
        self.pub: zmq.Socket[Any] | None = None
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._completions: collections.deque[int] = collections.deque()
        self._switches: collections.deque[tuple[Compiled, int, int]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._slots: dict[str, Frame] = {}
        self._seq: dict[str, int] = {}
        self.in_flight = 0
        self.level_index = level_index
        self._pending_activation: tuple[Compiled, int, int] | None = None
        self._initial = compiled
        self.rate = RateLimiter(cfg.log.rate_limit_s)
        # Progress and window state (read by other threads as plain ints/floats: GIL-atomic).
        self.last_progress_s = time.monotonic()
        self.last_window: WindowStats | None = None
        self.switch_count = 0
        self.last_switch_s = 0.0
        self._win_lat: list[float] = []
        self._win_dropped = 0
        self._win_start_ns = time.monotonic_ns()
        self._busy_since_ns: int | None = None
        self._busy_ns = 0
        self.stopped = threading.Event()

    # ------------------------------------------------------------------ setup (main thread)
    def bind(self) -> None:
        """Create, bind and connect every socket. Raises EndpointError naming the endpoint."""
        ic = self.cfg.ingest

        def make(kind: int, name: str) -> zmq.Socket[Any]:
            s: zmq.Socket[Any] = self.ctx.socket(kind)
            if self.guard is not None and name != "sub":
                self.guard.apply(s, "listen" if name == "router" else name)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, ic.rcvhwm)
            s.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            self.ingest.append((s, name))
            return s

        try:
            for ep in ic.listen:
                _unlink_stale_ipc(ep)
                make(zmq.ROUTER, "router").bind(ep)
            for ep in ic.pull:
                _unlink_stale_ipc(ep)
                make(zmq.PULL, "pull").bind(ep)
            for ep in ic.connect:
                s = make(zmq.SUB, "sub")
                s.setsockopt(zmq.SUBSCRIBE, b"")
                s.connect(ep)
            if self.cfg.results.publish:
                _unlink_stale_ipc(self.cfg.results.publish)
                self.pub = self.ctx.socket(zmq.PUB)
                if self.guard is not None:
                    self.guard.apply(self.pub, "publish")
                self.pub.setsockopt(zmq.LINGER, 0)
                self.pub.setsockopt(zmq.SNDHWM, 256)
                self.pub.bind(self.cfg.results.publish)
        except zmq.ZMQError as exc:
            self.close()
            raise EndpointError(f"cannot open endpoint: {exc} ({_endpoints(self.cfg)})") from None

    def endpoints(self) -> dict[str, list[str]]:
        """Actual endpoints (after binding port 0 / wildcards), for logs and tests."""
        out: dict[str, list[str]] = {}
        for s, kind in self.ingest:
            out.setdefault(kind, []).append(s.getsockopt_string(zmq.LAST_ENDPOINT))
        if self.pub is not None:
            out["publish"] = [self.pub.getsockopt_string(zmq.LAST_ENDPOINT)]
        return out

    def start(self, io_cpus: tuple[int, ...] | None = None) -> None:
        self._thread = threading.Thread(target=self.run, args=(io_cpus,), name="edgeagent-io", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ other threads
    def request_stop(self) -> None:
        self._stop.set()
        self._wake()

    def join(self, timeout_s: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    def switch_to(self, compiled: Compiled, level_index: int) -> None:
        """Swap in a new compiled model once in-flight jobs finish (no frame lost or repeated)."""
        self._switches.append((compiled, level_index, time.monotonic_ns()))
        self._wake()

    def _wake(self) -> None:
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:  # the I/O thread has already finished and closed it
            pass

    def _on_done(self, job: int) -> None:
        # OpenVINO's callback thread: only hand the finished job's number over.
        self._completions.append(job)
        os.eventfd_write(self._wake_fd, 1)

    # ------------------------------------------------------------------ the I/O thread
    def run(self, io_cpus: tuple[int, ...] | None = None) -> None:
        try:
            if io_cpus:
                os.sched_setaffinity(0, io_cpus)
            self.engine.activate(self._initial, self._on_done)
            poller = zmq.Poller()
            for s, _ in self.ingest:
                poller.register(s, zmq.POLLIN)
            poller.register(self._wake_fd, zmq.POLLIN)
            next_check = 0.0
            while not self._stop.is_set():
                events = dict(poller.poll(self._poll_timeout_ms()))
                if self._wake_fd in events:
                    _drain_eventfd(self._wake_fd)
                self._handle_completions()
                if self.in_flight and time.monotonic() >= next_check:
                    next_check = time.monotonic() + TICK_MS / 1000
                    self._completions_done(self.engine.failed_jobs())
                self._handle_switch()
                for s, kind in self.ingest:
                    if s in events:
                        self._read(s, kind)
                self._pump()
                self._tick_window()
            self._shutdown(poller)
        finally:
            self.close()
            self.stopped.set()

    def _read(self, sock: zmq.Socket[Any], kind: str, stopping: bool = False) -> None:
        for _ in range(MAX_BURST):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            rx_ns = time.monotonic_ns()
            envelope: list[Any] | None = None
            if kind == "router":
                parts, envelope = _split_envelope(parts)
            try:
                fresh_slot = self._accept(parts, envelope, sock, rx_ns, stopping)
            except BadFrame as bad:
                self._reject(bad, envelope, sock)
            except Exception as exc:
                log.exception("event=ingest_failed")
                self._reject(BadFrame("internal", f"{type(exc).__name__} while handling the message"), envelope, sock)
            else:
                if fresh_slot and self.engine.idle:
                    self._pump()  # an idle request: start at once, before reading the next message

    def _accept(
        self, parts: list[Any], envelope: list[Any] | None, sock: zmq.Socket[Any], rx_ns: int, stopping: bool
    ) -> bool:
        """One received message: parse (raises BadFrame), count, and put it in its source's slot.
        True when it filled an empty slot (worth starting a job at once)."""
        frame = parse_frame(parts, self.limits, rx_ns)
        frame.envelope = envelope
        frame.reply_sock = sock if envelope is not None else None
        label = self.accounting.label(frame.source)
        if label == OVERFLOW_SOURCE:
            raise BadFrame("sources", f"more than {self.cfg.ingest.max_sources} sources", frame.source)
        if frame.seq < 0:
            frame.seq = self._seq.get(frame.source, -1) + 1
        self._seq[frame.source] = frame.seq
        self.accounting.received(label)
        if stopping:
            self._drop(frame, "shutdown")
            return False
        old = self._slots.get(frame.source)
        self._slots[frame.source] = frame
        if old is not None:
            self._drop(old, "stale")
        return old is None

    def _reply(self, frame_envelope: list[Any] | None, body: bytes, sock: zmq.Socket[Any] | None) -> None:
        """Answer a REQ/DEALER peer on the ROUTER its request came in on (there may be several)."""
        if frame_envelope is None:
            return
        if sock is None:
            return
        try:
            sock.send_multipart([*frame_envelope, body], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or HWM reached: nothing else to do for it
            self._warn("reply_failed", f"event=reply_failed error={q(exc)}")

    def _reject(self, bad: BadFrame, envelope: list[Any] | None, sock: zmq.Socket[Any]) -> None:
        label = self.accounting.label(bad.source)
        self.accounting.rejected(label, bad.reason)
        self._warn(
            f"reject:{bad.reason}:{label}",
            f"event=frame_rejected source={q(bad.source or '-')} reason={bad.reason} detail={q(bad.detail)}",
        )
        self._reply(envelope, error_reply(bad.reason, bad.detail, bad.source), sock)

    def _drop(self, frame: Frame, reason: str) -> None:
        self.accounting.dropped(self.accounting.label(frame.source), reason)
        self._win_dropped += 1
        self._reply(frame.envelope, error_reply(reason, f"frame {frame.seq} {reason}", frame.source), frame.reply_sock)

    def _warn(self, key: str, message: str) -> None:
        suppressed = self.rate.allow(key)
        if suppressed is not None:
            log.warning("%s%s", message, f" suppressed={suppressed}" if suppressed else "")

    def _batch_wait_ns(self) -> int:
        """How long a partial batch may wait for more sources: a small, bounded share of the SLA."""
        ms = self.cfg.engine.batch_wait_ms or 0.1 * self.cfg.sla.p99_ms
        return int(min(ms, 0.25 * self.cfg.sla.p99_ms) * 1e6)

    def _poll_timeout_ms(self) -> int:
        if self.engine.batch > 1 and self._slots and self.engine.idle and self._pending_activation is None:
            oldest = min(f.rx_ns for f in self._slots.values())
            left_ns = oldest + self._batch_wait_ns() - time.monotonic_ns()
            return max(0, min(TICK_MS, left_ns // 1_000_000 + 1))
        return TICK_MS

    def _pump(self) -> None:
        """Start jobs while an infer request is idle and frames are waiting (oldest-waiting first)."""
        if self._pending_activation is not None:
            return
        max_age_ns = int(self.cfg.ingest.max_frame_age_ms * 1e6)
        batch = self.engine.batch
        while self.engine.idle and self._slots:
            now = time.monotonic_ns()
            if batch > 1 and len(self._slots) < batch:
                oldest = min(f.rx_ns for f in self._slots.values())
                if now - oldest < self._batch_wait_ns():
                    return  # wait (bounded) for more sources to fill the batch
            frames: list[Frame] = []
            for source in sorted(self._slots, key=lambda s: self._slots[s].rx_ns)[:batch]:
                frame = self._slots.pop(source)
                if max_age_ns and now - frame.rx_ns > max_age_ns:
                    self._drop(frame, "expired")
                else:
                    frames.append(frame)
            if frames:
                try:
                    self.engine.submit(frames)
                except RuntimeError as exc:  # OpenVINO refused the job: answer and count, keep going
                    self._warn("submit_failed", f"event=submit_failed error={q(str(exc)[:200])}")
                    for f in frames:
                        self._drop(f, "error")
                    continue
                self.in_flight += 1
                if not self.engine.idle:
                    self._busy_since_ns = now

    def _handle_completions(self) -> None:
        while self._completions:
            self._completions_done([self.engine.complete(self._completions.popleft())])

    def _completions_done(self, completions: list[Completion]) -> None:
        for c in completions:
            if self._busy_since_ns is not None:
                self._busy_ns += time.monotonic_ns() - self._busy_since_ns
                self._busy_since_ns = None
            self.in_flight -= 1
            self.last_progress_s = time.monotonic()
            if c.error is not None:
                self._warn("infer_error", f"event=inference_failed frames={len(c.frames)} error={q(c.error)}")
                for f in c.frames:  # never leave a frame unaccounted or a REQ sender waiting
                    self._drop(f, "error")
                continue
            for frame, outputs in zip(c.frames, c.outputs):
                try:
                    self._publish(frame, outputs, c)
                except Exception:
                    log.exception("event=publish_failed source=%s seq=%d", q(frame.source), frame.seq)
                    self._drop(frame, "error")

    def _publish(self, frame: Frame, outputs: list[np.ndarray], c: Completion) -> None:
        active = self.engine.active
        assert active is not None
        now_ns = time.monotonic_ns()
        total_ms = (now_ns - frame.rx_ns) / 1e6
        queue_ms = (c.submit_ns - frame.rx_ns) / 1e6
        header: dict[str, Any] = {
            "v": 1,
            "status": "ok",
            "source": frame.source,
            "seq": frame.seq,
            "rx_ns": frame.rx_ns,
            "pub_ns": now_ns,
            "latency_ms": {"queue": round(queue_ms, 3), "inference": round(c.infer_ms, 3), "total": round(total_ms, 3)},
            "exec": {"level": self.level_index, **active.describe()},
            "outputs": [
                {"name": n, "dtype": str(o.dtype), "shape": list(o.shape)}
                for (n, _t, _s), o in zip(active.info.outputs, outputs)
            ],
        }
        if frame.sent_wall_ns is not None:
            header["age_ms"] = round((time.time_ns() - frame.sent_wall_ns) / 1e6, 3)
        if self.cfg.results.postprocess == "topk" and outputs:
            scores = outputs[0].reshape(-1)
            k = min(self.cfg.results.topk, scores.size)
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top])]
            header["topk"] = [[int(i), float(scores[i])] for i in top]
        body = dumps(header)
        # The waiting REQ sender first, then subscribers, then bookkeeping: latency is what they see.
        if frame.envelope is not None:
            self._reply(frame.envelope, b"OK" if self.cfg.ingest.reply == "ok" else body, frame.reply_sock)
        if self.pub is not None:
            parts: list[Any] = [frame.source.encode(), body]
            if self.cfg.results.send_outputs:
                parts.extend(outputs)
            try:
                self.pub.send_multipart(parts, zmq.NOBLOCK, copy=False)
            except zmq.Again:  # PUB never blocks; Again only if a subscriber's pipe is full
                pass
        self.accounting.processed(self.accounting.label(frame.source))
        self._win_lat.append(total_ms)
        if self.on_latency is not None:
            self._hook(self.on_latency, LatencySample(frame.source, total_ms, queue_ms, c.infer_ms))

    def _hook(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Metrics and controller hooks: a failure there is logged, never costs a frame or the thread."""
        try:
            fn(arg)
        except Exception:
            if self.rate.allow(f"hook:{getattr(fn, '__name__', 'hook')}") is not None:
                log.exception("event=hook_failed hook=%s", getattr(fn, "__name__", "hook"))

    def _handle_switch(self) -> None:
        if self._switches and self._pending_activation is None:
            self._pending_activation = self._switches.popleft()
        if self._pending_activation is not None and self.in_flight == 0:
            compiled, index, asked_ns = self._pending_activation
            old = self.engine.active
            self.engine.activate(compiled, self._on_done)
            if compiled.info.frame_hw != self.limits.frame_hw:
                # A reloaded model takes another frame size: waiting frames of the old size cannot run.
                self.limits = FrameLimits(compiled.info.frame_hw, self.cfg.ingest.max_header_bytes)
                for source, frame in list(self._slots.items()):
                    if frame.image.shape[:2] != compiled.info.frame_hw:
                        del self._slots[source]
                        self._drop(frame, "reconfigured")
            self._pending_activation = None
            self.level_index = index
            self.switch_count += 1
            self.last_switch_s = (time.monotonic_ns() - asked_ns) / 1e9
            log.info(
                "event=level_switched level=%d %s switch_ms=%.2f from=%s",
                index,
                " ".join(f"{k}={v}" for k, v in compiled.describe().items()),
                self.last_switch_s * 1e3,
                q(old.level.describe() if old else "-"),
            )

    def _tick_window(self) -> None:
        now_ns = time.monotonic_ns()
        dur_s = (now_ns - self._win_start_ns) / 1e9
        sla = self.cfg.sla
        if dur_s < sla.window_s:
            return
        if len(self._win_lat) < sla.min_frames and self._win_lat and dur_s < 5 * sla.window_s:
            return  # extend a thin window (up to 5x) so its p99 means something
        busy_ns = self._busy_ns + (now_ns - self._busy_since_ns if self._busy_since_ns is not None else 0)
        if self._busy_since_ns is not None:
            self._busy_since_ns = now_ns
        ws = summarize_window(
            self._win_lat, self._win_dropped, min(1.0, busy_ns / (dur_s * 1e9)), now_ns / 1e9, dur_s, sla.p99_ms
        )
        self._win_lat = []
        self._win_dropped = 0
        self._busy_ns = 0
        self._win_start_ns = now_ns
        self.last_window = ws
        log.log(
            logging.INFO if not ws.met(sla.p99_ms) else logging.DEBUG,
            "event=window level=%d frames=%d dropped=%d p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f max_ms=%.2f "
            "goodput_fps=%.1f busy=%.2f met=%s",
            self.level_index,
            ws.frames,
            ws.dropped,
            ws.p50_ms,
            ws.p95_ms,
            ws.p99_ms,
            ws.max_ms,
            ws.goodput_fps,
            ws.busy_fraction,
            ws.met(sla.p99_ms),
        )
        if self.on_window is not None:
            self._hook(self.on_window, ws)

    def _shutdown(self, poller: zmq.Poller) -> None:
        """Stop taking frames, finish in-flight jobs, answer everyone, publish what completed."""
        for frame in list(self._slots.values()):
            self._drop(frame, "shutdown")
        self._slots.clear()
        deadline = time.monotonic() + 4.0
        while (self.in_flight > 0 or self._completions) and time.monotonic() < deadline:
            events = dict(poller.poll(20))
            if self._wake_fd in events:
                _drain_eventfd(self._wake_fd)
            self._handle_completions()
            for s, kind in self.ingest:  # answer late requests instead of leaving senders waiting
                if s in events:
                    self._read(s, kind, stopping=True)
        for s, kind in self.ingest:
            self._read(s, kind, stopping=True)
        if self.in_flight:
            log.error("event=shutdown_incomplete in_flight=%d", self.in_flight)

    def close(self) -> None:
        """Close sockets; ROUTER and PUB linger briefly so the last replies and results go out."""
        for s, kind in self.ingest:
            if not s.closed:
                s.close(linger=500 if kind == "router" else 0)
        if self.pub is not None and not self.pub.closed:
            self.pub.close(linger=500)
        # The eventfd stays open: a late OpenVINO callback or switch_to may still write to it.

    # ------------------------------------------------------------------ read-only views
    def switch_pending(self) -> bool:
        return bool(self._switches) or self._pending_activation is not None


def _split_envelope(parts: list[Any]) -> tuple[list[Any], list[Any]]:
    """ROUTER messages: [identity, b"", body...] from REQ, [identity, body...] from DEALER."""
    for i, p in enumerate(parts[:4]):
        if len(p) == 0:
            return parts[i + 1 :], [bytes(x.bytes) for x in parts[: i + 1]]
    return parts[1:], [bytes(parts[0].bytes)] if parts else []


def _drain_eventfd(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass


def _unlink_stale_ipc(endpoint: str) -> None:
    """ipc:// socket files outlive a crashed process; binding over one fails, so remove it first."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        try:
            if os.path.exists(path) and not os.path.isdir(path):
                os.unlink(path)
        except OSError:
            pass


def _endpoints(cfg: Config) -> str:
    eps = [*cfg.ingest.listen, *cfg.ingest.pull, *cfg.ingest.connect]
    if cfg.results.publish:
        eps.append(cfg.results.publish)
    return ", ".join(eps)
