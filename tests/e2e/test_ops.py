"""Operations: sd_notify over a real AF_UNIX socket, watchdog, signals, reload, metrics, status, unit."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeagent.config import EXAMPLE
from edgeagent.engine import split_cpus
from edgeagent.publisher import Publisher
from tests.helpers import ROOT, run_cli, scrape_after_windows, wait_until

IMG = np.random.default_rng(5).integers(0, 256, (224, 224, 3), dtype=np.uint8)


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def pings(self) -> list[float]:
        """When each WATCHDOG=1 arrived (time.monotonic())."""
        return [t for t, m in self.messages if "WATCHDOG=1" in m]

    def lines(self) -> list[str]:
        return [ln for _, m in self.messages for ln in m.splitlines()]

    def wait_for(self, text: str, timeout_s: float = 30) -> None:
        wait_until(
            lambda: any(text in ln for ln in self.lines()), timeout_s, lambda: f"{text!r} in {self.lines()[-20:]}"
        )

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def test_sd_notify_ready_status_watchdog_stopping(start_agent: Any, tmp_path: Path) -> None:
    ns = NotifySocket(tmp_path / "notify")
    try:
        agent = start_agent(env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "1000000"})
        ns.wait_for("READY=1")
        # READY only after the sockets are bound: the agent answers at once.
        with Publisher(agent.listen, source="n", mode="req", timeout_s=10) as p:
            assert isinstance(p.send(IMG), dict)
        ns.wait_for("STATUS=level 0")
        # WatchdogSec=1: a ping every 0.5 s, half of it (as sd_watchdog_enabled(3) recommends). Five
        # gaps, waited for: never one that would get a healthy agent killed, and about 0.5 s apart
        # (pinging at every 0.1 s tick would be wrong too).
        wait_until(lambda: len(ns.pings()) >= 6, 30, lambda: f"6 watchdog pings, got {ns.pings()}")
        pings = ns.pings()
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 1.0 and 0.4 <= statistics.median(gaps) <= 0.75, gaps
        assert agent.stop() == 0
        ns.wait_for("STOPPING=1")
        ready = next(i for i, ln in enumerate(ns.lines()) if ln == "READY=1")
        assert ready < next(i for i, ln in enumerate(ns.lines()) if ln == "STOPPING=1")
    finally:
        ns.close()


WATCHDOG_S = 0.4  # WatchdogSec the hang test gives the agent: it pings every 0.2 s while healthy
HANG_S = 3.0  # how long the calibrated model's one inference should take
# A ping decided just before the job started is stamped when the test's receiver thread gets it:
# on a busy machine that can be a while later.
PING_SLACK_S = 0.5
# The hang must leave at least this long in which no ping is allowed: 5 ping periods, so a watchdog
# that kept pinging through the hang cannot slip between them.
MIN_SILENT_S = 1.0
MAX_STEPS = 300  # longer chains cost compile time; past this, bigger matrices instead


def chain_model(n: int, steps: int) -> Any:
    """A real model doing ``steps`` chained n x n matmuls for one 32x32 frame: a job that 'hangs'.

    The right-hand matrix is made from the input too (x * 0 + 1/n, the idempotent J/n), so there is
    no constant for OpenVINO to repack per MatMul at compile time: compiling stays ~0.1 s for
    hundreds of steps, the saved model is a few kB, and the values stay finite.
    """
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 3, 32, 32], np.float32, name="input")
    y = ops.reshape(ops.reduce_mean(x, [1, 2, 3], keep_dims=True), [1, 1], False)
    m = ops.broadcast(y, ops.constant(np.array([n, n], np.int64)))
    w = ops.add(ops.multiply(m, np.float32(0)), np.float32(1 / n))
    for _ in range(steps):
        m = ops.matmul(m, w, False, False)
    out = ops.reduce_sum(m, [0, 1], keep_dims=False)
    return ov.Model([out.output(0)], [x], "slow")


def inference_s(model: Any) -> float:
    """One inference of ``model`` (best of two, after a first run), compiled as the agent compiles
    its level 0 (engine.compile): LATENCY hint, 1 stream, as many pinned threads as it gives
    inference, the device's default precision (bf16 with AMX, f32 elsewhere)."""
    import openvino as ov

    inference_cpus, _io = split_cpus(tuple(sorted(os.sched_getaffinity(0))))
    props = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": len(inference_cpus),
        "ENABLE_CPU_PINNING": True,
    }
    request = ov.Core().compile_model(model, "CPU", props).create_infer_request()
    x = np.zeros((1, 3, 32, 32), np.float32)
    request.infer({0: x})
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        request.infer({0: x})
        best = min(best, time.perf_counter() - t0)
    return best


