"""``edgeagent bench soak``: overload for minutes; does anything grow or get lost?

1. Measure what level 0 can serve (1 / mean inference time during a short flood), 2. offer 3x that
from several paced native publishers for ``--minutes``, 3. sample the agent's RSS, open file
descriptors and threads (psutil on its PID) and record every published result's frame age
(publisher clock → result, from the header), 4. check the accounting exactly once the load stops.
Reports the figures and a pass/fail per goal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import zmq

from edgeagent.bench import free_port
from edgeagent.bench.latency import _machine
from edgeagent.publisher import Publisher
from edgeagent.tools import parse_size, percentile, scrape


def _start_agent(args: argparse.Namespace, pull: int, results: int, metrics: int) -> subprocess.Popen[bytes]:
    w, h = parse_size(args.size)
    cmd = [
        sys.executable,
        "-m",
        "edgeagent",
        "run",
        "--listen",
        "",
        "--pull",
        f"tcp://127.0.0.1:{pull}",
        "--results",
        f"tcp://127.0.0.1:{results}",
        "--metrics",
        f"127.0.0.1:{metrics}",
        "--frame-size",
        f"{w}x{h}",
        "--sla-p99-ms",
        str(args.sla_p99_ms),
        "--log-level",
        "warning",
        # Level 0 throughout: the load is sized from level 0's capacity, and a leak check wants one
        # configuration (a level climb compiles new models, which is memory growth that is not a leak).
        "--static",
    ]
    if args.model:
        cmd += ["--model", args.model]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_metrics(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}")
        try:
            scrape(url, 1.0)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("agent did not start")


def run(args: argparse.Namespace) -> dict[str, Any]:
    w, h = parse_size(args.size)
    pull, results, metrics = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{metrics}/metrics"
    agent = _start_agent(args, pull, results, metrics)
    ctx = zmq.Context()
    try:
        _wait_metrics(url, agent)
        frame = np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)
        # 1. level 0's capacity: a flood from one source for a few seconds.
        flood = Publisher(f"tcp://127.0.0.1:{pull}", "capacity", "push", context=ctx)
        t_end = time.monotonic() + args.probe_s
        while time.monotonic() < t_end:
            flood.send(frame)
            time.sleep(0.0005)
        flood.close()
        time.sleep(0.5)
        # What level 0 can serve = 1 / mean inference time (the flood's own CPU use would understate it).
        probe = scrape(url)
        infer_s = probe["edgeagent_inference_latency_seconds_sum"]
        capacity_fps = probe["edgeagent_inference_latency_seconds_count"] / infer_s
        offered_fps = args.overload * capacity_fps
        per_source_fps = offered_fps / args.sources
        # 2. the soak.
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.connect(f"tcp://127.0.0.1:{results}")
        time.sleep(0.3)
        duration = args.minutes * 60
        stop = threading.Event()
        sent: dict[str, int] = {}
        ages: list[float] = []
        t0 = time.monotonic()

        def camera(i: int) -> None:
            pub = Publisher(f"tcp://127.0.0.1:{pull}", f"soak{i}", "push", context=ctx)
            period = 1.0 / per_source_fps
            nxt = time.monotonic() + i * period / args.sources
            while not stop.is_set() and time.monotonic() - t0 < duration:
                delay = nxt - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pub.send(frame)
                nxt += period
                if nxt < time.monotonic() - 1.0:
                    nxt = time.monotonic()  # the sender itself fell behind: don't burst to catch up
            sent[pub.source] = pub.seq - pub.dropped
            pub.close()

        def receiver() -> None:
            while not stop.is_set() or sub.poll(500):
                if sub.poll(100):
                    _t, header, *_ = sub.recv_multipart()
                    hd = json.loads(header)
                    if hd["source"].startswith("soak"):
                        ages.append(hd["age_ms"])

        cams = [threading.Thread(target=camera, args=(i,), daemon=True) for i in range(args.sources)]
        rx = threading.Thread(target=receiver, daemon=True)
        rx.start()
        for c in cams:
            c.start()
        proc = psutil.Process(agent.pid)
        samples: list[tuple[float, int, int, int]] = []
        while time.monotonic() - t0 < duration:
            samples.append((time.monotonic() - t0, proc.memory_info().rss, proc.num_fds(), proc.num_threads()))
            time.sleep(min(args.sample_s, max(0.1, duration - (time.monotonic() - t0))))
        for c in cams:
            c.join(10)
        time.sleep(1.0)
        stop.set()
        rx.join(10)
        samples.append((time.monotonic() - t0, proc.memory_info().rss, proc.num_fds(), proc.num_threads()))
        st = scrape(url)
    finally:
        agent.terminate()
        agent.wait(15)
        ctx.destroy(0)
    soak = {s: c for s, c in st["sources"].items() if s.startswith("soak")}
    received = sum(c["received"] for c in soak.values())
    processed = sum(c["processed"] for c in soak.values())
    dropped = sum(v for c in soak.values() for k, v in c.items() if k.startswith("dropped"))
    rejected = sum(v for c in soak.values() for k, v in c.items() if k.startswith("rejected"))
    warm = [s for s in samples if s[0] >= args.warmup_s] or samples
    rss_growth = (warm[-1][1] - warm[0][1]) / warm[0][1]
    result = {
        "machine": _machine(),
        "model": args.model or "built-in",
        "size": args.size,
        "minutes": args.minutes,
        "sla_p99_ms": args.sla_p99_ms,
        "level0_capacity_fps": round(capacity_fps, 1),
        "offered_fps": round(offered_fps, 1),
        "sources": args.sources,
        "sent": sum(sent.values()),
        "received": received,
        "processed": processed,
        "dropped": dropped,
        "rejected": rejected,
        "results_seen": len(ages),
        "age_p50_ms": round(percentile(ages, 50), 2),
        "age_p99_ms": round(percentile(ages, 99), 2),
        "rss_start_mb": round(warm[0][1] / 2**20, 1),
        "rss_end_mb": round(warm[-1][1] / 2**20, 1),
        "rss_growth_pct": round(100 * rss_growth, 2),
        "fds": [warm[0][2], warm[-1][2]],
        "threads": [warm[0][3], warm[-1][3]],
    }
    result["goals"] = {
        "accounting_exact": received == processed + dropped + rejected
        and received == sum(sent.values())
        and len(ages) == processed,
        "age_p99_within_sla": result["age_p99_ms"] <= args.sla_p99_ms,
        "rss_growth_below_2pct": rss_growth < 0.02,
        "no_fd_growth": warm[-1][2] <= warm[0][2],
        "no_thread_growth": warm[-1][3] <= warm[0][3],
    }
    return result


def main(args: argparse.Namespace) -> int:
    r = run(args)
    print(
        f"bench soak: {r['minutes']} min, {r['sources']} sources, offered {r['offered_fps']} fps = "
        f"{args.overload}x level-0 capacity {r['level0_capacity_fps']} fps, {r['size']}, {r['machine']}"
    )
    print(
        f"frames    sent {r['sent']} received {r['received']} processed {r['processed']} dropped {r['dropped']} "
        f"rejected {r['rejected']} (results seen {r['results_seen']})"
    )
    print(f"age       p50 {r['age_p50_ms']} ms, p99 {r['age_p99_ms']} ms (SLA {r['sla_p99_ms']} ms)")
    print(
        f"process   RSS {r['rss_start_mb']} → {r['rss_end_mb']} MB ({r['rss_growth_pct']:+.2f} % after "
        f"warm-up), fds {r['fds'][0]} → {r['fds'][1]}, threads {r['threads'][0]} → {r['threads'][1]}"
    )
    print("goals     " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in r["goals"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0 if all(r["goals"].values()) else 1


def add_parser(bsub: Any) -> None:
    p = bsub.add_parser("soak", help="overload (3x level 0) for minutes: leaks, growth, accounting")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--sources", type=int, default=3)
    p.add_argument("--overload", type=float, default=3.0, help="offered load / level-0 capacity")
    p.add_argument("--size", default="224x224")
    p.add_argument("--model")
    p.add_argument("--sla-p99-ms", type=float, default=30.0)
    p.add_argument("--probe-s", type=float, default=3.0)
    p.add_argument("--warmup-s", type=float, default=20.0)
    p.add_argument("--sample-s", type=float, default=2.0)
    p.add_argument("--json")
