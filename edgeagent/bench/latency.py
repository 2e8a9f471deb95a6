"""``edgeagent bench latency``: what the agent adds on top of the transport and the model, and how it
compares with the hub a user would otherwise write.

**Back to back** (default): four things measured in one run, interleaved sample by sample (a shuffled
order for every sample), in rounds, so that the host's drift hits them alike:

(a) transport floor: a plain ZeroMQ REQ/REP echo of the same frame over loopback (a separate process);
(b) the same compiled model (pre-processing in the graph) called directly with OpenVINO, no agent;
(c) the agent end to end: an imagezmq-format REQ frame sent to a real ``edgeagent run`` subprocess
    (``--static``: the LATENCY level) → its reply;
(d) the hand-written hub (:mod:`edgeagent.bench.hub`, ``REP``): the same request → its reply.

overhead = (c) − (b) − (a), per round from that round's percentiles; the table gives the median of the
rounds and their spread, and the agent/hub ratio at p50 and p99. Every sample is paced like a camera (a
sleep between frames), never spun.

**Cameras** (``--cameras N --fps F``): N camera threads send imagezmq REQ frames at F fps each, for
``--duration-s`` to the hub and to the agent in turn (order shuffled every round); round trips per
camera, the ratio to the hub at p50 and p99 with the spread over rounds.

Both modes also report the agent's own cost per frame: its I/O thread's CPU time (sockets, parsing,
dispatch, replies, results, bookkeeping: ``edgeagent_io_thread_cpu_seconds_total``) over the frames
it processed.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edgeagent.bench import free_port, stop_process
from edgeagent.tools import parse_size, percentile
from edgeagent.wire import encode_imagezmq

GAP_S = 0.005  # pause between samples: each measurement starts from an idle receiver, like a camera


def _echo_server(endpoint: str) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.REP)
    s.bind(endpoint)
    s.setsockopt(zmq.RCVTIMEO, 60_000)  # bounded: exits by itself if the benchmark dies
    try:
        while True:
            parts = s.recv_multipart(copy=False)
            if parts[0].bytes == b"quit":
                s.send(b"bye")
                break
            s.send(b'{"status":"ok"}')
    except zmq.Again:
        pass
    finally:
        time.sleep(0.1)  # let the last reply leave before closing (linger)
        s.close(linger=200)
        ctx.term()


class _Peers:
    """The agent (``--static``, metrics on) and the hand-written hub as subprocesses, on loopback."""

    def __init__(self, model: str | None, input_shape: str | None, w: int, h: int, log_path: Path | None) -> None:
        self.agent_ep = f"tcp://127.0.0.1:{free_port()}"
        self.hub_ep = f"tcp://127.0.0.1:{free_port()}"
        self.metrics = f"http://127.0.0.1:{free_port()}/metrics"
        extra: list[str] = []
        if model:
            extra += ["--model", model]
        if input_shape:
            extra += ["--input-shape", input_shape]
        cmd = [sys.executable, "-m", "edgeagent", "run", "--listen", self.agent_ep, "--pull", "", "--results", ""]
        cmd += ["--metrics", self.metrics.split("//")[1].split("/")[0], "--frame-size", f"{w}x{h}"]
        cmd += ["--log-level", "warning", "--static", *extra]  # the LATENCY level, like the hub
        self._log = open(log_path, "wb") if log_path else None  # noqa: SIM115
        err = self._log or subprocess.DEVNULL
        self.agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        hub = [sys.executable, "-m", "edgeagent.bench.hub", self.hub_ep, "-", "REP", "--duration-s", "3600"]
        hub += ["--frame-size", f"{w}x{h}", *extra]
        self.hub = subprocess.Popen(hub, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def io_cpu(self) -> tuple[float, float]:
        """(I/O thread CPU seconds, frames processed) from the agent's metrics."""
        from edgeagent.tools import scrape

        st = scrape(self.metrics)
        frames = sum(c.get("processed", 0) for c in st["sources"].values())
        return float(st.get("edgeagent_io_thread_cpu_seconds_total", 0.0)), float(frames)

    def stop(self) -> None:
        for p in (self.agent, self.hub):
            stop_process(p)
        if self._log:
            self._log.close()


def _wait_reply(
    sock: zmq.Socket[Any], parts: list[Any], proc: subprocess.Popen[bytes], timeout_s: float, name: str
) -> None:
    """Send one frame and wait (bounded) for a reply: the peer answers once it has started."""
    sock.send_multipart(parts)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(500):
            sock.recv()
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
    raise RuntimeError(f"{name} did not answer in time")


