"""Prometheus metrics on a private registry, served over HTTP by ``prometheus-client``.

Counters that must add up (frame accounting) are not duplicated into prometheus counters: a custom
collector reads :class:`~edgeagent.accounting.Accounting` at scrape time, so the metrics and the
status command can never disagree. The latency histograms cost the I/O thread one deque append per
frame: the timings are folded into bucket counts (numpy, a batch at a time) at every scrape and once
a second by the main thread, so a scrape always sees every published frame.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psutil
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from edgeagent.errors import EndpointError
from edgeagent.io.results import Timing


def latency_buckets_s(sla_ms: float) -> list[float]:
    """Buckets from 0.5 ms to 10 s, dense around the SLA (0.5x .. 2x in 10 % steps)."""
    coarse = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
    fine = [sla_ms * f / 1000 for f in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 2.0)]
    return sorted({round(b, 6) for b in coarse + fine})


LATENCY_HISTOGRAMS = (  # in Timing's field order
    ("edgeagent_latency_seconds", "End-to-end latency inside the agent (socket in to result out)"),
    ("edgeagent_queue_latency_seconds", "Receipt to inference start"),
    ("edgeagent_inference_latency_seconds", "Inference (OpenVINO request latency)"),
)


class LatencyHistograms(Collector):
    """The latency histograms (:data:`LATENCY_HISTOGRAMS`), fed a :class:`Timing` per published frame.

    :meth:`observe` is ``deque.append`` itself (any thread; on the I/O thread: no Python frame, no lock);
    :meth:`fold` moves what is pending into the bucket counts (any thread, a lock); :meth:`collect`
    folds first, so a scrape is exact. Buckets are prometheus's: ``le`` = at or below the bound."""

    def __init__(self, buckets_s: list[float]) -> None:
        self.bounds_s = np.array(sorted(buckets_s), dtype=np.float64)
        self._pending: collections.deque[Timing] = collections.deque()
        self.observe: Callable[[Timing], None] = self._pending.append
        self._counts = np.zeros((len(LATENCY_HISTOGRAMS), len(self.bounds_s) + 1), np.int64)  # last: +Inf
        self._sums_s = np.zeros(len(LATENCY_HISTOGRAMS), np.float64)
        self._lock = threading.Lock()
        self._le = [floatToGoString(b) for b in self.bounds_s] + ["+Inf"]  # type: ignore[no-untyped-call]

    def fold(self) -> None:
        with self._lock:
            pending = self._pending
            n = len(pending)
            if not n:
                return
            rows_s = np.array([pending.popleft() for _ in range(n)], dtype=np.float64).T / 1000
            for i, values in enumerate(rows_s):
                self._counts[i] += np.bincount(np.searchsorted(self.bounds_s, values), minlength=self._counts.shape[1])
                self._sums_s[i] += values.sum()

    def collect(self) -> Iterator[Metric]:
        self.fold()
        with self._lock:
            cumulative = np.cumsum(self._counts, axis=1).tolist()
            sums = self._sums_s.tolist()
        for (name, doc), counts, total_s in zip(LATENCY_HISTOGRAMS, cumulative, sums):
            yield HistogramMetricFamily(name, doc, buckets=list(zip(self._le, counts)), sum_value=total_s)


