"""``edgeagent bench detect``: what detection post-processing adds to a detector's inference, and
whether OpenVINO's in-graph NMS would be cheaper than the agent's numpy decode.

Measured in one process, interleaved sample by sample in rounds (medians over rounds of per-round
p50s), on the same compiled model (LATENCY hint, the agent's level 0) and the same frame:

(a) inference alone (``start_async`` + ``wait``);
(b) the agent's decode of that output: best class, threshold, class-wise NMS, mapping to the frame;
(c) inference of the same model with decode + NMS appended in the graph (``MulticlassNms``-9);
(d) (b) on a COCO-shaped ``[1, 84, 8400]`` output (80 classes) with a few true boxes.

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
import openvino.opset9 as ops9
import openvino.opset13 as ops

from edgeagent.bench.latency import _machine
from edgeagent.config import ModelConfig, coerce
from edgeagent.detect import decode_yolo, to_frame
from edgeagent.engine import LEVEL0, CpuPlan, Engine
from edgeagent.errors import ConfigError
from edgeagent.models import geometry, prepare, read_model
from edgeagent.tools import percentile


def _nudenet() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("nudenet")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "320n.onnx"
    return str(p) if p.exists() else None


def _with_graph_nms(model: ov.Model, score: float, iou: float, limit: int) -> ov.Model:
    """The model with YOLO decode + class-wise NMS appended (output: [K, 6] class, score, x1, y1, x2, y2)."""
    out = model.output(0)
    c4 = out.get_partial_shape()[1].get_length()
    boxes = ops.slice(out, np.array([0]), np.array([4]), np.array([1]), np.array([1]))  # [1, 4, N]
    scores = ops.slice(out, np.array([4]), np.array([c4]), np.array([1]), np.array([1]))  # [1, C, N]
    cx, cy, w, h = ops.split(boxes, 1, 4).outputs()
    half_w, half_h = ops.multiply(w, np.float32(0.5)), ops.multiply(h, np.float32(0.5))
    xyxy = ops.concat([ops.subtract(cx, half_w), ops.subtract(cy, half_h), ops.add(cx, half_w), ops.add(cy, half_h)], 1)
    xyxy = ops.transpose(xyxy, np.array([0, 2, 1]))  # [1, N, 4]
    nms = ops9.multiclass_nms(
        xyxy,
        scores,
        sort_result_type="score",
        iou_threshold=iou,
        score_threshold=score,
        keep_top_k=limit,
        normalized=False,
    )
    return ov.Model([nms.output(0)], model.get_parameters(), "with-nms")


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = args.model or _nudenet()
    if path is None:
        raise ConfigError("no detector: pass --model (ultralytics format), or pip install --no-deps nudenet==3.4.2")
    shape = coerce(args.input_shape, tuple[int, ...]) if args.input_shape else (1, 3, 640, 640)
    cfg = ModelConfig(path=path, input_shape=shape, rgb=True, scale=(255.0,), resize="letterbox")
    engine = Engine(cfg, CpuPlan.make(None))
    compiled = engine.compile(LEVEL0)
    core = engine.core
    info = compiled.info
    props = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": len(engine.cpus.inference)}
    try:
        from matplotlib.cbook import get_sample_data
        from PIL import Image

        photo = Image.open(get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
        frame = np.ascontiguousarray(np.asarray(photo)[..., ::-1])
        picture = "grace_hopper.jpg"
    except ImportError:
        frame = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        picture = "noise"
    h, w = frame.shape[:2]
    key = (h, w, "bgr")
    plain_model = engine.compile_size(compiled, key, cfg)
    plain = plain_model.create_infer_request()
    nms_model = core.compile_model(
        _with_graph_nms(prepare(*read_model(core, cfg), cfg, key=key)[0], args.score, args.iou, 100), "CPU", props
    )
    graph_nms = nms_model.create_infer_request()
    tensor = ov.Tensor(frame[None], shared_memory=True)
    plain.set_input_tensor(tensor)
    graph_nms.set_input_tensor(tensor)
    geo = geometry((h, w), info)
    coco = np.zeros((1, 84, 8400), np.float32)
    coco[0, 4:, :] = np.random.default_rng(1).random((80, 8400), np.float32) * 0.05
    for i in range(6):
        coco[0, :4, i * 7] = (100 + 60 * i, 200, 50, 80)
        coco[0, 4 + i, i * 7] = 0.9
    samples: dict[str, list[list[float]]] = {"a": [], "b": [], "c": [], "d": []}
    found = 0

    def sample(kind: str) -> float:
        nonlocal found
        t0 = time.perf_counter_ns()
        if kind == "a":
            plain.start_async()
            plain.wait()
        elif kind == "b":
            det = to_frame(decode_yolo(plain.get_output_tensor(0).data, args.score, args.iou, 100), geo)
            found = len(det)
        elif kind == "c":
            graph_nms.start_async()
            graph_nms.wait()
        else:
            decode_yolo(coco, args.score, args.iou, 100)
        return (time.perf_counter_ns() - t0) / 1e6

    for k in "abcd" * 10:  # warm-up
        sample(k)
    for _ in range(args.rounds):
        xs: dict[str, list[float]] = {k: [] for k in samples}
        for _ in range(args.per_round):
            order = ["a", "c", "d"]
            random.shuffle(order)
            for k in order:
                xs[k].append(sample(k))
                if k == "a":
                    xs["b"].append(sample("b"))  # decodes the output just produced
        for k in samples:
            samples[k].append(xs[k])
    p50 = {k: statistics.median(percentile(x, 50) for x in v) for k, v in samples.items()}
    ratio = [percentile(b, 50) / percentile(a, 50) for a, b in zip(samples["a"], samples["b"])]
    graph_ratio = [
        percentile(c, 50) / (percentile(a, 50) + percentile(b, 50))
        for a, b, c in zip(samples["a"], samples["b"], samples["c"])
    ]
    return {
        "model": path,
        "input": list(shape),
        "picture": f"{picture} {w}x{h}",
        "detections": found,
        "precision": compiled.precision,
        "machine": _machine(),
        "rounds": args.rounds,
        "per_round": args.per_round,
        "p50_ms": {k: round(v, 4) for k, v in p50.items()},
        "decode_over_inference": round(statistics.median(ratio), 4),
        "decode_over_inference_range": [round(min(ratio), 4), round(max(ratio), 4)],
        "graph_nms_over_numpy": round(statistics.median(graph_ratio), 4),
    }


def format_table(r: dict[str, Any]) -> str:
    p = r["p50_ms"]
    lo, hi = r["decode_over_inference_range"]
    return "\n".join(
        [
            f"bench detect: {r['model']} input {r['input']}, {r['picture']} ({r['detections']} detections), "
            f"precision {r['precision']}, {r['rounds']} rounds x {r['per_round']}, {r['machine']}",
            f"(a) inference p50            {p['a']:.3f} ms",
            f"(b) numpy decode + NMS p50   {p['b']:.4f} ms = {100 * r['decode_over_inference']:.2f} % of (a) "
            f"(rounds {100 * lo:.2f}..{100 * hi:.2f} %)",
            f"(c) inference + in-graph NMS {p['c']:.3f} ms = {r['graph_nms_over_numpy']:.3f} x (a)+(b)",
            f"(d) numpy decode, [1,84,8400] {p['d']:.4f} ms",
        ]
    )


def main(args: argparse.Namespace) -> int:
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
    p.add_argument("--json", type=Path, help="write results as JSON here")
