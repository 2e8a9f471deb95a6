"""Frigate NVR's ZMQ detector protocol (Frigate >= 0.17, ``frigate/detectors/plugins/zmq_ipc.py``).

Frigate connects a REQ socket (send/receive timeout ``request_timeout_ms``, default 200 ms, linger 0)
to the agent's ROUTER (``--frigate ENDPOINT``); several detector processes may connect at once. Three
requests, one reply each:

* **handshake**, on start and after every timeout: ``[{"model_request": true, "model_name": NAME}]`` →
  ``{"model_available": bool, "model_loaded": bool}``, answered at once (Frigate waits up to 30 s; a
  failed handshake leaves it returning no detections until it restarts, so it never fails spuriously).
* **model push**, when the model was not available: ``[{"model_data": true, "model_name"}, bytes]`` →
  ``{"model_saved": bool, "model_loaded": bool}`` (accepted only with ``frigate.accept_models``).
* **inference**: ``[{"shape", "dtype": "uint8"|"float32", "model_type"}, raw C-order tensor]`` with the
  layouts ``[1,H,W,3]`` (nhwc, Frigate's default), ``[1,3,H,W]`` (nchw), ``[H,W,1,3]`` and ``[H,W,3,1]``
  → ``[{"shape": [20, 6], "dtype": "float32"}, 480 bytes]``: rows ``[class_id, score, y_min, x_min,
  y_max, x_max]`` normalised to the request's W x H, best score first, zero rows last. Never any other
  shape: Frigate copies the reply into a ``(20, 6)`` array without a try, so anything else kills its
  detector process. Every error, drop or rejection is answered with the zero result.

A request is a frame of the source ``frigate`` (one slot per connected Frigate socket), so freshness,
the SLA, accounting, metrics and the allow-list apply as for any camera; a request older than
``frigate.request_timeout_ms`` (Frigate has given up on it) is dropped as ``late``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.config import FrigateConfig
from edgeagent.detect import Detections
from edgeagent.errors import BadFrame
from edgeagent.wire import Frame, FrameLimits, as_memoryview

SOURCE = "frigate"
ROWS = 20
REPLY_HEADER = json.dumps({"shape": [ROWS, 6], "dtype": "float32"}).encode()
ZERO = np.zeros((ROWS, 6), np.float32)
ZERO_REPLY = [REPLY_HEADER, ZERO.tobytes()]
# Frigate's ModelTypeEnum names, as its client sends them ("yologeneric", not "yolo-generic").
MODEL_TYPES = ("ssd", "yolox", "yolonas", "yologeneric", "rfdetr", "dfine")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Handshake:
    model_name: str


@dataclass(frozen=True)
class ModelPush:
    model_name: str
    data: memoryview


def _header(part: Any, limits: FrameLimits) -> dict[str, Any]:
    raw = as_memoryview(part)
    if raw.nbytes > limits.max_header_bytes:
        raise BadFrame("header_size", f"header is {raw.nbytes} bytes, limit {limits.max_header_bytes}", SOURCE)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadFrame("json", "header is not UTF-8 JSON", SOURCE) from None
    if not isinstance(header, dict):
        raise BadFrame("json", f"header is JSON {type(header).__name__}, expected an object", SOURCE)
    return header


def _model_name(header: dict[str, Any]) -> str:
    name = header.get("model_name")
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise BadFrame("keys", "'model_name' must be a file name (letters, digits, '.', '_', '-')", SOURCE)
    return name


def _image(header: dict[str, Any], payload: memoryview, cfg: FrigateConfig, limits: FrameLimits) -> np.ndarray:
    """The request's tensor as an HxWx3 uint8 frame (a view for nhwc uint8; a copy otherwise)."""
    shape, dtype = header.get("shape"), header.get("dtype")
    if not isinstance(shape, list) or len(shape) != 4 or not all(type(d) is int and d > 0 for d in shape):
        raise BadFrame("shape", f"shape {str(shape)[:60]} is not [1,H,W,3], [1,3,H,W], [H,W,1,3] or [H,W,3,1]", SOURCE)
    if dtype not in ("uint8", "float32"):
        raise BadFrame("dtype", f"dtype {str(dtype)[:32]!r} is not uint8 or float32", SOURCE)
    itemsize = 1 if dtype == "uint8" else 4
    declared = math.prod(shape) * itemsize
    if declared > limits.max_payload_bytes:
        raise BadFrame("oversize", f"shape {shape} {dtype} declares {declared} bytes", SOURCE)
    if payload.nbytes != declared:
        raise BadFrame("size", f"payload is {payload.nbytes} bytes, shape {shape} {dtype} needs {declared}", SOURCE)
    a, b, c, d = shape
    if a == 1 and d == 3:
        layout, hw = "nhwc", (b, c)
    elif a == 1 and b == 3:
        layout, hw = "nchw", (c, d)
    elif c == 1 and d == 3:
        layout, hw = "hwnc", (a, b)
    elif c == 3 and d == 1:
        layout, hw = "hwcn", (a, b)
    else:
        raise BadFrame("shape", f"shape {shape} is not [1,H,W,3], [1,3,H,W], [H,W,1,3] or [H,W,3,1]", SOURCE)
    if max(hw) > limits.max_side:
        raise BadFrame("shape", f"shape {shape}: sides must be at most {limits.max_side}", SOURCE)
    x = np.frombuffer(payload, np.uint8 if dtype == "uint8" else np.float32).reshape(shape)
    if layout == "nhwc":
        x = x[0]
    elif layout == "nchw":
        x = x[0].transpose(1, 2, 0)
    elif layout == "hwnc":
        x = x[:, :, 0, :]
    else:
        x = x[:, :, :, 0]
    if dtype == "float32":
        scale = 255.0 if cfg.float_range == "0-1" else 1.0
        x = np.clip(np.rint(np.nan_to_num(x) * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x)


def parse(parts: Sequence[Any], cfg: FrigateConfig, limits: FrameLimits, rx_ns: int) -> Handshake | ModelPush | Frame:
    """One Frigate request. Raises BadFrame (answered with the zero result)."""
    if not 1 <= len(parts) <= 2:
        raise BadFrame("parts", f"{len(parts)} message parts, expected 1 or 2", SOURCE)
    header = _header(parts[0], limits)
    if header.get("model_request") is True:
        return Handshake(_model_name(header))
    if header.get("model_data") is True:
        if len(parts) != 2:
            raise BadFrame("parts", "a model push is [header, model bytes]", SOURCE)
        return ModelPush(_model_name(header), as_memoryview(parts[1]))
    if len(parts) != 2:
        raise BadFrame("parts", "an inference request is [header, tensor]", SOURCE)
    model_type = header.get("model_type")
    if model_type is not None and model_type not in MODEL_TYPES:
        raise BadFrame("keys", f"model_type {str(model_type)[:32]!r} is not one of {', '.join(MODEL_TYPES)}", SOURCE)
    image = _image(header, as_memoryview(parts[1]), cfg, limits)
    return Frame(SOURCE, -1, image, rx_ns, None, "frigate", "raw", parts[1], pix=cfg.pixel_format)


def reply(det: Detections | None, frame_hw: tuple[int, int]) -> list[bytes]:
    """The ``(20, 6)`` float32 reply for detections in the request's pixels."""
    if det is None or len(det) == 0:
        return ZERO_REPLY
    h, w = frame_hw
    k = min(ROWS, len(det))
    rows = np.zeros((ROWS, 6), np.float32)
    rows[:k, 0] = det.classes[:k]
    rows[:k, 1] = det.scores[:k]
    b = det.boxes[:k]
    rows[:k, 2] = b[:, 1] / h
    rows[:k, 3] = b[:, 0] / w
    rows[:k, 4] = b[:, 3] / h
    rows[:k, 5] = b[:, 2] / w
    return [REPLY_HEADER, rows.tobytes()]


def model_dir(cfg: FrigateConfig) -> Path:
    """Where pushed models are saved: frigate.model_dir, else systemd's StateDirectory, else ~/.local/state."""
    if cfg.model_dir:
        return Path(cfg.model_dir)
    base = os.environ.get("STATE_DIRECTORY") or os.environ.get("XDG_STATE_HOME")
    root = Path(base.split(":")[0]) if base else Path.home() / ".local" / "state"
    return root / ("frigate-models" if os.environ.get("STATE_DIRECTORY") else "edgeagent/frigate-models")


def handshake_reply(available: bool) -> bytes:
    return json.dumps({"model_available": available, "model_loaded": True}).encode()


def push_reply(saved: bool) -> bytes:
    return json.dumps({"model_saved": saved, "model_loaded": saved}).encode()
