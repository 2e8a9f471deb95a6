"""The adaptive controller end to end: real engine, real sockets, real level switches and a real hog."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edgeagent.publisher import Publisher
from tests.helpers import PROBE, AgentProcess, accounting_holds, cpu_hogs, subscriber, wait_until

IMG = np.random.default_rng(9).integers(0, 256, (224, 224, 3), dtype=np.uint8)


class Load:
    """N native PUSH cameras sending as fast as the agent drains them (saturating), bounded in time,
    and a subscriber that collects every result until :meth:`close`."""

    def __init__(self, agent: AgentProcess, cameras: int = 3, fps: float = 400.0) -> None:
        self.agent = agent
        self.pubs = [Publisher(agent.pull, source=f"load{i}", mode="push") for i in range(cameras)]
        self.fps = fps
        self._stop = threading.Event()  # the cameras
        self._done = threading.Event()  # the subscriber
        self._t = threading.Thread(target=self._run, daemon=True)
        self.results: list[dict[str, Any]] = []
        self.sub: zmq.Socket[Any] | None = None
        self._r = threading.Thread(target=self._recv, daemon=True)

    def __enter__(self) -> Load:
        # Subscribed for sure before the first frame: a result published before would be missed.
        self.sub = subscriber(self.agent)
        self._r.start()
        self._t.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + 90  # bounded even if a test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            for p in self.pubs:
                p.send(IMG)
            time.sleep(1.0 / self.fps)

    def _recv(self) -> None:
        assert self.sub is not None
        deadline = time.monotonic() + 180  # bounded even if close() is never called
        while not self._done.is_set() and time.monotonic() < deadline:
            if self.sub.poll(100):
                topic, header, *_ = self.sub.recv_multipart()
                if topic.decode() != PROBE:
                    self.results.append(json.loads(header))

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)
        for p in self.pubs:
            p.close()
        if exc_type is not None:
            self.close()  # the test failed inside: settle_and_check will not run
            return
        # A decision is logged at once, the switch follows when its compile is done (longer on a busy
        # machine): what the test reads after the load (level, switches) must include it.
        wait_until(
            lambda: decided_level_running(self.agent),
            30,
            "the agent to run the level its controller last decided",
            self.agent.log,
            0.1,
        )

    def close(self) -> None:
        self._done.set()
        self._r.join(10)
        if self.sub is not None:
            self.sub.close()

    def sent(self) -> dict[str, int]:
        return {p.source: p.seq - p.dropped for p in self.pubs}


def decided_level_running(agent: AgentProcess) -> bool:
    """The level of the controller's last up/down decision is the one running (or its compile failed)."""
    decided: int | None = None
    for ln in list(agent.lines):
        if "event=tuner_decision" in ln and "action=hold" not in ln:
            decided = int(ln.split(" to=")[1].split()[0])
        elif "event=compile_failed" in ln:
            decided = None
    return decided is None or agent.scrape()["edgeagent_level"] == decided


def wait_level(agent: AgentProcess, pred: Callable[[float], bool], timeout_s: float) -> float:
    """Until the agent's level satisfies ``pred``; returns that level."""
    levels: list[float] = []

    def reached() -> bool:
        levels.append(float(agent.scrape().get("edgeagent_level", 0)))
        return pred(levels[-1])

    wait_until(reached, timeout_s, lambda: f"a level condition (levels seen {sorted(set(levels))})", agent.log, 0.2)
    return levels[-1]


def settle_and_check(agent: AgentProcess, load: Load) -> None:
    """After the load: every frame accounted for, none processed twice, every processed one published."""
    sent = load.sent()
    per = accounting_holds(agent, sent)
    processed = sum(per[s]["processed"] for s in sent)
    try:
        # Results still on their way (a level switch or a busy machine can hold the last ones back):
        # wait for them instead of stopping the subscriber at the first pause.
        wait_until(lambda: len(load.results) >= processed, 30, lambda: f"{processed} results, {len(load.results)} in")
    finally:
        load.close()
    for s, n in sent.items():
        assert per[s]["received"] == n
        seqs = [r["seq"] for r in load.results if r["source"] == s]
        assert len(seqs) == len(set(seqs)), "a frame was processed twice"
    assert len(load.results) == processed  # every processed frame published, once


