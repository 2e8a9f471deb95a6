"""``edgeagent bench hotpath``: the agent's own cost per frame, without OpenVINO.

The real I/O loop (:class:`~edgeagent.io.loop.IOLoop`: sockets, parsing, slots, dispatch, replies,
results, accounting, window meter, Prometheus histograms) runs on its own thread with an engine that
finishes every job at once with a fixed output (a 1000-class classifier's), so what is measured is
everything the agent adds around an inference. A REQ client in another process sends imagezmq frames
back to back over ``ipc://`` (hot: no idle gap), and the loop thread's CPU time divided by the frames it
processed is the agent's own Python (and libzmq) per frame. Reported per round, median and spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edgeagent.accounting import Accounting
from edgeagent.config import Config
from edgeagent.control import Controller
from edgeagent.engine import Completion, split_outputs
from edgeagent.io.loop import IOLoop
from edgeagent.io.sockets import Sockets, recv_message, send_parts
from edgeagent.models import ModelInfo
from edgeagent.tuner import ExecLevel
from edgeagent.wire import Frame, encode_imagezmq


@dataclasses.dataclass
class _Compiled:
    level: ExecLevel
    info: ModelInfo
    sizes: dict[Any, Any] = dataclasses.field(default_factory=dict)
    uid: int = 1

    def describe(self) -> dict[str, Any]:
        return {"streams": 1, "requests": 1, "batch": 1, "threads": 2, "precision": "f32"}


class InstantEngine:
    """The engine's owner-thread interface; every job is done as soon as it starts."""

    def __init__(self) -> None:
        self.active: _Compiled | None = None
        self.idle: list[int] = []
        self._jobs: dict[int, tuple[list[Frame], int]] = {}
        self._on_done: Callable[[int], None] = lambda job: None
        self.output = np.random.default_rng(0).random((1, 1000), np.float32)

    batch = 1
    # Like the real engine at one request on 2 CPUs: the loop starts each job and waits for it (no
    # callback), here done at once. (On a single CPU the loop would run it itself: run().)
    waits = True
    inline = False

    def activate(self, compiled: _Compiled, on_done: Callable[[int], None]) -> None:
        self.active, self.idle, self._on_done = compiled, [0], on_done

    def run(self, frames: list[Frame]) -> int:
        job = self.idle.pop()
        self._jobs[job] = (frames, time.monotonic_ns())
        return job

    def submit(self, frames: list[Frame]) -> None:  # the first jobs, while their time is unknown
        self.run(frames)

    def wait(self, timeout_ms: int) -> int | None:
        return next(iter(self._jobs))

    def complete(self, job: int) -> Completion:
        frames, submit_ns = self._jobs.pop(job)
        self.idle.append(job)
        return Completion(frames, split_outputs([self.output], 1, 1), submit_ns, 0.01)

    def failed_jobs(self) -> list[Completion]:
        return []

    def has_size(self, key: tuple[int, int, str]) -> bool:
        return True

    def size_keys(self) -> tuple[tuple[int, int, str], ...]:
        return ()


def _client(endpoint: str, conn: Any) -> None:
    """The camera, in its own process (no GIL shared with the loop): one round per command."""
    ctx: zmq.Context[Any] = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(endpoint)
    parts = encode_imagezmq("hot-cam", np.zeros((224, 224, 3), np.uint8))
    while True:
        n = conn.recv()
        if n == 0:
            break
        ok = True
        for _ in range(n):
            req.send_multipart(parts, copy=False)
            if not req.poll(10_000):
                ok = False
                break
            ok = ok and json.loads(req.recv()).get("status") == "ok"
        conn.send(ok)
    req.close(0)
    ctx.term()


def _floor(router: zmq.Socket[Any], pub: zmq.Socket[Any], body: bytes, output: np.ndarray, stop: Any) -> None:
    """The least any ZeroMQ hub does per frame, with the agent's own socket calls: wait in a poll, receive
    the request, reply, publish the result (``body``: a result header the agent sent, and the tensor)."""
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    while not stop.is_set():
        if not poller.poll(100):
            continue
        parts = recv_message(router)  # one per poll: its camera sends the next only after the reply
        if parts is not None:
            Sockets.reply(router, [parts[0].bytes, b""], body)
            send_parts(pub, [b"hot-cam", body, output])


