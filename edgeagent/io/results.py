"""The published result header: one pure function of the frame, its outputs and its timing.

Results go out on the PUB socket as ``[topic=source, header JSON, tensor 0, tensor 1, ...]`` and the
same header JSON is the reply to a REQ sender (see the README's wire formats).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeagent.wire import Frame, dumps


@dataclass(frozen=True)
class Timing:
    """One frame's latencies inside the agent, in ms: ``total`` = receipt to result, ``queue`` =
    receipt to inference start, ``inference`` = OpenVINO's request latency."""

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
    top = np.argpartition(-flat, k - 1)[:k]
    top = top[np.argsort(-flat[top])]
    return [[int(i), float(flat[i])] for i in top]


def encode_result(
    frame: Frame,
    outputs: Sequence[np.ndarray],
    timing: Timing,
    now_ns: int,
    wall_ns: int,
    exec_info: dict[str, Any],
    output_names: Sequence[str],
    topk: int = 0,
    detections: list[dict[str, Any]] | None = None,
) -> bytes:
    """The result header as compact JSON.

    ``exec_info`` is the running level's description (``{"level", "streams", "requests", "batch",
    "threads", "precision"}``), built once per swap, not per frame; ``wall_ns`` is ``time.time_ns()``
    (frame age for native frames that carry the sender's clock); ``topk`` > 0 adds the top-k classes of
    the first output; ``detections`` (boxes in the frame's pixels) adds them and the frame's size.
    """
    header: dict[str, Any] = {
        "v": 1,
        "status": "ok",
        "source": frame.source,
        "seq": frame.seq,
        "rx_ns": frame.rx_ns,
        "pub_ns": now_ns,
        "latency_ms": {
            "queue": round(timing.queue_ms, 3),
            "inference": round(timing.infer_ms, 3),
            "total": round(timing.total_ms, 3),
        },
        "exec": exec_info,
        "outputs": [{"name": n, "dtype": str(o.dtype), "shape": list(o.shape)} for n, o in zip(output_names, outputs)],
    }
    if frame.sent_wall_ns is not None:
        header["age_ms"] = round((wall_ns - frame.sent_wall_ns) / 1e6, 3)
    if topk > 0 and outputs:
        header["topk"] = top_k(outputs[0], topk)
    if detections is not None:
        header["frame"] = [int(frame.image.shape[1]), int(frame.image.shape[0])]
        header["detections"] = detections
    return dumps(header)
