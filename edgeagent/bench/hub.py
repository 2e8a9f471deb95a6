"""The hand-written hubs that ``bench sla`` measures the agent against, in their own process.

What a user would otherwise write in a few lines: a PULL socket that native PUSH cameras send to, the
same model with the same in-graph pre-processing (:func:`edgeagent.models.prepare`), and either

* ``THROUGHPUT``: the THROUGHPUT hint and an ``AsyncInferQueue`` (the best static OpenVINO
  configuration a user reaches for; ``start_async`` blocks while every request is busy, so frames
  queue in ZeroMQ), or
* ``LATENCY``: the LATENCY hint and one synchronous inference per frame.

Results go out on a PUB with the header fields ``bench sla`` reads (source, seq, total latency from
receipt to publish). The hub serves for ``--duration-s`` and then prints ``{"received": N}``.

    python -m edgeagent.bench.hub PULL_ENDPOINT PUB_ENDPOINT THROUGHPUT|LATENCY [--model M] [--frame-size WxH]

``bench latency`` measures the agent against the REQ/REP hub (``REP`` instead of a hint): what an
``imagezmq.ImageHub`` user writes in 15 lines, one synchronous ``infer()`` per request and a short
reply (the top class), LATENCY hint, pre-processing in the graph:

    python -m edgeagent.bench.hub REP_ENDPOINT - REP [--model M] [--frame-size WxH]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import numpy as np
import openvino as ov
import zmq

from edgeagent.config import ModelConfig, coerce
from edgeagent.models import prepare, read_model


def serve(pull_ep: str, pub_ep: str, hint: str, cfg: ModelConfig, duration_s: float) -> int:
    core = ov.Core()
    model, path = read_model(core, cfg)
    model, _info = prepare(model, path, cfg)
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": hint})
    ctx: zmq.Context[Any] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(pull_ep)
    pub = ctx.socket(zmq.PUB)
    pub.bind(pub_ep)
    lock = threading.Lock()  # callbacks run on OpenVINO's threads; a ZeroMQ socket is not thread-safe

    def publish(source: str, seq: int, rx_ns: int, sent_wall_ns: int) -> None:
        total_ms = (time.monotonic_ns() - rx_ns) / 1e6
        age_ms = (time.time_ns() - sent_wall_ns) / 1e6  # camera send → result: includes ZeroMQ's queue
        header = {"source": source, "seq": seq, "latency_ms": {"total": round(total_ms, 3)}, "exec": {"level": -1}}
        header["age_ms"] = round(age_ms, 3)
        with lock:
            pub.send_multipart([source.encode(), json.dumps(header).encode()])

    queue: ov.AsyncInferQueue | None = None
    if hint == "THROUGHPUT":
        queue = ov.AsyncInferQueue(compiled)
        queue.set_callback(lambda _req, userdata: publish(*userdata))
    print("ready", file=sys.stderr, flush=True)
    received = 0
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        if not pull.poll(100):
            continue
        header_bytes, payload = pull.recv_multipart()
        rx_ns = time.monotonic_ns()
        received += 1
        h = json.loads(header_bytes)
        image = np.frombuffer(payload, np.uint8).reshape(h["shape"])[None]
        if queue is not None:
            queue.start_async({0: image}, (h["source"], h["seq"], rx_ns, h["t_send_ns"]))
        else:
            compiled({0: image})
            publish(h["source"], h["seq"], rx_ns, h["t_send_ns"])
    if queue is not None:
        queue.wait_all()
    print(json.dumps({"received": received}), flush=True)
    pull.close(0)
    pub.close(500)
    ctx.term()
    return 0


def serve_rep(endpoint: str, cfg: ModelConfig, duration_s: float) -> int:
    """The hand-written imagezmq hub: REP socket, parse, infer, reply."""
    core = ov.Core()
    model, path = read_model(core, cfg)
    model, _info = prepare(model, path, cfg)
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    ctx: zmq.Context[Any] = zmq.Context()
    hub = ctx.socket(zmq.REP)
    hub.bind(endpoint)
    print("ready", file=sys.stderr, flush=True)
    received = 0
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        if not hub.poll(100):
            continue
        header, payload = hub.recv_multipart()
        received += 1
        h = json.loads(header)
        image = np.frombuffer(payload, np.uint8).reshape(h["shape"])[None]
        scores = compiled(image)[0]
        hub.send(json.dumps({"msg": h["msg"], "class": int(scores.argmax())}).encode())
    print(json.dumps({"received": received}), flush=True)
    hub.close(500)
    ctx.term()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeagent.bench.hub")
    p.add_argument("pull")
    p.add_argument("pub")
    p.add_argument("hint", choices=["THROUGHPUT", "LATENCY", "REP"])
    p.add_argument("--model")
    p.add_argument("--input-shape")
    p.add_argument("--frame-size")
    p.add_argument("--cache-dir")
    p.add_argument("--duration-s", type=float, default=60.0)
    a = p.parse_args(argv)
    cfg = ModelConfig(
        path=a.model,
        input_shape=coerce(a.input_shape, tuple[int, ...]) if a.input_shape else None,
        frame_size=coerce(a.frame_size, tuple[int, ...]) if a.frame_size else None,
        cache_dir=a.cache_dir,
    )
    if a.hint == "REP":
        return serve_rep(a.pull, cfg, a.duration_s)
    return serve(a.pull, a.pub, a.hint, cfg, a.duration_s)


if __name__ == "__main__":
    sys.exit(main())
