"""The info and publish commands, the line that says the agent is ready, and the CPU plan, as a user
runs them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.engine import CpuPlan, split_cpus
from edgeagent.publisher import Publisher
from tests.helpers import run_cli


def test_info_describes_model_and_device(cache_dir: Path) -> None:
    r = run_cli("info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["input"]["model_shape"] == [1, 3, 224, 224]
    assert info["input"]["frame"] == {"width": 224, "height": 224, "dtype": "uint8", "layout": "HWC", "colour": "BGR"}
    assert info["outputs"] == [{"name": "probabilities", "dtype": "f32", "shape": [1, 1000]}]
    assert info["device"]["throughput_streams"] >= 1 and info["compiled_level0"]["streams"] == 1
    text = run_cli("info", "--frame-size", "640x480")
    assert text.returncode == 0 and "640x480" in text.stdout and "level 0" in text.stdout


def test_publish_req_prints_replies_and_round_trips(start_agent: Any) -> None:
    agent = start_agent()
    r = run_cli(
        "publish",
        "--endpoint",
        agent.listen,
        "--mode",
        "req",
        "--format",
        "imagezmq",
        "--count",
        "12",
        "--fps",
        "100",
        "--sources",
        "2",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["sent"] == 24 and summary["replies"] == {"ok": 24} and summary["timeouts"] == 0
    assert summary["round_trip_ms"]["p50"] > 0
    jpeg = run_cli("publish", "--endpoint", agent.pull, "--jpeg", "--count", "5", "--fps", "50", "--json")
    assert jpeg.returncode == 0 and json.loads(jpeg.stdout)["sent"] == 5


def test_publish_from_an_image_folder(start_agent: Any, tmp_path: Path) -> None:
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (320, 200), (i * 80, 10, 200)).save(tmp_path / f"{i}.png")
    agent = start_agent()
    r = run_cli(
        "publish",
        "--endpoint",
        agent.listen,
        "--mode",
        "req",
        "--input",
        str(tmp_path),
        "--count",
        "4",
        "--fps",
        "50",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["replies"] == {"ok": 4}  # resized to the 224x224 the agent expects


def test_ready_line_says_where_to_send_frames(start_agent: Any) -> None:
    """When the agent is ready, one line of plain prose in the log says where to send frames, where
    results and metrics are, the model and the SLA; a frame sent where it says gets an answer. With
    --log-format json every line stays JSON, that one as "msg"."""
    agent = start_agent()
    line = agent.wait_for("Ready. ")
    text = line.split(" logger=edgeagent.agent ", 1)[1]
    assert text.startswith("Ready. ") and "event=" not in text, text
    for part in (
        f"Ready. Send frames to {agent.listen} (imagezmq REQ/REP) or {agent.pull} (native PUSH);",
        f"results: {agent.results} (SUB",
        f"metrics: {agent.metrics_url}",
        "model: built-in (synthetic weights), 224x224; frames of any size resized in the graph",
        "SLA: p99 within 30 ms (adaptive)",  # adaptation is the default
    ):
        assert part in text, (part, text)
    m = re.search(r"Send frames to (\S+) \(imagezmq REQ/REP\)", text)
    assert m is not None
    with Publisher(m[1], source="first-frame", mode="req", fmt="imagezmq", timeout_s=30) as p:
        reply = p.send(np.zeros((224, 224, 3), np.uint8))
    assert isinstance(reply, dict) and reply["status"] == "ok", reply

    agent = start_agent("--log-format", "json", "--static", "--sla-p99-ms", "45", wait=False)
    line = agent.wait_for('"msg": "Ready. ')
    assert "SLA: p99 within 45 ms (fixed level)" in json.loads(line)["msg"]
    assert all(json.loads(ln) for ln in agent.lines), agent.log()


def test_cpu_plan_keeps_a_cpu_for_sockets_from_three_up() -> None:
    assert split_cpus((0,)) == ((0,), (0,))
    assert split_cpus((0, 1)) == ((0, 1), (0,))  # 2 CPUs: inference needs both; the I/O thread on the first
    assert split_cpus((2, 5, 7)) == ((5, 7), (2,))
    assert split_cpus(tuple(range(16))) == (tuple(range(1, 16)), (0,))
    plan = CpuPlan.make(None)  # this machine's
    assert plan.io == plan.inference[:1] if len(plan.all) <= 2 else plan.io == plan.all[:1]
    assert plan.zmq == (plan.all[1:] if len(plan.all) == 2 else ())


def test_the_running_agent_pins_its_io_thread_and_zeromqs_thread_as_planned(start_agent: Any) -> None:
    """Read back from the running agent's threads (/proc): the I/O thread on the plan's I/O CPU; on 2 CPUs,
    ZeroMQ's background thread on the other one; and the plan in the start-up log."""
    plan = CpuPlan.make(None)
    agent = start_agent("--static")
    line = agent.wait_for("event=exec_config")
    assert f"io_cpus={','.join(map(str, plan.io))} " in line, line
    assert f"zmq_cpus={','.join(map(str, plan.zmq)) or 'any'}" in line, line
    tasks = Path(f"/proc/{agent.proc.pid}/task")
    allowed = {}
    for t in tasks.iterdir():
        try:
            name = (t / "comm").read_text().strip()
            cpus = next(
                ln.split()[1] for ln in (t / "status").read_text().splitlines() if ln.startswith("Cpus_allowed_list")
            )
        except (OSError, StopIteration):
            continue
        allowed.setdefault(name, set()).add(cpus)
    ours = set().union(*(cpus for name, cpus in allowed.items() if not name.startswith("ZMQbg")))
    assert str(plan.io[0]) in ours, allowed  # the I/O thread (Python threads carry the interpreter's name)
    if plan.zmq:
        assert allowed.get("ZMQbg/IO/0") == {str(plan.zmq[0])}, allowed