def _ratios(agent: list[list[float]], hub: list[list[float]], q: float) -> dict[str, Any]:
    ra = [percentile(x, q) for x in agent]
    rh = [percentile(x, q) for x in hub]
    r = [a / b for a, b in zip(ra, rh)]
    return {
        "agent_ms": round(statistics.median(ra), 3),
        "hub_ms": round(statistics.median(rh), 3),
        "agent_over_hub": round(statistics.median(r), 4),
        "range": [round(min(r), 4), round(max(r), 4)],
    }


def _frame_for(model: str | None, input_shape: str | None, size: tuple[int, int] | None) -> tuple[Any, np.ndarray]:
    from edgeagent.config import ModelConfig, coerce
    from edgeagent.engine import LEVEL0, CpuPlan, Engine

    mcfg = ModelConfig(
        path=model, input_shape=coerce(input_shape, tuple[int, ...]) if input_shape else None, frame_size=size
    )
    compiled = Engine(mcfg, CpuPlan.make(None)).compile(LEVEL0)
    h, w = compiled.info.frame_hw
    return compiled, np.random.default_rng(7).integers(0, 256, (h, w, 3), dtype=np.uint8)


def run(
    model: str | None,
    input_shape: str | None,
    size: tuple[int, int] | None,
    rounds: int,
    per_round: int,
    log_path: Path | None = None,
) -> dict[str, Any]:
    compiled, frame = _frame_for(model, input_shape, size)
    h, w = frame.shape[:2]
    frame_bytes = frame.tobytes()  # the echo sends the same bytes the agent receives
    parts = encode_imagezmq("bench", frame)

    echo_ep = f"tcp://127.0.0.1:{free_port()}"
    echo = mp.get_context("spawn").Process(target=_echo_server, args=(echo_ep,), daemon=True)
    echo.start()
    peers = _Peers(model, input_shape, w, h, log_path)
    ctx = zmq.Context()
    echo_sock = ctx.socket(zmq.REQ)
    echo_sock.connect(echo_ep)
    agent_sock = ctx.socket(zmq.REQ)
    agent_sock.connect(peers.agent_ep)
    hub_sock = ctx.socket(zmq.REQ)
    hub_sock.connect(peers.hub_ep)
    req = compiled.model.create_infer_request()
    import openvino as ov

    tensor = ov.Tensor(frame[None], shared_memory=True)
    req.set_input_tensor(tensor)
    agent_internal: list[float] = []

    def sample(kind: str) -> float:
        t0 = time.perf_counter_ns()
        if kind == "a":
            echo_sock.send_multipart([b"{}", frame_bytes], copy=False)
            echo_sock.recv()
        elif kind == "b":
            req.start_async()
            req.wait()
        elif kind == "c":
            agent_sock.send_multipart(parts, copy=False)
            reply = agent_sock.recv()
            dt = (time.perf_counter_ns() - t0) / 1e6
            header = json.loads(reply)
            if header.get("status") != "ok":
                raise RuntimeError(f"agent replied {header}")
            agent_internal.append(header["latency_ms"]["total"])
            return dt
        else:
            hub_sock.send_multipart(parts, copy=False)
            hub_sock.recv()
        return (time.perf_counter_ns() - t0) / 1e6

    kinds = ["a", "b", "c", "d"]
    try:
        _wait_reply(agent_sock, parts, peers.agent, 90.0, "the agent")
        _wait_reply(hub_sock, parts, peers.hub, 90.0, "the hub")
        for kind in kinds:  # warm-up
            for _ in range(10):
                sample(kind)
                time.sleep(GAP_S)
        cpu0 = peers.io_cpu()
        per: dict[str, list[list[float]]] = {k: [] for k in kinds}
        for _ in range(rounds):
            xs: dict[str, list[float]] = {k: [] for k in kinds}
            for _ in range(per_round):
                # One sample of each, in a shuffled order: the host's fast/slow phases hit all of them.
                order = list(kinds)
                random.shuffle(order)
                for kind in order:
                    xs[kind].append(sample(kind))
                    time.sleep(GAP_S)
            for kind in per:
                per[kind].append(xs[kind])
        cpu1 = peers.io_cpu()
    finally:
        echo_sock.send(b"quit")
        echo_sock.poll(1000)
        for sock in (echo_sock, agent_sock, hub_sock):
            sock.close(linger=0)
        ctx.term()
        peers.stop()
        echo.join(5)

    result: dict[str, Any] = {
        "mode": "back-to-back",
        "model": compiled.info.path,
        "frame": f"{w}x{h}",
        "rounds": rounds,
        "per_round": per_round,
        "machine": _machine(),
        "precision": compiled.precision,
    }
    for q in (50, 99):
        round_vals = {k: [percentile(xs, q) for xs in per[k]] for k in per}
        overhead = [c - b - a for a, b, c in zip(round_vals["a"], round_vals["b"], round_vals["c"])]
        ratio = [c / b for b, c in zip(round_vals["b"], round_vals["c"])]
        allv = {k: percentile([x for xs in per[k] for x in xs], q) for k in per}
        result[f"p{q}"] = {
            "transport_ms": round(allv["a"], 3),
            "direct_ms": round(allv["b"], 3),
            "agent_ms": round(allv["c"], 3),
            "hub_ms": round(allv["d"], 3),
            "overhead_ms": round(statistics.median(overhead), 3),
            "overhead_ms_range": [round(min(overhead), 3), round(max(overhead), 3)],
            "agent_over_direct": round(statistics.median(ratio), 4),
            "hub": _ratios(per["c"], per["d"], q),
        }
    result["agent_internal_p50_ms"] = round(percentile(agent_internal, 50), 3)
    frames = cpu1[1] - cpu0[1]
    result["agent_io_cpu_us_per_frame"] = round((cpu1[0] - cpu0[0]) / frames * 1e6, 1) if frames else None
    return result


