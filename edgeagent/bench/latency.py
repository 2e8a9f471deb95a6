"""``edgeagent bench latency``: what the agent adds on top of the transport and the model.

Three things are measured in one run, interleaved sample by sample (a shuffled order for every
triple), in rounds, so that the host's drift hits them alike:

(a) transport floor: a plain ZeroMQ REQ/REP echo of the same frame over loopback (a separate process);
(b) the same compiled model (pre-processing in the graph) called directly with OpenVINO, no agent;
(c) the agent end to end: a native REQ frame sent to a real ``edgeagent run`` subprocess → its reply.

overhead = (c) − (b) − (a), per round from that round's percentiles; the table gives the median of the
rounds and their spread. Every sample is paced like a camera (a sleep between frames), never spun.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edgeagent.tools import parse_size, percentile
from edgeagent.wire import encode_native

GAP_S = 0.005  # pause between samples: each measurement starts from an idle receiver, like a camera


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _wait_agent(sock: zmq.Socket[Any], parts: list[Any], proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Send one frame and wait (bounded) for the agent's reply: it answers once it has started."""
    sock.send_multipart(parts)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock.poll(500):
            sock.recv()
            return
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"agent exited with {proc.returncode}: {err}")
    raise RuntimeError("agent did not answer in time")


def run(
    model: str | None,
    input_shape: str | None,
    size: tuple[int, int] | None,
    rounds: int,
    per_round: int,
    log_path: Path | None = None,
) -> dict[str, Any]:
    from edgeagent.config import ModelConfig, coerce
    from edgeagent.engine import LEVEL0, CpuPlan, Engine

    mcfg = ModelConfig(
        path=model, input_shape=coerce(input_shape, tuple[int, ...]) if input_shape else None, frame_size=size
    )
    engine = Engine(mcfg, CpuPlan.make(None))
    compiled = engine.compile(LEVEL0)
    h, w = compiled.info.frame_hw
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    frame_bytes = frame.tobytes()  # the echo sends the same bytes the agent receives

    echo_ep = f"tcp://127.0.0.1:{free_port()}"
    agent_port = free_port()
    echo = mp.get_context("spawn").Process(target=_echo_server, args=(echo_ep,), daemon=True)
    echo.start()
    cmd = [
        sys.executable,
        "-m",
        "edgeagent",
        "run",
        "--listen",
        f"tcp://127.0.0.1:{agent_port}",
        "--pull",
        "",
        "--results",
        "",
        "--metrics",
        "",
        "--frame-size",
        f"{w}x{h}",
        "--log-level",
        "warning",
        "--static",  # (b) is the LATENCY configuration: compare the agent at that level
    ]
    if model:
        cmd += ["--model", model]
    if input_shape:
        cmd += ["--input-shape", input_shape]
    log_fh = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if not log_path else log_fh)
    ctx = zmq.Context()
    echo_sock = ctx.socket(zmq.REQ)
    echo_sock.connect(echo_ep)
    agent_sock = ctx.socket(zmq.REQ)
    agent_sock.connect(f"tcp://127.0.0.1:{agent_port}")
    req = compiled.model.create_infer_request()
    import openvino as ov

    tensor = ov.Tensor(frame[None], shared_memory=True)
    req.set_input_tensor(tensor)
    seq = 0
    agent_internal: list[float] = []

    def sample(kind: str) -> float:
        nonlocal seq
        t0 = time.perf_counter_ns()
        if kind == "a":
            echo_sock.send_multipart([b"{}", frame_bytes], copy=False)
            echo_sock.recv()
        elif kind == "b":
            req.start_async()
            req.wait()
        else:
            seq += 1
            agent_sock.send_multipart(encode_native("bench", seq, frame), copy=False)
            reply = agent_sock.recv()
            dt = (time.perf_counter_ns() - t0) / 1e6
            header = json.loads(reply)
            if header.get("status") != "ok":
                raise RuntimeError(f"agent replied {header}")
            agent_internal.append(header["latency_ms"]["total"])
            return dt
        return (time.perf_counter_ns() - t0) / 1e6

    try:
        _wait_agent(agent_sock, encode_native("bench", 0, frame), agent, 60.0)
        for kind in ("a", "b", "c"):  # warm-up
            for _ in range(10):
                sample(kind)
                time.sleep(GAP_S)
        per: dict[str, list[list[float]]] = {"a": [], "b": [], "c": []}
        for _ in range(rounds):
            xs: dict[str, list[float]] = {"a": [], "b": [], "c": []}
            for _ in range(per_round):
                # One sample of each, in a shuffled order: the host's fast/slow phases hit all three.
                order = ["a", "b", "c"]
                random.shuffle(order)
                for kind in order:
                    xs[kind].append(sample(kind))
                    time.sleep(GAP_S)
            for kind in per:
                per[kind].append(xs[kind])
    finally:
        echo_sock.send(b"quit")
        echo_sock.poll(1000)
        echo_sock.close(linger=0)
        agent_sock.close(linger=0)
        ctx.term()
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
        echo.join(5)
        if log_path:
            log_fh.close()  # type: ignore[union-attr]

    result: dict[str, Any] = {
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
            "overhead_ms": round(statistics.median(overhead), 3),
            "overhead_ms_range": [round(min(overhead), 3), round(max(overhead), 3)],
            "agent_over_direct": round(statistics.median(ratio), 4),
        }
    result["agent_internal_p50_ms"] = round(percentile(agent_internal, 50), 3)
    return result


def _machine() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            model_name = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        model_name = "unknown CPU"
    return f"{os.cpu_count()} CPUs, {model_name}"


def format_table(r: dict[str, Any]) -> str:
    lines = [
        f"bench latency: {r['model']} frame {r['frame']}, {r['rounds']} rounds x {r['per_round']} "
        f"samples, {r['machine']}, precision {r['precision']}",
        f"{'':>6}{'(a) zmq echo':>14}{'(b) OpenVINO':>14}{'(c) agent':>12}{'c-b-a (range)':>26}{'c/b':>8}",
    ]
    for q in ("p50", "p99"):
        x = r[q]
        rng = f"{x['overhead_ms']:.3f} ({x['overhead_ms_range'][0]:.3f}..{x['overhead_ms_range'][1]:.3f})"
        lines.append(
            f"{q:>6}{x['transport_ms']:>14.3f}{x['direct_ms']:>14.3f}{x['agent_ms']:>12.3f}{rng:>26}"
            f"{x['agent_over_direct']:>8.3f}"
        )
    lines.append("(ms; overhead and c/b are medians over rounds of per-round percentiles)")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    size = parse_size(args.size) if args.size else None
    r = run(args.model, args.input_shape, size, args.rounds, args.per_round)
    print(format_table(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0 if not math.isnan(r["p50"]["agent_ms"]) else 1
