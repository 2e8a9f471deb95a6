"""Frigate NVR's ZMQ detector protocol against a real agent, with a client written from Frigate's
detector source (tests/detectors.py): handshake, every tensor layout and dtype, two Frigate detector
processes at once, timeouts and reconnects, hostile messages, model pushes refused and accepted."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from tests.detectors import KEPT, YOLO_CANDIDATES, FrigateClient, yolo_model
from tests.helpers import accounting_holds, free_port, ppocr_det_path

# YOLO_CANDIDATES kept after threshold and NMS, as Frigate rows on a 320x320 request (no resize).
EXPECTED = np.zeros((20, 6), np.float32)
for row, (cx, cy, w, h, c, s) in enumerate(YOLO_CANDIDATES[i] for i in KEPT):
    x1, y1, x2, y2 = max(cx - w / 2, 0), max(cy - h / 2, 0), min(cx + w / 2, 320), min(cy + h / 2, 320)
    EXPECTED[row] = (c, s, y1 / 320, x1 / 320, y2 / 320, x2 / 320)


def start_frigate_agent(start_agent: Any, tmp_path: Path, *extra: str) -> tuple[Any, str]:
    """An agent serving Frigate with the synthetic YOLO model. Its Frigate timeout is the clients' here
    (30 s), not Frigate's 200 ms default, unless a test's --config says otherwise, and its SLA is
    generous: on a loaded machine a request may wait longer than either, and would be dropped as late
    (the zero result). These tests are about the protocol; tests/loop tests the late rules."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    model = yolo_model(tmp_path / "yolov8n.xml")
    if "--config" not in extra:
        cfg = tmp_path / "frigate-timeout.toml"
        cfg.write_text("[frigate]\nrequest_timeout_ms = 30000\n")
        extra = ("--config", str(cfg), *extra)
    agent = start_agent(
        "--model", str(model), "--postprocess", "yolo", "--precision", "f32", "--frigate", endpoint,
        "--sla-p99-ms", "10000", *extra,
    )  # fmt: skip
    return agent, endpoint


def tensors() -> dict[str, np.ndarray]:
    """One 320x320 picture in every layout and dtype Frigate sends."""
    nhwc = np.random.default_rng(5).integers(0, 256, (1, 320, 320, 3), dtype=np.uint8)
    out = {
        "nhwc": nhwc,
        "nchw": np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)),
        "hwnc": np.ascontiguousarray(nhwc.transpose(1, 2, 0, 3)),
        "hwcn": np.ascontiguousarray(nhwc.transpose(1, 2, 3, 0)),
    }
    out.update({f"{k}-float32": (v.astype(np.float32) / 255) for k, v in list(out.items())})
    return out


def test_handshake_then_detections_for_every_layout_and_dtype(start_agent: Any, tmp_path: Path) -> None:
    agent, endpoint = start_frigate_agent(start_agent, tmp_path)
    client = FrigateClient(endpoint, "yolov8n.xml", timeout_ms=30_000)
    try:
        assert client.ready
        for name, tensor in tensors().items():
            rows = client.detect_raw(tensor)
            np.testing.assert_allclose(rows, EXPECTED, atol=1e-6, err_msg=name)
        # Frigate stops at the first score under 0.4: rows are by score, zero rows last.
        assert list(rows[:, 1]) == sorted(rows[:, 1], reverse=True) and not rows[len(KEPT) :].any()
    finally:
        client.close()
    per = accounting_holds(agent)
    assert per["frigate"]["processed"] == 8 and per["frigate"]["rejected"] == 0
    agent.wait_for("event=frigate_handshake", "model_name=yolov8n.xml")


def test_two_frigate_detectors_at_once(start_agent: Any, tmp_path: Path) -> None:
    agent, endpoint = start_frigate_agent(start_agent, tmp_path)
    tensor = tensors()["nhwc"]
    results: dict[int, list[np.ndarray]] = {0: [], 1: []}
    errors: list[BaseException] = []

    def detector(i: int) -> None:
        client = FrigateClient(endpoint, "yolov8n.xml", timeout_ms=30_000)
        try:
            for _ in range(25):
                results[i].append(client.detect_raw(tensor))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=detector, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for i in (0, 1):
        assert len(results[i]) == 25
        for rows in results[i]:
            np.testing.assert_allclose(rows, EXPECTED, atol=1e-6)
    per = accounting_holds(agent)
    # One slot per Frigate socket: neither detector's request replaced the other's (no stale drops).
    assert per["frigate"]["processed"] == 50 and per["frigate"]["dropped"] == 0


