"""The inference engine: CPU plan, compilation per execution level, and the infer requests.

Threading contract: :meth:`Engine.compile`, :meth:`Engine.ladder` and :meth:`Engine.device_limits`
may run on any thread (the switcher compiles new levels on its own thread); everything else
(``activate``, ``submit``, ``complete``, ``failed_jobs``, ``idle``) is called by the one thread that
owns the running requests, the I/O thread. OpenVINO's callback thread only calls the
``on_done(job)`` given to :meth:`Engine.activate` (which must be quick and thread-safe); the owner
thread then collects the outputs with :meth:`Engine.complete`.

Frame sizes: a level's :class:`Compiled` holds one graph per frame size and pixel format it has
compiled (``sizes``; static shapes, the fastest) plus one any-size BGR graph (``DYNAMIC``). A frame
whose size has no graph of its own runs on the any-size graph (non-BGR pixels converted with numpy
first) while the switcher compiles its own graph off the hot path (:meth:`Engine.compile_size`, then
:meth:`Engine.add_size` on the owner thread, least recently used sizes evicted beyond ``max_sizes``).

Jobs run on plain ``InferRequest`` objects with ``set_callback``, not ``AsyncInferQueue``: on the
2-vCPU class of machine the queue's dispatch and callback path cost ~0.14 ms more per frame at p50
(``edgeagent bench dispatch``).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import openvino as ov
import psutil

from edgeagent.config import ModelConfig
from edgeagent.errors import ConfigError, ModelError
from edgeagent.logs import q
from edgeagent.models import (
    DYNAMIC,
    ModelInfo,
    SizeKey,
    cache_root,
    prepare,
    read_model,
    to_bgr,
)
from edgeagent.tuner import ExecLevel, derive_ladder
from edgeagent.wire import Frame

log = logging.getLogger("edgeagent.engine")

LEVEL0 = ExecLevel(streams=1, requests=1, batch=1)
_uids = itertools.count(1)


def size_name(key: SizeKey) -> str:
    """``1280x720/bgr``; ``any/bgr`` for the any-size graph."""
    h, w, pix = key
    return f"{w}x{h}/{pix}" if h else f"any/{pix}"


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs the agent uses: OpenVINO's inference threads, the I/O thread (pinned), and ZeroMQ's
    background thread (``zmq``; empty: not pinned). With at least 3 CPUs, the I/O thread gets one of
    its own (:func:`split_cpus`)."""

    all: tuple[int, ...]
    inference: tuple[int, ...]
    io: tuple[int, ...]
    zmq: tuple[int, ...] = ()

    @staticmethod
    def make(requested: Sequence[int] | None) -> CpuPlan:
        allowed = tuple(sorted(os.sched_getaffinity(0)))
        cpus = tuple(sorted(set(requested))) if requested else allowed
        missing = sorted(set(cpus) - set(allowed))
        if missing:
            raise ConfigError(f"--cpus {list(cpus)}: CPUs {missing} are not available to this process {list(allowed)}")
        inference, io = split_cpus(cpus)
        # Two CPUs: ZeroMQ's thread on the one the I/O thread is not on (see split_cpus).
        return CpuPlan(cpus, inference, io, cpus[1:] if len(cpus) == 2 else ())

    def apply_process(self) -> None:
        """Restrict the whole process (threads started later inherit it)."""
        psutil.Process().cpu_affinity(list(self.all))

    def pin_current_thread(self, cpus: Sequence[int]) -> None:
        os.sched_setaffinity(0, cpus)  # pid 0: the calling thread only