class _StateCollector(Collector):
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        st = self._state()
        frames = CounterMetricFamily(
            "edgeagent_frames",
            "Frames by source and outcome (received = processed + dropped + rejected + in the agent)",
            labels=["source", "outcome", "reason"],
        )
        for source, c in st["accounting"].items():
            frames.add_metric([source, "received", ""], c["received"])
            frames.add_metric([source, "processed", ""], c["processed"])
            for reason, n in c["dropped"].items():
                frames.add_metric([source, "dropped", reason], n)
            for reason, n in c["rejected"].items():
                frames.add_metric([source, "rejected", reason], n)
        yield frames
        over = CounterMetricFamily(
            "edgeagent_results_over_sla",
            "Results published later than the SLA after their frame's receipt (of the processed frames); "
            "frames the agent saw could not make it are dropped as reason=late instead",
            labels=["source"],
        )
        for source, c in st["accounting"].items():
            over.add_metric([source], c["over_sla"])
        yield over
        win = st.get("window")
        # One gauge per statistic: "quantile" labels are reserved for summaries (promtool rejects them).
        for key, stat in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"), ("max_ms", "max")):
            g = GaugeMetricFamily(
                f"edgeagent_window_latency_{stat}_seconds",
                f"Last control window's end-to-end latency, {stat} (NaN: no frames in that window)",
            )
            if win is not None:
                v = win[key]
                g.add_metric([], v / 1000 if v is not None and not math.isnan(v) else math.nan)
            yield g
        gp = GaugeMetricFamily("edgeagent_window_goodput_fps", "Last window's in-SLA frames per second")
        if win is not None:
            gp.add_metric([], win["goodput_fps"])
        yield gp
        yield CounterMetricFamily("edgeagent_windows", "Control windows", value=st["windows"])
        yield CounterMetricFamily(
            "edgeagent_sla_violating_windows", "Windows whose p99 broke the SLA", value=st["windows_violating"]
        )
        yield GaugeMetricFamily("edgeagent_sla_p99_seconds", "The latency SLA (p99)", value=st["sla_p99_ms"] / 1000)
        lvl = st["exec"]
        yield GaugeMetricFamily("edgeagent_level", "Current execution level (0 = LATENCY)", value=st["level"])
        for key in ("streams", "requests", "batch", "threads"):
            yield GaugeMetricFamily(f"edgeagent_exec_{key}", f"Current execution setting: {key}", value=lvl[key])
        yield GaugeMetricFamily(
            "edgeagent_in_flight_jobs", "Inference jobs started and not completed", value=st["in_flight"]
        )
        yield GaugeMetricFamily(
            "edgeagent_inference_stall_seconds",
            "Seconds since an inference last completed while jobs are in flight (0 when none is): "
            "the systemd watchdog stops past its limit",
            value=st["stall_s"],
        )
        yield CounterMetricFamily("edgeagent_level_switches", "Execution level switches", value=st["switches"])
        yield GaugeMetricFamily(
            "edgeagent_host_interference_ratio",
            "Share of the CPUs used by other processes in the last window (a hog, throttling, steal)",
            value=st["interference"],
        )
        yield CounterMetricFamily(
            "edgeagent_auth_refused", "Peers refused by ZAP (CURVE key or IP not allowed)", value=st["auth_refused"]
        )
        yield CounterMetricFamily(
            "edgeagent_peer_disconnects",
            "Ingest peers that disconnected or that libzmq dropped (a message above ingest.max_message_bytes); "
            "a dropped camera PUB is reconnected at once",
            value=st["disconnects"],
        )
        sizes = GaugeMetricFamily(
            "edgeagent_frame_sizes", "Frame sizes with a compiled graph of their own (1 per size)", labels=["size"]
        )
        for name in st["sizes"]:
            sizes.add_metric([name], 1)
        yield sizes
        yield CounterMetricFamily(
            "edgeagent_size_compiles", "Graphs compiled for a new frame size", value=st["size_compiles"]
        )
        yield CounterMetricFamily(
            "edgeagent_any_size_frames",
            "Frames served by the any-size graph while their size's own graph was compiling (or evicted)",
            value=st["any_size_frames"],
        )
        yield CounterMetricFamily(
            "edgeagent_io_thread_cpu_seconds",
            "CPU time of the I/O thread (sockets, parsing, dispatch, replies, results, bookkeeping; not the "
            "inference it runs itself at one request): divided by the frames processed, the agent's own cost "
            "per frame",
            value=st["io_cpu_s"],
        )
        yield CounterMetricFamily(
            "edgeagent_frigate_handshakes",
            "Frigate detector handshakes answered (Frigate handshakes on start and after each timeout)",
            value=st["frigate_handshakes"],
        )
        idle = GaugeMetricFamily(
            "edgeagent_source_idle_seconds",
            "Seconds since each live source last sent (a source silent for ingest.source_idle_s is expired: its "
            'counts move to source="_expired")',
            labels=["source"],
        )
        for source, idle_s in st["source_idle_s"].items():
            idle.add_metric([source], idle_s)
        yield idle
        yield GaugeMetricFamily(
            "edgeagent_last_switch_seconds",
            "Duration of the last level switch (drain + swap)",
            value=st["last_switch_s"],
        )
        yield GaugeMetricFamily(
            "edgeagent_last_compile_seconds", "Duration of the last model compile", value=st["last_compile_s"]
        )
        steal = getattr(psutil.cpu_times(), "steal", 0.0)
        yield CounterMetricFamily("edgeagent_host_cpu_steal_seconds", "Host CPU steal time (all CPUs)", value=steal)


class Metrics:
    """The latency histograms plus the state collector; :meth:`serve` starts the HTTP endpoint.
    ``observe(timing)``: the I/O thread, per published frame; ``fold()``: the main thread, once a second."""

    def __init__(self, sla_ms: float, state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.latency = LatencyHistograms(latency_buckets_s(sla_ms))
        self.registry.register(self.latency)
        self.observe = self.latency.observe  # the I/O thread's per-frame hook: a deque append
        self.fold = self.latency.fold
        self.registry.register(_StateCollector(state))
        # edgeagent_process_{cpu_seconds_total,resident_memory_bytes,open_fds,...}: the library's own.
        ProcessCollector(namespace="edgeagent", registry=self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def serve(self, listen: str) -> tuple[str, int]:
        """Start the endpoint on HOST:PORT (port 0 picks one); returns the bound address."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        try:
            self._server, self._thread = start_http_server(int(port), addr=host, registry=self.registry)
        except OSError as exc:
            raise EndpointError(f"cannot serve metrics on {listen}: {exc.strerror}") from None
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
