"""End to end: the daemon as a subprocess, real loopback sockets, unmodified imagezmq senders."""

from __future__ import annotations

import json
import time
from typing import Any

import imagezmq
import numpy as np
import pytest
import simplejpeg
import zmq

from edgeagent.publisher import Publisher
from tests.helpers import Result, accounting_holds, free_port, poll_result, recv_result, subscriber, wait_until

IMG = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)


def test_imagezmq_reqrep_raw_and_jpeg(start_agent: Any) -> None:
    agent = start_agent("--postprocess", "topk")
    sub = subscriber(agent)
    sender = imagezmq.ImageSender(connect_to=agent.listen)  # REQ/REP, imagezmq's default
    try:
        replies = [json.loads(sender.send_image("rpi-cam", IMG)) for _ in range(3)]
        assert [r["status"] for r in replies] == ["ok"] * 3
        assert [r["seq"] for r in replies] == [0, 1, 2]
        r = replies[-1]
        assert r["source"] == "rpi-cam" and r["exec"]["streams"] == 1 and r["exec"]["requests"] == 1
        assert 0 < r["latency_ms"]["inference"] <= r["latency_ms"]["total"]
        assert len(r["topk"]) == 5 and r["topk"][0][1] >= r["topk"][-1][1]
        jpg = simplejpeg.encode_jpeg(IMG, quality=90, colorspace="BGR")
        rj = json.loads(sender.send_jpg("rpi-jpeg", jpg))
        assert rj["status"] == "ok" and rj["source"] == "rpi-jpeg"
        # The published raw output is the same tensor the reply summarises.
        topic, header, tensors = recv_result(sub)
        assert topic == "rpi-cam" and header["seq"] == 0
        probs = np.frombuffer(tensors[0], np.float32).reshape(header["outputs"][0]["shape"])
        assert probs.shape == (1, 1000) and abs(float(probs.sum()) - 1.0) < 1e-3
        assert int(probs.argmax()) == replies[0]["topk"][0][0]
    finally:
        sender.close()
    per = accounting_holds(agent)
    assert per["rpi-cam"]["processed"] == 3 and per["rpi-jpeg"]["processed"] == 1


def test_imagezmq_pubsub_mode(start_agent: Any) -> None:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    agent = start_agent("--connect", endpoint)
    sub = subscriber(agent, b"pub-cam")
    sender = imagezmq.ImageSender(connect_to=endpoint, REQ_REP=False)  # binds a PUB socket
    try:

        def result() -> Result | None:
            sender.send_image("pub-cam", IMG)  # no reply in PUB/SUB mode; resend until it is joined
            return poll_result(sub, 0.05)

        got = wait_until(result, 30, "a result from the imagezmq PUB sender", agent.log, 0)
        assert got[0] == "pub-cam" and got[1]["status"] == "ok"
    finally:
        sender.close()
    # Waits until the frames still on their way are in and out of the agent, then checks the identity.
    assert accounting_holds(agent)["pub-cam"]["processed"] >= 1


def test_native_push_publisher_and_result_header(start_agent: Any) -> None:
    agent = start_agent()
    sub = subscriber(agent)
    with Publisher(agent.pull, source="door", mode="push") as pub:
        pub.send(IMG)
        topic, header, tensors = recv_result(sub)
    assert topic == "door" and header["seq"] == 0 and header["status"] == "ok"
    assert set(header["latency_ms"]) == {"queue", "inference", "total"}
    assert header["age_ms"] >= 0  # native frames carry the sender's timestamp
    assert header["outputs"] == [{"name": "probabilities", "dtype": "float32", "shape": [1, 1000]}]
    assert len(tensors) == 1 and len(tensors[0]) == 4000


def test_native_req_publisher_gets_results(start_agent: Any) -> None:
    agent = start_agent("--reply", "ok")
    with Publisher(agent.listen, source="req-cam", mode="req", timeout_s=10) as pub:
        replies = [pub.send(IMG) for _ in range(5)]
    assert replies == [b"OK"] * 5


def test_several_sources_freshness_fairness_and_exact_accounting(start_agent: Any) -> None:
    agent = start_agent()
    sent: dict[str, int] = {}
    pubs = [Publisher(agent.pull, source=f"cam{i}", mode="push") for i in range(4)]
    try:
        # An overload: 4 sources in a fixed phase (same order every round), each far above what the agent
        # can serve, for about 2 s. The agent keeps only the newest frame of each source.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for p in pubs:
                p.send(IMG)
            time.sleep(0.002)
        for p in pubs:
            sent[p.source] = p.seq - p.dropped
    finally:
        for p in pubs:
            p.close()
    per_source = accounting_holds(agent, sent)
    for s, n in sent.items():
        assert per_source[s]["received"] == n  # nothing lost in transit
    # Fair shares whatever the phase: oldest-first dispatch used to serve only the first camera of a round.
    served = [per_source[s]["processed"] for s in sent]
    assert min(served) >= 1 and max(served) <= 1.5 * min(served) + 2, served
    total_dropped = sum(per_source[s]["dropped"] for s in sent)
    assert total_dropped > 0  # a flood cannot all be processed: stale frames were dropped, not queued
    # Replaced by a newer frame (stale), or unable to make the SLA any more when their turn came (late).
    reasons = {r for (_s, o, r), _v in agent.frames().items() if o == "dropped"}
    assert "stale" in reasons and reasons <= {"stale", "late"}, reasons


