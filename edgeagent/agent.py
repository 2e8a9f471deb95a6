"""The agent's lifecycle: ``startup()`` → ``run()`` (main loop ticking every 0.1 s) → ``shutdown()``.

Threads and what each owns:

* main thread (this class): signals, sd_notify status and watchdog, reload (re-reading the config and
  telling the others what changed); it holds the config as loaded, for the reload diff;
* I/O thread (:class:`~edgeagent.io.loop.IOLoop`): sockets, engine requests, slots, window meter and
  the level controller (:class:`~edgeagent.control.Controller`), i.e. the running level;
* compile thread (:class:`~edgeagent.switcher.Switcher`): compiled models, the current model config;
* OpenVINO's threads, the metrics HTTP thread (reads snapshots), pyzmq's ZAP thread when security is on.

The level-change protocol is written once, in :mod:`edgeagent.control`. Signal handlers only record
the signal; the main loop acts on it.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from edgeagent import config as config_mod
from edgeagent.accounting import Accounting
from edgeagent.config import Config, ModelConfig
from edgeagent.control import Controller, HostInterference
from edgeagent.detect import FAMILIES, check_outputs, read_labels
from edgeagent.engine import CpuPlan, Engine
from edgeagent.errors import ConfigError, EdgeAgentError
from edgeagent.io.loop import IOLoop, NewSLA, ReloadModel
from edgeagent.io.sockets import Sockets
from edgeagent.logs import q
from edgeagent.metrics import Metrics
from edgeagent.models import ModelInfo
from edgeagent.security import Guard
from edgeagent.switcher import Switcher
from edgeagent.systemd import Notifier

log = logging.getLogger("edgeagent.agent")
TICK_S = 0.1
SWITCH_INTERVAL_S = 0.0005


class ForcedExit(EdgeAgentError):
    """A second stop signal arrived while shutting down."""


class Agent:
    def __init__(
        self,
        cfg: Config,
        config_path: Path | None = None,
        overrides: dict[str, Any] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.cfg = cfg  # as loaded (main thread); the running parts got their settings from it
        self.config_path = config_path
        self.overrides = overrides or {}
        self.notifier = notifier or Notifier()
        self._signals: collections.deque[int] = collections.deque()
        self._stopping = False
        self._model_stamp = _stamp(cfg.model)
        self.metrics: Metrics | None = None
        self.metrics_address: tuple[str, int] | None = None
        self.loop: IOLoop | None = None
        self.switcher: Switcher | None = None
        self.guard: Guard | None = None

    # ------------------------------------------------------------------ lifecycle
    def startup(self) -> None:
        """Compile the model, bind every socket, start threads, then tell systemd READY=1."""
        cfg = self.cfg
        # OpenVINO's completion callback needs the GIL, which the I/O thread holds while it parses a burst
        # of frames; Python hands the GIL over only every switch interval (default 5 ms), so a finished job
        # waited up to 5 ms to be noticed while its request sat idle. Measured with 4 x 200 fps cameras on
        # 2 CPUs, level 0, SLA 10 ms: 0.5 ms raised served frames from ~99 to ~140-160 per second.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.cpus = CpuPlan.make(cfg.engine.cpus)
        self.cpus.apply_process()
        _pin_zmq_thread(self.cpus.zmq)
        rc = cfg.results
        nms = (rc.score_threshold, rc.iou_threshold, rc.max_detections) if rc.postprocess == "yolo" else None
        self.engine = Engine(cfg.model, self.cpus, yolo_nms=nms)
        # YOLO-NAS's flat NMS rows are told apart by an image index, not a batch axis: batch 1 only.
        max_batch = 1 if rc.postprocess == "yolonas" else cfg.engine.max_batch
        self.ladder = self.engine.ladder(max_batch, accuracy_rung=cfg.sla.precision == "auto")
        level = min(cfg.engine.level, len(self.ladder) - 1)
        self.switcher = Switcher(self.engine, self.ladder, cfg.model, self._post, keep=cfg.engine.keep_compiled)
        compiled = self.switcher.compile(level)
        info = compiled.info
        _check_results(cfg, info)
        log.info(
            "event=model_ready path=%s name=%s input=%s model_shape=%s frame=%dx%d resize=%s rgb=%s mean=%s "
            "scale=%s outputs=%s compile_s=%.3f cache=%s",
            q(info.path),
            q(info.name),
            q(info.input_name),
            "x".join(map(str, info.model_shape)),
            info.frame_hw[1],
            info.frame_hw[0],
            info.resize,
            info.rgb,
            q(info.mean),
            q(info.scale),
            q([f"{n}:{t}:{list(s)}" for n, t, s in info.outputs]),
            compiled.compile_s,
            q(self.engine.cache_dir or "off"),
        )
        log.info(
            "event=exec_config level=%d hint=%s streams=%d requests=%d batch=%d threads=%d precision=%s "
            "pinning=on cpus=%s inference_cpus=%s io_cpus=%s zmq_cpus=%s",
            level,
            "LATENCY" if compiled.level.streams == 1 else "THROUGHPUT",
            compiled.streams,
            compiled.level.requests,
            compiled.level.batch,
            compiled.threads,
            compiled.precision,
            _cpus(self.cpus.all),
            _cpus(self.cpus.inference),
            _cpus(self.cpus.io),
            _cpus(self.cpus.zmq) if self.cpus.zmq else "any",
        )
        log.info(
            "event=ladder adaptive=%s sla_p99_ms=%g levels=%s",
            cfg.sla.adaptive,
            cfg.sla.p99_ms,
            q(" | ".join(f"{i}:{lv.describe()}" for i, lv in enumerate(self.ladder))),
        )
        self.accounting = Accounting(cfg.ingest.max_sources)
        if cfg.metrics.listen:
            self.metrics = Metrics(cfg.sla.p99_ms, self.state)
        self.guard = Guard(zmq.Context.instance(), cfg.security)
        log.info("event=security %s", self.guard.describe())
        sockets = Sockets(cfg, cfg.ingest.max_message_bytes, self.guard)
        sockets.bind()
        controller = Controller(cfg.sla, self.ladder, level, HostInterference())
        self.loop = IOLoop(
            cfg,
            sockets,
            self.engine,
            compiled,
            level,
            self.accounting,
            controller,
            self.switcher.request,
            on_latency=self.metrics.observe if self.metrics else None,
            request_size=self.switcher.request_size,
        )
        if self.metrics is not None:
            self.metrics_address = self.metrics.serve(cfg.metrics.listen)
        eps = sockets.endpoints()  # before start: afterwards only the I/O thread touches sockets
        self.switcher.start()
        self.loop.start(self.cpus.io)
        log.info(
            "event=listening %s metrics=%s",
            " ".join(f"{k}={q(','.join(v))}" for k, v in eps.items()),
            q(f"http://{self.metrics_address[0]}:{self.metrics_address[1]}/metrics" if self.metrics_address else "off"),
        )
        log.info("%s", _ready_line(eps, self.metrics_address, cfg, info))
        # Everything allocated so far (modules, the model's Python objects) lives as long as the process:
        # move it out of the collector's generations, so a full collection never walks it mid-frame.
        gc.collect()
        gc.freeze()
        self.notifier.notify("READY=1", f"STATUS={self._status_line()}")

    def _post(self, event: Any) -> None:
        """The switcher's way back: into the I/O loop's inbox (it exists before any request is made)."""
        assert self.loop is not None
        self.loop.post(event)

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum != signal.SIGHUP and self._stopping:
            raise ForcedExit("second stop signal: exiting without draining")
        if signum != signal.SIGHUP:
            self._stopping = True
        self._signals.append(signum)

    def request_stop(self) -> None:
        self._stopping = True
        self._signals.append(signal.SIGTERM)

    def run(self) -> None:
        """The main loop: returns after a stop signal (or raises when the I/O thread died)."""
        assert self.loop is not None
        watchdog_every = self.notifier.watchdog_s / 2 if self.notifier.watchdog_s else None
        next_watchdog = time.monotonic()
        next_status = time.monotonic() + 1.0
        while True:
            while self._signals:
                signum = self._signals.popleft()
                if signum == signal.SIGHUP:
                    self.reload()
                else:
                    log.info("event=stopping signal=%s", signal.Signals(signum).name)
                    return
            if self.loop.stopped.is_set():
                raise EdgeAgentError("the I/O thread stopped unexpectedly")
            now = time.monotonic()
            if watchdog_every is not None and now >= next_watchdog and self._making_progress(now):
                self.notifier.notify("WATCHDOG=1")
                next_watchdog = now + watchdog_every
            if now >= next_status:
                self.notifier.notify(f"STATUS={self._status_line()}")
                next_status = now + 1.0
                if self.metrics is not None:
                    self.metrics.fold()  # the frames' timings since the last second (bounded without scrapes)
            time.sleep(TICK_S)

    def shutdown(self) -> None:
        """Drain and close everything (idempotent); bounded to about 5 s."""
        self.notifier.notify("STOPPING=1")
        joined = True
        if self.switcher is not None:
            self.switcher.stop(1.0)
        if self.loop is not None:
            self.loop.request_stop()
            joined = self.loop.join(5.0)
            if not joined:
                log.error("event=shutdown_timeout thread=io")
        if self.metrics is not None:
            self.metrics.stop()
        if self.guard is not None:
            self.guard.stop()
        if joined:
            # Terminating the context is what makes the ROUTER/PUB linger deliver the last replies.
            zmq.Context.instance().destroy(linger=500)
        if self.loop is not None:
            totals = Accounting.totals(self.accounting.snapshot())
            log.info("event=stopped %s", " ".join(f"{k}={v}" for k, v in totals.items()))
        self.notifier.close()

    # ------------------------------------------------------------------ health
    def _making_progress(self, now: float) -> bool:
        """Alive = the I/O thread is running and an in-flight job did not hang (watchdog contract)."""
        loop = self.loop
        if loop is None or loop.stopped.is_set():
            return False
        return loop.stall_s(now) < (self.notifier.watchdog_s or 10.0)

    # ------------------------------------------------------------------ reload
    def reload(self) -> None:
        """SIGHUP: re-read the config. SLA and controller settings apply at once; a new model or new
        pre-processing is compiled in the background and swapped in without closing any socket."""
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            new = config_mod.load(self.config_path, self.overrides)
        except EdgeAgentError as exc:
            log.error("event=reload_failed error=%s", q(exc))
        else:
            changed = [f.name for f in dataclasses.fields(new) if getattr(new, f.name) != getattr(self.cfg, f.name)]
            # The same path with new content (a model file replaced in place) is a change too.
            stamp = _stamp(new.model)
            model_changed = new.model != self.cfg.model or stamp != self._model_stamp
            ignored = [c for c in changed if c not in ("sla", "model")]
            if new.sla.precision != self.cfg.sla.precision:
                ignored.append("sla.precision")  # the ladder (with or without its accuracy rung) is fixed at start
            sla = dataclasses.replace(new.sla, precision=self.cfg.sla.precision)
            self.cfg = dataclasses.replace(self.cfg, sla=sla, model=new.model)
            self._model_stamp = stamp
            if self.loop is not None:
                self.loop.post(NewSLA(sla))
                if model_changed:
                    self.loop.post(ReloadModel(new.model))
            log.info(
                "event=reloaded sla_p99_ms=%g adaptive=%s model_changed=%s needs_restart=%s",
                new.sla.p99_ms,
                new.sla.adaptive,
                model_changed,
                q(",".join(ignored) or "-"),
            )
        self.notifier.notify("READY=1", f"STATUS={self._status_line()}")

    # ------------------------------------------------------------------ state
    def _status_line(self) -> str:
        if self.loop is None:
            return "starting"
        level = self.loop.view.level
        win = self.loop.controller.view.last_window
        p99 = f"{win.p99_ms:.1f}ms" if win is not None and win.frames else "-"
        return f"level {level} ({self.ladder[level].describe()}), last p99 {p99}, SLA {self.cfg.sla.p99_ms:g}ms"

    def state(self) -> dict[str, Any]:
        """A consistent-enough snapshot for metrics and status (any thread: reads snapshots only)."""
        loop = self.loop
        assert loop is not None and self.switcher is not None
        view, cv = loop.view, loop.controller.view
        win = cv.last_window
        in_flight = loop.in_flight
        return {
            "accounting": self.accounting.snapshot(),
            "level": view.level,
            "exec": view.exec,
            "in_flight": in_flight,
            "stall_s": loop.stall_s(time.monotonic()),  # the watchdog's measure, at scrape time
            "window": None if win is None else {**dataclasses.asdict(win), "goodput_fps": win.goodput_fps},
            "windows": cv.windows,
            "windows_violating": cv.windows_violating,
            "sla_p99_ms": loop.sla.p99_ms,
            "switches": view.switches,
            "last_switch_s": view.last_switch_s,
            "last_compile_s": self.switcher.last_compile_s,
            "auth_refused": view.auth_refused,
            "disconnects": view.disconnects,
            "sizes": list(view.sizes),
            "size_compiles": view.size_compiles,
            "any_size_frames": view.any_size_frames,
            "frigate_handshakes": view.frigate_handshakes,
            "io_cpu_s": loop.io_cpu_ns / 1e9,
            "source_idle_s": self.accounting.idle_s(time.monotonic_ns()),
            "interference": cv.interference,
        }


def _ready_line(eps: dict[str, list[str]], metrics: tuple[str, int] | None, cfg: Config, info: ModelInfo) -> str:
    """One sentence for a person reading the log when the agent is ready: where to send frames,
    where results and metrics are, the model and the SLA (event=listening says it for machines).

    A log line, not a print: under systemd stdout and stderr both reach the journal, but stdout is
    block-buffered off a terminal (the line could come late, out of order with the log); a log
    line keeps its place, timestamp and level, and with --log-format json it is JSON too ("msg")."""
    send = [f"{ep} (imagezmq REQ/REP)" for ep in eps.get("listen", [])]
    send += [f"{ep} (native PUSH)" for ep in eps.get("pull", [])]
    parts = [f"send frames to {' or '.join(send)}"] if send else []
    parts += [f"frames from {ep} (SUB)" for ep in eps.get("connect", [])]
    parts += [f"Frigate detector requests on {ep} (type: zmq)" for ep in eps.get("frigate", [])]
    results = eps.get("publish")
    parts.append(f"results: {results[0]} (SUB, topic = source)" if results else "results: not published")
    parts.append(f"metrics: http://{metrics[0]}:{metrics[1]}/metrics" if metrics else "metrics: off")
    model = "built-in (synthetic weights)" if not cfg.model.path else info.path
    fit = "letterboxed" if info.resize == "letterbox" else "resized"
    parts.append(f"model: {model}, {info.model_hw[1]}x{info.model_hw[0]}; frames of any size {fit} in the graph")
    parts.append(f"SLA: p99 within {cfg.sla.p99_ms:g} ms ({'adaptive' if cfg.sla.adaptive else 'fixed level'})")
    text = "; ".join(parts)
    return f"Ready. {text[0].upper()}{text[1:]}."


def _check_results(cfg: Config, info: ModelInfo) -> None:
    """Post-processing that cannot work with this model is a configuration error, said at start."""
    rc = cfg.results
    if rc.postprocess in FAMILIES:
        why = check_outputs(rc.postprocess, info.outputs)
        if why is not None:
            raise ConfigError(f"{why} ({info.path})")
    elif cfg.frigate.endpoints:
        raise ConfigError("--frigate needs detections: add --postprocess yolo, ssd or yolonas")
    if rc.labels:
        read_labels(rc.labels)


def _cpus(cpus: tuple[int, ...]) -> str:
    return ",".join(map(str, cpus))


def _pin_zmq_thread(cpus: tuple[int, ...]) -> None:
    """Pin ZeroMQ's background (I/O) thread of the process's context to ``cpus`` (CpuPlan.zmq). Takes
    effect only if set before the context's first socket; without libzmq support it is left as is."""
    if not cpus:
        return
    ctx: zmq.Context[Any] = zmq.Context.instance()
    try:
        for cpu in cpus:
            ctx.set(zmq.THREAD_AFFINITY_CPU_ADD, cpu)
    except (AttributeError, zmq.ZMQError) as exc:
        log.info("event=zmq_pinning_off reason=%s", q(str(exc)))


def _stamp(cfg: ModelConfig) -> tuple[float, int] | None:
    """The model file's mtime and size (None for the built-in model or a missing file)."""
    try:
        st = Path(cfg.path).stat() if cfg.path else None
    except OSError:
        return None
    return (st.st_mtime, st.st_size) if st else None