def split_cpus(cpus: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(inference CPUs, I/O-thread CPUs). From 3 CPUs up the I/O thread gets the first one to itself.
    With 1 or 2, inference needs them all and the I/O thread shares the first, pinned to it.

    Why pinned, on 2 CPUs: OpenVINO's pinned LATENCY stream runs a job on its stream thread (first CPU)
    and a worker thread (second CPU), and the worker keeps spinning for a while after each job.
    An I/O thread free to move was often put next to that spinning worker, where it got half a CPU. The
    I/O thread also stops running jobs itself (Engine.run: io != inference), since a blocking infer()
    makes it OpenVINO's stream thread and OpenVINO resets its affinity. ZeroMQ's background thread goes
    on the second CPU (CpuPlan.zmq), off the I/O thread's: each reply's send wakes it.

    Measured with 4 cameras x 30 fps, the built-in model, on the 2-vCPU Xeon (round trip p50, 4 runs
    each, interleaved):
    - 2.23 ms pinned and started (this);
    - 2.80 ms free and run inline (before);
    - 2.90 ms free and started;
    - 2.80 ms pinned and inline, even with the affinity restored after each job.
    OpenVINO's own job time fell from ~2.3 to ~1.7 ms."""
    return (cpus[1:], cpus[:1]) if len(cpus) >= 3 else (cpus, cpus[:1])


@dataclass
class Compiled:
    """One model compiled for one execution level: ``model`` is the graph for ``info.frame_hw`` BGR
    frames; ``sizes`` holds it, the any-size graph (``DYNAMIC``) and any other size compiled with it.
    ``uid`` names the compile: a copy at another request count (same graphs) keeps it."""

    model: ov.CompiledModel
    level: ExecLevel
    info: ModelInfo
    compile_s: float
    streams: int
    threads: int
    precision: str
    sizes: dict[SizeKey, ov.CompiledModel] = field(default_factory=dict)
    uid: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "requests": self.level.requests,
            "batch": self.level.batch,
            "threads": self.threads,
            "precision": self.precision,
        }


@dataclass(slots=True)
class Completion:
    """What OpenVINO's callback hands back for one submitted job."""

    frames: list[Frame]
    outputs: list[list[np.ndarray]]  # per frame: one array per model output (copies, request is reused)
    submit_ns: int
    infer_ms: float
    error: str | None = None
    ahead: int = 0  # jobs already in flight when this one was submitted (it may have waited for them)


@dataclass(frozen=True)
class DeviceLimits:
    """What the device reports, used to derive the ladder."""

    max_streams: int
    throughput_streams: int
    optimal_requests: int