def test_level_rises_under_loose_sla_and_falls_back_when_a_cpu_hog_starts(start_agent: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[sla]\np99_ms = 400\nwindow_s = 0.5\nmin_frames = 20\nadaptive = true\n")
    agent = start_agent("--config", str(cfg))
    # The default ladder (engine.max_batch = 4) is what runs: batch rungs at the top.
    assert "batch=4" in agent.wait_for("event=ladder")
    with Load(agent) as load:
        wait_level(agent, lambda lv: lv >= 2, 30)  # saturating load, loose SLA: it climbs
        assert any("action=up" in ln for ln in agent.lines)
        # Tighten the SLA to ~2.5x what the top level delivers now, then take the CPU away. The p99 is
        # read from a window that closed after the climb (two more windows, not a fixed sleep).
        seen = agent.scrape()["edgeagent_windows_total"]
        wait_until(lambda: agent.scrape()["edgeagent_windows_total"] >= seen + 2, 30, "two more windows", agent.log)
        p99 = agent.scrape()["window"]["p99"]
        assert p99 > 0, "the last window had no results"
        cfg.write_text(f"[sla]\np99_ms = {max(2.5 * p99, 5):.1f}\nwindow_s = 0.5\nmin_frames = 20\nadaptive = true\n")
        n_lines = len(agent.lines)
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for("event=reloaded", since=n_lines)
        n_lines = len(agent.lines)
        with cpu_hogs(6, 60):
            wait_until(
                lambda: any("action=down" in ln and "SLA" in ln for ln in agent.lines[n_lines:]),
                30,
                "a step down after the hog started",
                agent.log,
            )
    switches = agent.scrape()["edgeagent_level_switches_total"]
    assert switches >= 3
    settle_and_check(agent, load)


def test_tight_sla_keeps_level_zero(start_agent: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    # Tighter than this model can ever do: the controller must not make things worse by adding requests,
    # streams or batch. No frame could make it, so frames are served (and counted over the SLA), not all
    # dropped as "late": a late drop is for a frame that waited too long while a fresh one could still
    # make it.
    cfg.write_text("[sla]\np99_ms = 0.5\nwindow_s = 0.4\nmin_frames = 10\nadaptive = true\n")
    agent = start_agent("--config", str(cfg))
    with Load(agent, cameras=2) as load:
        wait_until(
            lambda: agent.scrape()["edgeagent_sla_violating_windows_total"] >= 4,
            30,
            "4 windows over the SLA",
            agent.log,
        )
        assert agent.scrape()["edgeagent_level"] == 0
    assert not any("action=up" in ln for ln in agent.lines)
    assert any("event=tuner_decision action=hold" in ln and "at level 0" in ln for ln in agent.lines)
    st = agent.scrape()
    assert st["edgeagent_windows_total"] >= 4 and st["edgeagent_sla_violating_windows_total"] >= 4
    settle_and_check(agent, load)
    per = {s: c for s, c in agent.scrape()["sources"].items() if s.startswith("load")}
    assert all(c["over_sla"] == c["processed"] > 0 and c["dropped:late"] == 0 for c in per.values()), per


def test_precision_auto_starts_in_accuracy_mode_and_climbs_out_of_it(start_agent: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[sla]\np99_ms = 400\nwindow_s = 0.5\nmin_frames = 20\nprecision = "auto"\n')
    agent = start_agent("--config", str(cfg))
    assert "0:streams=1 requests=1 batch=1 precision=accuracy" in agent.wait_for("event=ladder")
    with Publisher(agent.listen, source="probe", mode="req", timeout_s=30) as p:
        first = p.send(IMG)
    assert isinstance(first, dict) and first["exec"]["level"] == 0 and first["exec"]["precision"] == "f32"
    with Load(agent) as load:  # saturating, loose SLA: the fast precision is the first rung up
        wait_level(agent, lambda lv: lv >= 1, 30)
    settle_and_check(agent, load)
    assert any("action=up from=0 to=1" in ln for ln in agent.lines)
    assert any(r["exec"]["level"] >= 1 for r in load.results)  # results from the fast-precision rung


def test_frames_that_cannot_make_a_tight_sla_are_dropped_late_answered_and_counted(
    start_agent: Any, tmp_path: Path
) -> None:
    """The real engine under a burst it cannot serve in time: the SLA is set from this machine's job time
    (measured first, never assumed), then 12 sources send one frame each at once, five times. The first
    frames run; a frame whose wait would leave it unable to finish in time is dropped as late and
    answered so, never started; every frame is answered and counted exactly once."""
    from edgeagent.wire import encode_native

    cfg = tmp_path / "agent.toml"
    cfg.write_text("[sla]\np99_ms = 10000\nwindow_s = 5.0\nadaptive = false\n")
    agent = start_agent("--config", str(cfg))
    with Publisher(agent.listen, source="calibrate", mode="req", timeout_s=30) as p:
        totals = sorted(p.send(IMG)["latency_ms"]["total"] for _ in range(7))  # type: ignore[index]
    sla_ms = round(2.5 * totals[3], 3)  # 12 frames at once wait up to 11 jobs: most cannot make it
    cfg.write_text(f"[sla]\np99_ms = {sla_ms}\nwindow_s = 5.0\nadaptive = false\n")
    since = len(agent.lines)
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for("event=reloaded", since=since)
    ctx: zmq.Context[Any] = zmq.Context.instance()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(agent.listen)
    replies: list[dict[str, Any]] = []
    try:
        for burst in range(5):
            for i in range(12):
                d.send_multipart([b"", *encode_native(f"burst{i}", burst, IMG)])
            for _ in range(12):
                assert d.poll(30_000), "a frame was not answered"
                replies.append(json.loads(d.recv_multipart()[-1]))
    finally:
        d.close(0)
    ok = [r for r in replies if r["status"] == "ok"]
    late = [r for r in replies if r.get("reason") == "late"]
    assert len(ok) + len(late) == 60, [r for r in replies if r not in ok and r not in late]
    assert ok and late, (len(ok), len(late))
    per = accounting_holds(agent, {f"burst{i}": 5 for i in range(12)})
    assert sum(per[f"burst{i}"]["processed"] for i in range(12)) == len(ok), per
    counted = agent.frames()
    assert sum(n for (s, o, r), n in counted.items() if s.startswith("burst") and (o, r) == ("dropped", "late")) == len(
        late
    ), counted
    assert any("event=frame_late" in ln and f"sla_ms={sla_ms:g}" in ln for ln in agent.lines)
