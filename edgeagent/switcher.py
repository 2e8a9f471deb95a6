"""The switcher: the compile side of a level change or a model reload (steps 3–4 of the protocol in
:mod:`edgeagent.control`).

Owner: its own thread (``edgeagent-compile``) owns the compiled-model cache, the current model config
and the compile failures. :meth:`Switcher.request` is the only way in (any thread; in practice the
I/O thread, which knows the running level); the only way out is the ``post`` callback given at
construction, which queues a :class:`Swap` or a :class:`SwitchFailed` in the I/O loop's inbox. So the
switcher is the only source of swaps, and the I/O thread the only one that carries them out.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgeagent.config import ModelConfig
from edgeagent.engine import Compiled, Engine
from edgeagent.errors import ModelError
from edgeagent.logs import q
from edgeagent.tuner import ExecLevel

log = logging.getLogger("edgeagent.switcher")


@dataclass(frozen=True)
class Swap:
    """A compiled model ready to run at ladder level ``level``; ``reload``: it is a new model."""

    compiled: Compiled
    level: int
    reload: bool
    posted_ns: int  # monotonic time it was posted (switch duration = drain + swap = swap time - this)


@dataclass(frozen=True)
class SwitchFailed:
    level: int
    reload: bool
    error: str


class Switcher:
    def __init__(
        self,
        engine: Engine,
        ladder: Sequence[ExecLevel],
        model_cfg: ModelConfig,
        post: Callable[[Swap | SwitchFailed], None],
    ) -> None:
        self.engine = engine
        self.ladder = list(ladder)
        self.model_cfg = model_cfg
        self.max_frame_bytes = 0
        self._post = post
        self._cache: dict[tuple[int, int, bool], Compiled] = {}  # (streams, batch, accuracy) → one kept
        self._lock = threading.Lock()  # guards the request slot below (written by other threads)
        self._want: tuple[int, ModelConfig | None] | None = None  # (level, new model)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_compile_s = 0.0  # read by metrics (a float: GIL-atomic)

    # ------------------------------------------------------------------ any thread
    def request(self, level: int, model_cfg: ModelConfig | None = None) -> None:
        """Ask for ``level`` (of the current model, or of ``model_cfg``: a reload). The newest request
        wins, except that a pending reload is never dropped: a later level request only changes the
        level it is compiled at."""
        with self._lock:
            pending_model = self._want[1] if self._want is not None else None
            self._want = (level, model_cfg or pending_model)
        self._wake.set()

    def start(self, max_frame_bytes: int) -> None:
        """Start taking requests. ``max_frame_bytes``: the largest raw frame the ingest sockets let through
        (fixed when they were bound): a reloaded model that needs bigger frames is refused (restart)."""
        self.max_frame_bytes = max_frame_bytes
        self._thread = threading.Thread(target=self._run, name="edgeagent-compile", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop taking requests; a compile under way finishes first (bounded by ``timeout_s``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------------ start-up (before start())
    def compile(self, level: int) -> Compiled:
        """The current model at ladder ``level``, from the cache when its streams, batch and precision match
        (more infer requests need no recompile). Raises ModelError."""
        lv = self.ladder[level]
        key = (lv.streams, lv.batch, lv.accuracy)
        base = self._cache.get(key)
        if base is None:
            base = self.engine.compile(lv, self.model_cfg)
            self.last_compile_s = base.compile_s
            self._cache = {key: base}  # keep one compiled model: memory on an edge box is precious
        return dataclasses.replace(base, level=lv)

    # ------------------------------------------------------------------ the switcher's thread
    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(0.1):
                continue
            with self._lock:
                want, self._want = self._want, None
                self._wake.clear()
            if want is None or self._stop.is_set():
                continue
            try:
                self._handle(*want)
            except Exception as exc:  # a bug: log it, and never leave the controller waiting for an answer
                log.exception("event=switch_failed level=%d", want[0])
                self._post(SwitchFailed(want[0], want[1] is not None, f"{type(exc).__name__}: {exc}"))

    def _handle(self, level: int, model_cfg: ModelConfig | None) -> None:
        try:
            if model_cfg is None:
                compiled = self.compile(level)
            else:
                # A new model is compiled beside the running one; nothing changes unless it works.
                compiled = self.engine.compile(self.ladder[level], model_cfg)
                h, w = compiled.info.frame_hw
                if h * w * 3 > self.max_frame_bytes:
                    raise ModelError(
                        f"frames of {w}x{h} exceed the message size limit set at start: restart the agent for them"
                    )
        except ModelError as exc:
            log.error("event=compile_failed level=%d reload=%s error=%s", level, model_cfg is not None, q(exc))
            self._post(SwitchFailed(level, model_cfg is not None, str(exc)))
            return
        if model_cfg is not None:
            self.model_cfg = model_cfg
            self._cache = {(compiled.level.streams, compiled.level.batch, compiled.level.accuracy): compiled}
            self.last_compile_s = compiled.compile_s
            log.info(
                "event=model_reloaded path=%s frame=%dx%d compile_s=%.3f",
                q(compiled.info.path),
                compiled.info.frame_hw[1],
                compiled.info.frame_hw[0],
                compiled.compile_s,
            )
        self._post(Swap(compiled, level, model_cfg is not None, time.monotonic_ns()))
