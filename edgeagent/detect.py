"""Object-detection post-processing: raw output tensors → boxes in the received frame's pixels.

Families (``results.postprocess``):

* ``yolo``: ultralytics-format YOLOv5u/v8/v11 (and YOLO-World/YOLOv9/v10-exported "one-output" heads):
  one output ``[1, 4+C, N]`` (or ``[1, N, 4+C]``), boxes as centre x, y, width, height in model-input
  pixels, per-class scores, no objectness. Decoded here: best class per candidate, score threshold,
  class-wise NMS.
* ``ssd``: DetectionOutput-style ``[1, 1, N, 7]`` rows ``(image_id, label, conf, x_min, y_min, x_max,
  y_max)`` normalised to the input (NMS done by the model). Rows with ``image_id < 0`` end the list.
* ``yolonas``: YOLO-NAS exported with its NMS in the "flat" format (super-gradients, and the models
  Frigate documents): ``[N, 7]`` rows ``(image_index, x_min, y_min, x_max, y_max, score, class)`` in
  model-input pixels (NMS done by the model). A row with ``class < 0`` ends the list. The rows of a
  batch are not split by a batch axis but by ``image_index``, so the agent runs it at batch 1.

Boxes are then mapped from the model's input back to the received frame (undoing the resize or the
letterbox, :class:`~edgeagent.models.Geometry`) and clipped to it. Everything is vectorised numpy on
the candidates that pass the score threshold, so the cost is the threshold pass over the output plus
an NMS over a handful of boxes.

What the agent runs for ``yolo`` is cheaper still: decode, NMS, the mapping to the frame and the clip
inside the compiled graph (:func:`edgeagent.models._yolo_nms`), whose rows :class:`Decoder` only reads.
The numpy decode above is the reference its tests and ``edgeagent bench detect`` compare it with.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeagent.errors import ConfigError
from edgeagent.models import Geometry

FAMILIES = ("yolo", "ssd", "yolonas")


class Detections:
    """Sorted by score, descending: ``classes`` int64 [K], ``scores`` float32 [K], ``boxes`` float32 [K, 4]
    (x1, y1, x2, y2 in frame pixels). Made from those three arrays, or (:meth:`from_rows`) from the
    in-graph NMS's rows as they are, the columns then read only when asked for."""

    __slots__ = ("_cols", "_rows")

    def __init__(self, classes: np.ndarray, scores: np.ndarray, boxes: np.ndarray) -> None:
        self._cols: tuple[np.ndarray, np.ndarray, np.ndarray] | None = (classes, scores, boxes)
        self._rows: np.ndarray | None = None

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> Detections:
        """``rows`` [K, 6] float32: class, score, x1, y1, x2, y2 (frame pixels), best first."""
        det = cls.__new__(cls)
        det._cols, det._rows = None, rows
        return det

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._cols is None:
            assert self._rows is not None
            r = self._rows
            self._cols = (r[:, 0].astype(np.int64), r[:, 1].copy(), r[:, 2:6].copy())
        return self._cols

    @property
    def classes(self) -> np.ndarray:
        return self._columns()[0]

    @property
    def scores(self) -> np.ndarray:
        return self._columns()[1]

    @property
    def boxes(self) -> np.ndarray:
        return self._columns()[2]

    def __len__(self) -> int:
        return int((self._rows if self._rows is not None else self._columns()[1]).shape[0])

    def _lists(self) -> Iterator[tuple[int, float, list[float]]]:
        if self._rows is not None:
            return ((int(r[0]), r[1], r[2:]) for r in self._rows.tolist())
        c, s, b = self._columns()
        return zip(c.tolist(), s.tolist(), b.tolist())

    def as_json(self, labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
        out = []
        for c, s, b in self._lists():
            d: dict[str, Any] = {"class": c}
            if labels is not None:
                d["label"] = labels[c] if 0 <= c < len(labels) else str(c)
            d["score"] = round(s, 5)
            d["box"] = [round(v, 2) for v in b]
            out.append(d)
        return out

    def json_text(self, labels: Sequence[str] | None = None) -> str:
        """``json.dumps(self.as_json(labels))``, compact, written directly (per frame, right after an
        inference: the dicts and the encoder's walk cost ~40 µs there for one box, this ~10). Labels are
        JSON-encoded once per label list (:func:`_label_texts`)."""
        if len(self) == 0:
            return "[]"
        texts = _label_texts(labels) if labels is not None else None
        parts = []
        for c, s, (x1, y1, x2, y2) in self._lists():
            nums = f'{round(s, 5)!r},"box":[{round(x1, 2)!r},{round(y1, 2)!r},{round(x2, 2)!r},{round(y2, 2)!r}]'
            if "n" in nums:  # nan or inf (repr), which the JSON encoder writes NaN / Infinity
                return json.dumps(self.as_json(labels), separators=(",", ":"))
            label = ""
            if texts is not None:
                label = f',"label":{texts[c] if 0 <= c < len(texts) else json.dumps(str(c))}'
            parts.append(f'{{"class":{c}{label},"score":{nums}}}')
        return "[" + ",".join(parts) + "]"


_LABEL_TEXTS: dict[int, tuple[Sequence[str], list[str]]] = {}


def _label_texts(labels: Sequence[str]) -> list[str]:
    """Each label as JSON text, encoded once per label list (kept while the list is)."""
    hit = _LABEL_TEXTS.get(id(labels))
    if hit is None or hit[0] is not labels:
        if len(_LABEL_TEXTS) > 16:
            _LABEL_TEXTS.clear()
        hit = _LABEL_TEXTS[id(labels)] = (labels, [json.dumps(x) for x in labels])
    return hit[1]


EMPTY = Detections(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4), np.float32))


