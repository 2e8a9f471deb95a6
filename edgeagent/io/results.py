"""The published result header: one pure function of the frame, its outputs and its timing.

Results go out on the PUB socket as ``[topic=source, header JSON, tensor 0, tensor 1, ...]`` and the
same header JSON is the reply to a REQ sender (see the README's wire formats).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from edgeagent.wire import Frame


class Timing(NamedTuple):
    """One frame's latencies inside the agent, in ms: ``total`` = receipt to result, ``queue`` =
    receipt to inference start, ``inference`` = OpenVINO's request latency. A tuple, so that the
    metrics thread turns a batch of them into one array in C (:mod:`edgeagent.metrics`)."""

    total_ms: float
    queue_ms: float
    infer_ms: float

    @staticmethod
    def of(rx_ns: int, submit_ns: int, now_ns: int, infer_ms: float) -> Timing:
        return Timing((now_ns - rx_ns) / 1e6, (submit_ns - rx_ns) / 1e6, infer_ms)


def top_k(scores: np.ndarray, k: int) -> list[list[float]]:
    """``[[class, score], ...]`` of the ``k`` highest scores, best first."""
    flat = scores.reshape(-1)
    k = min(k, flat.size)
    top = flat.argpartition(flat.size - k)[flat.size - k :]
    top = top[flat[top].argsort()[::-1]]
    return [[int(i), float(flat[i])] for i in top.tolist()]


def top_k_json(scores: np.ndarray, k: int) -> str:
    """``json.dumps(top_k(scores, k))``, compact, built from two ``tolist()`` calls (per frame, right
    after the inference: about a fifth cheaper than the JSON encoder's walk, cold)."""
    flat = scores.reshape(-1)
    n = flat.size
    k = min(k, n)
    top = flat.argpartition(n - k)[n - k :]
    top = top[flat[top].argsort()[::-1]]
    vals = flat[top]
    if vals.dtype.kind != "f":
        vals = vals.astype(np.float64)  # scores as floats, as top_k gives them
    text = "[" + ",".join([f"[{i},{v!r}]" for i, v in zip(top.tolist(), vals.tolist())]) + "]"
    if "n" in text:  # nan or inf (repr) where JSON's encoder writes NaN / Infinity
        return json.dumps(top_k(scores, k), separators=(",", ":"))
    return text


class _Fragments:
    """JSON fragments that repeat from frame to frame, encoded once: the running level's description
    (one object per swap), the outputs' descriptors (by dtype and shape), source names. Owned by the
    I/O thread; bounded (a dict is cleared when it grows past its limit)."""

    def __init__(self) -> None:
        self.exec_obj: object = None
        self.exec_json = ""
        self.outputs: dict[tuple[Any, ...], str] = {}
        self.sources: dict[str, str] = {}

    def exec_of(self, exec_info: dict[str, Any]) -> str:
        if exec_info is not self.exec_obj:
            self.exec_obj, self.exec_json = exec_info, json.dumps(exec_info, separators=(",", ":"))
        return self.exec_json

    def outputs_of(self, outputs: Sequence[np.ndarray], names: Sequence[str]) -> str:
        if len(outputs) == 1:  # the common case, without a generator
            o = outputs[0]
            key: tuple[Any, ...] = (tuple(names), o.dtype, o.shape)
        else:
            key = (tuple(names), *[(o.dtype, o.shape) for o in outputs])
        text = self.outputs.get(key)
        if text is None:
            if len(self.outputs) > 256:
                self.outputs.clear()
            desc = [{"name": n, "dtype": str(o.dtype), "shape": list(o.shape)} for n, o in zip(names, outputs)]
            text = self.outputs[key] = json.dumps(desc, separators=(",", ":"))
        return text

    def source_of(self, source: str) -> str:
        text = self.sources.get(source)
        if text is None:
            if len(self.sources) > 4096:
                self.sources.clear()
            text = self.sources[source] = json.dumps(source)
        return text


_FRAGMENTS = _Fragments()


def encode_result(
    frame: Frame,
    outputs: Sequence[np.ndarray],
    timing: Timing,
    now_ns: int,
    wall_ns: int,
    exec_info: dict[str, Any],
    output_names: Sequence[str],
    topk: int = 0,
    detections: str | None = None,
) -> bytes:
    """The result header as compact JSON.

    ``exec_info`` is the running level's description (``{"level", "streams", "requests", "batch",
    "threads", "precision"}``), built once per swap, not per frame; ``wall_ns`` is ``time.time_ns()``
    (frame age for native frames that carry the sender's clock); ``topk`` > 0 adds the top-k classes of
    the first output; ``detections`` (boxes in the frame's pixels, as JSON text:
    :meth:`edgeagent.detect.Detections.json_text`) adds them and the frame's size.

    Assembled from fragments encoded once (:class:`_Fragments`): on the I/O thread, right after an
    inference, encoding the same level description and output shapes again for every frame was the
    largest single cost of the agent's own per-frame work (``edgeagent bench hotpath``).
    """
    f = _FRAGMENTS
    text = (
        f'{{"v":1,"status":"ok","source":{f.sources.get(frame.source) or f.source_of(frame.source)},'
        f'"seq":{frame.seq},"rx_ns":{frame.rx_ns},'
        f'"pub_ns":{now_ns},"latency_ms":{{"queue":{round(timing.queue_ms, 3)!r},'
        f'"inference":{round(timing.infer_ms, 3)!r},"total":{round(timing.total_ms, 3)!r}}},'
        f'"exec":{f.exec_json if exec_info is f.exec_obj else f.exec_of(exec_info)},'
        f'"outputs":{f.outputs_of(outputs, output_names)}'
    )
    if frame.sent_wall_ns is not None:
        text += f',"age_ms":{round((wall_ns - frame.sent_wall_ns) / 1e6, 3)!r}'
    if topk > 0 and outputs:
        text += f',"topk":{top_k_json(outputs[0], topk)}'
    if detections is not None:
        text += f',"frame":[{int(frame.image.shape[1])},{int(frame.image.shape[0])}]'
        text += f',"detections":{detections}'
    return (text + "}").encode()
