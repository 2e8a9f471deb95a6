"""``edgeagent bench dispatch``: the two measurements behind the engine's design.

1. How a job is handed to OpenVINO and back to the I/O thread, interleaved sample by sample on the same
   compiled model: ``start_async()+wait()`` (the floor); the job run on the calling thread through the
   compiled ``InferRequest.infer`` (what the agent does at one request on a single CPU, ``Engine.run``) and
   through the public ``infer()`` (its Python input dispatch and output dict); ``InferRequest`` without
   a callback, the owner waiting in ``wait_for`` slices (what it does at one request otherwise: 2 CPUs and
   up, or a long job); ``InferRequest`` with
   ``set_callback`` + eventfd to a thread waiting in a poller (what it does at more); the same callback
   with the owner in ``wait_for`` (which shows the cost is the Python callback, not the eventfd); and
   ``AsyncInferQueue`` + callback + eventfd.
2. Why a few microseconds of Python cost hundreds on this class of machine: ``parse_frame`` run hot
   (back to back) and after 1 ms / 5 ms idle (caches and CPU state cold again, as between camera frames).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import openvino as ov
import zmq

from edgeagent.bench.latency import _machine
from edgeagent.config import ModelConfig
from edgeagent.engine import LEVEL0, CpuPlan, Engine, _InlineInfer
from edgeagent.wire import FrameLimits, encode_native, parse_frame


def _waiter(fd: int) -> Callable[[], None]:
    poller = zmq.Poller()
    poller.register(fd, zmq.POLLIN)

    def wait() -> None:
        while not poller.poll(100):
            pass
        os.eventfd_read(fd)

    return wait


def dispatch(model: str | None, samples: int) -> dict[str, float]:
    compiled = Engine(ModelConfig(path=model), CpuPlan.make(None)).compile(LEVEL0)
    h, w = compiled.info.frame_hw
    frames = [np.random.default_rng(i).integers(0, 256, (1, h, w, 3), dtype=np.uint8) for i in range(4)]
    cm = compiled.model
    direct = cm.create_infer_request()
    direct.set_input_tensor(ov.Tensor(frames[0], shared_memory=True))
    fd_r, fd_q = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
    req = cm.create_infer_request()
    req.set_callback(lambda _u: os.eventfd_write(fd_r, 1), None)
    plain = cm.create_infer_request()
    inline_req, public_req = cm.create_infer_request(), cm.create_infer_request()
    inline = _InlineInfer(True)
    handed: list[int] = []
    called = cm.create_infer_request()
    called.set_callback(lambda _u: handed.append(1), None)
    queue = ov.AsyncInferQueue(cm, 1)
    queue.set_callback(lambda _r, _u: os.eventfd_write(fd_q, 1))
    wait_r, wait_q = _waiter(fd_r), _waiter(fd_q)
    i = [0]

    def run_direct() -> None:
        direct.start_async()
        direct.wait()

    def run_request() -> None:
        i[0] += 1
        req.set_input_tensor(ov.Tensor(frames[i[0] % 4], shared_memory=True))
        req.start_async()
        wait_r()

    def run_waited(r: ov.InferRequest) -> None:
        i[0] += 1
        r.set_input_tensor(ov.Tensor(frames[i[0] % 4], shared_memory=True))
        r.start_async()
        while not r.wait_for(10):
            pass
        handed.clear()

    def run_inline() -> None:
        i[0] += 1
        inline(inline_req, ov.Tensor(frames[i[0] % 4], shared_memory=True))

    def run_public() -> None:
        i[0] += 1
        public_req.infer(ov.Tensor(frames[i[0] % 4], shared_memory=True), share_inputs=True, share_outputs=True)

    def run_queue() -> None:
        i[0] += 1
        queue.start_async({0: frames[i[0] % 4]}, None, share_inputs=True)
        wait_q()

    fns: dict[str, Callable[[], None]] = {
        "start_async+wait": run_direct,
        "compiled infer(tensor), this thread": run_inline,
        "public infer(tensor), this thread": run_public,
        "InferRequest, no callback, wait_for": lambda: run_waited(plain),
        "InferRequest+callback+eventfd": run_request,
        "InferRequest+callback, wait_for": lambda: run_waited(called),
        "AsyncInferQueue+callback+eventfd": run_queue,
    }
    res: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        for _ in range(10):
            f()
    for _ in range(samples):
        order = list(fns)
        random.shuffle(order)
        for k in order:
            t0 = time.perf_counter_ns()
            fns[k]()
            res[k].append((time.perf_counter_ns() - t0) / 1e3)
            time.sleep(0.003)
    return {k: statistics.median(v) for k, v in res.items()}


def cold_python(samples: int) -> dict[str, float]:
    img = np.zeros((224, 224, 3), np.uint8)
    parts = [p if isinstance(p, bytes) else p.tobytes() for p in encode_native("c", 1, img)]
    limits = FrameLimits()
    out = {}
    for gap in (0.0, 0.001, 0.005):
        xs = []
        for _ in range(samples):
            t0 = time.perf_counter_ns()
            parse_frame(parts, limits, 0)
            xs.append((time.perf_counter_ns() - t0) / 1e3)
            if gap:
                time.sleep(gap)
        out[f"parse_frame after {gap * 1000:g} ms idle"] = statistics.median(xs)
    return out


def main(args: argparse.Namespace) -> int:
    print(f"bench dispatch: {args.model or 'built-in model'}, {args.samples} interleaved samples, {_machine()}")
    d = dispatch(args.model, args.samples)
    base = d["start_async+wait"]
    for k, v in d.items():
        print(f"  {k:<38} p50 {v:8.0f} us  ({v - base:+.0f} us)")
    for k, v in cold_python(args.samples).items():
        print(f"  {k:<38} p50 {v:8.1f} us")
    return 0


def add_parser(bsub: Any) -> None:
    p = bsub.add_parser("dispatch", help="OpenVINO hand-off variants and the cold-Python cost (design figures)")
    p.add_argument("--model")
    p.add_argument("--samples", type=int, default=300)