def run_cameras(
    model: str | None,
    input_shape: str | None,
    size: tuple[int, int] | None,
    rounds: int,
    cameras: int,
    fps: float,
    duration_s: float,
    log_path: Path | None = None,
) -> dict[str, Any]:
    compiled, frame = _frame_for(model, input_shape, size)
    h, w = frame.shape[:2]
    peers = _Peers(model, input_shape, w, h, log_path)
    ctx = zmq.Context()
    rtts: dict[str, list[list[list[float]]]] = {"agent": [], "hub": []}  # target → round → camera → ms
    cpu: list[tuple[float, float]] = []

    def camera(index: int, endpoint: str, out: list[float], start: float) -> None:
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        parts = encode_imagezmq(f"cam-{index}", frame)
        period = 1.0 / fps
        t_next = start + index * period / cameras  # cameras evenly out of phase, like real ones
        end = start + duration_s
        try:
            while t_next < end:
                time.sleep(max(0.0, t_next - time.monotonic()))
                t0 = time.perf_counter_ns()
                sock.send_multipart(parts, copy=False)
                if not sock.poll(10_000):
                    raise RuntimeError(f"no reply from {endpoint}")
                sock.recv()
                out.append((time.perf_counter_ns() - t0) / 1e6)
                t_next += period
                if t_next < time.monotonic():  # late (a slow reply): skip, never a burst to catch up
                    t_next = time.monotonic()
        finally:
            sock.close(linger=0)

    try:
        for ep, proc, name in ((peers.agent_ep, peers.agent, "the agent"), (peers.hub_ep, peers.hub, "the hub")):
            probe = ctx.socket(zmq.REQ)
            probe.connect(ep)
            _wait_reply(probe, encode_imagezmq("probe", frame), proc, 90.0, name)
            probe.close(0)
        for r in range(rounds + 1):  # round 0: warm-up, not counted
            order = ["agent", "hub"]
            random.shuffle(order)
            for target in order:
                endpoint = peers.agent_ep if target == "agent" else peers.hub_ep
                outs: list[list[float]] = [[] for _ in range(cameras)]
                if target == "agent":
                    before = peers.io_cpu()
                start = time.monotonic() + 0.2
                threads = [threading.Thread(target=camera, args=(i, endpoint, outs[i], start)) for i in range(cameras)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(duration_s + 30)
                if r > 0:
                    rtts[target].append(outs)
                    if target == "agent":
                        after = peers.io_cpu()
                        cpu.append((after[0] - before[0], after[1] - before[1]))
    finally:
        ctx.term()
        peers.stop()

    def flat(target: str) -> list[list[float]]:
        return [[x for cam in rnd for x in cam] for rnd in rtts[target]]

    result: dict[str, Any] = {
        "mode": "cameras",
        "model": compiled.info.path,
        "frame": f"{w}x{h}",
        "cameras": cameras,
        "fps": fps,
        "duration_s": duration_s,
        "rounds": rounds,
        "machine": _machine(),
        "precision": compiled.precision,
        "p50": _ratios(flat("agent"), flat("hub"), 50),
        "p99": _ratios(flat("agent"), flat("hub"), 99),
        "per_camera": [
            {
                "camera": f"cam-{i}",
                "frames_agent": sum(len(rnd[i]) for rnd in rtts["agent"]),
                "frames_hub": sum(len(rnd[i]) for rnd in rtts["hub"]),
                "p50": _ratios([rnd[i] for rnd in rtts["agent"]], [rnd[i] for rnd in rtts["hub"]], 50),
                "p99": _ratios([rnd[i] for rnd in rtts["agent"]], [rnd[i] for rnd in rtts["hub"]], 99),
            }
            for i in range(cameras)
        ],
    }
    frames = sum(f for _c, f in cpu)
    result["agent_io_cpu_us_per_frame"] = round(sum(c for c, _f in cpu) / frames * 1e6, 1) if frames else None
    return result


def _machine() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            model_name = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        model_name = "unknown CPU"
    return f"{os.cpu_count()} CPUs, {model_name}"


def format_table(r: dict[str, Any]) -> str:
    cpu = r.get("agent_io_cpu_us_per_frame")
    cpu_line = f"agent I/O thread CPU per frame: {cpu} us" if cpu is not None else "agent I/O thread CPU: -"
    if r["mode"] == "cameras":
        lines = [
            f"bench latency: {r['cameras']} cameras x {r['fps']:g} fps (imagezmq REQ), {r['duration_s']:g} s per "
            f"target x {r['rounds']} rounds, {r['model']} frame {r['frame']}, {r['machine']}, precision "
            f"{r['precision']}",
            f"{'':>10}{'agent':>10}{'hub':>10}{'agent/hub (range)':>26}",
        ]
        for q in ("p50", "p99"):
            x = r[q]
            rng = f"{x['agent_over_hub']:.3f} ({x['range'][0]:.3f}..{x['range'][1]:.3f})"
            lines.append(f"{q:>10}{x['agent_ms']:>10.3f}{x['hub_ms']:>10.3f}{rng:>26}")
        for c in r["per_camera"]:
            lines.append(
                f"{c['camera']:>10}  p50 {c['p50']['agent_ms']:.3f}/{c['p50']['hub_ms']:.3f} "
                f"({c['p50']['agent_over_hub']:.3f})  p99 {c['p99']['agent_ms']:.3f}/{c['p99']['hub_ms']:.3f} "
                f"({c['p99']['agent_over_hub']:.3f})  frames {c['frames_agent']}/{c['frames_hub']}"
            )
        lines.append(f"(round trip ms; ratios: medians over rounds of per-round percentiles); {cpu_line}")
        return "\n".join(lines)
    lines = [
        f"bench latency: {r['model']} frame {r['frame']}, {r['rounds']} rounds x {r['per_round']} "
        f"samples, {r['machine']}, precision {r['precision']}",
        f"{'':>6}{'(a) zmq echo':>14}{'(b) OpenVINO':>14}{'(c) agent':>12}{'(d) hub':>10}{'c-b-a (range)':>26}"
        f"{'c/d (range)':>22}",
    ]
    for q in ("p50", "p99"):
        x = r[q]
        rng = f"{x['overhead_ms']:.3f} ({x['overhead_ms_range'][0]:.3f}..{x['overhead_ms_range'][1]:.3f})"
        hub = x["hub"]
        hr = f"{hub['agent_over_hub']:.3f} ({hub['range'][0]:.3f}..{hub['range'][1]:.3f})"
        lines.append(
            f"{q:>6}{x['transport_ms']:>14.3f}{x['direct_ms']:>14.3f}{x['agent_ms']:>12.3f}{x['hub_ms']:>10.3f}"
            f"{rng:>26}{hr:>22}"
        )
    lines.append(f"(ms; overhead and ratios are medians over rounds of per-round percentiles); {cpu_line}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    size = parse_size(args.size) if args.size else None
    if args.cameras:
        r = run_cameras(args.model, args.input_shape, size, args.rounds, args.cameras, args.fps, args.duration_s)
        print(format_table(r))
        if args.json:
            args.json.write_text(json.dumps(r, indent=2))
        return 0
    r = run(args.model, args.input_shape, size, args.rounds, args.per_round)
    print(format_table(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0 if not math.isnan(r["p50"]["agent_ms"]) else 1