class Engine:
    """Compiles a model at a given level and runs jobs on that level's infer requests.

    ``model_cfg`` is the start-up model: the ladder is derived from it. Compiles take the model to
    compile explicitly (the switcher owns which model is current after a reload).
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        cpus: CpuPlan,
        core: ov.Core | None = None,
        yolo_nms: tuple[float, float, int] | None = None,
    ) -> None:
        """``yolo_nms=(score, iou, limit)``: YOLO decode + NMS appended in the graph (models._yolo_nms)."""
        self.cfg = model_cfg
        self.yolo_nms = yolo_nms
        self.cpus = cpus
        self.core = core or ov.Core()
        self._compile_lock = threading.Lock()  # ov.Core is shared; compile one level at a time
        self.cache_dir: str | None = None
        cache = cache_root(model_cfg) / "ov_cache"
        try:
            cache.mkdir(parents=True, exist_ok=True)
            if os.access(cache, os.W_OK):
                self.core.set_property({"CACHE_DIR": str(cache)})
                self.cache_dir = str(cache)
            else:
                log.warning("event=cache_disabled dir=%s reason=not_writable", cache)
        except OSError as exc:
            # Compiles still work, only slower after a restart: never a reason to stop.
            log.warning("event=cache_disabled dir=%s reason=%s", cache, q(exc.strerror or str(exc)))
        self.active: Compiled | None = None
        self.idle: list[int] = []  # free job slots (owner thread)
        self.waits = False  # one request: no callback, the owner thread waits for its job (wait())
        # One request, and the owner thread may run a job itself (run()): see _InlineInfer.
        self.inline = False
        self._infer = _InlineInfer(cpus.io == cpus.inference)
        self._ran: set[int] = set()  # jobs run inline, not yet completed
        self._errors: dict[int, str] = {}  # job → why its inline run failed (complete() reports it)
        self._graphs: dict[SizeKey, _Graph] = {}
        # job → (graph, frames, submit time, input tensor). The tensor shares the input's memory, and OpenVINO does
        # not keep that memory alive: a stacked batch would be freed (and overwritten) mid-inference without it.
        self._jobs: dict[int, tuple[_Graph, list[Frame], int, ov.Tensor, int]] = {}
        self._on_done: Callable[[int], None] = lambda job: None
        self._level = LEVEL0
        self._primary: SizeKey = DYNAMIC

    # ----------------------------------------------------------------- any thread
    def device_limits(self) -> DeviceLimits:
        dev = self.cfg.device
        try:
            lo_hi = self.core.get_property(dev, "RANGE_FOR_STREAMS")
        except RuntimeError as exc:
            raise ModelError(f"device {dev!r} is not available: {str(exc).splitlines()[0][:160]}") from None
        max_streams = min(int(lo_hi[1]), len(self.cpus.inference))
        try:
            opt = int(self.core.get_property(dev, "OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        except RuntimeError:
            opt = 1
        return DeviceLimits(max(1, max_streams), max(1, min(self._throughput_streams(), max_streams)), max(1, opt))

    def ladder(self, max_batch: int, accuracy_rung: bool = False) -> list[ExecLevel]:
        """The execution ladder for this device, CPU set and model (see tuner.derive_ladder)."""
        lim = self.device_limits()
        return derive_ladder(
            len(self.cpus.inference),
            lim.max_streams,
            lim.throughput_streams,
            lim.optimal_requests,
            max_batch,
            allow_batch=max_batch > 1,
            accuracy_rung=accuracy_rung,
        )

    def _throughput_streams(self) -> int:
        """What the THROUGHPUT hint really chooses for this model on this CPU set: compile it once with
        that hint (model cache on, so cheap after the first start) and read NUM_STREAMS back."""
        n = len(self.cpus.inference)
        try:
            with self._compile_lock:
                model, path = read_model(self.core, self.cfg)
                model, _info = prepare(model, path, self.cfg)
                saved = os.sched_getaffinity(0)
                try:
                    self.cpus.pin_current_thread(self.cpus.inference)
                    compiled = self.core.compile_model(model, self.cfg.device, {"PERFORMANCE_HINT": "THROUGHPUT"})
                finally:
                    os.sched_setaffinity(0, saved)
            return int(compiled.get_property("NUM_STREAMS"))
        except (RuntimeError, ModelError) as exc:
            log.warning("event=throughput_probe_failed error=%s fallback_streams=%d", q(exc), max(1, n // 2))
            return max(1, n // 2)

    def compile(
        self, level: ExecLevel, model_cfg: ModelConfig | None = None, sizes: Sequence[SizeKey] = ()
    ) -> Compiled:
        """Read, pre-process and compile the model (``model_cfg``, default the engine's) for ``level``:
        the graph for its frame size, the any-size graph and one for each of ``sizes``. Raises
        ModelError. Thread-safe."""
        t0 = time.perf_counter()
        cfg = model_cfg or self.cfg
        model, info = self._compile_graph(level, cfg, None)
        primary: SizeKey = (*info.frame_hw, "bgr")
        graphs = {primary: model}
        for key in (DYNAMIC, *sizes):
            if key not in graphs:
                graphs[key] = self._compile_graph(level, cfg, key)[0]
        streams = int(model.get_property("NUM_STREAMS")) if cfg.device == "CPU" else level.streams
        threads = int(model.get_property("INFERENCE_NUM_THREADS")) if cfg.device == "CPU" else 0
        prec = model.get_property("INFERENCE_PRECISION_HINT")
        precision = prec.get_type_name() if hasattr(prec, "get_type_name") else str(prec)
        return Compiled(model, level, info, time.perf_counter() - t0, streams, threads, precision, graphs, next(_uids))

    def compile_size(self, compiled: Compiled, key: SizeKey, model_cfg: ModelConfig) -> ov.CompiledModel:
        """The graph for ``key`` frames at ``compiled``'s level (``model_cfg``: the model it was compiled
        from). Raises ModelError. Thread-safe (the switcher's thread)."""
        return self._compile_graph(compiled.level, model_cfg, key)[0]

    def _compile_graph(
        self, level: ExecLevel, cfg: ModelConfig, key: SizeKey | None
    ) -> tuple[ov.CompiledModel, ModelInfo]:
        with self._compile_lock:
            model, path = read_model(self.core, cfg)
            model, info = prepare(model, path, cfg, batch=level.batch, key=key, yolo_nms=self.yolo_nms)
            props: dict[str, Any] = {
                "PERFORMANCE_HINT": "LATENCY" if level.streams == 1 else "THROUGHPUT",
                "NUM_STREAMS": level.streams,
                "INFERENCE_NUM_THREADS": len(self.cpus.inference),
                "ENABLE_CPU_PINNING": True,
            }
            if cfg.device != "CPU":
                props = {"PERFORMANCE_HINT": props["PERFORMANCE_HINT"]}
            if cfg.precision:
                props["INFERENCE_PRECISION_HINT"] = cfg.precision
            if level.accuracy:
                props.update({"INFERENCE_PRECISION_HINT": "f32", "EXECUTION_MODE_HINT": "ACCURACY"})
            # OpenVINO sizes and pins its thread pool from the compiling thread's affinity.
            saved = os.sched_getaffinity(0)
            try:
                self.cpus.pin_current_thread(self.cpus.inference)
                compiled = self.core.compile_model(model, cfg.device, props)
            except RuntimeError as exc:
                first = next((ln for ln in str(exc).splitlines() if ln.strip()), "")
                raise ModelError(
                    f"cannot compile {path} for {cfg.device} at {level.describe()}: {first[:200]}"
                ) from None
            finally:
                os.sched_setaffinity(0, saved)
            # One inference off the hot path: the first one after a compile does lazy set-up (about 2x a
            # normal one here), which would otherwise land on a camera's frame and skew the job-time estimate.
            # start_async + wait, not infer(): a synchronous infer() resets the calling thread's CPU affinity.
            h, w, pix = key if key is not None and key[0] else (*info.frame_hw, "bgr")
            channels = {"gray": 1, "bgr": 3, "rgb": 3, "bgrx": 4, "rgbx": 4}[pix]
            try:
                warm = compiled.create_infer_request()
                warm.set_input_tensor(ov.Tensor(np.zeros((level.batch, h, w, channels), np.uint8)))
                warm.start_async()
                warm.wait()
            except RuntimeError as exc:
                raise ModelError(f"{path} compiled but cannot run: {str(exc).splitlines()[0][:200]}") from None
        return compiled, info

    # ----------------------------------------------------------------- owner thread
    def activate(self, compiled: Compiled, on_done: Callable[[int], None]) -> None:
        """Make ``compiled`` the running model with ``level.requests`` jobs at a time.

        No job may be in flight. With more than one request, ``on_done(job)`` is called on OpenVINO's
        thread when job ``job`` finishes; the owner thread then calls :meth:`complete` with it. With one
        request (:attr:`waits`) no callback is set: the owner thread waits for the job (:meth:`wait`).
        Sizes added to the running model (:meth:`add_size`) stay when ``compiled`` is the same compile at
        another request count.
        """
        graphs = dict(compiled.sizes) or {(*compiled.info.frame_hw, "bgr"): compiled.model}
        if self.active is not None and self.active.uid == compiled.uid:
            for key, g in self._graphs.items():
                graphs.setdefault(key, g.model)
        # Every request first (this may raise: out of memory), then the switch: a failure leaves the running
        # model exactly as it was.
        built = {key: _graph(model, compiled.level.requests, on_done) for key, model in graphs.items()}
        self._on_done = on_done
        self._level = compiled.level
        self._primary = (*compiled.info.frame_hw, "bgr")
        self._graphs = built
        self.waits = compiled.level.requests == 1
        self.inline = self.waits and self._infer.allowed
        self.idle = list(range(compiled.level.requests))[::-1]
        self._jobs = {}
        self._ran.clear()
        self._errors.clear()
        self.active = compiled

    @property
    def batch(self) -> int:
        return self.active.level.batch if self.active else 1

    def has_size(self, key: SizeKey) -> bool:
        """Whether frames of ``key`` have a graph of their own (else they run on the any-size graph)."""
        return key in self._graphs

    def size_keys(self) -> tuple[SizeKey, ...]:
        """The static sizes with a graph now, most recently used last (for the next level's compile)."""
        keys = [k for k in self._graphs if k != DYNAMIC]
        return tuple(sorted(keys, key=lambda k: self._graphs[k].used_ns))

    def add_size(self, uid: int, key: SizeKey, model: ov.CompiledModel, max_sizes: int) -> list[SizeKey] | None:
        """Owner thread: give ``key`` frames their own graph, compiled for the running compile ``uid``
        (None, nothing done, when another model or level runs now). Evicts the least recently used
        sizes without a job in flight beyond ``max_sizes`` (the start-up size stays); returns them."""
        if self.active is None or self.active.uid != uid or key in self._graphs:
            return None
        g = _graph(model, self._level.requests, self._on_done)  # may raise (memory): nothing changed then
        g.used_ns = time.monotonic_ns()
        self._graphs[key] = g
        busy = {id(job[0]) for job in self._jobs.values()}
        excess = sum(1 for k in self._graphs if k not in (DYNAMIC, self._primary)) - max_sizes
        evicted = [k for k in self.size_keys() if k not in (key, self._primary) and id(self._graphs[k]) not in busy][
            : max(0, excess)
        ]
        for k in evicted:
            del self._graphs[k]
        return evicted

    def submit(self, frames: list[Frame]) -> None:
        """Start one job for 1..batch frames of one size and pixel format on an idle job slot (the caller
        checks ``idle``).

        Batch 1 is zero-copy: the input tensor shares the frame's buffer (the received ZeroMQ
        message for raw frames). Larger batches are stacked into one contiguous array (one copy).
        Frames without a graph of their own run on the any-size graph (non-BGR ones converted first).
        """
        job, g, req, tensor = self._prepare(frames)
        req.set_input_tensor(tensor)
        submit_ns = time.monotonic_ns()
        req.start_async()  # raises RuntimeError if OpenVINO refuses: the request stays idle
        g.used_ns = submit_ns
        self.idle.pop()
        self._jobs[job] = (g, frames, submit_ns, tensor, len(self._jobs))

    def run(self, frames: list[Frame]) -> int:
        """Owner thread, when :attr:`inline` (one request, idle): run one job on this thread, to its end, as
        a blocking ``infer()`` does. Returns the job, done: :meth:`complete` collects it (its outputs, or
        why it failed). Nothing else can start meanwhile at one request, and the job needs no thread hop
        either way: OpenVINO runs it on the calling thread and nobody has to wake the owner afterwards.

        Raises RuntimeError, as :meth:`submit` does, when the input tensor cannot be made (nothing taken
        then); a failure of the job itself is its completion's error."""
        job, g, req, tensor = self._prepare(frames)
        submit_ns = time.monotonic_ns()
        g.used_ns = submit_ns
        self.idle.pop()
        self._jobs[job] = (g, frames, submit_ns, tensor, 0)
        self._ran.add(job)
        try:
            # The first run of each graph's request also checks the thread's CPU affinity (_InlineInfer).
            self._infer(req, tensor, check=not g.inline_checked)
            g.inline_checked = True
        except Exception as exc:  # OpenVINO's refusal or failure (or a bug): the job's error, never the thread's
            self._errors[job] = f"{type(exc).__name__}: {exc}"[:200]
        if not self._infer.allowed:  # a run moved the thread off its CPUs: jobs are started from now on
            self.inline = False
        return job

    def _prepare(self, frames: list[Frame]) -> tuple[int, _Graph, ov.InferRequest, ov.Tensor]:
        """The idle job slot, graph, request and input tensor (sharing the frames' memory) for ``frames``."""
        assert self.active is not None
        job = self.idle[-1]
        key = frames[0].key
        g = self._graphs.get(key)
        images = [f.image for f in frames]
        if g is None:
            g = self._graphs[DYNAMIC]
            if key[2] != "bgr":
                images = [to_bgr(im, key[2]) for im in images]
        data = batch_input(images, self.active.level.batch)
        return job, g, g.requests[job], ov.Tensor(data, shared_memory=True)

    def complete(self, job: int) -> Completion:
        """Owner thread, after ``on_done(job)``: collect the outputs (copied: the request is reused)
        and return the job slot to the idle pool."""
        g, frames, submit_ns, _tensor, ahead = self._jobs.pop(job)
        req = g.requests[job]
        ran_inline = job in self._ran
        if ran_inline:  # done, no callback, and its failure kept here (OpenVINO keeps none to re-raise)
            self._ran.discard(job)
            error = self._errors.pop(job, None)
            if error is not None:
                self.idle.append(job)
                return Completion(frames, [], submit_ns, 0.0, error=error)
        try:
            if not ran_inline:
                req.wait()  # returns at once: the job is done; makes sure its callback has returned too
            own = g.outputs[job]
            tensors = [o if o is not None else req.get_output_tensor(i).data for i, o in enumerate(own)]
            completion = Completion(
                frames,
                split_outputs(tensors, len(frames), self.batch),
                submit_ns,
                float(req.latency),
                ahead=ahead,
            )
        except (RuntimeError, ValueError, IndexError) as exc:
            completion = Completion(frames, [], submit_ns, 0.0, error=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            self.idle.append(job)
        return completion

    def wait(self, timeout_ms: int) -> int | None:
        """Owner thread, when :attr:`waits` and the job is in flight: wait up to ``timeout_ms`` for it to
        finish (OpenVINO releases the GIL meanwhile). Its number once it is done (or failed: then
        :meth:`complete` reports the error), None while it still runs.

        Why a wait and not a callback at one request: nothing else can start before the job ends, and a
        Python callback costs its job ~150 µs at the median on a 2-vCPU VM (OpenVINO's thread takes the
        GIL and runs Python; ``edgeagent bench dispatch``), about what the agent trailed a hand-written
        hub by, where ``wait_for`` costs what a blocking ``infer()`` does."""
        job = next(iter(self._jobs))
        req = self._jobs[job][0].requests[job]
        try:
            done = req.wait_for(timeout_ms)
        except RuntimeError:  # the job failed: complete() says how
            done = True
        return job if done else None

    def failed_jobs(self) -> list[Completion]:
        """Jobs whose inference failed. OpenVINO does not call the Python callback for a failed
        request, so the owner thread polls started jobs (``wait_for(0)`` re-raises the failure) and
        gets error completions for them; the job slots return to the idle pool."""
        failed = []
        for job in list(self._jobs):
            g = self._jobs[job][0]
            try:
                g.requests[job].wait_for(0)
            except RuntimeError as exc:
                _g, frames, submit_ns, _tensor, _ahead = self._jobs.pop(job)
                self.idle.append(job)
                failed.append(Completion(frames, [], submit_ns, 0.0, error=str(exc)[:200]))
        return failed

    def input_pointer(self, job: int = 0, key: SizeKey | None = None) -> int:
        """Address of a job slot's input tensor data for ``key`` frames (the zero-copy test reads it)."""
        g = self._graphs[key or self._primary]
        return int(g.requests[job].get_input_tensor().data.ctypes.data)


def _graph(model: ov.CompiledModel, requests: int, on_done: Callable[[int], None]) -> _Graph:
    """A graph with one infer request per job slot, each calling ``on_done(slot)`` when done (none at a
    single request: its owner waits for it, see :meth:`Engine.wait`)."""
    g = _Graph(model)
    for job in range(requests):
        req = model.create_infer_request()
        if requests > 1:
            req.set_callback(on_done, job)
        g.requests.append(req)
        g.outputs.append(_own_outputs(req))
    return g


def _own_outputs(req: ov.InferRequest) -> list[np.ndarray | None]:
    """Arrays of the agent's own that ``req`` writes its static-shaped outputs into (set once, so a job's
    outputs are read without asking OpenVINO for its tensors: ``get_output_tensor(i).data`` cost ~30 µs
    per job here, ``edgeagent bench dispatch``). None for an output whose shape is known only after the
    job (a dynamic-shaped output) or whose type numpy lacks: that one is read from the request."""
    own: list[np.ndarray | None] = []
    for i, port in enumerate(req.model_outputs):
        shape = port.get_partial_shape()
        try:
            dtype = np.dtype(port.get_element_type().to_dtype())
        except (RuntimeError, TypeError, ValueError):
            dtype = None
        if not shape.is_static or dtype is None or dtype.kind not in "biuf":
            own.append(None)
            continue
        arr = np.zeros(tuple(shape.to_shape()), dtype)
        req.set_output_tensor(i, ov.Tensor(arr, shared_memory=True))
        own.append(arr)
    return own


try:  # the compiled InferRequest that openvino.InferRequest wraps in Python (see _InlineInfer)
    from openvino._pyopenvino import InferRequest as _CompiledRequest
except ImportError:  # pragma: no cover - an OpenVINO without it: the public call is used
    _CompiledRequest = None


class _InlineInfer:
    """A blocking inference on the owner thread, as cheap as OpenVINO allows from Python.

    The public ``InferRequest.infer()`` wraps the compiled call in Python (input dispatch, an output
    dict): ~30 µs more per job at the median here (``edgeagent bench dispatch``), about what a blocking
    call saves over ``start_async`` + ``wait_for``. So the compiled method is called directly with the
    input tensor (its outputs come back as views, unused: the agent reads its own output arrays); where an
    OpenVINO version lacks that signature, the public call is used.

    ``allowed``: only where the owner thread's CPUs are the inference CPUs (a single CPU; see
    :func:`split_cpus` for why not on 2); with a CPU of its own it must not run inference. ``check``: the
    engine asks for it on the first run of each graph (each compiled model has its own streams): whether
    OpenVINO left the thread's CPU affinity as it was; if not, it is restored and inline runs stop."""

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self._compiled = _CompiledRequest.infer if _CompiledRequest is not None else None

    def __call__(self, req: ov.InferRequest, tensor: ov.Tensor, check: bool = False) -> None:
        if not check:
            self._run(req, tensor)
            return
        before = os.sched_getaffinity(0)
        try:
            self._run(req, tensor)
        finally:
            after = os.sched_getaffinity(0)
            if after != before:
                os.sched_setaffinity(0, before)
                self.allowed = False
                log.info("event=inline_inference_off reason=affinity cpus_before=%s cpus_after=%s", before, after)

    def _run(self, req: ov.InferRequest, tensor: ov.Tensor) -> None:
        if self._compiled is not None:
            try:
                self._compiled(req, tensor, True, False)  # (input, share_outputs, decode_strings)
                return
            except TypeError:  # another signature in this OpenVINO version: the public call from now on
                self._compiled = None
        req.infer(tensor, share_inputs=True, share_outputs=True)


@dataclass
class _Graph:
    """One compiled graph on the owner thread: an infer request per job slot, and when it last ran."""

    model: ov.CompiledModel
    requests: list[ov.InferRequest] = field(default_factory=list)
    outputs: list[list[np.ndarray | None]] = field(default_factory=list)  # per request: see _own_outputs
    used_ns: int = 0
    inline_checked: bool = False  # its first inline run checked the thread's CPU affinity (_InlineInfer)


def batch_input(images: list[np.ndarray], batch: int) -> np.ndarray:
    """The input tensor's data for one job of ``len(images)`` <= ``batch`` frames (all of one shape).

    Batch 1 is a view (zero copy: the received ZeroMQ buffer). A larger batch is stacked into one
    contiguous array (one copy) and a partial batch is padded with its last frame; the padded rows'
    outputs are ignored by :func:`split_outputs`. Raises ValueError for 0 or more than ``batch`` images.
    """
    if not 1 <= len(images) <= batch:
        raise ValueError(f"batch_input: {len(images)} images for a batch of {batch}")
    if batch == 1:
        return images[0][None]
    return np.stack(images + [images[-1]] * (batch - len(images)))


def split_outputs(tensors: list[np.ndarray], n_frames: int, batch: int) -> list[list[np.ndarray]]:
    """Per-frame copies of the outputs (the request is reused, so nothing may keep a view). With
    batch > 1, rows along a leading batch axis are split (the in-graph NMS's rows and counts too); other
    outputs without a batch axis (scalars, batch-reduced tensors) are given whole to every frame."""
    if batch == 1:
        return [[np.array(t) for t in tensors]]
    return [
        [np.array(t[i : i + 1]) if t.ndim and t.shape[0] == batch else np.array(t) for t in tensors]
        for i in range(n_frames)
    ]
