"""Reading a model, the built-in default model, and in-graph pre-processing (PrePostProcessor).

The agent feeds the compiled model exactly what cameras send: u8 HxWxC frames of any size, gray,
BGR/RGB or BGRX/RGBX (batch N). Layout, element type, channel order, resize or letterbox, mean and
scale all happen inside the compiled graph (one graph per frame size and pixel format, or one for any
size with a dynamic spatial shape),
which is faster than numpy and lets the received ZeroMQ buffer be the input tensor with no copy.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset9 as ops9
import openvino.opset11 as ops11
import openvino.opset13 as ops
from openvino.preprocess import PrePostProcessor

from edgeagent.config import ModelConfig
from edgeagent.errors import ModelError

log = logging.getLogger("edgeagent.models")

BUILTIN_NAME = "edgeagent-builtin-mobilenetv2"
BUILTIN_VERSION = 1
BUILTIN_SEED = 20261124
# MobileNetV2's (expansion t, channels c, repeats n, stride s) table, from the paper.
_MOBILENETV2_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# The built-in model's own pre-processing, in the same rt_info slot any IR may carry.
_BUILTIN_PREPROCESS = {"rgb": True, "mean": [127.5, 127.5, 127.5], "scale": [127.5, 127.5, 127.5]}
RT_INFO_KEY = "edgeagent_preprocess"


def cache_root(cfg: ModelConfig) -> Path:
    """Where the built-in model and OpenVINO's compile cache live (XDG cache dir by default)."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    base = os.environ.get("CACHE_DIRECTORY") or os.environ.get("XDG_CACHE_HOME")  # systemd, then XDG
    return Path(base) / "edgeagent" if base else Path.home() / ".cache" / "edgeagent"


