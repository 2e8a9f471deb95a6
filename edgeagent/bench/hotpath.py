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
from edgeagent.io.sockets import Sockets
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
        self._output = np.random.default_rng(0).random((1, 1000), np.float32)

    batch = 1

    def activate(self, compiled: _Compiled, on_done: Callable[[int], None]) -> None:
        self.active, self.idle, self._on_done = compiled, [0], on_done

    def submit(self, frames: list[Frame]) -> None:
        job = self.idle.pop()
        self._jobs[job] = (frames, time.monotonic_ns())
        self._on_done(job)

    def complete(self, job: int) -> Completion:
        frames, submit_ns = self._jobs.pop(job)
        self.idle.append(job)
        return Completion(frames, split_outputs([self._output], 1, 1), submit_ns, 0.01)

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


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edgeagent.metrics import Metrics

    ctx: zmq.Context[Any] = zmq.Context()
    endpoint = f"ipc://{tempfile.gettempdir()}/edgeagent-hotpath-{os.getpid()}"
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
    loop = IOLoop(
        cfg,
        sockets,
        InstantEngine(),  # type: ignore[arg-type]
        compiled,  # type: ignore[arg-type]
        0,
        accounting,
        Controller(cfg.sla, [level], 0, interference=lambda: 0.0),
        lambda *_: None,
        on_latency=metrics.observe,
    )
    sub = ctx.socket(zmq.SUB)  # a subscriber, so results are really sent
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect("inproc://hot-results")
    loop.start()
    here, there = mp.get_context("spawn").Pipe()
    client = mp.get_context("spawn").Process(target=_client, args=(endpoint, there), daemon=True)
    client.start()
    drained = 0

    def drain() -> None:
        nonlocal drained
        while sub.poll(0):
            sub.recv_multipart()
            drained += 1

    per_frame: list[float] = []
    try:
        for r in range(args.rounds + 1):
            frames0 = sum(c["processed"] for c in accounting.snapshot().values())
            cpu0 = loop.io_cpu_ns
            here.send(args.per_round)
            while not here.poll(0.05):
                drain()
            if not here.recv():
                raise RuntimeError("the loop did not answer every frame with a result")
            drain()
            time.sleep(0.3)  # the loop's next CPU reading (every 50 ms, ticks at least every 0.1 s) covers the round
            frames = sum(c["processed"] for c in accounting.snapshot().values()) - frames0
            if r > 0:  # round 0 warms up
                per_frame.append((loop.io_cpu_ns - cpu0) / frames / 1000)
    finally:
        here.send(0)
        client.join(10)
        loop.request_stop()
        loop.join(5)
        sub.close(0)
        ctx.term()
    return {
        "rounds": args.rounds,
        "per_round": args.per_round,
        "us_per_frame": round(statistics.median(per_frame), 1),
        "us_per_frame_range": [round(min(per_frame), 1), round(max(per_frame), 1)],
        "results_received": drained,
    }


def main(args: argparse.Namespace) -> int:
    r = run(args)
    lo, hi = r["us_per_frame_range"]
    print(
        f"bench hotpath: the agent's own work per frame (I/O thread CPU, no OpenVINO), back to back: "
        f"{r['us_per_frame']:.1f} us (rounds {lo:.1f}..{hi:.1f}; {r['rounds']} rounds x {r['per_round']} frames; "
        "224x224 imagezmq REQ from another process, the default JSON reply, result published with its tensor, "
        "histograms observed)"
    )
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


def add_parser(bsub: Any) -> None:
    p = bsub.add_parser("hotpath", help="the agent's own cost per frame (no OpenVINO), back to back")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=2000)
    p.add_argument("--json", type=Path, help="write results as JSON here")
