"""Synthetic detectors built with OpenVINO's graph API whose outputs encode known boxes (so a test knows
the exact detections), a faithful Frigate ZMQ detector client, and the real trained detector that ships
inside a PyPI wheel (nudenet's YOLOv8n-format ONNX, installed by .ci/run without its dependencies)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import zmq

# (cx, cy, w, h, class, score) in model-input pixels of a 320x320 YOLO model.
YOLO_CANDIDATES = [
    (160.0, 160.0, 64.0, 48.0, 0, 0.90),  # A
    (164.0, 160.0, 64.0, 48.0, 0, 0.80),  # overlaps A (IoU 0.88), same class: suppressed by NMS
    (164.0, 160.0, 64.0, 48.0, 2, 0.70),  # the same place, another class: kept (class-wise NMS)
    (300.0, 80.0, 60.0, 40.0, 1, 0.60),  # crosses the right edge and the letterbox pad: clipped
    (40.0, 280.0, 20.0, 20.0, 1, 0.10),  # under the score threshold
    (60.0, 250.0, 30.0, 30.0, 1, 0.50),  # a tie with the next, apart: both kept, in candidate order
    (120.0, 250.0, 30.0, 30.0, 1, 0.50),
    (200.0, 250.0, 30.0, 30.0, 2, 0.45),  # a tie with the next, overlapping: the earlier one is kept
    (202.0, 250.0, 30.0, 30.0, 2, 0.45),
]
# Candidate 3 also scores 0.40 as class 0 (above the threshold): one label per box, its best (class 1),
# as ultralytics decodes; a box is never reported once per class.
SECOND_SCORES = {3: (0, 0.40)}
KEPT = (0, 2, 3, 5, 6, 7)  # YOLO_CANDIDATES after threshold 0.25 and class-wise NMS 0.45, best first
YOLO_CLASSES = 3
LABELS = ["person", "car", "dog"]
# SSD rows (label, conf, x_min, y_min, x_max, y_max), normalised.
# YOLO-NAS flat rows (image, x1, y1, x2, y2, score, class) in 320x320 input pixels; then padding (class -1).
YOLONAS_ROWS = [(0, 40.0, 80.0, 200.0, 240.0, 0.9, 2), (0, 0.0, 160.0, 160.0, 320.0, 0.6, 7), (0, 5, 5, 9, 9, 0.1, 1)]
SSD_ROWS = [(1, 0.95, 0.25, 0.25, 0.75, 0.5), (2, 0.5, 0.0, 0.5, 0.5, 1.0), (3, 0.1, 0.1, 0.1, 0.2, 0.2)]


def _through_input(x: Any, const: np.ndarray) -> Any:
    """``const`` + 0 x mean(input): the output depends on the input, so the graph is not folded away."""
    zero = ops.multiply(
        ops.reduce_mean(x, ops.constant(np.array([1, 2, 3], np.int64)), keep_dims=False), np.float32(0.0)
    )
    shape = [-1] + [1] * (const.ndim - 1)  # any batch: the constant broadcasts over it
    return ops.add(ops.constant(const), ops.reshape(zero, ops.constant(np.array(shape, np.int64)), False))


def yolo_model(
    path: Path, size: int = 320, candidates_first: bool = False, n: int = 2100, scores_by_brightness: bool = False
) -> Path:
    """An ultralytics-format head: output [1, 4+C, N] (or [1, N, 4+C]) with YOLO_CANDIDATES first.
    ``scores_by_brightness``: every score times the frame's mean pixel / 255 (channels first only), so the
    frames of one batch get different detections: none for a black frame, all for a white one."""
    out = np.zeros((1, 4 + YOLO_CLASSES, n), np.float32)
    out[0, 4:, :] = 0.001
    for i, (cx, cy, w, h, c, s) in enumerate(YOLO_CANDIDATES):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + c, i] = s
    for i, (c, s) in SECOND_SCORES.items():
        out[0, 4 + c, i] = s
    if candidates_first:
        out = np.ascontiguousarray(out.transpose(0, 2, 1))
    x = ops.parameter([1, 3, size, size], np.float32, name="images")
    y = _through_input(x, out)
    if scores_by_brightness:
        bright = ops.divide(ops.reduce_mean(x, np.array([1, 2, 3]), keep_dims=True), np.float32(255))  # [B,1,1,1]
        is_box = (np.arange(4 + YOLO_CLASSES) < 4).astype(np.float32).reshape(1, -1, 1)
        factor = ops.add(is_box, ops.multiply(1 - is_box, ops.reshape(bright, np.array([-1, 1, 1]), False)))
        y = ops.multiply(y, factor)
    y.output(0).get_tensor().set_names({"output0"})
    ov.save_model(ov.Model([y.output(0)], [x], "synthetic-yolo"), path, compress_to_fp16=False)
    return path


def ssd_model(path: Path, size: int = 300) -> Path:
    rows = np.zeros((1, 1, 10, 7), np.float32)
    rows[0, 0, len(SSD_ROWS) :, 0] = -1
    for i, (label, conf, *box) in enumerate(SSD_ROWS):
        rows[0, 0, i] = (0, label, conf, *box)
    x = ops.parameter([1, 3, size, size], np.float32, name="image")
    y = _through_input(x, rows)
    y.output(0).get_tensor().set_names({"detection_out"})
    ov.save_model(ov.Model([y.output(0)], [x], "synthetic-ssd"), path, compress_to_fp16=False)
    return path


def yolonas_model(path: Path, size: int = 320) -> Path:
    rows = np.zeros((20, 7), np.float32)
    rows[len(YOLONAS_ROWS) :, 6] = -1
    for i, row in enumerate(YOLONAS_ROWS):
        rows[i] = row
    x = ops.parameter([1, 3, size, size], np.float32, name="input")
    y = _through_input(x, rows)
    y.output(0).get_tensor().set_names({"graph2_flat_predictions"})
    ov.save_model(ov.Model([y.output(0)], [x], "synthetic-yolonas"), path, compress_to_fp16=False)
    return path


def expected_yolo(frame_hw: tuple[int, int], model: int = 320, letterbox: bool = True) -> list[dict[str, Any]]:
    """YOLO_CANDIDATES kept (KEPT), mapped to a frame (float64 reference)."""
    h, w = frame_hw
    if letterbox:
        s = min(model / h, model / w)
        nh, nw = round(h * s), round(w * s)
        sx, sy, top, left = nw / w, nh / h, (model - nh) // 2, (model - nw) // 2
    else:
        sx, sy, top, left = model / w, model / h, 0, 0
    out = []
    for cx, cy, bw, bh, c, score in (YOLO_CANDIDATES[i] for i in KEPT):
        x1, y1 = (cx - bw / 2 - left) / sx, (cy - bh / 2 - top) / sy
        x2, y2 = (cx + bw / 2 - left) / sx, (cy + bh / 2 - top) / sy
        box = [min(max(v, 0), lim) for v, lim in ((x1, w), (y1, h), (x2, w), (y2, h))]
        out.append({"class": c, "label": LABELS[c], "score": score, "box": box})
    return out


def nudenet_path() -> Path | None:
    """nudenet's YOLOv8n-format detector (320x320, 18 classes), shipped inside its PyPI wheel."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "320n.onnx"
    return p if p.exists() else None


