"""Detections, not tensors: boxes in the received frame's pixels in replies and results, for synthetic
YOLO (both layouts) and SSD models whose outputs encode known boxes, through a resize or a letterbox;
and a real trained detector from a PyPI wheel on a real photograph against plain OpenVINO + numpy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import imagezmq
import numpy as np
import openvino as ov
import pytest
import zmq

from tests.detectors import (
    LABELS,
    SSD_ROWS,
    YOLONAS_ROWS,
    expected_yolo,
    nudenet_path,
    ssd_model,
    yolo_model,
    yolonas_model,
)
from tests.helpers import recv_result, subscriber


def send(agent: Any, name: str, image: np.ndarray) -> dict[str, Any]:
    sender = imagezmq.ImageSender(connect_to=agent.listen)
    sender.zmq_socket.setsockopt(zmq.RCVTIMEO, 60_000)
    try:
        return dict(json.loads(sender.send_image(name, image)))
    finally:
        sender.close()


def assert_detections(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [(d["class"], d.get("label")) for d in got] == [(d["class"], d.get("label")) for d in want], got
    for g, w in zip(got, want):
        assert g["score"] == pytest.approx(w["score"], abs=1e-5)
        np.testing.assert_allclose(g["box"], w["box"], atol=0.02)


@pytest.mark.parametrize(("layout", "resize"), [("channels_first", "letterbox"), ("candidates_first", "stretch")])
def test_yolo_boxes_come_back_in_frame_pixels(start_agent: Any, tmp_path: Path, layout: str, resize: str) -> None:
    model = yolo_model(tmp_path / "yolo.xml", candidates_first=layout == "candidates_first")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    agent = start_agent("--model", str(model), "--postprocess", "yolo", "--resize", resize, "--labels", str(labels))
    sub = subscriber(agent, b"cam-720p")
    frame = np.full((720, 1280, 3), 90, np.uint8)
    reply = send(agent, "cam-720p", frame)
    want = expected_yolo((720, 1280), letterbox=resize == "letterbox")
    assert reply["status"] == "ok" and reply["frame"] == [1280, 720]
    assert_detections(reply["detections"], want)
    _topic, header, tensors = recv_result(sub)  # the same boxes on the PUB, raw tensors still attached
    assert_detections(header["detections"], want)
    assert len(tensors) == 1 and header["outputs"][0]["name"] == "output0"
    # A gray camera of another size gets its own mapping.
    reply = send(agent, "nir", np.zeros((480, 640), np.uint8))
    assert_detections(reply["detections"], expected_yolo((480, 640), letterbox=resize == "letterbox"))


def test_ssd_rows_come_back_in_frame_pixels(start_agent: Any, tmp_path: Path) -> None:
    agent = start_agent("--model", str(ssd_model(tmp_path / "ssd.xml")), "--postprocess", "ssd", "--precision", "f32")
    reply = send(agent, "cam", np.zeros((480, 640, 3), np.uint8))
    got = reply["detections"]
    assert [d["class"] for d in got] == [1, 2] and "label" not in got[0]
    for d, (_label, conf, *box) in zip(got, SSD_ROWS):
        assert d["score"] == pytest.approx(conf, abs=1e-5)
        np.testing.assert_allclose(d["box"], np.array(box) * [640, 480, 640, 480], atol=0.02)


def test_yolonas_flat_rows_come_back_in_frame_pixels_and_the_ladder_has_no_batch(
    start_agent: Any, tmp_path: Path
) -> None:
    model = str(yolonas_model(tmp_path / "yolonas.xml"))
    agent = start_agent("--model", model, "--postprocess", "yolonas", "--resize", "letterbox", "--precision", "f32")
    reply = send(agent, "cam", np.zeros((480, 640, 3), np.uint8))
    got = reply["detections"]
    assert [d["class"] for d in got] == [2, 7]  # the 0.1 row is under the threshold; padding ends the list
    assert [d["score"] for d in got] == pytest.approx([0.9, 0.6], abs=1e-5)
    # 640x480 letterboxed into 320x320: scale 0.5, 40 px bars at the top and bottom; clipped to the frame.
    s, top = 0.5, 40
    for d, (_i, x1, y1, x2, y2, _score, _c) in zip(got, YOLONAS_ROWS):
        want = [x1 / s, (y1 - top) / s, x2 / s, min(480.0, (y2 - top) / s)]
        np.testing.assert_allclose(d["box"], want, atol=0.02)
    ladder = next(ln for ln in agent.log().splitlines() if "event=ladder" in ln)
    assert "batch=1" in ladder and "batch=2" not in ladder  # flat rows carry an image index: batch 1 only


def test_postprocess_that_does_not_fit_the_model_is_refused_at_start(start_agent: Any, tmp_path: Path) -> None:
    agent = start_agent("--postprocess", "yolo", wait=False)  # the built-in classifier: [1, 1000]
    assert agent.proc.wait(120) == 78
    assert "--postprocess yolo expects an output [1, 4+C, N]" in agent.log()


def grace_hopper() -> np.ndarray:
    """A real photograph (Grace Hopper's portrait, shipped in matplotlib's wheel), as BGR."""
    from matplotlib.cbook import get_sample_data
    from PIL import Image

    photo = Image.open(get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return np.ascontiguousarray(np.asarray(photo)[..., ::-1])


def test_a_real_trained_detector_from_a_wheel_matches_plain_openvino_and_a_numpy_decode(
    start_agent: Any,
) -> None:
    path = nudenet_path()
    if path is None:
        pytest.fail("nudenet is not installed: .ci/run installs it (pip install --no-deps nudenet==3.4.2)")
    image = grace_hopper()  # 512x600 portrait
    agent = start_agent(
        "--model", str(path), "--input-shape", "1,3,320,320", "--rgb", "--scale", "255", "--resize", "letterbox",
        "--pad-value", "0", "--precision", "f32", "--postprocess", "yolo", "--score-threshold", "0.3",
    )  # fmt: skip
    reply = send(agent, "portrait", image)
    got = reply["detections"]
    # Plain OpenVINO on the frame letterboxed with numpy (the reference pre-processing), decoded with a
    # straightforward per-candidate loop instead of the agent's vectorised decoder.
    from edgeagent.config import ModelConfig
    from edgeagent.models import numpy_preprocess, prepare, read_model

    core = ov.Core()
    cfg = ModelConfig(
        path=str(path), input_shape=(1, 3, 320, 320), rgb=True, scale=(255.0,), resize="letterbox", pad_value=0.0
    )
    _g, info = prepare(*read_model(core, cfg), cfg)
    model = core.read_model(str(path))
    model.reshape([1, 3, 320, 320])
    out = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(numpy_preprocess(image, info))[0]
    ref = reference_decode(out[0], 0.3, 0.45)
    h, w = image.shape[:2]
    s = min(320 / h, 320 / w)
    nh, nw = round(h * s), round(w * s)
    top, left = (320 - nh) // 2, (320 - nw) // 2
    want = [
        {"class": c, "score": sc, "box": [(x1 - left) / s, (y1 - top) / s, (x2 - left) / s, (y2 - top) / s]}
        for c, sc, (x1, y1, x2, y2) in ref
    ]
    assert len(want) >= 1, "the detector found nothing on the portrait"
    assert [d["class"] for d in got] == [d["class"] for d in want]
    # f32 on both sides; the only difference is summation order in kernels fused with the in-graph
    # pre-processing, measured here at under 0.1 px on boxes (1.9 frame px per input px) and 1e-4 on scores.
    for g, ref_det in zip(got, want):
        assert g["score"] == pytest.approx(ref_det["score"], abs=1e-3)
        np.testing.assert_allclose(g["box"], np.clip(ref_det["box"], 0, [w, h, w, h]), atol=0.5)
    # nudenet's labels: a face is found on a portrait.
    assert {d["class"] for d in got} & {1, 5}, got  # FACE_FEMALE, FACE_MALE


def reference_decode(x: np.ndarray, score: float, iou: float) -> list[tuple[int, float, list[float]]]:
    """[4+C, N] → (class, score, x1y1x2y2) with a plain loop: best class, threshold, greedy class-wise NMS."""
    cands = []
    for i in range(x.shape[1]):
        c = int(np.argmax(x[4:, i]))
        if x[4 + c, i] >= score:
            cx, cy, w, h = x[:4, i]
            cands.append((c, float(x[4 + c, i]), [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
    cands.sort(key=lambda t: -t[1])
    kept: list[tuple[int, float, list[float]]] = []
    for c, s, b in cands:
        if all(k[0] != c or _iou(k[2], b) <= iou for k in kept):
            kept.append((c, s, b))
    return kept


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
