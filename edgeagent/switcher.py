"""The switcher: the compile side of a level change or a model reload (steps 3–4 of the protocol in
:mod:`edgeagent.control`).

Owner: its own thread (``edgeagent-compile``) owns the compiled-model cache, the current model config
and the compile failures. :meth:`Switcher.request` is the only way in (any thread; in practice the
I/O thread, which knows the running level); the only way out is the ``post`` callback given at
construction, which queues a :class:`Swap` or a :class:`SwitchFailed` in the I/O loop's inbox. So the
switcher is the only source of swaps, and the I/O thread the only one that carries them out.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import openvino as ov
import psutil

from edgeagent.config import ModelConfig
from edgeagent.engine import Compiled, Engine, size_name
from edgeagent.errors import ModelError
from edgeagent.logs import q
from edgeagent.models import SizeKey
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
class NewSize:
    """A graph for ``key`` frames, compiled for the running compile ``uid`` (see Engine.add_size)."""

    uid: int
    key: SizeKey
    model: ov.CompiledModel
    compile_s: float
    memory_bytes: int  # resident memory the compile added (an estimate: other threads allocate too)


@dataclass(frozen=True)
class SizeDropped:
    """A size request that got no graph: pushed out by newer ones, for a compile no longer running, or
    ``failed`` to compile (then not asked for again until the next swap)."""

    uid: int
    key: SizeKey
    failed: bool


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
        post: Callable[[Swap | SwitchFailed | NewSize | SizeDropped], None],
        keep: int = 3,
    ) -> None:
        """``keep``: compiled models kept, the running level's and those of the levels last left."""
        self.engine = engine
        self.keep = keep
        self.ladder = list(ladder)
        self.model_cfg = model_cfg
        self._post = post
        # (streams, batch, accuracy) → compiled, least recently handed out first; at most ``keep``
        self._cache: dict[tuple[int, int, bool], Compiled] = {}
        self._lock = threading.Lock()  # guards the request slot below (written by other threads)
        self._want: tuple[int, ModelConfig | None, tuple[SizeKey, ...]] | None = None  # (level, new model, sizes)
        # (compile uid, frame size) to compile; bounded: a flood of new sizes keeps only the newest.
        self._sizes: collections.deque[tuple[int, SizeKey]] = collections.deque(maxlen=model_cfg.max_sizes)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_compile_s = 0.0  # read by metrics (a float: GIL-atomic)

    # ------------------------------------------------------------------ any thread
    def request(self, level: int, model_cfg: ModelConfig | None = None, sizes: Sequence[SizeKey] = ()) -> None:
        """Ask for ``level`` (of the current model, or of ``model_cfg``: a reload), with graphs for the
        frame ``sizes`` in use. The newest request wins, except that a pending reload is never dropped:
        a later level request only changes the level it is compiled at."""
        with self._lock:
            pending_model = self._want[1] if self._want is not None else None
            self._want = (level, model_cfg or pending_model, tuple(sizes))
        self._wake.set()

    def request_size(self, uid: int, key: SizeKey) -> None:
        """Ask for a graph for ``key`` frames at the running compile ``uid`` (answered with NewSize)."""
        pushed_out = None
        with self._lock:
            if (uid, key) not in self._sizes:
                if len(self._sizes) == self._sizes.maxlen:
                    pushed_out = self._sizes.popleft()
                self._sizes.append((uid, key))
        if pushed_out is not None:  # never a silent drop: the loop may ask again
            self._post(SizeDropped(*pushed_out, failed=False))
        self._wake.set()

    def start(self) -> None:
        """Start taking requests."""
        self._thread = threading.Thread(target=self._run, name="edgeagent-compile", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop taking requests; a compile under way finishes first (bounded by ``timeout_s``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ------------------------------------------------------------------ start-up (before start())
    def compile(self, level: int, sizes: Sequence[SizeKey] = ()) -> Compiled:
        """The current model at ladder ``level`` (with graphs for ``sizes``), from the cache when its
        streams, batch and precision match (more infer requests need no recompile; the engine keeps the
        sizes it added to the same compile). Raises ModelError."""
        lv = self.ladder[level]
        key = (lv.streams, lv.batch, lv.accuracy)
        base = self._cache.pop(key, None)
        if base is None:
            base = self.engine.compile(lv, self.model_cfg, sizes)
            self.last_compile_s = base.compile_s
            # Keep the running level's model and those of the levels last left: the controller moves one
            # level at a time and most often back to where it came from (a probe that broke the SLA or
            # bought nothing), and a compile then, with the box saturated, takes the CPU from inference
            # just when latency matters (it broke the SLA in the window of a probe's way back). Bounded:
            # memory on an edge box is precious.
            while len(self._cache) >= self.keep:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = base  # the most recently used last
        return dataclasses.replace(base, level=lv)

    # ------------------------------------------------------------------ the switcher's thread
    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(0.1):
                continue
            with self._lock:
                want, self._want = self._want, None
                size = self._sizes.popleft() if want is None and self._sizes else None
                if not self._sizes:  # else stay awake: the next size (after this level change)
                    self._wake.clear()
            if self._stop.is_set():
                continue
            if size is not None:
                self._compile_size(*size)
            if want is None:
                continue
            try:
                self._handle(*want)
            except Exception as exc:  # a bug: log it, and never leave the controller waiting for an answer
                log.exception("event=switch_failed level=%d", want[0])
                self._post(SwitchFailed(want[0], want[1] is not None, f"{type(exc).__name__}: {exc}"))

    def _compile_size(self, uid: int, key: SizeKey) -> None:
        """A graph for one more frame size at the running compile (level changes and reloads go first)."""
        base = next((c for c in self._cache.values() if c.uid == uid), None)
        if base is None:  # another compile runs now: the loop asks again for sizes it still sees
            self._post(SizeDropped(uid, key, failed=False))
            return
        rss0 = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        try:
            model = self.engine.compile_size(base, key, self.model_cfg)
        except Exception as exc:  # a size that cannot compile keeps running on the any-size graph
            log.error("event=size_compile_failed size=%s error=%s", size_name(key), q(str(exc)[:200]))
            self._post(SizeDropped(uid, key, failed=True))
            return
        compile_s = time.perf_counter() - t0
        memory = max(0, psutil.Process().memory_info().rss - rss0)
        log.info(
            "event=size_compiled size=%s level=%s compile_s=%.3f memory_mb=%.1f",
            size_name(key),
            q(base.level.describe()),
            compile_s,
            memory / 2**20,
        )
        self._post(NewSize(uid, key, model, compile_s, memory))

    def _handle(self, level: int, model_cfg: ModelConfig | None, sizes: tuple[SizeKey, ...] = ()) -> None:
        try:
            if model_cfg is None:
                compiled = self.compile(level, sizes)
            else:
                # A new model is compiled beside the running one; nothing changes unless it works.
                compiled = self.engine.compile(self.ladder[level], model_cfg, sizes)
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
