"""The ``info``, ``publish`` and ``status`` commands (``cli.py`` parses, these do the work)."""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.config import MAX_FRAME_SIDE
from edgeagent.errors import EXIT_OK, EXIT_UNAVAILABLE, ConfigError
from edgeagent.tuner import nearest_rank


def parse_size(text: str) -> tuple[int, int]:
    """ "640x480" → (640, 480); raises ConfigError naming the value."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    if not (1 <= w <= MAX_FRAME_SIDE and 1 <= h <= MAX_FRAME_SIDE):
        raise ConfigError(f"--size {text!r}: sides must be 1..{MAX_FRAME_SIDE}")
    return w, h


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN for none (see tuner.nearest_rank)."""
    return nearest_rank(sorted(values), q)


# ------------------------------------------------------------------------------------------ info
def info(args: argparse.Namespace) -> int:
    import openvino as ov

    from edgeagent import config as config_mod
    from edgeagent.engine import LEVEL0, CpuPlan, Engine, size_name
    from edgeagent.wire import FrameLimits

    overrides = {
        k: v
        for k, v in {
            "model.path": args.model,
            "model.input_shape": args.input_shape,
            "model.frame_size": args.frame_size,
            "model.resize": args.resize,
        }.items()
        if v is not None
    }
    full = config_mod.load(Path(args.config) if args.config else None, overrides)
    cfg = full.model
    engine = Engine(cfg, CpuPlan.make(None))
    compiled = engine.compile(LEVEL0)
    limits = FrameLimits(full.ingest.max_message_bytes, full.ingest.max_header_bytes)
    fit = f"letterboxed (aspect kept, pad {cfg.pad_value:g})" if cfg.resize == "letterbox" else "stretched"
    mh, mw = compiled.info.model_hw
    device = engine.device_limits()
    core: ov.Core = engine.core
    out: dict[str, Any] = {
        "model": compiled.info.path,
        "name": compiled.info.name,
        "input": {
            "name": compiled.info.input_name,
            "model_shape": list(compiled.info.model_shape),
            "frame": {
                "width": compiled.info.frame_hw[1],
                "height": compiled.info.frame_hw[0],
                "dtype": "uint8",
                "layout": "HWC",
                "colour": "BGR",
            },
            "rgb": compiled.info.rgb,
            "mean": compiled.info.mean,
            "scale": compiled.info.scale,
        },
        "accepts": {
            "frames": limits.accepted(),
            "resize": cfg.resize,
            "fit": f"frames of another size are {fit} to {mw}x{mh} in the graph",
            "compiled_sizes": [size_name(k) for k in compiled.sizes],
            "max_sizes": cfg.max_sizes,
            "max_message_bytes": full.ingest.max_message_bytes,
        },
        "outputs": [{"name": n, "dtype": t, "shape": list(s)} for n, t, s in compiled.info.outputs],
        "device": {
            "name": str(core.get_property(cfg.device, "FULL_DEVICE_NAME")),
            "range_for_streams": list(core.get_property(cfg.device, "RANGE_FOR_STREAMS")),
            "max_streams": device.max_streams,
            "throughput_streams": device.throughput_streams,
            "optimal_requests_latency": device.optimal_requests,
        },
        "compiled_level0": compiled.describe() | {"compile_s": round(compiled.compile_s, 3)},
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        i: dict[str, Any] = out["input"]
        print(f"model     {out['model']} ({out['name']})")
        print(
            f"input     {i['name']} {i['model_shape']} ← u8 BGR frames {i['frame']['width']}x{i['frame']['height']}"
            f" (rgb={i['rgb']} mean={i['mean']} scale={i['scale']})"
        )
        for o in out["outputs"]:
            print(f"output    {o['name']} {o['dtype']} {o['shape']}")
        a = out["accepts"]
        print(f"accepts   {a['frames']}")
        print(f"          {a['fit']}; graphs compiled ahead: {', '.join(a['compiled_sizes'])};")
        print(f"          other sizes run on any/bgr at once and get their own graph (up to {a['max_sizes']})")
        d = out["device"]
        print(
            f"device    {d['name']}: streams {d['range_for_streams']}, THROUGHPUT streams {d['throughput_streams']},"
            f" LATENCY requests {d['optimal_requests_latency']}"
        )
        print(f"level 0   {out['compiled_level0']}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------ publish
def _frames_from(args: argparse.Namespace, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Endless frames: a video file or image folder when given, synthetic otherwise."""
    w, h = size
    if args.input:
        path = Path(args.input)
        if path.is_dir():
            from PIL import Image  # optional dependency: only for image folders

            files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
            if not files:
                raise ConfigError(f"--input {path}: no .jpg/.png/.bmp images")
            images = [
                np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB").resize((w, h)))[..., ::-1]) for p in files
            ]
            while True:
                yield from images
        try:
            import cv2  # optional: video files
        except ImportError:
            raise ConfigError(
                f"--input {path}: reading video needs OpenCV (pip install opencv-python-headless)"
            ) from None
        while True:
            cap = cv2.VideoCapture(str(path))
            ok, img = cap.read()
            if not ok:
                raise ConfigError(f"--input {path}: cannot read video")
            while ok:
                yield np.ascontiguousarray(cv2.resize(img, (w, h)))
                ok, img = cap.read()
            cap.release()
    base = np.fromfunction(lambda y, x, c: (x + 2 * y + 40 * c) % 256, (h, w, 3), dtype=np.int64).astype(np.uint8)
    i = 0
    while True:
        yield np.roll(base, i * 4, axis=1)
        i += 1


def publish(args: argparse.Namespace) -> int:
    from edgeagent.publisher import Publisher

    size = parse_size(args.size)
    if args.sources < 1 or args.count < 1:
        raise ConfigError("--sources and --count must be >= 1")
    lock = threading.Lock()
    summary: dict[str, Any] = {"sent": 0, "replies": Counter(), "timeouts": 0, "latency_ms": []}
    deadline = time.monotonic() + args.duration_s if args.duration_s > 0 else math.inf

    def encoder(img: np.ndarray) -> bytes:
        import simplejpeg

        return bytes(simplejpeg.encode_jpeg(img, quality=85, colorspace="BGR"))

    def camera(index: int) -> None:
        name = args.source if args.sources == 1 else f"{args.source}-{index}"
        period = 1.0 / args.fps if args.fps > 0 else 0.0
        pub = Publisher(
            args.endpoint,
            name,
            args.mode,
            args.fmt,
            timeout_s=args.timeout_s,
            curve_server_key=args.curve_server_key,
            curve_client_key=args.curve_client_key,
        )
        if args.mode == "pub":
            time.sleep(0.5)  # PUB/SUB: give subscribers time to connect (the slow-joiner problem)
        frames = _frames_from(args, size)
        nxt = time.monotonic()
        try:
            for _ in range(args.count):
                if time.monotonic() > deadline:
                    break
                img = next(frames)
                t0 = time.perf_counter()
                reply = pub.send(jpeg=encoder(img)) if args.jpeg else pub.send(img)
                dt_ms = (time.perf_counter() - t0) * 1000
                with lock:
                    summary["sent"] += 1
                    if args.mode == "req":
                        if reply is None:
                            summary["timeouts"] += 1
                        else:
                            status = (
                                reply.get("status", "?") if isinstance(reply, dict) else reply.decode(errors="replace")
                            )
                            summary["replies"][status] += 1
                            summary["latency_ms"].append(dt_ms)
                nxt += period
                delay = nxt - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # sleep, never spin: a spinning pacer inflates everyone's latency
                else:
                    nxt = time.monotonic()
        finally:
            pub.close()

    threads = [threading.Thread(target=camera, args=(i,), daemon=True) for i in range(args.sources)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = summary.pop("latency_ms")
    summary["replies"] = dict(summary["replies"])
    if lat:
        summary["round_trip_ms"] = {"p50": round(percentile(lat, 50), 3), "p99": round(percentile(lat, 99), 3)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={json.dumps(v)}" for k, v in summary.items()))
    return EXIT_OK


# ------------------------------------------------------------------------------------------ status
def scrape(url: str, timeout_s: float = 3.0) -> dict[str, Any]:
    """Read the agent's metrics endpoint into a small status dict."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        text = resp.read().decode()
    st: dict[str, Any] = {"sources": {}, "window": {}}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "edgeagent_frames_total":
                src = st["sources"].setdefault(s.labels["source"], Counter())
                outcome = s.labels["outcome"]
                key = outcome if outcome in ("received", "processed") else f"{outcome}:{s.labels['reason']}"
                src[key] += int(s.value)
            elif s.name == "edgeagent_source_idle_seconds":
                st.setdefault("idle_s", {})[s.labels["source"]] = s.value
            elif s.name == "edgeagent_frame_sizes":
                st.setdefault("sizes", []).append(s.labels["size"])
            elif s.name == "edgeagent_results_over_sla_total":
                st["sources"].setdefault(s.labels["source"], Counter())["over_sla"] += int(s.value)
            elif s.name.startswith("edgeagent_window_latency_") and s.name.endswith("_seconds"):
                st["window"][s.name[len("edgeagent_window_latency_") : -len("_seconds")]] = s.value * 1000
            elif not s.labels:
                st[s.name] = s.value
    return st


def status(args: argparse.Namespace) -> int:
    try:
        st = scrape(args.metrics)
    except (urllib.error.URLError, OSError) as exc:
        print(f"edgeagent: error: cannot read {args.metrics}: {exc}")
        return EXIT_UNAVAILABLE
    if args.json:
        print(json.dumps(st, default=dict))
        return EXIT_OK
    sla = st.get("edgeagent_sla_p99_seconds", math.nan) * 1000
    win = st["window"]
    p99 = win.get("p99", math.nan)
    verdict = "no traffic" if math.isnan(p99) else ("MET" if p99 <= sla else "BROKEN")
    print(
        f"SLA       p99 <= {sla:g} ms: {verdict} (last window p50 {win.get('p50', math.nan):.2f} "
        f"p95 {win.get('p95', math.nan):.2f} p99 {p99:.2f} max {win.get('max', math.nan):.2f} ms)"
    )
    print(
        f"goodput   {st.get('edgeagent_window_goodput_fps', math.nan):.1f} in-SLA frames/s; "
        f"windows {int(st.get('edgeagent_windows_total', 0))}, "
        f"over SLA {int(st.get('edgeagent_sla_violating_windows_total', 0))}"
    )
    print(
        f"level     {int(st.get('edgeagent_level', 0))}: streams {int(st.get('edgeagent_exec_streams', 0))}, "
        f"requests {int(st.get('edgeagent_exec_requests', 0))}, batch {int(st.get('edgeagent_exec_batch', 0))}, "
        f"threads {int(st.get('edgeagent_exec_threads', 0))}; switches "
        f"{int(st.get('edgeagent_level_switches_total', 0))}"
    )
    print(
        f"frames    sizes with their own graph: {', '.join(sorted(st.get('sizes', []))) or '-'}; "
        f"served by the any-size graph {int(st.get('edgeagent_any_size_frames_total', 0))}; "
        f"peer disconnects {int(st.get('edgeagent_peer_disconnects_total', 0))}"
    )
    # Per source: late = frames dropped because they could no longer make the SLA (misses avoided);
    # over SLA = results that were published late anyway (misses the agent did not avoid); last seen:
    # seconds since the source last sent ("expired": sources that went silent and freed their place).
    idle = st.get("idle_s", {})
    print(
        f"{'source':<24}{'last seen':>10}{'received':>10}{'processed':>11}{'over SLA':>10}{'late':>8}"
        "  other dropped/rejected"
    )
    for src, c in sorted(st["sources"].items()):
        other = ", ".join(f"{k}={v}" for k, v in sorted(c.items()) if ":" in k and k != "dropped:late") or "-"
        seen = f"{idle[src]:.1f}s" if src in idle else "expired" if src == "_expired" else "-"
        print(
            f"{src:<24}{seen:>10}{c['received']:>10}{c['processed']:>11}{c['over_sla']:>10}{c['dropped:late']:>8}"
            f"  {other}"
        )
    return EXIT_OK