def calibrated_slow_model(path: Path, target_s: float) -> tuple[Path, float]:
    """Save a chain model whose one inference takes about ``target_s`` on this CPU, now.

    CPUs differ by an order of magnitude on this work (AMX bf16 vs AVX2 f32), so a fixed model is
    a hang on one machine and a blip on another. Time short chains (each calibration inference is
    kept to ~0.25 s, a few rounds at most) and extrapolate; returns the path and the expected time.
    """
    import openvino as ov

    n, steps = 1024, 2
    for _ in range(10):
        took = inference_s(chain_model(n, steps))
        need = math.ceil(steps * target_s / took)
        if took < 0.15 and steps < min(need, MAX_STEPS):
            # Too short to extrapolate from on a noisy machine: measure a chain of ~0.25 s first.
            steps = min(MAX_STEPS, need, math.ceil(steps * 0.25 / max(took, 1e-4)))
        elif need > MAX_STEPS:
            n, steps = n * 2, max(1, steps // 8)  # 8x the work per step
        else:
            ov.save_model(chain_model(n, need), path / "slow.xml")
            return path / "slow.xml", took / steps * need
    raise AssertionError(f"could not calibrate a {target_s} s model (last: {n}x{n}, {steps} steps, {took:.3f} s)")


def test_watchdog_stops_while_inference_hangs(start_agent: Any, tmp_path: Path) -> None:
    model, expected_s = calibrated_slow_model(tmp_path, HANG_S)
    ns = NotifySocket(tmp_path / "notify")
    try:
        agent = start_agent(
            "--model", str(model), env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))}
        )
        ns.wait_for("READY=1")
        ns.wait_for("WATCHDOG=1")  # idle: pings flow
        assert agent.scrape()["edgeagent_inference_stall_seconds"] == 0  # nothing in flight
        # The metric the EdgeAgentStalled alert reads, scraped while the job hangs.
        stalls: list[float] = []
        hung = threading.Event()

        def scrape_stall() -> None:
            while not hung.is_set():
                stalls.append(agent.scrape().get("edgeagent_inference_stall_seconds", 0.0))
                hung.wait(0.1)

        scraper = threading.Thread(target=scrape_stall, daemon=True)
        scraper.start()
        with Publisher(agent.listen, source="slow", mode="req", timeout_s=120) as p:
            t0 = time.monotonic()
            reply = p.send(np.zeros((32, 32, 3), np.uint8))
            t1 = time.monotonic()
        hung.set()
        scraper.join(10)
        assert isinstance(reply, dict) and reply["status"] == "ok", reply
        # While the watchdog was silent the stall gauge passed the watchdog's limit; now it is 0.
        assert max(stalls, default=0.0) > WATCHDOG_S, stalls
        assert agent.scrape()["edgeagent_inference_stall_seconds"] == 0
        # OpenVINO's own measure of the job. The job started after t0 and ended before t1, so it ran
        # at least over [t1 - hang, t0 + hang]: no ping may be stamped in there, except one decided
        # before the job started (up to WATCHDOG_S after the last progress) and delivered late.
        hang = reply["latency_ms"]["inference"] / 1000
        silent_from, silent_to = t1 - hang + WATCHDOG_S + PING_SLACK_S, t0 + hang
        if silent_to - silent_from < MIN_SILENT_S:
            pytest.fail(
                f"the slow model ran {hang:.2f} s in the agent (calibrated for {expected_s:.2f} s here, request "
                f"{t1 - t0:.2f} s): too short to outlast the {WATCHDOG_S} s watchdog by a {MIN_SILENT_S} s window"
            )
        pings = ns.pings()
        inside = [t - t0 for t in pings if silent_from < t < silent_to]
        assert inside == [], (
            f"watchdog pinged at {inside} s into a {hang:.1f} s inference "
            f"(silent from {silent_from - t0:.2f} to {silent_to - t0:.2f} s)"
        )
        wait_until(lambda: len(ns.pings()) > len(pings), 30, "the watchdog pings to resume after the inference")
    finally:
        ns.close()


