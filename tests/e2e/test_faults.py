"""Faults: publishers killed and restarted, the agent restarted under REQ senders, a broken cache."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.publisher import Publisher
from tests.helpers import ROOT, AgentProcess, edgeagent_cmd, free_port, wait_until

IMG = np.random.default_rng(17).integers(0, 256, (224, 224, 3), dtype=np.uint8)


def publish_cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        edgeagent_cmd("publish", "--size", "224x224", "--fps", "40", "--count", "2000", "--duration-s", "60", *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )


def processed(agent: AgentProcess, source: str) -> float:
    return agent.frames().get((source, "processed", ""), 0.0)


def wait_more(agent: AgentProcess, source: str, than: float, timeout_s: float = 30) -> float:
    """Until ``source`` has more than ``than`` frames processed; returns the count."""

    def beyond() -> float | None:
        n = processed(agent, source)
        return n if n > than else None  # than >= 0, so a count beyond it is truthy

    return wait_until(beyond, timeout_s, f"{source} processed beyond {than}", agent.log, 0.1)


def test_publishers_killed_mid_stream_are_picked_up_again(start_agent: Any) -> None:
    pub_port = free_port()
    agent = start_agent("--connect", f"tcp://127.0.0.1:{pub_port}")
    steady = publish_cli("--endpoint", agent.pull, "--source", "steady")
    procs = {
        "push": lambda: publish_cli("--endpoint", agent.pull, "--source", "pusher"),
        "pub": lambda: publish_cli(
            "--endpoint", f"tcp://127.0.0.1:{pub_port}", "--mode", "pub", "--format", "imagezmq", "--source", "pubber"
        ),
        "req": lambda: publish_cli(
            "--endpoint", agent.listen, "--mode", "req", "--format", "imagezmq", "--source", "requester"
        ),
    }
    names = {"push": "pusher", "pub": "pubber", "req": "requester"}
    running = {k: start() for k, start in procs.items()}
    try:
        for k in running:
            wait_more(agent, names[k], 0)
        for p in running.values():
            p.send_signal(signal.SIGKILL)  # mid-stream, mid-request for the REQ one
            p.wait(10)
        before_steady = processed(agent, "steady")
        assert wait_more(agent, "steady", before_steady) > before_steady  # the others keep being served
        counts = {k: processed(agent, names[k]) for k in running}
        running = {k: start() for k, start in procs.items()}  # same endpoints, no agent restart
        for k in running:
            wait_more(agent, names[k], counts[k])
        assert agent.proc.poll() is None
    finally:
        for p in [steady, *running.values()]:
            p.kill()
            p.wait(10)


def test_agent_restart_under_a_req_sender_with_timeout_and_reconnect(cache_dir: Path) -> None:
    agent = AgentProcess([], cache_dir)
    agent.wait_for("event=listening")
    listen, extra = agent.listen, ["--listen", agent.listen]
    with Publisher(listen, source="warm-up", mode="req", timeout_s=30) as warm:
        assert isinstance(warm.send(IMG), dict)  # serving: so 1.5 s is ample for the next reply
    pub = Publisher(listen, source="resilient", mode="req", timeout_s=1.5)
    try:
        assert isinstance(pub.send(IMG), dict)
        agent.proc.send_signal(signal.SIGKILL)  # the agent dies; the next request is lost with it
        agent.proc.wait(10)
        assert pub.send(IMG) is None and pub.timeouts == 1  # plain imagezmq would block here for ever
        # A new agent on the same endpoint: the publisher's fresh socket reconnects by itself.
        cmd_agent = subprocess.Popen(
            edgeagent_cmd("run", *extra, "--pull", "", "--results", "", "--metrics", "", "--cache-dir", str(cache_dir)),
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Each try times out after 1.5 s until the new agent answers; then the reply must be good.
            reply = wait_until(lambda: pub.send(IMG), 60, "a reply from the restarted agent", interval_s=0)
            assert isinstance(reply, dict) and reply["status"] == "ok"
        finally:
            cmd_agent.terminate()
            assert cmd_agent.wait(30) == 0
    finally:
        pub.close()
        agent.stop()


def test_unwritable_cache_falls_back_and_keeps_serving(start_agent: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    agent = start_agent("--cache-dir", str(blocker / "cache"))
    assert any("event=cache_disabled" in ln for ln in agent.lines)
    assert any("event=builtin_model_in_memory" in ln for ln in agent.lines)
    with Publisher(agent.listen, source="c", mode="req", timeout_s=10) as p:
        assert p.send(IMG)["status"] == "ok"  # type: ignore[index]
