"""The adaptive controller end to end: real engine, real sockets, real level switches and a real hog."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edgeagent.publisher import Publisher
from tests.helpers import HOG, AgentProcess, accounting_holds, wait_until

IMG = np.random.default_rng(9).integers(0, 256, (224, 224, 3), dtype=np.uint8)


class Load:
    """N native PUSH cameras sending as fast as the agent drains them (saturating), bounded in time."""

    def __init__(self, agent: AgentProcess, cameras: int = 3, fps: float = 400.0) -> None:
        self.pubs = [Publisher(agent.pull, source=f"load{i}", mode="push") for i in range(cameras)]
        self.fps = fps
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.results: list[dict[str, Any]] = []
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(agent.results)
        self._r = threading.Thread(target=self._recv, daemon=True)

    def __enter__(self) -> Load:
        time.sleep(0.3)
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
        while not self._stop.is_set() or self.sub.poll(300):
            if self.sub.poll(100):
                _t, header, *_ = self.sub.recv_multipart()
                self.results.append(json.loads(header))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)
        self._r.join(10)
        for p in self.pubs:
            p.close()
        self.sub.close()

    def sent(self) -> dict[str, int]:
        return {p.source: p.seq - p.dropped for p in self.pubs}


def wait_level(agent: AgentProcess, pred: Callable[[float], bool], timeout_s: float) -> float:
    """Until the agent's level satisfies ``pred``; returns that level."""
    levels: list[float] = []

    def reached() -> bool:
        levels.append(float(agent.scrape().get("edgeagent_level", 0)))
        return pred(levels[-1])

    wait_until(reached, timeout_s, lambda: f"a level condition (levels seen {sorted(set(levels))})", agent.log, 0.2)
    return levels[-1]


def settle_and_check(agent: AgentProcess, load: Load) -> None:
    """After the load: every frame accounted for, none processed twice."""
    sent = load.sent()
    per = accounting_holds(agent, sent)
    for s, n in sent.items():
        assert per[s]["received"] == n
        seqs = [r["seq"] for r in load.results if r["source"] == s]
        assert len(seqs) == len(set(seqs)), "a frame was processed twice"
    assert len(load.results) == sum(per[s]["processed"] for s in sent)  # every processed frame published


def test_level_rises_under_loose_sla_and_falls_back_when_a_cpu_hog_starts(start_agent: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[sla]\np99_ms = 400\nwindow_s = 0.5\nmin_frames = 20\nadaptive = true\n[engine]\nmax_batch = 1\n")
    agent = start_agent("--config", str(cfg))
    with Load(agent) as load:
        wait_level(agent, lambda lv: lv >= 2, 30)  # saturating load, loose SLA: it climbs
        assert any("action=up" in ln for ln in agent.lines)
        # Tighten the SLA to ~2.5x what the top level delivers now, then take the CPU away.
        time.sleep(1.5)
        p99 = agent.scrape()["window"]["0.99"]
        cfg.write_text(
            f"[sla]\np99_ms = {max(2.5 * p99, 5):.1f}\nwindow_s = 0.5\nmin_frames = 20\nadaptive = true\n"
            "[engine]\nmax_batch = 1\n"
        )
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for("event=reloaded")
        n_lines = len(agent.lines)
        hogs = [subprocess.Popen([sys.executable, "-c", HOG, "8"]) for _ in range(6)]
        try:
            down = None
            deadline = time.monotonic() + 8
            while down is None and time.monotonic() < deadline:
                down = next((ln for ln in agent.lines[n_lines:] if "action=down" in ln and "SLA" in ln), None)
                time.sleep(0.1)
            assert down is not None, "no step down after the hog started:\n" + agent.log()
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    switches = agent.scrape()["edgeagent_level_switches_total"]
    assert switches >= 3
    settle_and_check(agent, load)


def test_tight_sla_keeps_level_zero(start_agent: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    # Tighter than this model can ever do: every window breaks it at level 0 and the controller
    # must not make things worse by adding requests, streams or batch.
    cfg.write_text("[sla]\np99_ms = 0.5\nwindow_s = 0.4\nmin_frames = 10\nadaptive = true\n")
    agent = start_agent("--config", str(cfg))
    with Load(agent, cameras=2) as load:
        time.sleep(4)
        assert agent.scrape()["edgeagent_level"] == 0
    assert not any("action=up" in ln for ln in agent.lines)
    assert any("event=tuner_decision action=hold" in ln and "at level 0" in ln for ln in agent.lines)
    st = agent.scrape()
    assert st["edgeagent_windows_total"] >= 4 and st["edgeagent_sla_violating_windows_total"] >= 4
    settle_and_check(agent, load)