class FrigateClient:
    """Frigate's ZMQ detector client as its source describes it (frigate/detectors/plugins/zmq_ipc.py,
    Frigate >= 0.17), written from that description: a REQ socket with send and receive timeouts and
    linger 0; a handshake on start and after every timeout (30 s to answer); on a timeout or error the
    socket is re-created and the zero result returned; a reply is decoded from its header and copied
    into a (20, 6) array with no try around the copy, as Frigate's detector does (a reply of another
    shape raises here, where it would kill Frigate's detector process)."""

    def __init__(self, endpoint: str, model_name: str, timeout_ms: int = 200, model_type: str = "yologeneric") -> None:
        self.ctx: zmq.Context[Any] = zmq.Context.instance()
        self.endpoint = endpoint
        self.model_name = model_name
        self.timeout_ms = timeout_ms
        self.model_type = model_type
        self.timeouts = 0
        self.sock: zmq.Socket[Any] = self._socket()
        self.ready = self.handshake()

    def _socket(self) -> zmq.Socket[Any]:
        s = self.ctx.socket(zmq.REQ)
        s.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        s.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.endpoint)
        return s

    def _reset(self) -> None:
        self.sock.close(linger=0)
        self.sock = self._socket()
        self.ready = self.handshake()

    def handshake(self, model_bytes: bytes | None = None) -> bool:
        self.sock.send_multipart([json.dumps({"model_request": True, "model_name": self.model_name}).encode()])
        self.sock.setsockopt(zmq.RCVTIMEO, 30_000)
        try:
            reply = json.loads(self.sock.recv_multipart()[0])
            if not reply.get("model_available") and model_bytes is not None:
                header = {"model_data": True, "model_name": self.model_name}
                self.sock.send_multipart([json.dumps(header).encode(), model_bytes])
                pushed = json.loads(self.sock.recv_multipart()[0])
                return bool(pushed.get("model_saved") and pushed.get("model_loaded"))
            return bool(reply.get("model_available") and reply.get("model_loaded"))
        finally:
            self.sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)

    def detect_raw(self, tensor: np.ndarray) -> np.ndarray:
        result = np.zeros((20, 6), np.float32)
        header = {"shape": list(tensor.shape), "dtype": str(tensor.dtype.name), "model_type": self.model_type}
        try:
            self.sock.send_multipart([json.dumps(header).encode(), tensor.tobytes(order="C")])
            frames = self.sock.recv_multipart()
        except zmq.Again:
            self.timeouts += 1
            self._reset()
            return result
        if len(frames) == 1:
            decoded = np.frombuffer(frames[0], np.float32).reshape((20, 6))
        else:
            h = json.loads(frames[0])
            decoded = np.frombuffer(frames[1], dtype=np.dtype(h["dtype"])).reshape(h["shape"])
        result[:] = decoded  # Frigate's copy: any other shape raises
        return result

    def close(self) -> None:
        self.sock.close(linger=0)