def _thread_cpu_ns(ident: int | None) -> int:
    """Another thread's CPU time so far (its POSIX CPU-time clock)."""
    assert ident is not None
    return time.clock_gettime_ns(time.pthread_getcpuclockid(ident))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edgeagent.metrics import Metrics

    ctx: zmq.Context[Any] = zmq.Context()
    tmp = tempfile.gettempdir()
    endpoint = f"ipc://{tmp}/edgeagent-hotpath-{os.getpid()}"
    floor_endpoint = f"ipc://{tmp}/edgeagent-hotpath-floor-{os.getpid()}"
    base = Config()
    cfg = dataclasses.replace(
        base,
        ingest=dataclasses.replace(base.ingest, listen=(endpoint,), pull=(), connect=()),
        results=dataclasses.replace(base.results, publish="inproc://hot-results"),  # defaults: no top-k
        sla=dataclasses.replace(base.sla, adaptive=False),
    )
    info = ModelInfo(
        "bench", "bench", "input", (1, 3, 224, 224), (224, 224), True, None, None, (("p", "f32", (1, 1000)),)
    )
    level = ExecLevel(1, 1, 1)
    compiled = _Compiled(level, info)
    sockets = Sockets(cfg, cfg.ingest.max_message_bytes, ctx=ctx)
    sockets.bind()
    accounting = Accounting(cfg.ingest.max_sources)
    metrics = Metrics(cfg.sla.p99_ms, lambda: {})
    engine = InstantEngine()
    loop = IOLoop(
        cfg,
        sockets,
        engine,  # type: ignore[arg-type]
        compiled,  # type: ignore[arg-type]
        0,
        accounting,
        Controller(cfg.sla, [level], 0, interference=lambda: 0.0),
        lambda *_: None,
        on_latency=metrics.observe,
    )
    subs = []
    for ep in ("inproc://hot-results", "inproc://hot-floor-results"):
        sub = ctx.socket(zmq.SUB)  # a subscriber each, so results are really sent
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.LINGER, 0)
        subs.append((sub, ep))
    floor_router = ctx.socket(zmq.ROUTER)
    floor_router.setsockopt(zmq.LINGER, 0)
    floor_router.bind(floor_endpoint)
    floor_pub = ctx.socket(zmq.PUB)
    floor_pub.setsockopt(zmq.LINGER, 0)
    floor_pub.bind("inproc://hot-floor-results")
    for sub, ep in subs:
        sub.connect(ep)
    floor_stop = threading.Event()
    loop.start()
    spawn = mp.get_context("spawn")
    pipes, clients = [], []
    for ep in (endpoint, floor_endpoint):
        here, there = spawn.Pipe()
        client = spawn.Process(target=_client, args=(ep, there), daemon=True)
        client.start()
        pipes.append(here)
        clients.append(client)
    drained = [0, 0]
    agent_body: list[bytes] = []

    def drain() -> None:
        for i, (sub, _ep) in enumerate(subs):
            while sub.poll(0):
                parts = sub.recv_multipart()
                drained[i] += 1
                if i == 0 and not agent_body:
                    agent_body.append(parts[1])

    def one_round(i: int, ident: int | None) -> float:
        cpu0 = _thread_cpu_ns(ident)
        pipes[i].send(args.per_round)
        while not pipes[i].poll(0.05):
            drain()
        if not pipes[i].recv():
            raise RuntimeError(f"{('the agent', 'the floor loop')[i]} did not answer every frame")
        cpu_ns = _thread_cpu_ns(ident) - cpu0
        drain()
        return float(cpu_ns / args.per_round / 1000)

    agent_us: list[float] = []
    floor_us: list[float] = []
    floor_thread: threading.Thread | None = None
    try:
        assert loop._thread is not None
        for r in range(args.rounds + 1):
            if r == 1:  # the floor replies and publishes a result header the agent sent in round 0
                floor_thread = threading.Thread(
                    target=_floor, args=(floor_router, floor_pub, agent_body[0], engine.output, floor_stop), daemon=True
                )
                floor_thread.start()
            a = one_round(0, loop._thread.ident)
            f = one_round(1, floor_thread.ident) if floor_thread is not None else 0.0
            if r > 0:  # round 0 warms the agent up
                agent_us.append(a)
                floor_us.append(f)
        # The last results may trail the last replies (each is published after its reply).
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and drained != [
            (args.rounds + 1) * args.per_round,
            args.rounds * args.per_round,
        ]:
            drain()
            time.sleep(0.005)
    finally:
        for here in pipes:
            here.send(0)
        for client in clients:
            client.join(10)
        floor_stop.set()
        if floor_thread is not None:
            floor_thread.join(5)
        loop.request_stop()
        loop.join(5)
        for sock in (floor_router, floor_pub, *(sub for sub, _ep in subs)):
            sock.close(0)
        ctx.term()
    own = [a - f for a, f in zip(agent_us, floor_us)]
    return {
        "rounds": args.rounds,
        "per_round": args.per_round,
        "us_per_frame": round(statistics.median(agent_us), 1),
        "us_per_frame_range": [round(min(agent_us), 1), round(max(agent_us), 1)],
        "floor_us_per_frame": round(statistics.median(floor_us), 1),
        "floor_us_per_frame_range": [round(min(floor_us), 1), round(max(floor_us), 1)],
        "own_us_per_frame": round(statistics.median(own), 1),
        "own_us_per_frame_range": [round(min(own), 1), round(max(own), 1)],
        "results_received": drained[0],
        "floor_results_received": drained[1],
    }


def main(args: argparse.Namespace) -> int:
    r = run(args)
    lo, hi = r["us_per_frame_range"]
    flo, fhi = r["floor_us_per_frame_range"]
    olo, ohi = r["own_us_per_frame_range"]
    print(
        f"bench hotpath: CPU per frame of the thread that serves a REQ camera back to back (224x224 imagezmq "
        f"from another process; {r['rounds']} rounds x {r['per_round']} frames, the two peers alternating)\n"
        f"  agent I/O loop (engine that finishes at once; default JSON reply, result published with its "
        f"tensor, accounting, histograms): {r['us_per_frame']:.1f} us (rounds {lo:.1f}..{hi:.1f})\n"
        f"  ZeroMQ floor (poll, receive, reply, publish; nothing else): {r['floor_us_per_frame']:.1f} us "
        f"(rounds {flo:.1f}..{fhi:.1f})\n"
        f"  the agent's own work (agent - floor, per round): {r['own_us_per_frame']:.1f} us "
        f"(rounds {olo:.1f}..{ohi:.1f})"
    )
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


def add_parser(bsub: Any) -> None:
    p = bsub.add_parser("hotpath", help="the agent's own cost per frame (no OpenVINO), back to back")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=2000)
    p.add_argument("--json", type=Path, help="write results as JSON here")