BAD_MESSAGES: list[tuple[str, list[bytes]]] = [
    ("parts", [b'{"msg": "bad"}']),
    ("parts", [b'{"msg": "bad"}', b"x", b"y"]),
    ("json", [b"{nope", IMG.tobytes()]),
    ("json", [b"\xff\xfe", IMG.tobytes()]),
    ("keys", [b'{"dtype": "uint8", "shape": [224, 224, 3]}', IMG.tobytes()]),
    ("dtype", [b'{"msg": "bad", "dtype": "float32", "shape": [224, 224, 3]}', IMG.tobytes() * 4]),
    ("shape", [b'{"msg": "bad", "dtype": "uint8", "shape": [100, 100, 5]}', bytes(50000)]),
    ("size", [b'{"msg": "bad", "dtype": "uint8", "shape": [224, 224, 3]}', IMG.tobytes()[:-7]]),
    ("oversize", [b'{"msg": "bad", "dtype": "uint8", "shape": [90000, 90000, 3]}', b"x"]),
    ("jpeg", [b'{"msg": "bad"}', b"\xff\xd8\xff garbage"]),
    ("header_size", [b'{"msg": "' + b"a" * 5000 + b'"}', b"x"]),
]


def test_bad_input_is_answered_counted_and_harmless(start_agent: Any) -> None:
    agent = start_agent()
    ctx = zmq.Context.instance()
    good = Publisher(agent.listen, source="good", mode="req", timeout_s=10)
    for reason, parts in BAD_MESSAGES:
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(agent.listen)
        req.send_multipart(parts)
        assert req.poll(10_000), f"no reply for {reason}"
        reply = json.loads(req.recv())
        assert reply["status"] == "rejected" and reply["reason"] == reason, (reason, reply)
        req.close()
        # Another source is unaffected between every bad message.
        ok = good.send(IMG)
        assert isinstance(ok, dict) and ok["status"] == "ok"
    good.close()
    # A processed frame is counted just after its reply goes out: wait for the agent to be idle.
    accounting_holds(agent, {"good": len(BAD_MESSAGES)})
    frames = agent.frames()
    rejected = {r: v for (s, o, r), v in frames.items() if o == "rejected"}
    for reason, _ in BAD_MESSAGES:
        assert rejected.get(reason, 0) >= 1, (reason, rejected)
    assert sum(rejected.values()) == len(BAD_MESSAGES)
    assert frames[("good", "processed", "")] == len(BAD_MESSAGES)
    assert agent.proc.poll() is None
    agent.wait_for("event=frame_rejected", "reason=dtype")


def test_source_limit(start_agent: Any) -> None:
    agent = start_agent("--max-sources", "2")
    replies = []
    for name in ("a", "b", "c"):
        with Publisher(agent.listen, source=name, mode="req", timeout_s=10) as p:
            replies.append(p.send(IMG))
    assert [r["status"] for r in replies] == ["ok", "ok", "rejected"]  # type: ignore[index]
    assert replies[2]["reason"] == "sources"  # type: ignore[index]
    assert ("_overflow", "rejected", "sources") in agent.frames()


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_stop_signal_exits_zero(start_agent: Any, signame: str) -> None:
    import signal

    agent = start_agent()
    with Publisher(agent.listen, source="s", mode="req", timeout_s=10) as p:
        assert isinstance(p.send(IMG), dict)
    agent.proc.send_signal(getattr(signal, signame))
    assert agent.proc.wait(30) == 0  # the agent bounds its own shutdown to ~5 s; this only ends a hang
    agent.wait_for("event=stopped")
    assert "received=1 processed=1 dropped=0 rejected=0" in agent.wait_for("event=stopped")


def test_replies_go_back_through_the_router_the_request_came_in_on(start_agent: Any) -> None:
    second = f"tcp://127.0.0.1:{free_port()}"
    agent = start_agent("--listen", second)  # two ROUTERs: the fixture's and this one
    for endpoint in (agent.listen, second):
        with Publisher(endpoint, source="two-routers", mode="req", timeout_s=10) as p:
            reply = p.send(IMG)
        assert isinstance(reply, dict) and reply["status"] == "ok", endpoint