def read_labels(path: str) -> list[str]:
    """One label per line; index = class id. Raises ConfigError naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--labels {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--labels {path}: not UTF-8 text (one label per line)") from None
    labels = [ln.strip() for ln in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise ConfigError(f"--labels {path}: no labels (one per line, index = class id)")
    return labels


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """Class-wise greedy non-maximum suppression. Indices kept, best score first; ties keep the
    earlier candidate (a stable sort), so the result is deterministic."""
    if boxes.shape[0] == 0:
        return np.zeros(0, np.int64)
    # Class-wise in one pass: boxes of different classes are moved apart so they never overlap.
    offset = classes.astype(np.float32)[:, None] * (float(boxes.max() - boxes.min()) + 1.0)
    b = boxes + offset
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        union = area[i] + area[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


def decode_yolo(out: np.ndarray, score_threshold: float, iou: float, limit: int) -> Detections:
    """``[1, 4+C, N]`` or ``[1, N, 4+C]`` → detections in model-input pixels (NMS applied)."""
    x = out.reshape(out.shape[-2:]) if out.ndim == 3 else out
    if x.ndim != 2 or min(x.shape) < 5:
        raise ValueError(f"a YOLO output is [1, 4+C, N] or [1, N, 4+C], got {list(out.shape)}")
    if x.shape[0] > x.shape[1]:  # [N, 4+C]: candidates along the first axis (N is the larger)
        x = x.T
    scores_all = x[4:]
    best = scores_all.max(axis=0)
    cand = np.flatnonzero(best >= score_threshold)  # the one pass over every candidate
    if cand.size == 0:
        return EMPTY
    scores = best[cand].astype(np.float32)
    classes = scores_all[:, cand].argmax(axis=0).astype(np.int64)
    cx, cy, w, h = x[0, cand], x[1, cand], x[2, cand], x[3, cand]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    keep = nms(boxes, scores, classes, iou, limit)
    return Detections(classes[keep], scores[keep], boxes[keep])


def decode_ssd(out: np.ndarray, score_threshold: float, limit: int, model_hw: tuple[int, int]) -> Detections:
    """``[1, 1, N, 7]`` normalised rows → detections in model-input pixels (the model did the NMS)."""
    rows = out.reshape(-1, 7) if out.size % 7 == 0 and out.shape[-1] == 7 else None
    if rows is None:
        raise ValueError(f"an SSD output is [1, 1, N, 7], got {list(out.shape)}")
    end = np.flatnonzero(rows[:, 0] < 0)
    if end.size:
        rows = rows[: end[0]]
    rows = rows[rows[:, 2] >= score_threshold]
    order = np.argsort(-rows[:, 2], kind="stable")[:limit]
    rows = rows[order]
    mh, mw = model_hw
    boxes = (rows[:, 3:7] * np.array([mw, mh, mw, mh], np.float32)).astype(np.float32)
    return Detections(rows[:, 1].astype(np.int64), rows[:, 2].astype(np.float32), boxes)


def decode_yolonas(out: np.ndarray, score_threshold: float, limit: int) -> Detections:
    """Flat ``[N, 7]`` rows (``[1, N, 7]`` too) → detections in model-input pixels (the model did the NMS);
    rows of image 0 only (the agent runs this family at batch 1)."""
    if out.size % 7 or out.shape[-1] != 7:
        raise ValueError(f"a YOLO-NAS flat output is [N, 7], got {list(out.shape)}")
    rows = out.reshape(-1, 7)
    end = np.flatnonzero(rows[:, 6] < 0)
    if end.size:
        rows = rows[: end[0]]
    rows = rows[(rows[:, 0] == 0) & (rows[:, 5] >= score_threshold)]
    rows = rows[np.argsort(-rows[:, 5], kind="stable")[:limit]]
    return Detections(rows[:, 6].astype(np.int64), rows[:, 5].astype(np.float32), rows[:, 1:5].astype(np.float32))


def to_frame(det: Detections, geo: Geometry) -> Detections:
    """Model-input pixels → the received frame's pixels (undo resize or letterbox), clipped to it."""
    if len(det) == 0:
        return det
    h, w = geo.frame_hw
    x1, y1 = geo.to_frame(det.boxes[:, 0], det.boxes[:, 1])
    x2, y2 = geo.to_frame(det.boxes[:, 2], det.boxes[:, 3])
    boxes = np.stack([np.clip(x1, 0, w), np.clip(y1, 0, h), np.clip(x2, 0, w), np.clip(y2, 0, h)], axis=1)
    return Detections(det.classes, det.scores, boxes.astype(np.float32))


