"""The latency histograms fed by a deque append per frame: the same exposition as prometheus-client's own
Histogram, exact at every scrape, safe to fold while the I/O thread appends."""

from __future__ import annotations

import random
import threading

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from edgeagent.io.results import Timing
from edgeagent.metrics import LATENCY_HISTOGRAMS, LatencyHistograms, Metrics, latency_buckets_s


def _lines(registry: CollectorRegistry, name: str) -> list[str]:
    text = generate_latest(registry).decode()
    return [ln for ln in text.splitlines() if ln.startswith(name) and "_created" not in ln]


def test_exposition_matches_prometheus_client_histogram_including_bucket_bounds() -> None:
    buckets = latency_buckets_s(30.0)
    ours = LatencyHistograms(buckets)
    ours_reg = CollectorRegistry()
    ours_reg.register(ours)
    ref_reg = CollectorRegistry()
    refs = [Histogram(name, doc, registry=ref_reg, buckets=buckets) for name, doc in LATENCY_HISTOGRAMS]
    rng = random.Random(7)
    # Values exactly on bucket bounds (le is inclusive), between them, beyond the last, and zero.
    values_ms = [b * 1000 for b in buckets] + [rng.uniform(0, 200) for _ in range(3000)] + [0.0, 60_000.0]
    for i, v in enumerate(values_ms):
        t = Timing(v, v / 3, v / 2)
        ours.observe(t)
        for ref, x in zip(refs, t):
            ref.observe(x / 1000)
        if i == 1500:
            ours.fold()  # folds in between and at the scrape add up
    for name, _doc in LATENCY_HISTOGRAMS:
        got, want = _lines(ours_reg, name), _lines(ref_reg, name)
        assert [ln.rsplit(" ", 1)[0] for ln in got] == [ln.rsplit(" ", 1)[0] for ln in want]
        for g, w in zip(got, want):  # counts exactly; sums up to float summation order
            gv, wv = float(g.rsplit(" ", 1)[1]), float(w.rsplit(" ", 1)[1])
            assert abs(gv - wv) <= 1e-9 * max(1.0, abs(wv)), (g, w)
    assert f"edgeagent_latency_seconds_count {float(len(values_ms))}" in _lines(ours_reg, "edgeagent_latency_seconds")


def test_a_scrape_sees_every_observation_without_a_fold_and_metrics_observe_is_the_append() -> None:
    m = Metrics(30.0, lambda: {})
    assert m.observe == m.latency.observe  # the I/O thread's hook: deque.append itself, no Python frame
    for _ in range(5):
        m.observe(Timing(12.0, 1.0, 10.0))
    reg = CollectorRegistry()
    reg.register(m.latency)
    assert reg.get_sample_value("edgeagent_latency_seconds_count") == 5
    assert reg.get_sample_value("edgeagent_inference_latency_seconds_sum") == pytest.approx(0.05)
    assert reg.get_sample_value("edgeagent_queue_latency_seconds_bucket", {"le": "0.001"}) == 5


def test_folding_while_another_thread_observes_loses_nothing() -> None:
    hist = LatencyHistograms(latency_buckets_s(30.0))
    reg = CollectorRegistry()
    reg.register(hist)
    n = 20_000
    done = threading.Event()

    def writer() -> None:
        for i in range(n):
            hist.observe(Timing(float(i % 50), 0.0, 0.0))
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    folds = 0
    while not done.is_set():
        hist.fold()
        folds += 1
    t.join()
    assert folds > 0
    assert reg.get_sample_value("edgeagent_latency_seconds_count") == n
    assert reg.get_sample_value("edgeagent_latency_seconds_sum") == pytest.approx(sum(i % 50 for i in range(n)) / 1000)
