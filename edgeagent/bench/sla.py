"""``edgeagent bench sla``: static levels, hand-written hubs and the adaptive agent under one SLA and load.

For every configuration (each static level of the ladder — level 0 is the LATENCY hint, the top
batch-1 level is the THROUGHPUT hint's stream count —, the hubs of :mod:`edgeagent.bench.hub` that a
user would otherwise write, and ``adaptive``) a fresh server process is fed by N virtual cameras at F
fps (640x480x3 by default, native PUSH, ``edgeagent publish`` in processes of their own) over loopback
for a bounded time, and every published result is recorded with its age: camera send → result, so a
server that lets frames queue in ZeroMQ is measured like one that drops them. Results are reported per
camera too. The order of configurations is shuffled per round so the host's drift hits all alike. The
"oracle" is the best static configuration that meets the SLA.

Scenarios: ``steady``; ``step`` (1 → N → 1 cameras in thirds); ``hog`` (a CPU hog on every core in
the middle third: how fast does the SLA come back?).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from edgeagent.bench import free_port
from edgeagent.bench.latency import _machine
from edgeagent.tools import parse_size, percentile

HOG_CODE = "import sys,time\nend=time.time()+float(sys.argv[1])\nwhile time.time()<end: pass\n"


def _ladder(args: argparse.Namespace) -> list[str]:
    from edgeagent.config import ModelConfig, coerce
    from edgeagent.engine import CpuPlan, Engine

    shape = coerce(args.input_shape, tuple[int, ...]) if args.input_shape else None
    # The agents get --frame-size too: a model with a dynamic input takes its size from it.
    cfg = ModelConfig(path=args.model, input_shape=shape, frame_size=parse_size(args.size))
    engine = Engine(cfg, CpuPlan.make(None))
    return [lv.describe() for lv in engine.ladder(args.max_batch)]


def _agent_cmd(args: argparse.Namespace, level: int | None, pull: int, results: int, metrics: int) -> list[str]:
    w, h = parse_size(args.size)
    cmd = [sys.executable, "-m", "edgeagent", "run", "--listen", "", "--pull", f"tcp://127.0.0.1:{pull}"]
    cmd += ["--results", f"tcp://127.0.0.1:{results}", "--metrics", f"127.0.0.1:{metrics}", "--frame-size", f"{w}x{h}"]
    cmd += ["--sla-p99-ms", str(args.sla_p99_ms), "--sla-window-s", str(args.window_s)]
    cmd += ["--max-batch", str(args.max_batch), "--log-level", "info"]
    if args.model:
        cmd += ["--model", args.model]
    if args.input_shape:
        cmd += ["--input-shape", args.input_shape]
    cmd += ["--adaptive", "--level", "0"] if level is None else ["--static", "--level", str(level)]
    return cmd


def _hub_cmd(args: argparse.Namespace, hint: str, pull: int, results: int, duration_s: float) -> list[str]:
    w, h = parse_size(args.size)
    cmd = [sys.executable, "-m", "edgeagent.bench.hub", f"tcp://127.0.0.1:{pull}", f"tcp://127.0.0.1:{results}", hint]
    cmd += ["--frame-size", f"{w}x{h}", "--duration-s", str(duration_s)]
    if args.model:
        cmd += ["--model", args.model]
    if args.input_shape:
        cmd += ["--input-shape", args.input_shape]
    return cmd


def _cameras(args: argparse.Namespace, pull: int, duration: float) -> list[tuple[float, list[str]]]:
    """(start offset s, command) of the load generator's processes: ``edgeagent publish`` in processes of
    their own, so the cameras never share a GIL with the result collector or the agent. ``step``: camera
    0 all along, the others in the middle third only."""
    base = [sys.executable, "-m", "edgeagent", "publish", "--endpoint", f"tcp://127.0.0.1:{pull}", "--mode", "push"]
    base += ["--size", args.size, "--fps", str(args.fps), "--count", str(10**9), "--json"]
    if args.scenario == "step" and args.cameras > 1:
        return [
            (0.0, [*base, "--source", "cam", "--sources", "1", "--duration-s", str(duration)]),
            (
                duration / 3,
                [*base, "--source", "step", "--sources", str(args.cameras - 1), "--duration-s", str(duration / 3)],
            ),
        ]
    return [(0.0, [*base, "--source", "cam", "--sources", str(args.cameras), "--duration-s", str(duration)])]


def run_one(args: argparse.Namespace, label: str, level: int | None, t_scale: float = 1.0) -> dict[str, Any]:
    """One configuration: start an agent (``level`` None: adaptive; -1: the THROUGHPUT hub; -2: the
    LATENCY hub), drive it with cameras in their own processes, collect every result, stop it."""
    pull, results, metrics = free_port(), free_port(), free_port()
    duration = args.duration_s * t_scale
    hub = {-1: "THROUGHPUT", -2: "LATENCY"}.get(level if level is not None else 0)
    cmd = _hub_cmd(args, hub, pull, results, duration + 4) if hub else _agent_cmd(args, level, pull, results, metrics)
    log_lines: list[str] = []
    agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def read_log() -> None:
        assert agent.stderr is not None
        for ln in agent.stderr:
            log_lines.append(ln.decode(errors="replace"))

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    ready = "ready" if hub else "event=listening"
    deadline = time.monotonic() + 90
    while not any(ready in ln for ln in log_lines):
        if agent.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{label} did not start:\n" + "".join(log_lines[-20:]))
        time.sleep(0.05)
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 100000)
    sub.connect(f"tcp://127.0.0.1:{results}")
    time.sleep(0.3)  # the subscription settles
    records: list[tuple[float, float, int, str, float]] = []  # (t, age ms, level, source, in-agent ms)
    pending = _cameras(args, pull, duration)
    cams: list[subprocess.Popen[bytes]] = []
    hog: list[subprocess.Popen[bytes]] = []
    hog_at = duration / 3 if args.scenario == "hog" else None
    t0 = time.monotonic() + 0.5  # the publishers' start-up (imports) before their first frame
    end = t0 + duration + 2.0
    while time.monotonic() < end:
        now = time.monotonic()
        while pending and now >= t0 - 0.5 + pending[0][0]:
            cams.append(subprocess.Popen(pending.pop(0)[1], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        if hog_at is not None and not hog and now - t0 >= hog_at:
            hog = [
                subprocess.Popen([sys.executable, "-c", HOG_CODE, str(duration / 3)])
                for _ in range(os.cpu_count() or 1)
            ]
        if sub.poll(50):
            _topic, header, *_ = sub.recv_multipart()
            hd = json.loads(header)
            # The camera's send → the result, for every peer alike (same host clock): a hub that lets frames
            # queue in ZeroMQ must not look faster than an agent that drops them.
            total = hd["latency_ms"]["total"]
            records.append((time.monotonic() - t0, hd["age_ms"], hd["exec"]["level"], hd["source"], total))
    sent = 0
    for c in cams:
        cam_out, _ = c.communicate(timeout=30)
        sent += json.loads(cam_out.decode().strip().splitlines()[-1])["sent"]
    for p in hog:
        p.kill()
        p.wait()
    st: dict[str, Any] = {"sources": {}}
    if not hub:
        from edgeagent.tools import scrape

        st = scrape(f"http://127.0.0.1:{metrics}/metrics")
        agent.terminate()
        agent.wait(15)
        received = sum(c.get("received", 0) for c in st["sources"].values())
    else:
        hub_out, _ = agent.communicate(timeout=30)
        received = json.loads(hub_out.decode().strip().splitlines()[-1])["received"]
    reader.join(2)
    sub.close(0)
    ctx.term()
    windows = _windows(records, args.window_s, args.sla_p99_ms, duration)
    late = sum(c.get("dropped:late", 0) for c in st["sources"].values())
    out: dict[str, Any] = {
        "config": label,
        "sent": sent,
        "received": received,
        "processed": len(records),
        "drop_rate": round(1 - len(records) / sent, 4) if sent else 0.0,
        "late_drops": late,
        "switches": int(st.get("edgeagent_level_switches_total", 0)),
        **_figures(records, args.sla_p99_ms, duration),
        "windows_over_sla_pct": _over_pct(windows),
        "series": [[round(t, 3), round(v, 2), lv, round(total, 2)] for t, v, lv, _s, total in records],
        "decisions": [ln.strip() for ln in log_lines if "event=tuner_decision" in ln][-50:],
    }
    warmup = min(args.warmup_s, duration / 2)
    if warmup > 0:
        # From the warm-up to the last whole window before the cameras stop: their processes' exit takes
        # CPU from every peer alike in the last moments, and is no part of a steady load.
        stop = warmup + int((duration - warmup - 0.5) / args.window_s) * args.window_s
        steady = [r for r in records if warmup <= r[0] < stop]
        kept = [wd for wd in windows if warmup <= wd["t"] and wd["t"] + args.window_s <= stop]
        out["steady"] = _figures(steady, args.sla_p99_ms, stop - warmup)
        out["steady"]["windows_over_sla_pct"] = _over_pct(kept)
    if hog_at is not None:
        out["hog_start_s"] = hog_at
        out["windows_to_regain_sla"] = _regain(windows, hog_at)
    return out


def _figures(records: list[tuple[float, float, int, str, float]], sla_ms: float, duration_s: float) -> dict[str, Any]:
    """Goodput, throughput, latency and per-camera counts of ``records`` over ``duration_s``. Within the
    SLA by age (camera send → publish, what every peer is compared by) and, for the agent, by its own
    end-to-end latency (receipt → publish, what its SLA promises)."""
    ages = [r[1] for r in records]
    in_sla = sum(1 for v in ages if v <= sla_ms)
    per_camera: dict[str, dict[str, int]] = {}
    for _t, v, _lv, source, _total in records:
        row = per_camera.setdefault(source, {"results": 0, "in_sla": 0})
        row["results"] += 1
        row["in_sla"] += v <= sla_ms
    shares = [r["in_sla"] for r in per_camera.values()]
    return {
        "goodput_fps": round(in_sla / duration_s, 2),
        "throughput_fps": round(len(records) / duration_s, 2),
        "published_in_sla_pct": round(100 * in_sla / len(records), 2) if records else None,
        "in_agent_in_sla_pct": round(100 * sum(1 for r in records if r[4] <= sla_ms) / len(records), 3)
        if records
        else None,
        "p50_ms": round(percentile(ages, 50), 2),
        "p99_ms": round(percentile(ages, 99), 2),
        "per_camera": per_camera,
        "camera_in_sla_max_over_min": round(max(shares) / min(shares), 3) if shares and min(shares) > 0 else None,
    }


def _over_pct(windows: list[dict[str, Any]]) -> float:
    """The share of ``windows`` (from :func:`_windows`) over the SLA, in per cent."""
    return round(100 * sum(1 for wd in windows if not wd["met"]) / max(1, len(windows)), 1)


def _windows(
    records: list[tuple[float, float, int, str, float]], window_s: float, sla: float, duration: float
) -> list[dict[str, Any]]:
    out = []
    n = int(duration / window_s)
    buckets: list[list[float]] = [[] for _ in range(n)]
    for t, v, _lv, _source, _total in records:
        i = int(t / window_s)
        if 0 <= i < n:
            buckets[i].append(v)
    for i, b in enumerate(buckets):
        p99 = percentile(b, 99)
        out.append({"t": i * window_s, "frames": len(b), "p99": p99, "met": not b or p99 <= sla})
    return out


def _regain(windows: list[dict[str, Any]], hog_at: float) -> int | None:
    """Windows after the hog starts until the first one that meets the SLA again (0: never broke)."""
    after = [w for w in windows if w["t"] >= hog_at]
    for i, w in enumerate(after):
        if w["met"] and w["frames"]:
            return i
    return None


def main(args: argparse.Namespace) -> int:
    ladder = _ladder(args)
    configs: list[tuple[str, int | None]] = [(f"static L{i} ({d})", i) for i, d in enumerate(ladder)]
    if args.levels:
        keep = {int(x) for x in args.levels.split(",")}
        configs = [c for c in configs if c[1] in keep]
    if not args.no_hubs:
        configs += [("hub: THROUGHPUT + AsyncInferQueue", -1), ("hub: LATENCY + infer()", -2)]
    configs.append(("adaptive", None))
    rows: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        order = configs[:]
        random.shuffle(order)
        for label, level in order:
            print(f"running {label} ...", file=sys.stderr, flush=True)
            rows.setdefault(label, []).append(run_one(args, label, level))
    summary = []
    for label, _lv in configs:
        rs = rows[label]
        best = sorted(rs, key=lambda r: _steady(r)["goodput_fps"])[len(rs) // 2]  # the median round
        summary.append(best)
    static = [r for r in summary if r["config"] != "adaptive"]
    meeting = [r for r in static if _steady(r)["windows_over_sla_pct"] <= 5]
    oracle = max(meeting, key=lambda r: _steady(r)["goodput_fps"]) if meeting else None
    adaptive = _steady(summary[-1])
    result = {
        "machine": _machine(),
        "model": args.model or "built-in",
        "sla_p99_ms": args.sla_p99_ms,
        "cameras": args.cameras,
        "fps": args.fps,
        "size": args.size,
        "scenario": args.scenario,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "ladder": ladder,
        "rows": summary,
        "oracle": oracle["config"] if oracle else None,
        "adaptive_over_oracle": round(adaptive["goodput_fps"] / _steady(oracle)["goodput_fps"], 3)
        if oracle and _steady(oracle)["goodput_fps"]
        else None,
    }
    for row in summary:
        hub = _steady(row)
        if row["config"].startswith("hub: THROUGHPUT") and hub["throughput_fps"]:
            result["adaptive_throughput_over_hub"] = round(adaptive["throughput_fps"] / hub["throughput_fps"], 3)
            result["adaptive_goodput_over_hub"] = (
                round(adaptive["goodput_fps"] / hub["goodput_fps"], 3) if hub["goodput_fps"] else None
            )
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result))
    if args.png:
        plot(result, Path(args.png))
    return 0


def _steady(row: dict[str, Any]) -> dict[str, Any]:
    """A row's steady-state figures (after the warm-up), else its whole run's."""
    return {**row, **row["steady"]} if "steady" in row else row


def format_table(r: dict[str, Any]) -> str:
    warm = f"steady state: the first {r['warmup_s']:g} s and the last 0.5 s left out, " if r.get("warmup_s") else ""
    lines = [
        f"bench sla: SLA p99 <= {r['sla_p99_ms']} ms, {r['cameras']} cameras x {r['fps']} fps {r['size']}, "
        f"scenario {r['scenario']}, {r['duration_s']} s each ({warm}for every peer alike), {r['machine']}",
        f"{'configuration':<44}{'goodput':>9}{'tput':>8}{'p50':>8}{'p99':>8}{'inSLA%':>8}{'agent%':>8}{'drop%':>7}"
        f"{'late':>6}{'win>SLA%':>9}{'switch':>7}{'cam max/min':>12}",
    ]
    for whole in r["rows"]:
        row = _steady(whole)
        extra = f"  regain={row['windows_to_regain_sla']}w" if "windows_to_regain_sla" in row else ""
        if "steady" in whole:
            extra += f"  (whole run: goodput {whole['goodput_fps']:.1f}, tput {whole['throughput_fps']:.1f})"
        ratio = row["camera_in_sla_max_over_min"]
        agent_pct = row["in_agent_in_sla_pct"] if not row["config"].startswith("hub") else None
        lines.append(
            f"{row['config']:<44}{row['goodput_fps']:>9.1f}{row['throughput_fps']:>8.1f}{row['p50_ms']:>8.1f}"
            f"{row['p99_ms']:>8.1f}{row['published_in_sla_pct'] or 0:>8.2f}"
            f"{agent_pct if agent_pct is not None else '-':>8}{100 * row['drop_rate']:>7.1f}"
            f"{row['late_drops']:>6}{row['windows_over_sla_pct']:>9.1f}{row['switches']:>7}"
            f"{ratio if ratio is not None else '-':>12}{extra}"
        )
        cams = ", ".join(f"{k} {v['in_sla']}/{v['results']}" for k, v in sorted(row["per_camera"].items()))
        lines.append(f"{'':<4}per camera (in SLA/results): {cams or '-'}")
    lines.append(
        f"oracle (best static meeting the SLA): {r['oracle']}; adaptive / oracle goodput = {r['adaptive_over_oracle']}"
    )
    if "adaptive_throughput_over_hub" in r:
        lines.append(
            f"adaptive / THROUGHPUT hub: throughput {r['adaptive_throughput_over_hub']}, "
            f"goodput {r['adaptive_goodput_over_hub']}"
        )
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("PNG skipped: matplotlib is not installed (pip install 'edgeagent[bench]')", file=sys.stderr)
        return
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 8))
    ad = next(row for row in r["rows"] if row["config"] == "adaptive")
    ts = [s[0] for s in ad["series"]]
    ax1.scatter(ts, [s[1] for s in ad["series"]], s=2, label="adaptive: end-to-end latency (ms)")
    ax1.axhline(r["sla_p99_ms"], color="red", linestyle="--", label="SLA p99")
    ax1b = ax1.twinx()
    ax1b.step(ts, [s[2] for s in ad["series"]], color="green", where="post", label="level")
    ax1b.set_ylabel("level")
    if "hog_start_s" in ad:
        ax1.axvspan(ad["hog_start_s"], 2 * ad["hog_start_s"], color="orange", alpha=0.15, label="CPU hog")
    ax1.set_xlabel("s")
    ax1.set_ylabel("ms")
    ax1.legend(loc="upper left")
    labels = [row["config"].replace(" (", "\n(") for row in r["rows"]]
    ax2.bar(range(len(labels)), [_steady(row)["goodput_fps"] for row in r["rows"]])
    ax2.set_xticks(range(len(labels)), labels, fontsize=6)
    ax2.set_ylabel("goodput (in-SLA frames/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def add_parser(bsub: Any) -> None:
    p = bsub.add_parser("sla", help="static levels vs adaptive under an SLA and a load")
    p.add_argument("--model")
    p.add_argument("--input-shape")
    p.add_argument("--sla-p99-ms", type=float, default=30.0)
    p.add_argument("--window-s", type=float, default=1.0)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--size", default="640x480")
    p.add_argument("--duration-s", type=float, default=15.0)
    p.add_argument(
        "--warmup-s",
        type=float,
        default=0.0,
        help="steady state: leave the first seconds of every peer out of its figures (the whole run is kept too)",
    )
    p.add_argument("--scenario", choices=["steady", "step", "hog"], default="steady")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--levels", help="only these static levels, comma-separated (default: all)")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--no-hubs", action="store_true", help="leave out the hand-written hubs")
    p.add_argument("--json")
    p.add_argument("--png")
