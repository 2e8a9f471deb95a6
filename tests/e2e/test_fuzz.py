"""Seeded fuzzing: >= 10,000 malformed or hostile messages mixed with valid frames, every ingest mode."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from typing import Any

import numpy as np
import zmq

from edgeagent.publisher import Publisher
from tests.helpers import AgentProcess, free_port, wait_until

GOOD = np.random.default_rng(13).integers(0, 256, (224, 224, 3), dtype=np.uint8).tobytes()
SOURCES = [f"fz{i}" for i in range(12)]  # a fixed pool: stays under max_sources, so reasons are exact
PER_MODE = 3400


def hostile(rng: random.Random) -> tuple[str, list[bytes]]:
    """One message and the outcome the agent must give it ("valid" or a reject reason)."""
    src = rng.choice(SOURCES)
    kind = rng.randrange(14)
    raw_hdr = {"msg": src, "dtype": "uint8", "shape": [224, 224, 3]}
    if kind == 0:
        if rng.random() < 0.5:
            return "valid", [json.dumps(raw_hdr).encode(), GOOD]
        return "valid", [
            json.dumps(
                {"v": 1, "source": src, "seq": rng.randrange(1 << 30), "dtype": "uint8", "shape": [224, 224, 3]}
            ).encode(),
            GOOD,
        ]
    if kind == 1:
        n = rng.choice([1, 3, 4, 5])
        return "parts", [rng.randbytes(rng.randrange(0, 64)) for _ in range(n)]
    if kind == 2:
        return "size", [json.dumps(raw_hdr).encode(), GOOD[: rng.randrange(0, len(GOOD))]]
    if kind == 3:
        return "size", [json.dumps(raw_hdr).encode(), GOOD + rng.randbytes(rng.randrange(1, 64))]
    if kind == 4:
        dt = rng.choice(["float32", "int16", "uint16", "float64", "<u1x", "object", "bool"])
        return "dtype", [json.dumps({**raw_hdr, "dtype": dt}).encode(), GOOD]
    if kind == 5:
        shape = rng.choice([[224, 224, 2], [224, 224, 5], [224, 224, 3, 1], [224], [0, 224, 3], [20000, 2, 3]])
        return "shape", [json.dumps({**raw_hdr, "shape": shape}).encode(), GOOD]
    if kind == 6:
        big = [rng.randrange(10**5, 10**9), rng.randrange(10**5, 10**9), 3]
        return "oversize", [json.dumps({**raw_hdr, "shape": big}).encode(), rng.randbytes(16)]
    if kind == 7:  # JSON nesting bombs just under the header limit
        depth = rng.randrange(1000, 2000)
        return "json", [b"[" * depth + b"]" * depth, b"x"]
    if kind == 8:
        return "header_size", [b'{"msg": "' + b"A" * rng.randrange(5000, 20000) + b'"}', b"x"]
    if kind == 9:
        return "json", [b"\xff" + rng.randbytes(rng.randrange(1, 200)), GOOD]
    if kind == 10:
        return "jpeg", [json.dumps({"msg": src}).encode(), b"\xff\xd8" + rng.randbytes(rng.randrange(10, 5000))]
    if kind == 11:
        bad = rng.choice(
            [
                {"foo": 1},
                {"msg": ""},
                {"msg": 7},
                {"msg": src, "dtype": "uint8", "shape": "224,224,3"},
                {"v": 1, "source": src, "seq": -5},
                {"v": 9, "source": src},
                {"v": 1, "source": src, "seq": 1, "encoding": "webp"},
            ]
        )
        return "keys", [json.dumps(bad).encode(), GOOD]
    if kind == 12:
        return "json", [rng.choice([b"null", b"42", b'"str"', b"[1,2]", b"{", b"{}}"]), GOOD]
    # Any frame size is accepted: a valid shape whose payload does not match it is "size".
    return "size", [
        json.dumps({**raw_hdr, "shape": [rng.randrange(1, 50), rng.randrange(1, 50), 3]}).encode(),
        rng.randbytes(16),
    ]


def outcome_counts(agent: AgentProcess) -> Counter[str]:
    c: Counter[str] = Counter()
    for (_s, outcome, reason), n in agent.frames().items():
        c[reason if outcome == "rejected" else outcome] += int(n)
    return c


def wait_received(agent: AgentProcess, total: int, timeout_s: float = 120) -> Counter[str]:
    """Until ``total`` messages were received and none is still inside the agent (slot or in flight)."""

    def idle() -> Counter[str] | None:
        c = outcome_counts(agent)
        rejected = sum(v for k, v in c.items() if k not in ("received", "processed", "dropped"))
        out = c["processed"] + c["dropped"] + rejected
        return c if c["received"] >= total and out == c["received"] else None

    return wait_until(idle, timeout_s, lambda: f"{total} received and settled: {outcome_counts(agent)}", agent.log, 0.2)


def served_probe(agent: Any) -> int:
    """A good frame gets a result; returns the frames sent. On a loaded machine a frame can be dropped
    as late (the job-time estimate is within a millisecond of the SLA): then it is answered so, and the
    next one is tried."""
    image = np.frombuffer(GOOD, np.uint8).reshape(224, 224, 3)
    sent = 0
    with Publisher(agent.listen, source="probe", mode="req", timeout_s=10) as probe:

        def served() -> bool:
            nonlocal sent
            sent += 1
            reply = probe.send(image)
            assert isinstance(reply, dict) and reply["status"] in ("ok", "dropped"), reply
            assert reply["status"] == "ok" or reply["reason"] == "late", reply
            return bool(reply["status"] == "ok")

        wait_until(served, 60, "a result for a good frame", agent.log, 0.2)
    return sent


def test_fuzz_every_ingest_mode(start_agent: Any) -> None:
    rng = random.Random(20261124)
    pub_port = free_port()
    agent = start_agent("--connect", f"tcp://127.0.0.1:{pub_port}", "--max-sources", "16")
    ctx = zmq.Context.instance()
    probes = served_probe(agent)
    time.sleep(1.0)
    rss0 = agent.scrape()["edgeagent_process_resident_memory_bytes"]
    expected: Counter[str] = Counter()
    total = probes

    # 1) PULL: a PUSH socket (reliable: blocks at the high-water mark instead of dropping).
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.setsockopt(zmq.SNDTIMEO, 10_000)
    push.connect(agent.pull)
    for _ in range(PER_MODE):
        want, parts = hostile(rng)
        expected[want] += 1
        push.send_multipart(parts)
    total += PER_MODE
    c = wait_received(agent, total)
    assert c["received"] == total, (c, total)

    # 2) ROUTER: a DEALER with many requests in flight; every message must get exactly one reply.
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(agent.listen)
    replies: Counter[str] = Counter()
    for i in range(PER_MODE):
        want, parts = hostile(rng)
        expected[want] += 1
        dealer.send_multipart([b"", *parts])
        while dealer.poll(0):
            _empty, body = dealer.recv_multipart()
            replies[json.loads(body).get("reason", "ok")] += 1
        if i % 200 == 0:
            time.sleep(0.01)
    deadline = time.monotonic() + 60
    while sum(replies.values()) < PER_MODE and time.monotonic() < deadline:
        if dealer.poll(500):
            _empty, body = dealer.recv_multipart()
            replies[json.loads(body).get("reason", "ok")] += 1
    assert sum(replies.values()) == PER_MODE, replies  # no sender left waiting, none answered twice
    total += PER_MODE

    # 3) SUB: the agent connects to our PUB (imagezmq PUB/SUB mode); paced like a real publisher.
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 1000)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(f"tcp://127.0.0.1:{pub_port}")

    def received(source: str) -> int:
        return int(agent.frames().get((source, "received", ""), 0))

    def join_arrived() -> bool:
        pub.send_multipart([json.dumps({"msg": "join", "dtype": "uint8", "shape": [224, 224, 3]}).encode(), GOOD])
        return received("join") > 0

    # Slow joiner: valid frames until one arrives. More may still be on their way; a marker sent after
    # them arrives after them (one connection keeps its order), so once it is in, the count is final.
    wait_until(join_arrived, 30, "the agent's SUB socket to join our PUB", agent.log, 0.1)
    pub.send_multipart([json.dumps({"msg": "join-end", "dtype": "uint8", "shape": [224, 224, 3]}).encode(), GOOD])
    wait_until(lambda: received("join-end") == 1, 30, "the end-of-join marker", agent.log)
    join_count = received("join") + 1  # and the marker
    sub_sent = 0
    for i in range(PER_MODE):
        want, parts = hostile(rng)
        expected[want] += 1
        pub.send_multipart(parts)
        sub_sent += 1
        if i % 25 == 0:
            time.sleep(0.005)
    total += sub_sent + join_count
    c = wait_received(agent, total)

    # Verdicts: no crash, every message classified under its expected reason, accounting exact.
    assert agent.proc.poll() is None
    assert c["received"] == total, (c["received"], total)
    for reason, n in expected.items():
        if reason != "valid":
            assert c[reason] == n, (reason, c[reason], n)
    valid_seen = expected["valid"] + probes + join_count
    assert c["processed"] + c["dropped"] == valid_seen
    assert c["received"] == c["processed"] + c["dropped"] + sum(expected[r] for r in expected if r != "valid")
    assert sum(expected.values()) >= 10_000
    # Still healthy and answering, memory back near its baseline.
    served_probe(agent)
    time.sleep(1.0)
    rss1 = agent.scrape()["edgeagent_process_resident_memory_bytes"]
    assert rss1 - rss0 < 32 * 2**20, (rss0, rss1)
    for s in (push, dealer, pub):
        s.close()
