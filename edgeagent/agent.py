"""The agent: ``startup()`` → ``run()`` (main loop ticking every 0.1 s) → ``shutdown()``.

Threads: the main thread (signals, sd_notify status and watchdog, level changes and reloads), the
pipeline's I/O thread (sockets + engine), OpenVINO's own threads, the metrics HTTP thread, and a
short-lived compile thread when a new level or model is needed. Signal handlers only record the
signal; the main loop acts on it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import zmq

from edgeagent import config as config_mod
from edgeagent.accounting import Accounting
from edgeagent.config import Config, ModelConfig
from edgeagent.engine import Compiled, CpuPlan, Engine
from edgeagent.errors import EdgeAgentError, ModelError
from edgeagent.logs import q
from edgeagent.metrics import Metrics
from edgeagent.pipeline import Pipeline
from edgeagent.security import Guard
from edgeagent.systemd import Notifier
from edgeagent.tuner import (
    Decision,
    ExecLevel,
    SLAPolicy,
    TunerState,
    WindowStats,
    decide,
    level_failed,
)

log = logging.getLogger("edgeagent.agent")
TICK_S = 0.1


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
        self.cfg = cfg
        self.config_path = config_path
        self.overrides = overrides or {}
        self.notifier = notifier or Notifier()
        self._signals: collections.deque[int] = collections.deque()
        self._stopping = False
        self._level_requests: collections.deque[int] = collections.deque()
        self._failed_levels: collections.deque[int] = collections.deque()
        self._switches_seen = 0
        self._pending_model: ModelConfig | None = None
        self._model_stamp = _stamp(cfg.model)
        self._proc = psutil.Process()
        self.last_interference = 0.0
        self._compiled: dict[tuple[int, int], Compiled] = {}  # (streams, batch) → compiled model
        self._compile_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.tuner_state = TunerState(level=cfg.engine.level)
        self.last_decision: Decision | None = None
        self.windows = 0
        self.windows_violating = 0
        self.last_compile_s = 0.0
        self.metrics: Metrics | None = None
        self.metrics_address: tuple[str, int] | None = None
        self.pipeline: Pipeline | None = None
        self.guard: Guard | None = None

    # ------------------------------------------------------------------ lifecycle
    def startup(self) -> None:
        """Compile the model, bind every socket, start threads, then tell systemd READY=1."""
        cfg = self.cfg
        self.cpus = CpuPlan.make(cfg.engine.cpus)
        self.cpus.apply_process()
        self.engine = Engine(cfg.model, self.cpus)
        self.ladder = self.engine.ladder(cfg.engine.max_batch)
        level = min(cfg.engine.level, len(self.ladder) - 1)
        self.tuner_state = TunerState(level=level)
        compiled = self._compile(self.ladder[level])
        info = compiled.info
        log.info(
            "event=model_ready path=%s name=%s input=%s model_shape=%s frame=%dx%d rgb=%s mean=%s scale=%s "
            "outputs=%s compile_s=%.3f cache=%s",
            q(info.path),
            q(info.name),
            q(info.input_name),
            "x".join(map(str, info.model_shape)),
            info.frame_hw[1],
            info.frame_hw[0],
            info.rgb,
            q(info.mean),
            q(info.scale),
            q([f"{n}:{t}:{list(s)}" for n, t, s in info.outputs]),
            compiled.compile_s,
            q(self.engine.cache_dir or "off"),
        )
        log.info(
            "event=exec_config level=%d hint=LATENCY streams=%d requests=%d batch=%d threads=%d precision=%s "
            "pinning=on cpus=%s inference_cpus=%s io_cpus=%s",
            level,
            compiled.streams,
            compiled.level.requests,
            compiled.level.batch,
            compiled.threads,
            compiled.precision,
            _cpus(self.cpus.all),
            _cpus(self.cpus.inference),
            _cpus(self.cpus.io),
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
        self.pipeline = Pipeline(
            cfg,
            self.engine,
            compiled,
            level,
            self.accounting,
            on_window=self._on_window,
            on_latency=self.metrics.observe if self.metrics else None,
            guard=self.guard,
        )
        self.pipeline.bind()
        if self.metrics is not None:
            self.metrics_address = self.metrics.serve(cfg.metrics.listen)
        eps = self.pipeline.endpoints()  # before start: afterwards only the I/O thread touches sockets
        self.pipeline.start(self.cpus.io if self.cpus.io != self.cpus.inference else None)
        log.info(
            "event=listening %s metrics=%s",
            " ".join(f"{k}={q(','.join(v))}" for k, v in eps.items()),
            q(f"http://{self.metrics_address[0]}:{self.metrics_address[1]}/metrics" if self.metrics_address else "off"),
        )
        self.notifier.notify("READY=1", f"STATUS={self._status_line()}")

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
        """The main loop: returns after a stop signal (or the I/O thread dying)."""
        assert self.pipeline is not None
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
            if self.pipeline.stopped.is_set():
                raise EdgeAgentError("the I/O thread stopped unexpectedly")
            self._apply_level_requests()
            now = time.monotonic()
            if watchdog_every is not None and now >= next_watchdog and self._making_progress(now):
                self.notifier.notify("WATCHDOG=1")
                next_watchdog = now + watchdog_every
            if now >= next_status:
                self.notifier.notify(f"STATUS={self._status_line()}")
                next_status = now + 1.0
            time.sleep(TICK_S)

    def shutdown(self) -> None:
        """Drain and close everything (idempotent); bounded to about 5 s."""
        self.notifier.notify("STOPPING=1")
        joined = True
        if self.pipeline is not None:
            self.pipeline.request_stop()
            joined = self.pipeline.join(5.0)
            if not joined:
                log.error("event=shutdown_timeout thread=io")
        if self.metrics is not None:
            self.metrics.stop()
        if self.guard is not None:
            self.guard.stop()
        if joined:
            # Terminating the context is what makes the ROUTER/PUB linger deliver the last replies.
            zmq.Context.instance().destroy(linger=500)
        if self.pipeline is not None:
            totals = Accounting.totals(self.accounting.snapshot())
            log.info("event=stopped %s", " ".join(f"{k}={v}" for k, v in totals.items()))
        self.notifier.close()

    # ------------------------------------------------------------------ health
    def _making_progress(self, now: float) -> bool:
        """Alive = the I/O thread is running and an in-flight job did not hang (watchdog contract)."""
        p = self.pipeline
        if p is None or p.stopped.is_set():
            return False
        limit = self.notifier.watchdog_s or 10.0
        return p.in_flight == 0 or now - p.last_progress_s < limit

    # ------------------------------------------------------------------ levels
    def _compile(self, level: ExecLevel) -> Compiled:
        key = (level.streams, level.batch)
        base = self._compiled.get(key)
        if base is None:
            base = self.engine.compile(level)
            self.last_compile_s = base.compile_s
            self._compiled = {key: base}  # keep one compiled model: memory on an edge box is precious
        return dataclasses.replace(base, level=level)

    def _on_window(self, ws: WindowStats) -> None:
        """Called by the I/O thread at each window end: account, and let the policy decide."""
        self.windows += 1
        ws = dataclasses.replace(ws, interference=self._interference())
        if not ws.met(self.cfg.sla.p99_ms):
            self.windows_violating += 1
        if not self.cfg.sla.adaptive:
            return
        policy = SLAPolicy(
            p99_ms=self.cfg.sla.p99_ms,
            window_s=self.cfg.sla.window_s,
            min_frames=self.cfg.sla.min_frames,
            headroom=self.cfg.sla.headroom,
        )
        assert self.pipeline is not None
        while self._failed_levels:
            self.tuner_state = level_failed(
                self.tuner_state, self._failed_levels.popleft(), self.pipeline.level_index, policy
            )
        # decide() assumes the window ran at state.level: skip windows while a switch is pending and
        # the one window a switch straddled (it mixes two levels).
        if self.tuner_state.level != self.pipeline.level_index:
            idle = not self._level_requests and not (self._compile_thread and self._compile_thread.is_alive())
            if idle and not self.pipeline.switch_pending():
                # Nothing will bring the level the controller asked for (a reload won): follow reality.
                self.tuner_state = dataclasses.replace(self.tuner_state, level=self.pipeline.level_index)
            return
        if self.pipeline.switch_count != self._switches_seen:
            self._switches_seen = self.pipeline.switch_count
            return
        self.tuner_state, decision = decide(self.tuner_state, ws, self.ladder, policy)
        previous, self.last_decision = self.last_decision, decision
        # Every change is logged; a hold only when its reason changes (not once per window).
        if decision.action != "hold" or previous is None or _shape(previous.reason) != _shape(decision.reason):
            log.info(
                "event=tuner_decision action=%s from=%d to=%d p99_ms=%.2f interference=%.2f reason=%s",
                decision.action,
                decision.from_level,
                decision.to_level,
                ws.p99_ms,
                ws.interference,
                q(decision.reason),
            )
        if decision.action != "hold":
            self._level_requests.append(decision.to_level)

    def _apply_level_requests(self) -> None:
        """Main thread: compile the newest requested level (or a reloaded model) off the hot path."""
        if self._compile_thread and self._compile_thread.is_alive():
            return
        assert self.pipeline is not None
        if self._pending_model is not None:
            model_cfg, self._pending_model = self._pending_model, None
            self._compile_in_background(self.pipeline.level_index, model_cfg)
            return
        if not self._level_requests:
            return
        target = self._level_requests.pop()
        self._level_requests.clear()
        if target != self.pipeline.level_index:
            self._compile_in_background(target)

    def _compile_in_background(self, target: int, model_cfg: ModelConfig | None = None) -> None:
        def work() -> None:
            assert self.pipeline is not None
            try:
                if model_cfg is None:
                    compiled = self._compile(self.ladder[target])
                else:
                    # The new model is compiled beside the running one; nothing changes unless it works.
                    compiled = self.engine.compile(self.ladder[target], model_cfg)
                    frame_bytes = compiled.info.frame_hw[0] * compiled.info.frame_hw[1] * 3
                    if frame_bytes > self.pipeline.max_message_bytes - self.cfg.ingest.max_header_bytes:
                        raise ModelError(
                            f"frames of {compiled.info.frame_hw[1]}x{compiled.info.frame_hw[0]} exceed "
                            "the message size limit set at start: restart the agent for them"
                        )
            except Exception as exc:
                log.error("event=compile_failed level=%d reload=%s error=%s", target, model_cfg is not None, q(exc))
                if model_cfg is None:  # the controller keeps off that level (told on its own thread)
                    self._failed_levels.append(target)
                return
            if model_cfg is not None:
                self.engine.cfg = model_cfg
                self._compiled = {(compiled.level.streams, compiled.level.batch): compiled}
                self.cfg = dataclasses.replace(self.cfg, model=model_cfg)
                self._model_stamp = _stamp(model_cfg)
                log.info(
                    "event=model_reloaded path=%s frame=%dx%d compile_s=%.3f",
                    q(compiled.info.path),
                    compiled.info.frame_hw[1],
                    compiled.info.frame_hw[0],
                    compiled.compile_s,
                )
            self.pipeline.switch_to(compiled, target)

        self._compile_thread = threading.Thread(target=work, name="edgeagent-compile", daemon=True)
        self._compile_thread.start()

    def _interference(self) -> float:
        """Share of the agent's CPUs that other processes used (or the hypervisor stole) since the last
        call: a CPU hog or throttling. psutil, system-wide minus this process."""
        ncpu = max(1, len(self.cpus.all))
        busy = psutil.cpu_percent(None) / 100
        own = self._proc.cpu_percent(None) / 100 / (psutil.cpu_count() or ncpu)
        self.last_interference = max(0.0, min(1.0, busy - own))
        return self.last_interference

    def set_level(self, level: int) -> None:
        """Ask for a level (tests, benchmarks with a static level)."""
        self._level_requests.append(level)

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
            model_changed = new.model != self.cfg.model or _stamp(new.model) != self._model_stamp
            self.cfg = dataclasses.replace(self.cfg, sla=new.sla)
            if self.pipeline is not None:
                self.pipeline.cfg = dataclasses.replace(self.pipeline.cfg, sla=new.sla)
                if model_changed:
                    self._pending_model = new.model  # compiled by the main loop when no compile runs
            ignored = [c for c in changed if c not in ("sla", "model")]
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
        p = self.pipeline
        win = p.last_window if p else None
        p99 = f"{win.p99_ms:.1f}ms" if win is not None and win.frames else "-"
        lvl = p.level_index if p else 0
        return f"level {lvl} ({self.ladder[lvl].describe()}), last p99 {p99}, SLA {self.cfg.sla.p99_ms:g}ms"

    def state(self) -> dict[str, Any]:
        """A consistent-enough snapshot for metrics and status (any thread)."""
        p = self.pipeline
        assert p is not None
        active = p.engine.active
        win = p.last_window
        return {
            "accounting": self.accounting.snapshot(),
            "level": p.level_index,
            "exec": active.describe() if active else {"streams": 0, "requests": 0, "batch": 0, "threads": 0},
            "in_flight": p.in_flight,
            "window": None if win is None else {**dataclasses.asdict(win), "goodput_fps": win.goodput_fps},
            "windows": self.windows,
            "windows_violating": self.windows_violating,
            "sla_p99_ms": self.cfg.sla.p99_ms,
            "switches": p.switch_count,
            "last_switch_s": p.last_switch_s,
            "last_compile_s": self.last_compile_s,
            "auth_refused": self.guard.refused if self.guard is not None else 0,
            "interference": self.last_interference,
        }


def _cpus(cpus: tuple[int, ...]) -> str:
    return ",".join(map(str, cpus))


def _stamp(cfg: ModelConfig) -> tuple[float, int] | None:
    """The model file's mtime and size (None for the built-in model or a missing file)."""
    try:
        st = Path(cfg.path).stat() if cfg.path else None
    except OSError:
        return None
    return (st.st_mtime, st.st_size) if st else None


def _shape(reason: str) -> str:
    """A reason without its numbers: holds are logged when this changes, not every window."""
    return re.sub(r"[0-9.]+", "#", reason)