def test_sigterm_under_load_answers_everyone(start_agent: Any) -> None:
    agent = start_agent()
    results: list[Any] = []
    lock = threading.Lock()

    served = [0] * 4
    give_up = time.monotonic() + 120  # a bound for the cameras should the agent never stop

    def camera(i: int) -> None:
        # Until the agent stops answering, not a fixed number of frames: a fast CPU would get
        # through those before the signal, and the test would stop an idle agent.
        with Publisher(agent.listen, source=f"c{i}", mode="req", timeout_s=10) as p:
            while time.monotonic() < give_up:
                r = p.send(IMG)
                with lock:
                    results.append(r)
                if r is None or (isinstance(r, dict) and r.get("reason") == "shutdown"):
                    return
                served[i] += 1

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    # Under load: every camera has been served a few times and keeps sending.
    wait_until(lambda: min(served) >= 5, 60, lambda: f"every camera served 5 times: {served}", agent.log)
    agent.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)  # each camera's last request times out after 10 s at most
    assert not any(t.is_alive() for t in threads)
    assert agent.proc.wait(30) == 0
    # Every request the agent received got an answer (a result, or a 'shutdown' drop). A request
    # sent after the agent closed its socket never reached it: at most one per sender, its last.
    answered = [r for r in results if r is not None]
    assert len(results) - len(answered) <= len(threads)
    stopped = agent.wait_for("event=stopped")
    totals = dict(kv.split("=") for kv in stopped.split("event=stopped ")[1].split())
    r, p_, d, j = (int(totals[k]) for k in ("received", "processed", "dropped", "rejected"))
    assert r == p_ + d + j and p_ > 0
    assert len(answered) == r  # one reply per frame received
    assert float(agent.wait_for("event=exit").split("shutdown_s=")[1]) < 5