class Decoder:
    """The configured family and thresholds, for one model (its input size)."""

    def __init__(
        self,
        family: str,
        model_hw: tuple[int, int],
        score_threshold: float,
        iou: float,
        limit: int,
        output: int = 0,
        rows: int | None = None,
    ) -> None:
        """``rows``: the index of the in-graph NMS rows output (models._yolo_nms), when the model has it;
        its per-frame counts are the next output."""
        if family not in FAMILIES:
            raise ValueError(f"unknown detection family {family!r}")
        self.family = family
        self.model_hw = model_hw
        self.score_threshold = score_threshold
        self.iou = iou
        self.limit = limit
        self.output = output
        self.rows = rows

    def _rows(self, rows: np.ndarray, count: int) -> Detections:
        """In-graph NMS rows, already in frame pixels and clipped (models._yolo_nms), best first: the first
        ``count`` of them, taken as they are (this runs right after an inference, when every numpy call
        costs several times what it does warm)."""
        if count <= 0:
            return EMPTY
        return Detections.from_rows(rows.reshape(6, -1)[:, : min(count, self.limit)].T)

    def __call__(self, outputs: Sequence[np.ndarray], geo: Geometry) -> Detections:
        out = outputs[self.output]
        if self.family == "yolo" and self.rows is not None:
            return self._rows(outputs[self.rows], int(outputs[self.rows + 1].reshape(-1)[0]))
        if self.family == "yolo":
            det = decode_yolo(out, self.score_threshold, self.iou, self.limit)
        elif self.family == "yolonas":
            det = decode_yolonas(out, self.score_threshold, self.limit)
        else:
            det = decode_ssd(out, self.score_threshold, self.limit, self.model_hw)
        return to_frame(det, geo)


def check_outputs(family: str, outputs: Sequence[tuple[str, str, tuple[int, ...]]]) -> str | None:
    """Why the model's outputs cannot be decoded as ``family`` (None: they can). Start-up check."""
    if not outputs:
        return "the model has no outputs"
    _name, _t, shape = outputs[0]
    if family == "yolo":
        dims = [d for d in shape if d != 1]
        if len(shape) not in (2, 3) or len(dims) != 2 or min(dims) < 5:
            return f"--postprocess yolo expects an output [1, 4+C, N] or [1, N, 4+C]; output 0 is {list(shape)}"
    elif family == "ssd" and (not shape or shape[-1] != 7):
        return f"--postprocess ssd expects an output [1, 1, N, 7]; output 0 is {list(shape)}"
    elif family == "yolonas" and (len(shape) not in (2, 3) or shape[-1] != 7 or (len(shape) == 3 and shape[0] != 1)):
        return f"--postprocess yolonas expects a flat output [N, 7]; output 0 is {list(shape)}"
    return None
