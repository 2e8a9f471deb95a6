"""Prometheus metrics on a private registry, served over HTTP by ``prometheus-client``.

Counters that must add up (frame accounting) are not duplicated into prometheus counters: a custom
collector reads :class:`~edgeagent.accounting.Accounting` at scrape time, so the metrics and the
status command can never disagree. Latency histograms are observed per frame on the I/O thread.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeagent.errors import EndpointError
from edgeagent.io.results import Timing


def latency_buckets_s(sla_ms: float) -> list[float]:
    """Buckets from 0.5 ms to 10 s, dense around the SLA (0.5x .. 2x in 10 % steps)."""
    coarse = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
    fine = [sla_ms * f / 1000 for f in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 2.0)]
    return sorted({round(b, 6) for b in coarse + fine})


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
            "CPU time of the I/O thread (sockets, parsing, dispatch, replies, results, bookkeeping): divided by "
            "the frames processed, the agent's own cost per frame",
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
    """Histograms fed per frame plus the state collector; :meth:`serve` starts the HTTP endpoint."""

    def __init__(self, sla_ms: float, state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        buckets = latency_buckets_s(sla_ms)
        self.e2e = Histogram(
            "edgeagent_latency_seconds",
            "End-to-end latency inside the agent (socket in to result out)",
            registry=self.registry,
            buckets=buckets,
        )
        self.queue = Histogram(
            "edgeagent_queue_latency_seconds", "Receipt to inference start", registry=self.registry, buckets=buckets
        )
        self.infer = Histogram(
            "edgeagent_inference_latency_seconds",
            "Inference (OpenVINO request latency)",
            registry=self.registry,
            buckets=buckets,
        )
        self.registry.register(_StateCollector(state))
        # edgeagent_process_{cpu_seconds_total,resident_memory_bytes,open_fds,...}: the library's own.
        ProcessCollector(namespace="edgeagent", registry=self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def observe(self, t: Timing) -> None:
        """Called by the I/O thread for every published frame."""
        self.e2e.observe(t.total_ms / 1000)
        self.queue.observe(t.queue_ms / 1000)
        self.infer.observe(t.infer_ms / 1000)

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
