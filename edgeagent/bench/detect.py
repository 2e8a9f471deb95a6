"""``edgeagent bench detect``: what YOLO post-processing adds to a detector's inference: in the graph
(OpenVINO's MulticlassNms, what the agent does) or in numpy (the alternative).

Measured in one process, interleaved sample by sample in rounds (medians over rounds of per-round
p50s), compiled as the agent's level 0 (LATENCY hint), on the same frame:

(e) inference of the plain model (pre-processing in the graph, no post-processing);
(a) inference with decode + class-wise NMS appended in the graph (``models._yolo_nms``);
(b) the agent's remaining Python: NMS rows → detections (in frame pixels) → their JSON;
(d) the numpy alternative on (e)'s output: best class over the whole [C, N] score block, threshold,
    class-wise NMS, frame pixels (``detect.decode_yolo``), their JSON.

Default model: nudenet's YOLOv8n-format ``320n.onnx`` (shipped in its PyPI wheel) at 640x640, a
YOLOv8n-class detector; any ultralytics-format model with ``--model``/``--input-shape``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from edgeagent.bench.latency import _machine
from edgeagent.config import ModelConfig, coerce
from edgeagent.detect import Decoder, decode_yolo, to_frame
from edgeagent.engine import LEVEL0, CpuPlan, Engine, _own_outputs
from edgeagent.errors import ConfigError
from edgeagent.models import geometry
from edgeagent.tools import percentile


def _nudenet() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("nudenet")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "320n.onnx"
    return str(p) if p.exists() else None


def _picture() -> tuple[np.ndarray, str]:
    """A real photograph (matplotlib's grace_hopper.jpg) as BGR, or noise without matplotlib."""
    try:
        from matplotlib.cbook import get_sample_data
        from PIL import Image

        photo = Image.open(get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
        return np.ascontiguousarray(np.asarray(photo)[..., ::-1]), "grace_hopper.jpg"
    except ImportError:
        return np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8), "noise"


def synthetic_head(path: Path, classes: int, candidates: int = 300, seed: int = 1) -> str:
    """An ultralytics-format head at 640x640, ``[1, 4 + classes, 8400]``, behind one strided convolution:
    ``candidates`` random boxes score 0.3-0.95 in a random class, the rest below 0.05 (what a YOLOv8n
    COCO head looks like to the post-processing). Written as IR to ``path``; returns it."""
    import openvino.opset13 as ops

    rng = np.random.default_rng(seed)
    head = np.zeros((1, 4 + classes, 8400), np.float32)
    head[0, 0:2] = rng.uniform(0, 640, (2, 8400))
    head[0, 2:4] = rng.uniform(8, 120, (2, 8400))
    head[0, 4:] = rng.uniform(0, 0.05, (classes, 8400))
    idx = rng.choice(8400, candidates, replace=False)
    head[0, 4 + rng.integers(0, classes, candidates), idx] = rng.uniform(0.3, 0.95, candidates)
    x = ops.parameter([1, 3, 640, 640], np.float32, name="images")
    y = ops.convolution(x, rng.standard_normal((16, 3, 3, 3)).astype(np.float32), [2, 2], [1, 1], [1, 1], [1, 1])
    zero = ops.multiply(ops.reduce_mean(y, np.array([1, 2, 3]), False), np.float32(0))  # nothing folds away
    out = ops.add(ops.constant(head), ops.reshape(zero, np.array([-1, 1, 1]), False))
    ov.save_model(ov.Model([out.output(0)], [x], f"synthetic-head-{classes}"), path, compress_to_fp16=False)
    return str(path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "synthetic_classes", 0):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            head = synthetic_head(Path(tmp) / "head.xml", args.synthetic_classes)
            return run(argparse.Namespace(**{**vars(args), "synthetic_classes": 0, "model": head}))
    path = args.model or _nudenet()
    if path is None:
        raise ConfigError("no detector: pass --model (ultralytics format), or pip install --no-deps nudenet==3.4.2")
    shape = coerce(args.input_shape, tuple[int, ...]) if args.input_shape else (1, 3, 640, 640)
    cfg = ModelConfig(path=path, input_shape=shape, rgb=True, scale=(255.0,), resize="letterbox")
    engine = Engine(cfg, CpuPlan.make(None), yolo_nms=(args.score, args.iou, 100))
    compiled = engine.compile(LEVEL0)
    info = compiled.info
    frame, picture = _picture()
    h, w = frame.shape[:2]
    key = (h, w, "bgr")
    with_nms = engine.compile_size(compiled, key, cfg).create_infer_request()
    plain = Engine(cfg, CpuPlan.make(None)).compile_size(compiled, key, cfg).create_infer_request()
    rows = [n for n, _t, _s in info.outputs].index("detections")
    tensor = ov.Tensor(frame[None], shared_memory=True)
    with_nms.set_input_tensor(tensor)
    plain.set_input_tensor(tensor)
    # The outputs in arrays of the bench's own, as the agent's requests have them (every output here has a
    # static shape): reading them takes no OpenVINO call.
    nms_out = [o for o in _own_outputs(with_nms) if o is not None]
    plain_out = [o for o in _own_outputs(plain) if o is not None]
    assert len(nms_out) == rows + 2 and len(plain_out) == 1, "a detector output without a static shape"
    geo = geometry((h, w), info)
    decoder = Decoder("yolo", info.model_hw, args.score, args.iou, 100, rows=1)
    samples: dict[str, list[list[float]]] = {"a": [], "b": [], "d": [], "e": []}
    found = {"b": 0, "d": 0}

    def sample(kind: str) -> float:
        t0 = time.perf_counter_ns()
        if kind in ("a", "e"):
            req = with_nms if kind == "a" else plain
            req.start_async()
            req.wait()
        elif kind == "b":
            det = decoder(nms_out, geo)
            det.json_text()  # what the agent writes into every result
            found["b"] = len(det)
        else:
            det = to_frame(decode_yolo(plain_out[0], args.score, args.iou, 100), geo)
            det.json_text()
            found["d"] = len(det)
        return (time.perf_counter_ns() - t0) / 1e6

    for k in "aebd" * 10:  # warm-up
        sample(k)
    for _ in range(args.rounds):
        xs: dict[str, list[float]] = {k: [] for k in samples}
        for _ in range(args.per_round):
            order = ["a", "e"]
            random.shuffle(order)
            for k in order:  # each decode right after the inference that produced its output
                xs[k].append(sample(k))
                then = "b" if k == "a" else "d"
                xs[then].append(sample(then))
        for k in samples:
            samples[k].append(xs[k])
    p50 = {k: statistics.median(percentile(x, 50) for x in v) for k, v in samples.items()}
    per_round = [{k: percentile(v[r], 50) for k, v in samples.items()} for r in range(args.rounds)]
    added = [(x["a"] + x["b"]) / x["e"] - 1 for x in per_round]  # the agent's whole post-processing
    numpy_added = [x["d"] / x["e"] for x in per_round]
    return {
        "model": path,
        "input": list(shape),
        "picture": f"{picture} {w}x{h}",
        "detections": found["b"],
        "detections_numpy": found["d"],
        "precision": compiled.precision,
        "machine": _machine(),
        "rounds": args.rounds,
        "per_round": args.per_round,
        "p50_ms": {k: round(v, 4) for k, v in p50.items()},
        "postprocess_added": round(statistics.median(added), 4),
        "postprocess_added_range": [round(min(added), 4), round(max(added), 4)],
        "numpy_added": round(statistics.median(numpy_added), 4),
    }


def format_table(r: dict[str, Any]) -> str:
    p = r["p50_ms"]
    lo, hi = r["postprocess_added_range"]
    rows = [
        ("(e) inference, plain model", p["e"]),
        ("(a) inference, + decode and NMS in the graph", p["a"]),
        ("(b) the agent's Python for the boxes", p["b"]),
        ("(d) numpy decode + NMS of (e)'s output", p["d"]),
    ]
    lines = [
        f"bench detect: {r['model']} input {r['input']}, {r['picture']} ({r['detections']} detections; numpy: "
        f"{r['detections_numpy']}), precision {r['precision']}, {r['rounds']} rounds x {r['per_round']}, "
        f"{r['machine']}",
        *(f"{name:<46}{ms:>9.3f} ms" for name, ms in rows),
        f"post-processing adds {100 * r['postprocess_added']:.2f} % to the plain model's p50 in the graph "
        f"((a)+(b) vs (e); rounds {100 * lo:.2f}..{100 * hi:.2f} %), {100 * r['numpy_added']:.2f} % in numpy",
    ]
    return "\n".join(lines)


def run_agents(args: argparse.Namespace) -> dict[str, Any]:
    """End to end: two real agents on the same model (``--static``), one with ``--postprocess none``,
    one with ``--postprocess yolo`` (and ``--labels``-free JSON boxes); a REQ camera sends the same
    frame to each in turn (shuffled), paced; the round trip p50/p99 ratio, median over rounds."""
    import subprocess
    import sys
    import tempfile

    import zmq

    from edgeagent.bench import free_port, stop_process
    from edgeagent.wire import encode_imagezmq

    path = args.model or _nudenet()
    if path is None:
        raise ConfigError("no detector: pass --model (ultralytics format), or pip install --no-deps nudenet==3.4.2")
    shape = args.input_shape or "1,3,640,640"
    frame = _picture()[0]
    parts = encode_imagezmq("bench", frame)
    procs, socks = {}, {}
    ctx: zmq.Context[Any] = zmq.Context()
    tmp = Path(tempfile.mkdtemp(prefix="edgeagent-bench-detect-"))
    try:
        for name in ("none", "yolo"):
            ep = f"tcp://127.0.0.1:{free_port()}"
            cmd = [sys.executable, "-m", "edgeagent", "run", "--static", "--listen", ep, "--pull", "", "--results", ""]
            cmd += ["--metrics", "", "--model", path, "--input-shape", shape, "--rgb", "--scale", "255"]
            cmd += ["--resize", "letterbox", "--postprocess", name, "--log-level", "warning"]
            with (tmp / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
            s = socks[name] = ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(ep)

        def send(name: str) -> tuple[float, dict[str, Any]]:
            t0 = time.perf_counter_ns()
            socks[name].send_multipart(parts, copy=False)
            if not socks[name].poll(120_000):
                raise RuntimeError(f"agent --postprocess {name} did not answer; log in {tmp}")
            reply = json.loads(socks[name].recv())
            return (time.perf_counter_ns() - t0) / 1e6, reply

        for name in procs:
            reply = send(name)[1]
            if reply.get("status") != "ok":
                raise RuntimeError(f"agent --postprocess {name} replied {reply}")
        for _ in range(10):
            for name in procs:
                send(name)
        per: dict[str, list[list[float]]] = {"none": [], "yolo": []}
        found = 0
        for _ in range(args.rounds):
            xs: dict[str, list[float]] = {"none": [], "yolo": []}
            for _ in range(args.per_round):
                order = ["none", "yolo"]
                random.shuffle(order)
                for name in order:
                    dt, reply = send(name)
                    xs[name].append(dt)
                    found = len(reply.get("detections", [])) if name == "yolo" else found
                    time.sleep(0.01)  # paced like a camera
            for name in per:
                per[name].append(xs[name])
    finally:
        for s in socks.values():
            s.close(0)
        ctx.term()
        for p in procs.values():
            stop_process(p)
    out: dict[str, Any] = {"model": path, "input": shape, "detections": found, "machine": _machine()}
    for q in (50, 99):
        r = [percentile(y, q) / percentile(n, q) - 1 for n, y in zip(per["none"], per["yolo"])]
        out[f"p{q}"] = {
            "none_ms": round(statistics.median(percentile(x, q) for x in per["none"]), 3),
            "yolo_ms": round(statistics.median(percentile(x, q) for x in per["yolo"]), 3),
            "added": round(statistics.median(r), 4),
            "added_range": [round(min(r), 4), round(max(r), 4)],
        }
    return out


def main(args: argparse.Namespace) -> int:
    if args.agents:
        r = run_agents(args)
        print(
            f"bench detect --agents: {r['model']} input {r['input']}, {r['detections']} detections, "
            f"{args.rounds} rounds x {args.per_round}, {r['machine']}"
        )
        for q in ("p50", "p99"):
            x = r[q]
            lo, hi = x["added_range"]
            print(
                f"{q}: --postprocess none {x['none_ms']:.3f} ms, yolo {x['yolo_ms']:.3f} ms: "
                f"+{100 * x['added']:.2f} % (rounds {100 * lo:.2f}..{100 * hi:.2f} %)"
            )
        if args.json:
            args.json.write_text(json.dumps(r, indent=2))
        return 0
    r = run(args)
    print(format_table(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


def add_parser(bsub: Any) -> None:
    p = bsub.add_parser("detect", help="detection post-processing cost: numpy decode vs in-graph NMS")
    p.add_argument("--model", help="an ultralytics-format detector (default: nudenet's YOLOv8n, if installed)")
    p.add_argument("--input-shape", help="N,C,H,W (default 1,3,640,640)")
    p.add_argument("--score", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.45)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=60)
    p.add_argument("--agents", action="store_true", help="end to end: an agent with and one without post-processing")
    p.add_argument(
        "--synthetic-classes",
        type=int,
        default=0,
        metavar="C",
        help="a synthetic [1, 4+C, 8400] head with 300 candidates instead of a model (e.g. 80: COCO's)",
    )
    p.add_argument("--json", type=Path, help="write results as JSON here")