def test_sighup_changes_sla_and_model(start_agent: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[sla]\np99_ms = 30\n")
    agent = start_agent("--config", str(cfg))
    assert agent.scrape()["edgeagent_sla_p99_seconds"] == pytest.approx(0.030)
    pub = Publisher(agent.listen, source="hup", mode="req", timeout_s=10)
    assert pub.send(IMG)["status"] == "ok"  # type: ignore[index]
    cfg.write_text("[sla]\np99_ms = 12.5\n[model]\nframe_size = [320, 240]\n")
    since = len(agent.lines)
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for("event=model_reloaded", since=since)
    agent.wait_for("event=level_switched", since=since)  # logged once the I/O thread runs the new model
    assert agent.scrape()["edgeagent_sla_p99_seconds"] == pytest.approx(0.0125)
    # Same socket, same connection: the new model compiled its frame-size hint ahead, and every size
    # is still served.
    assert "320x240/bgr" in agent.scrape()["sizes"]
    big = np.zeros((240, 320, 3), np.uint8)
    assert pub.send(big)["status"] == "ok"  # type: ignore[index]
    assert pub.send(IMG)["status"] == "ok"  # type: ignore[index]
    # A broken config on reload is logged and the agent keeps running with the old one.
    cfg.write_text("[sla]\np99_ms = 'x'\n")
    since = len(agent.lines)
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for("event=reload_failed", since=since)
    assert pub.send(big)["status"] == "ok"  # type: ignore[index]
    # So does a model that cannot be read: the running one keeps serving, and a later good reload works.
    cfg.write_text(f"[model]\npath = '{tmp_path / 'missing.onnx'}'\nframe_size = [320, 240]\n")
    since = len(agent.lines)
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for("event=compile_failed", since=since)
    assert pub.send(big)["status"] == "ok"  # type: ignore[index]
    cfg.write_text("[model]\nframe_size = [160, 120]\n")
    since = len(agent.lines)
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for("event=level_switched", since=since)
    reply = pub.send(np.zeros((120, 160, 3), np.uint8))
    assert isinstance(reply, dict) and reply["status"] == "ok", reply
    pub.close()


def test_metrics_names_status_command_and_promtool(start_agent: Any, tmp_path: Path) -> None:
    """The scrape is taken after several control windows have closed, so every family has samples
    (the window gauges too), and promtool checks all of them."""
    from prometheus_client.parser import text_string_to_metric_families

    cfg = tmp_path / "agent.toml"
    cfg.write_text("[sla]\nwindow_s = 0.2\nmin_frames = 5\n")
    agent = start_agent("--config", str(cfg))
    scraped = scrape_after_windows(agent, IMG, windows=3, source="m")
    text, st, sent = scraped.text, scraped.status, scraped.sent
    families = {f.name: f for f in text_string_to_metric_families(text)}
    empty = [name for name, f in families.items() if not f.samples]
    assert not empty, f"metric families without samples: {empty}"
    for name in (
        "edgeagent_frames",
        "edgeagent_latency_seconds",
        "edgeagent_level",
        "edgeagent_exec_streams",
        "edgeagent_window_latency_p50_seconds",
        "edgeagent_window_latency_p99_seconds",
        "edgeagent_window_latency_max_seconds",
        "edgeagent_window_goodput_fps",
        "edgeagent_sla_violating_windows",
        "edgeagent_process_resident_memory_bytes",
        "edgeagent_process_cpu_seconds",
        "edgeagent_host_cpu_steal_seconds",
        "edgeagent_auth_refused",
    ):
        assert name in families, name
    assert not any("quantile" in s.labels for f in families.values() if f.type == "gauge" for s in f.samples)
    # The scrape that ended the loop saw a window with results (later ones may be empty: traffic stopped).
    assert 0 < st["window"]["p50"] <= st["window"]["p99"] <= st["window"]["max"]
    # The last frame is counted just after its reply went out: wait for it, then the counts are exact.
    wait_until(lambda: agent.scrape()["sources"]["m"]["processed"] >= sent, 10, "the last frame counted", agent.log)
    st = agent.scrape()
    assert st["edgeagent_latency_seconds_count"] == sent
    assert st["sources"]["m"]["processed"] == sent
    out = subprocess.run(
        [sys.executable, "-m", "edgeagent", "status", "--metrics", agent.metrics_url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "SLA" in out.stdout and "level     0" in out.stdout
    # source, last seen (seconds ago: live), received, processed
    assert any(
        ln.split()[0] == "m" and ln.split()[1].endswith("s") and ln.split()[2:4] == [str(sent), str(sent)]
        for ln in out.stdout.splitlines()
        if ln.strip()
    ), out.stdout
    js = subprocess.run(
        [sys.executable, "-m", "edgeagent", "status", "--metrics", agent.metrics_url, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(js.stdout)["sources"]["m"]["received"] == sent
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (.ci/run installs Debian's prometheus package)")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_status_without_agent_fails_clearly() -> None:
    out = run_cli("status", "--metrics", "http://127.0.0.1:9/metrics", timeout=30)
    assert out.returncode == 69 and "cannot read" in out.stdout


def test_example_config_shipped_in_systemd_dir() -> None:
    assert (ROOT / "systemd" / "agent.toml").read_text() == EXAMPLE


def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not available on this machine")
    unit = (ROOT / "systemd" / "edgeagent.service").read_text()
    assert "MemoryDenyWriteExecute=no" in unit and "RestartPreventExitStatus=78 66" in unit
    # verify needs ExecStart to exist: point it at this environment's real entry point.
    exe = shutil.which("edgeagent") or str(Path(sys.executable).parent / "edgeagent")
    local = tmp_path / "edgeagent.service"
    local.write_text(unit.replace("/opt/edgeagent/venv/bin/edgeagent", exe))
    v = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (v.stdout + v.stderr).splitlines() if ln.strip() and "edgeagent.service" in ln]
    assert v.returncode == 0 and not problems, v.stdout + v.stderr
    s = subprocess.run([analyze, "security", "--offline=true", str(local)], capture_output=True, text=True, timeout=60)
    line = next(ln for ln in s.stdout.splitlines() if "Overall exposure level" in ln)
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 2.0, line


def test_env_is_clean_of_notify_outside_systemd() -> None:
    from edgeagent.systemd import Notifier

    n = Notifier({})
    assert not n.enabled and n.notify("READY=1") is False and n.watchdog_s is None
    n = Notifier({"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.address == "\0abstract" and n.watchdog_s == 2.0
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"}).watchdog_s is None