class _Builder:
    """Seeded weights for a MobileNetV2-shaped graph (BatchNorm folded into conv biases)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def conv(self, x: Any, cin: int, cout: int, k: int, stride: int, groups: int = 1, act: bool = True) -> Any:
        fan_in = (cin // groups) * k * k
        # He initialisation keeps activations in range through ReLU6, so outputs stay informative.
        w = (self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        pad = [k // 2, k // 2]
        if groups == 1:
            y = ops.convolution(x, ops.constant(w), [stride, stride], pad, pad, [1, 1])
        else:
            wg = w.reshape(groups, cout // groups, cin // groups, k, k)
            y = ops.group_convolution(x, ops.constant(wg), [stride, stride], pad, pad, [1, 1])
        b = (self.rng.standard_normal((1, cout, 1, 1)) * 0.05).astype(np.float32)
        y = ops.add(y, ops.constant(b))
        return ops.clamp(y, 0.0, 6.0) if act else y  # ReLU6


def build_builtin_model() -> ov.Model:
    """A deterministic MobileNetV2-shaped classifier: 1x3x224x224 f32 in, 1x1000 softmax out.

    The weights are synthetic (seeded), not trained: the model exists so the agent, the tests and the
    benchmarks run out of the box with a realistic edge compute profile.
    """
    b = _Builder(BUILTIN_SEED)
    x = ops.parameter([1, 3, 224, 224], np.float32, name="input")
    y = b.conv(x, 3, 32, 3, 2)
    cin = 32
    for t, c, n, s in _MOBILENETV2_BLOCKS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            h = b.conv(y, cin, hidden, 1, 1) if t != 1 else y
            h = b.conv(h, hidden, hidden, 3, stride, groups=hidden)
            h = b.conv(h, hidden, c, 1, 1, act=False)
            y = ops.add(y, h) if stride == 1 and cin == c else h  # inverted residual
            cin = c
    y = b.conv(y, cin, 1280, 1, 1)
    y = ops.reduce_mean(y, [2, 3], keep_dims=False)
    w = (b.rng.standard_normal((1000, 1280)) * np.sqrt(1.0 / 1280)).astype(np.float32)
    logits = ops.matmul(y, ops.constant(w), False, True)
    probs = ops.softmax(logits, 1)
    probs.output(0).get_tensor().set_names({"probabilities"})
    model = ov.Model([probs.output(0)], [x], BUILTIN_NAME)
    model.set_rt_info(json.dumps(_BUILTIN_PREPROCESS), [RT_INFO_KEY])
    return model


def builtin_model_path(cfg: ModelConfig) -> Path:
    """Generate the built-in model as IR in the cache once; later calls return the cached file."""
    path = cache_root(cfg) / "models" / f"{BUILTIN_NAME}-v{BUILTIN_VERSION}.xml"
    if path.exists() and path.with_suffix(".bin").exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write under temporary names and rename .bin before .xml: an .xml means a complete model,
        # even if two agents generate it at once or the process dies half way.
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            tmp_xml = Path(tmp) / path.name
            ov.save_model(build_builtin_model(), tmp_xml, compress_to_fp16=False)
            os.replace(tmp_xml.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(tmp_xml, path)
    except OSError as exc:
        raise ModelError(f"cannot write the built-in model to {path.parent}: {exc.strerror}") from None
    return path


# A compiled graph's input: (height, width, pixel format). (0, 0, "bgr"): any size (a dynamic spatial
# shape), the graph that serves a frame size until that size's own static compile is ready.
SizeKey = tuple[int, int, str]
DYNAMIC: SizeKey = (0, 0, "bgr")


@dataclass(frozen=True)
class ModelInfo:
    """What was read and how it is fed: reported at startup, by ``info`` and in results."""

    path: str
    name: str
    input_name: str
    model_shape: tuple[int, ...]  # N,C,H,W the network computes on (after resolving dynamic dims)
    frame_hw: tuple[int, int]  # the frame size compiled ahead (H, W): --frame-size, else the model's size
    rgb: bool
    mean: tuple[float, ...] | None
    scale: tuple[float, ...] | None
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...]  # (name, element type, shape)
    resize: str = "stretch"
    pad_value: float = 114.0

    @property
    def model_hw(self) -> tuple[int, int]:
        return self.model_shape[2], self.model_shape[3]


@dataclass(frozen=True)
class Geometry:
    """Where a frame of ``frame_hw`` lands in the model's input: scaled by ``sy``, ``sx`` and offset by
    ``top``, ``left`` (letterbox padding). Maps model-input pixel positions back to the frame's."""

    frame_hw: tuple[int, int]
    sy: float
    sx: float
    top: int
    left: int

    def to_frame(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model-input coordinates → frame coordinates (not clipped)."""
        return (x - self.left) / self.sx, (y - self.top) / self.sy


def letterbox_size(h: int, w: int, mh: int, mw: int) -> tuple[int, int, int, int]:
    """(new_h, new_w, top, left) of a letterboxed h x w frame in an mh x mw input, computed in float32
    exactly as the compiled graph does for any size (so static and dynamic graphs agree)."""
    s = min(np.float32(mh) / np.float32(h), np.float32(mw) / np.float32(w))
    nh = min(mh, int(np.floor(np.float32(h) * s + np.float32(0.5))))
    nw = min(mw, int(np.floor(np.float32(w) * s + np.float32(0.5))))
    nh, nw = max(nh, 1), max(nw, 1)
    return nh, nw, (mh - nh) // 2, (mw - nw) // 2


def geometry(frame_hw: tuple[int, int], info: ModelInfo) -> Geometry:
    """How a frame of ``frame_hw`` maps to the model input under ``info.resize``."""
    return _geometry(frame_hw, info.model_hw, info.resize)


def _geometry(frame_hw: tuple[int, int], model_hw: tuple[int, int], resize: str) -> Geometry:
    h, w = frame_hw
    mh, mw = model_hw
    if resize == "letterbox":
        nh, nw, top, left = letterbox_size(h, w, mh, mw)
        return Geometry(frame_hw, nh / h, nw / w, top, left)
    return Geometry(frame_hw, mh / h, mw / w, 0, 0)


def read_model(core: ov.Core, cfg: ModelConfig) -> tuple[ov.Model, str]:
    """Read ``cfg.path`` (or the built-in model). Raises ModelError naming the file and the problem."""
    if not cfg.path:
        try:
            path = builtin_model_path(cfg)
        except ModelError as exc:
            # An unwritable or full cache must not stop the agent: build the model in memory instead.
            log.warning("event=builtin_model_in_memory reason=%s", json.dumps(str(exc)))
            return build_builtin_model(), f"<built-in {BUILTIN_NAME}, in memory>"
    else:
        path = Path(cfg.path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"model path is a directory, expected a model file: {path}")
    try:
        model = core.read_model(str(path))
    except RuntimeError as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), "unreadable")
        raise ModelError(f"cannot read model {path}: {first[:200]}") from None
    return model, str(path)


def _model_defaults(model: ov.Model) -> dict[str, Any]:
    if not model.has_rt_info([RT_INFO_KEY]):
        return {}
    try:
        value = json.loads(model.get_rt_info([RT_INFO_KEY]).astype(str))
    except (ValueError, RuntimeError):
        return {}
    return value if isinstance(value, dict) else {}


def _per_channel(v: tuple[float, ...] | list[float] | None) -> list[float] | None:
    if v is None:
        return None
    return [float(x) for x in v] * (3 if len(v) == 1 else 1)


def _channel_map(pix: str, rgb: bool) -> list[int] | None:
    """Channel indices that turn a ``pix`` frame into the model's 3-channel order (None: as is)."""
    if pix == "gray":
        return [0, 0, 0]
    swap = pix.startswith("rgb") != rgb
    if swap:
        return [2, 1, 0]
    return [0, 1, 2] if pix.endswith("x") else None


def _interpolate(x: Any, sizes: Any) -> Any:
    # Bilinear, half-pixel centres, no antialiasing: what cv2.resize(INTER_LINEAR) computes.
    return ops11.interpolate(
        x,
        sizes,
        "linear_onnx",
        "sizes",
        axes=ops.constant(np.array([1, 2], np.int64)),
        coordinate_transformation_mode="half_pixel",
    ).output(0)


def _spatial_step(key: SizeKey, mh: int, mw: int, rgb: bool, resize: str, pad_value: float, batch: int) -> Any:
    """The PrePostProcessor custom step for NHWC f32 frames: channel order, then resize or letterbox
    (before mean/scale, so the letterbox fill is in pixel units)."""
    h, w, pix = key

    def step(node: Any) -> Any:
        x = node
        idx = _channel_map(pix, rgb)
        if idx is not None:
            x = ops.gather(x, ops.constant(np.array(idx, np.int64)), ops.constant(np.int64(3))).output(0)
        if (h, w) == (mh, mw):
            return x
        target = np.array([mh, mw], np.int64)
        if resize == "stretch":
            return _interpolate(x, ops.constant(target))
        if h:  # a static size: the geometry is known now
            nh, nw, top, left = letterbox_size(h, w, mh, mw)
            new = ops.constant(np.array([nh, nw], np.int64))
            begin = ops.constant(np.array([0, top, left, 0], np.int64))
            end = ops.constant(np.array([0, mh - nh - top, mw - nw - left, 0], np.int64))
        else:  # any size: the same float32 arithmetic as letterbox_size, on the frame's shape
            hw = ops.convert(
                ops.gather(ops.shape_of(x, "i64"), ops.constant(np.array([1, 2], np.int64)), ops.constant(np.int64(0))),
                "f32",
            )
            s = ops.reduce_min(ops.divide(ops.constant(target.astype(np.float32)), hw), ops.constant(np.int64(0)), True)
            nhw = ops.convert(ops.floor(ops.add(ops.multiply(hw, s), ops.constant(np.float32(0.5)))), "i64")
            nhw = ops.maximum(ops.minimum(nhw, ops.constant(target)), ops.constant(np.array([1, 1], np.int64)))
            new = nhw
            pad = ops.subtract(ops.constant(target), nhw)
            lead = ops.divide(pad, ops.constant(np.array([2, 2], np.int64)))
            trail = ops.subtract(pad, lead)
            zero = ops.constant(np.array([0], np.int64))
            begin = ops.concat([zero, lead, zero], 0)
            end = ops.concat([zero, trail, zero], 0)
        resized = _interpolate(x, new)
        padded = ops.pad(resized, begin, end, "constant", ops.constant(np.float32(pad_value)))
        # A static shape again: the network after it keeps its static shapes (and its fast kernels).
        return ops.reshape(padded, ops.constant(np.array([batch, mh, mw, 3], np.int64)), False).output(0)

    return step


NMS_ROWS, NMS_COUNT = "detections", "detections_count"
# Class-wise NMS as one NMS: a box of class c is moved by SHIFT x c (normalised units; boxes span about
# [0, 1]), so boxes of different classes never overlap. Only NMS sees the shifted boxes (its IoU within
# float32's rounding at SHIFT x C: 3e-5 of the input's side for 80 classes); the kept boxes are read
# unshifted.
SHIFT = 4.0


def _frame_map(param: Any, key: SizeKey, model_hw: tuple[int, int], resize: str) -> tuple[Any, Any, Any]:
    """``(a, b, hi)``, [1, 4, 1] f32 each: a model-input pixel position ``x`` (x, y, x, y) is at ``x * a - b``
    in a ``key`` frame, inside ``[0, hi]`` (undoing :func:`_spatial_step`'s resize or letterbox, as
    :func:`geometry` does). Constants for a static size; computed from ``param``'s shape (u8 NHWC frames)
    on the any-size graph, with :func:`letterbox_size`'s float32 arithmetic."""
    h, w, _pix = key
    mh, mw = model_hw
    if h:
        g = _geometry((h, w), model_hw, resize)
        a = np.array([1 / g.sx, 1 / g.sy] * 2, np.float32).reshape(1, 4, 1)
        b = np.array([g.left / g.sx, g.top / g.sy] * 2, np.float32).reshape(1, 4, 1)
        return a, b, np.array([w, h, w, h], np.float32).reshape(1, 4, 1)
    hw = ops.convert(ops.gather(ops.shape_of(param, "i64"), np.array([1, 2], np.int64), np.int64(0)), "f32")
    target = np.array([mh, mw], np.float32)
    if resize == "letterbox":
        s = ops.reduce_min(ops.divide(target, hw), np.int64(0), True)
        nhw = ops.floor(ops.add(ops.multiply(hw, s), np.float32(0.5)))
        nhw = ops.maximum(ops.minimum(nhw, target), np.float32(1))
        lead = ops.floor(ops.multiply(ops.subtract(target, nhw), np.float32(0.5)))  # (top, left)
    else:
        nhw, lead = ops.constant(target), ops.constant(np.zeros(2, np.float32))
    inv = ops.divide(hw, nhw)  # (1 / sy, 1 / sx)
    order = np.array([1, 0, 1, 0], np.int64)  # (y, x) → (x, y, x, y)
    shape = np.array([1, 4, 1], np.int64)
    a = ops.reshape(ops.gather(inv, order, np.int64(0)), shape, False)
    b = ops.reshape(ops.gather(ops.multiply(lead, inv), order, np.int64(0)), shape, False)
    hi = ops.reshape(ops.gather(hw, order, np.int64(0)), shape, False)
    return a, b, hi


def _yolo_nms(
    model: ov.Model, score: float, iou: float, limit: int, input_hw: tuple[int, int], key: SizeKey, resize: str
) -> ov.Model:
    """Decode and class-wise NMS appended to an ultralytics-format YOLO head ([B, 4+C, N] or
    [B, N, 4+C]) of a model whose pre-processing is built (for ``key`` frames): two more outputs,
    ``detections`` [B, 6, limit] (per frame, a column per box: class, score, x1, y1, x2, y2 in the frame's
    pixels, clipped to it; best first; the columns past its count are other candidates, to be ignored)
    and ``detections_count`` [B] (i32). The raw output stays output 0.

    As ultralytics (and :func:`edgeagent.detect.decode_yolo`): one label per candidate, its best class
    (TopK k=1 over the classes), and class-wise NMS done as one single-class NonMaxSuppression on boxes
    shifted by class (a box of class c moves by SHIFT x c, so boxes of different classes never overlap; IoU is
    translation invariant). That is what ultralytics does too, and it is cheaper than OpenVINO's
    MulticlassNms, which scans every class's score row (C x N) after the non-best classes were masked
    out (another four passes over C x N): 0.40 against 0.54 ms on an 80-class [1, 84, 8400] head with
    300 candidates on the 2-vCPU Xeon. NMS takes centre boxes, normalised (so the class shift does not
    depend on the input size); only the kept boxes become corners, mapped to the frame and clipped
    (:func:`_frame_map`), in one fused elementwise node on ``limit`` boxes, so the agent's Python only
    reads them.

    Every shape after the NMS is static, so both outputs go into arrays of the agent's own, read with no
    OpenVINO call. NMS lists its selected (frame, candidate) pairs frame after frame, each best first,
    then padding; frame f's rows start at the sum of the counts before it, so its kept candidates are a
    Gather of that list at [start_f, start_f + limit) (padded: never out of range).

    Cost is mostly the number of nodes (each pays the plugin's dispatch), then the passes over the N
    candidates: OpenVINO's per-node profile (``PERF_COUNT``) of nudenet's YOLOv8n head (18 classes, 8400
    candidates) on the 2-vCPU Xeon shows ~17 timed nodes and ~90 µs of node time (NMS 19, TopK 14, the
    [B, 4, N] → [B, N, 4] Gather 10), against ~28 and ~160 µs for the scatter-and-TopK tail before it."""
    out = model.get_results()[0].input_value(0)
    b, c4, n = (d.get_length() for d in out.get_partial_shape())
    if c4 > n:  # [B, N, 4+C] → [B, 4+C, N]
        out = ops.transpose(out, np.array([0, 2, 1])).output(0)
        c4, n = n, c4
    limit = min(limit, n)
    mh, mw = input_hw

    def part(lo: int, hi: int) -> Any:  # rows lo..hi-1 of [B, 4+C, N]
        return ops.slice(out, np.array([lo]), np.array([hi]), np.array([1]), np.array([1]))

    best = ops.topk(part(4, c4), np.int64(1), 1, "max", "none", "i32")  # [B, 1, N]
    flat = np.array([b, n], np.int64)
    best_score = ops.reshape(best.output(0), flat, False)  # [B, N]
    best_class = ops.reshape(best.output(1), flat, False)  # [B, N] i32
    # Class ids to floats by table lookups: an i32 → f32 Convert runs OpenVINO's reference kernel (slow).
    classes = np.arange(c4 - 4, dtype=np.float32)
    shift = ops.gather(classes * np.float32(SHIFT), best_class, np.int64(0))  # [B, N]
    # Centre boxes in input pixels, [B, 4, N]; for NMS normalised, the centres shifted by class (on the
    # 4 x N rows: vectorised along N), then the [B, N, 4] NMS takes.
    boxes = part(0, 4)
    column = (1, 4, 1)
    shifted = ops.add(
        ops.divide(boxes, np.array([mw, mh, mw, mh], np.float32).reshape(column)),
        ops.multiply(ops.unsqueeze(shift, np.array([1], np.int64)), np.array([1, 1, 0, 0], np.float32).reshape(column)),
    )
    # [B, 4, N] → [B, N, 4] as a Gather with constant indices: 6 µs against the Transpose's 23 µs here
    # (OpenVINO's CPU Transpose of a 4 x 8400 f32 block is not vectorised).
    t = (np.arange(4)[None, :] * n + np.arange(n)[:, None]).reshape(-1).astype(np.int32)  # (n, c) ← c * N + n
    shifted = ops.gather(ops.reshape(shifted, np.array([b, 4 * n], np.int64), False), t, np.int64(1))
    shifted = ops.reshape(shifted, np.array([b, n, 4], np.int64), False)
    nms = ops9.non_max_suppression(
        shifted,
        ops.unsqueeze(best_score, np.array([1], np.int64)),  # [B, 1, N]: one class
        np.array([limit], np.int64),
        np.array([iou], np.float32),
        np.array([score], np.float32),
        box_encoding="center",
        sort_result_descending=False,  # frame after frame, each best first (ties: candidate order)
        output_type="i32",
    )
    picked = nms.output(0)  # [K, 3]: (frame, class 0, candidate); past the selected: -1
    frame = ops.gather(picked, np.int64(0), np.int64(1))  # [K]
    mine = ops.equal(ops.unsqueeze(frame, np.array([1], np.int64)), np.arange(b, dtype=np.int32).reshape(1, b))
    count = ops.reduce_sum(ops.select(mine, np.int32(1), np.int32(0)), np.array([0], np.int64), False)  # [B]
    at: Any = np.arange(limit, dtype=np.int32).reshape(1, limit)  # frame f's rows: start_f + 0..limit-1
    if b > 1:
        start = ops.cumsum(count, np.int64(0), exclusive=True)  # [B]
        at = ops.add(ops.unsqueeze(start, np.array([1], np.int64)), at)
    candidates = ops.pad(ops.gather(picked, np.int64(2), np.int64(1)), np.array([0]), np.array([b * limit]), "constant")
    kept = ops.gather(candidates, at, np.int64(0))  # [B, limit]; -1 (NMS's padding) is the last candidate
    kept_class = ops.gather(classes, ops.gather(best_class, kept, np.int64(1), 1), np.int64(0))  # [B, limit]
    kept_score = ops.gather(best_score, kept, np.int64(1), 1)
    centres = ops.gather(boxes, kept, np.int64(2), 1)  # [B, 4, limit]: cx, cy, w, h of the kept
    # Corners (cx, cy, cx, cy) + (w, h, w, h) x (-1/2, -1/2, 1/2, 1/2), mapped to the frame and clipped.
    a, off, hi = _frame_map(model.get_parameters()[0], key, input_hw, resize)
    corners = ops.add(
        ops.gather(centres, np.array([0, 1, 0, 1], np.int64), np.int64(1)),
        ops.multiply(
            ops.gather(centres, np.array([2, 3, 2, 3], np.int64), np.int64(1)),
            np.array([-0.5, -0.5, 0.5, 0.5], np.float32).reshape(1, 4, 1),
        ),
    )
    in_frame = ops.minimum(ops.maximum(ops.subtract(ops.multiply(corners, a), off), np.float32(0)), hi)
    one = np.array([1], np.int64)
    rows = ops.concat([ops.unsqueeze(kept_class, one), ops.unsqueeze(kept_score, one), in_frame], 1)  # [B, 6, limit]
    rows.output(0).get_tensor().set_names({NMS_ROWS})
    count.output(0).get_tensor().set_names({NMS_COUNT})
    results = [*model.get_results(), ops.result(rows.output(0)), ops.result(count.output(0))]
    return ov.Model(results, model.get_parameters(), model.get_friendly_name())


def prepare(
    model: ov.Model,
    path: str,
    cfg: ModelConfig,
    batch: int = 1,
    key: SizeKey | None = None,
    yolo_nms: tuple[float, float, int] | None = None,
) -> tuple[ov.Model, ModelInfo]:
    """Resolve dynamic dimensions, set the batch and embed pre-processing with PrePostProcessor.

    The returned model takes ``batch x H x W x C`` u8 frames of ``key`` = (H, W, pixel format) (default:
    ``cfg.frame_size`` or the model's spatial size, BGR; ``DYNAMIC``: any H x W, BGR) and does element
    type, channel order, resize or letterbox, mean and scale itself. ``yolo_nms=(score, iou, limit)``:
    :func:`_yolo_nms` appends decode and NMS when output 0 is a YOLO head.
    """
    if len(model.inputs) != 1:
        raise ModelError(f"{path}: the model has {len(model.inputs)} inputs; edgeagent feeds one image input")
    port = model.input(0)
    pshape = port.get_partial_shape()
    if pshape.rank.is_dynamic or pshape.rank.get_length() != 4:
        raise ModelError(f"{path}: input '{port.any_name}' has shape {pshape}; expected a 4-D image input")
    dims = [d.get_length() if d.is_static else -1 for d in pshape]
    if cfg.input_shape is not None:
        if len(cfg.input_shape) != 4:
            raise ModelError(f"--input-shape {cfg.input_shape}: expected 4 dimensions, e.g. 1,3,480,640")
        dims = list(cfg.input_shape)
    # Channels first unless the shape says otherwise (TFLite and some ONNX models are NHWC).
    nhwc = dims[3] == 3 and dims[1] != 3
    if nhwc:
        _n, h, w, c = dims
    else:
        _n, c, h, w = dims
    if c not in (3, -1):
        raise ModelError(f"{path}: input has {c} channels; edgeagent feeds 3-channel frames")
    if h == -1 or w == -1:
        if cfg.frame_size is None:
            raise ModelError(f"{path}: input spatial size is dynamic ({pshape}); give --input-shape or --frame-size")
        w, h = cfg.frame_size
    model_shape = (batch, 3, h, w)
    try:
        model.reshape({port.any_name: [batch, h, w, 3] if nhwc else list(model_shape)})
    except RuntimeError as exc:
        raise ModelError(f"{path}: cannot reshape input to batch {batch}, {w}x{h}: {str(exc)[:200]}") from None
    frame_w, frame_h = cfg.frame_size if cfg.frame_size is not None else (w, h)
    if key is None:
        key = (frame_h, frame_w, "bgr")

    defaults = _model_defaults(model)
    rgb = cfg.rgb if cfg.rgb is not None else bool(defaults.get("rgb", False))
    mean = _per_channel(cfg.mean if cfg.mean is not None else defaults.get("mean"))
    scale = _per_channel(cfg.scale if cfg.scale is not None else defaults.get("scale"))

    kh, kw, pix = key
    channels = {"gray": 1, "bgr": 3, "rgb": 3, "bgrx": 4, "rgbx": 4}[pix]
    ppp = PrePostProcessor(model)
    inp = ppp.input()
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_shape(
        [batch, kh or -1, kw or -1, channels]
    )
    inp.model().set_layout(ov.Layout("NHWC" if nhwc else "NCHW"))
    pre = inp.preprocess()
    pre.convert_element_type(ov.Type.f32)
    pre.custom(_spatial_step(key, h, w, rgb, cfg.resize, cfg.pad_value, batch))
    if mean is not None:
        pre.mean(mean)
    if scale is not None:
        pre.scale(scale)
    try:
        built = ppp.build()
    except RuntimeError as exc:
        raise ModelError(f"{path}: cannot add pre-processing: {str(exc)[:200]}") from None
    if yolo_nms is not None and len(built.outputs) == 1 and _fits_yolo(built.output(0).get_partial_shape()):
        built = _yolo_nms(built, *yolo_nms, input_hw=(h, w), key=key, resize=cfg.resize)
    outputs = tuple(
        (
            o.any_name if o.get_names() else f"output{i}",
            o.get_element_type().get_type_name(),
            tuple(d.get_length() if d.is_static else -1 for d in o.get_partial_shape()),
        )
        for i, o in enumerate(built.outputs)
    )
    info = ModelInfo(
        path=path,
        name=built.get_friendly_name(),
        input_name=port.any_name,
        model_shape=model_shape,
        frame_hw=(frame_h, frame_w),
        rgb=rgb,
        mean=tuple(mean) if mean else None,
        scale=tuple(scale) if scale else None,
        outputs=outputs,
        resize=cfg.resize,
        pad_value=cfg.pad_value,
    )
    return built, info


def _fits_yolo(shape: ov.PartialShape) -> bool:
    if shape.is_dynamic or shape.rank.get_length() != 3:
        return False
    _b, d1, d2 = (d.get_length() for d in shape)
    return bool(min(d1, d2) >= 5)


def to_bgr(image: np.ndarray, pix: str) -> np.ndarray:
    """A contiguous HxWx3 BGR copy of a ``pix`` frame: how a frame whose own graph is still compiling is
    fed to the any-size (BGR) graph."""
    if pix == "gray":
        return np.repeat(image, 3, axis=2)
    if pix.startswith("rgb"):
        return np.ascontiguousarray(image[..., 2::-1])
    return np.ascontiguousarray(image[..., :3])


def resize_linear(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Reference bilinear resize of a HxWxC float array (half-pixel centres, edge-clamped, no
    antialiasing: cv2.resize INTER_LINEAR on float input)."""
    h, w = x.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)

    y0, y1, wy = axis(oh, h)
    x0, x1, wx = axis(ow, w)
    rows = x[y0] * (1 - wy)[:, None, None] + x[y1] * wy[:, None, None]
    out: np.ndarray = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return out


def numpy_preprocess(frame_bgr: np.ndarray, info: ModelInfo) -> np.ndarray:
    """The reference pre-processing in numpy (tests and ``bench`` compare against it): HxWx3 u8 BGR of
    any size → 1x3xHxW f32 (resize or letterbox as ``info.resize`` says)."""
    x: np.ndarray = frame_bgr.astype(np.float32)
    if info.rgb:
        x = x[..., ::-1]
    mh, mw = info.model_hw
    h, w = x.shape[:2]
    if (h, w) != (mh, mw):
        if info.resize == "letterbox":
            nh, nw, top, left = letterbox_size(h, w, mh, mw)
            canvas = np.full((mh, mw, 3), info.pad_value, np.float32)
            canvas[top : top + nh, left : left + nw] = resize_linear(x, nh, nw)
            x = canvas
        else:
            x = resize_linear(x, mh, mw)
    if info.mean is not None:
        x = x - np.asarray(info.mean, np.float32)
    if info.scale is not None:
        x = x / np.asarray(info.scale, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
