"""``edgeagent bench sizes``: what a camera whose frame size differs from the model's costs.

Two real agents run side by side, both static at level 0: **A** started with no size option (a camera of
another size is served by the any-size graph at once, then by that size's own graph, compiled off the
hot path) and **B** started with ``--frame-size`` for that size (compiled ahead). An unmodified-style
REQ camera sends the same frame to each, interleaved sample by sample in a shuffled order, paced like
a camera, in rounds; the ratio A/B at p50 and p99 is the median over rounds (with its spread).

Also reported per size: the first frame's round trip on A (answered on the any-size graph, not
rejected), the frames A served on the any-size graph before its own graph was ready, and A's compile
time and memory for the size (from its ``event=size_compiled`` log line).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edgeagent.bench import free_port, stop_process
from edgeagent.bench.latency import _machine
from edgeagent.tools import parse_size, percentile
from edgeagent.wire import encode_imagezmq

GAP_S = 0.01


class _Agent:
    def __init__(self, args: argparse.Namespace, log: Path, frame_size: str | None) -> None:
        self.port, self.metrics = free_port(), free_port()
        cmd = [sys.executable, "-m", "edgeagent", "run", "--static", "--listen", f"tcp://127.0.0.1:{self.port}"]
        cmd += ["--pull", "", "--results", "", "--metrics", f"127.0.0.1:{self.metrics}"]
        if frame_size:
            cmd += ["--frame-size", frame_size]
        if args.model:
            cmd += ["--model", args.model]
        if args.input_shape:
            cmd += ["--input-shape", args.input_shape]
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._fh)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{self.port}")

    def send(self, parts: list[Any], timeout_s: float = 60.0) -> float:
        """One round trip in ms (raises when the agent does not answer ok in time)."""
        t0 = time.perf_counter_ns()
        self.sock.send_multipart(parts, copy=False)
        if not self.sock.poll(int(timeout_s * 1000)):
            raise RuntimeError(f"no reply in {timeout_s} s; log: {self.log}")
        reply = json.loads(self.sock.recv())
        dt = (time.perf_counter_ns() - t0) / 1e6
        if reply.get("status") != "ok":
            raise RuntimeError(f"agent replied {reply}")
        return dt

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while self.proc.poll() is None and time.monotonic() < deadline:
            if b"event=listening" in self.log.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"agent did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()
        stop_process(self.proc)
        self._fh.close()


def _has_size(agent: _Agent, name: str) -> bool:
    return f'edgeagent_frame_sizes{{size="{name}"}}' in agent.scrape()


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(11)
    tmp = Path(tempfile.mkdtemp(prefix="edgeagent-bench-sizes-"))
    a = _Agent(args, tmp / "agent-any.log", None)
    out: dict[str, Any] = {"machine": _machine(), "rounds": args.rounds, "per_round": args.per_round, "sizes": []}
    try:
        a.wait_ready()
        for w, h in sizes:
            name = f"{w}x{h}/bgr"
            frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            parts = encode_imagezmq(f"cam-{w}x{h}", frame)
            b = _Agent(args, tmp / f"agent-{w}x{h}.log", f"{w}x{h}")
            try:
                b.wait_ready()
                first_ms = a.send(parts)  # A has never seen this size: the any-size graph answers it
                on_any = 1
                while not _has_size(a, name):
                    a.send(parts)
                    on_any += 1
                    time.sleep(GAP_S)
                for _ in range(10):  # warm-up, both
                    a.send(parts)
                    b.send(parts)
                per: dict[str, list[list[float]]] = {"a": [], "b": []}
                for _ in range(args.rounds):
                    xs: dict[str, list[float]] = {"a": [], "b": []}
                    for _ in range(args.per_round):
                        order = ["a", "b"]
                        random.shuffle(order)
                        for k in order:
                            xs[k].append((a if k == "a" else b).send(parts))
                            time.sleep(GAP_S)
                    for k in per:
                        per[k].append(xs[k])
            finally:
                b.stop()
            row: dict[str, Any] = {"size": f"{w}x{h}", "first_frame_ms": round(first_ms, 2), "frames_on_any": on_any}
            for q in (50, 99):
                ra = [percentile(x, q) for x in per["a"]]
                rb = [percentile(x, q) for x in per["b"]]
                ratios = [x / y for x, y in zip(ra, rb)]
                row[f"p{q}"] = {
                    "any_agent_ms": round(statistics.median(ra), 3),
                    "hinted_agent_ms": round(statistics.median(rb), 3),
                    "ratio": round(statistics.median(ratios), 4),
                    "ratio_range": [round(min(ratios), 4), round(max(ratios), 4)],
                }
            m = re.search(
                rf"event=size_compiled size={re.escape(name)} .*?compile_s=([\d.]+) memory_mb=([\d.]+)",
                a.log.read_text(),
            )
            row["compile_s"] = float(m[1]) if m else None
            row["memory_mb"] = float(m[2]) if m else None
            out["sizes"].append(row)
    finally:
        a.stop()
    return out


def format_table(r: dict[str, Any]) -> str:
    lines = [
        f"bench sizes: agent with no size option (A) vs agent started with --frame-size (B), static level 0, "
        f"{r['rounds']} rounds x {r['per_round']} interleaved samples, {r['machine']}",
        f"{'size':>10}{'A p50':>9}{'B p50':>9}{'A/B p50 (range)':>24}{'A/B p99':>9}{'1st frame':>11}"
        f"{'on any':>8}{'compile':>9}{'memory':>9}",
    ]
    for row in r["sizes"]:
        p50, p99 = row["p50"], row["p99"]
        rng = f"{p50['ratio']:.3f} ({p50['ratio_range'][0]:.3f}..{p50['ratio_range'][1]:.3f})"
        comp = f"{row['compile_s']:.2f}s" if row["compile_s"] is not None else "-"
        mem = f"{row['memory_mb']:.1f}MB" if row["memory_mb"] is not None else "-"
        lines.append(
            f"{row['size']:>10}{p50['any_agent_ms']:>9.3f}{p50['hinted_agent_ms']:>9.3f}{rng:>24}{p99['ratio']:>9.3f}"
            f"{row['first_frame_ms']:>9.1f}ms{row['frames_on_any']:>8}{comp:>9}{mem:>9}"
        )
    lines.append(
        "(round trip ms; ratios are medians over rounds of per-round percentiles; '1st frame': A's first frame "
        "of the size, on the any-size graph; 'on any': frames A served there before the size's own graph)"
    )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    r = run(args)
    print(format_table(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


def add_parser(bsub: Any) -> None:
    p = bsub.add_parser("sizes", help="a camera of another size: any-size agent vs agent compiled for that size")
    p.add_argument("--model", help="model file (default: built-in)")
    p.add_argument("--input-shape")
    p.add_argument("--sizes", default="640x480,1280x720,1920x1080", help="frame sizes WxH, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=60)
    p.add_argument("--json", type=Path, help="write results as JSON here")