def test_a_frigate_whose_timeout_fires_reconnects_handshakes_again_and_is_served(
    start_agent: Any, tmp_path: Path
) -> None:
    """(A request Frigate gave up on is dropped as late: tests/loop, where the wait is controlled.)"""
    agent, endpoint = start_frigate_agent(start_agent, tmp_path)
    impatient = FrigateClient(endpoint, "yolov8n.xml", timeout_ms=1)  # 1 ms: the first answers come too late
    try:
        for _ in range(50):
            impatient.detect_raw(tensors()["nhwc"])
            if impatient.timeouts:
                break
        assert impatient.timeouts >= 1 and impatient.ready  # re-created its socket and handshook again
        impatient.timeout_ms = 30_000
        impatient.sock.setsockopt(zmq.RCVTIMEO, 30_000)
        np.testing.assert_allclose(impatient.detect_raw(tensors()["nhwc"]), EXPECTED, atol=1e-6)
    finally:
        impatient.close()
    assert int(agent.scrape().get("edgeagent_frigate_handshakes_total", 0)) >= 2


HOSTILE: list[tuple[str, list[bytes]]] = [
    ("wrong shape", [json.dumps({"shape": [1, 320, 320, 4], "dtype": "uint8"}).encode(), bytes(320 * 320 * 4)]),
    ("2-D shape", [json.dumps({"shape": [320, 960], "dtype": "uint8"}).encode(), bytes(320 * 960)]),
    ("truncated", [json.dumps({"shape": [1, 320, 320, 3], "dtype": "uint8"}).encode(), bytes(1000)]),
    ("float64", [json.dumps({"shape": [1, 2, 2, 3], "dtype": "float64"}).encode(), bytes(96)]),
    (
        "unknown model_type",
        [json.dumps({"shape": [1, 2, 2, 3], "dtype": "uint8", "model_type": "yolo-generic"}).encode(), bytes(12)],
    ),
    ("not JSON", [b"\xff\x00", bytes(12)]),
    ("three parts", [b"{}", b"", b""]),
    ("empty header", [b"{}"]),
]


def test_hostile_messages_get_the_zero_result_and_harm_nothing(start_agent: Any, tmp_path: Path) -> None:
    agent, endpoint = start_frigate_agent(start_agent, tmp_path)
    ctx = zmq.Context.instance()
    for name, parts in HOSTILE:
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        s.send_multipart(parts)
        assert s.poll(30_000), name
        reply = s.recv_multipart()
        s.close()
        header = json.loads(reply[0])
        assert header == {"shape": [20, 6], "dtype": "float32"}, name
        assert np.frombuffer(reply[1], np.float32).reshape(20, 6).tolist() == np.zeros((20, 6)).tolist(), name
    # A model push while pushes are off: refused, said so, and the client still works.
    client = FrigateClient(endpoint, "yolov8n.xml", timeout_ms=30_000)
    try:
        client.sock.send_multipart([json.dumps({"model_data": True, "model_name": "x.onnx"}).encode(), b"junk"])
        assert json.loads(client.sock.recv_multipart()[0]) == {"model_saved": False, "model_loaded": False}
        np.testing.assert_allclose(client.detect_raw(tensors()["nhwc"]), EXPECTED, atol=1e-6)
    finally:
        client.close()
    agent.wait_for("event=frigate_model_refused", "accept_models is off")
    rejected = {r for (s, o, r), _v in agent.frames().items() if s == "frigate" and o == "rejected"}
    assert rejected >= {"shape", "size", "dtype", "keys", "json", "parts"}, rejected
    assert agent.proc.poll() is None


def test_a_pushed_model_is_saved_and_loaded_when_pushes_are_on(start_agent: Any, tmp_path: Path) -> None:
    det = ppocr_det_path()
    if det is None:
        pytest.fail("rapidocr-openvino is not installed: .ci/run installs it (pip install --no-deps)")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[frigate]\naccept_models = true\nrequest_timeout_ms = 30000\nmodel_dir = "{tmp_path / "pushed"}"\n'
    )
    # PP-OCR det has a dynamic input: --input-shape resolves it for the pushed model (and fits the synthetic one).
    agent, endpoint = start_frigate_agent(start_agent, tmp_path, "--config", str(cfg), "--input-shape", "1,3,320,320")
    since = len(agent.lines)
    # Frigate asks for a model this agent does not serve: it is not available, so Frigate sends the file.
    client = FrigateClient(endpoint, "yolov8n.xml", timeout_ms=30_000)  # the agent's own model: available
    assert client.ready
    client.close()
    pusher = FrigateClient.__new__(FrigateClient)
    pusher.__init__(endpoint, "ch_PP-OCRv4_det_infer.onnx", timeout_ms=30_000)  # type: ignore[misc]
    assert not pusher.ready  # not available here and nothing pushed yet
    assert pusher.handshake(model_bytes=det.read_bytes())
    pusher.close()
    saved = tmp_path / "pushed" / "ch_PP-OCRv4_det_infer.onnx"
    assert saved.read_bytes() == det.read_bytes()
    agent.wait_for("event=frigate_model_saved", since=since)
    agent.wait_for("event=model_reloaded", "ch_PP-OCRv4_det_infer.onnx", since=since, timeout_s=120)
    agent.wait_for("event=level_switched", "reload=True", since=since, timeout_s=120)  # now it runs
    again = FrigateClient(endpoint, "ch_PP-OCRv4_det_infer.onnx", timeout_ms=30_000)
    assert again.ready  # now the model served: available without a push
    again.close()
