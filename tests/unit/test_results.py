"""The result header, batch assembly and the per-frame split of outputs: pure functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeagent.engine import batch_input, split_outputs
from edgeagent.io.results import Timing, encode_result, top_k, top_k_json
from edgeagent.wire import Frame

MS = 1_000_000


def test_result_header_names_timing_exec_outputs_age_and_topk() -> None:
    frame = Frame("door", 7, np.zeros((2, 2, 3), np.uint8), 10 * MS, 1_000 * MS, "native", "raw")
    scores = np.array([[0.1, 0.5, 0.2, 0.9]], np.float32)
    timing = Timing.of(rx_ns=10 * MS, submit_ns=12 * MS, now_ns=20 * MS, infer_ms=6.5)
    assert (timing.total_ms, timing.queue_ms, timing.infer_ms) == (10.0, 2.0, 6.5)
    exec_info = {"level": 3, "streams": 2, "requests": 3, "batch": 2, "threads": 2, "precision": "f32"}
    body = encode_result(frame, [scores], timing, 20 * MS, 1_004 * MS, exec_info, ["probabilities"], topk=2)
    h = json.loads(body)
    assert (h["v"], h["status"], h["source"], h["seq"]) == (1, "ok", "door", 7)
    assert (h["rx_ns"], h["pub_ns"]) == (10 * MS, 20 * MS)
    assert h["latency_ms"] == {"queue": 2.0, "inference": 6.5, "total": 10.0}
    assert h["exec"] == exec_info
    assert h["outputs"] == [{"name": "probabilities", "dtype": "float32", "shape": [1, 4]}]
    assert h["age_ms"] == 4.0
    assert h["topk"] == [[3, pytest.approx(0.9)], [1, pytest.approx(0.5)]]
    imz = Frame("cam", 0, frame.image, 0, None, "imagezmq", "raw")  # no sender clock: no age
    h2 = json.loads(encode_result(imz, [scores], timing, 0, 0, exec_info, ["probabilities"]))
    assert "age_ms" not in h2 and "topk" not in h2
    assert [c for c, _s in top_k(scores, 10)] == [3, 1, 2, 0]


def test_top_k_json_is_the_json_encoders_text_of_top_k() -> None:
    rng = np.random.default_rng(3)
    cases = [
        rng.random((1, 1000), np.float32),
        rng.standard_normal((1, 10)).astype(np.float64) * 1e-30,  # tiny values: exponent notation
        np.array([[5.0, 1.0, 5.0, -2.5]], np.float32),  # ties, a negative
        np.array([[np.nan, 1.0, np.inf, -np.inf]], np.float32),  # written as JSON's encoder writes them
        np.array([7], np.int64),
    ]
    for scores in cases:
        for k in (1, 3, 5, 10):
            assert top_k_json(scores, k) == json.dumps(top_k(scores, k), separators=(",", ":")), (scores, k)


def test_batch_input_is_a_view_at_batch_one_and_a_padded_stack_above() -> None:
    a = np.full((2, 3, 3), 1, np.uint8)
    b = np.full((2, 3, 3), 2, np.uint8)
    one = batch_input([a], 1)
    assert one.shape == (1, 2, 3, 3) and np.shares_memory(one, a)  # zero copy
    four = batch_input([a, b], 4)
    assert four.shape == (4, 2, 3, 3) and four.flags.c_contiguous
    assert [int(four[i, 0, 0, 0]) for i in range(4)] == [1, 2, 2, 2]  # padded with the last frame
    with pytest.raises(ValueError, match="3 images for a batch of 2"):
        batch_input([a, b, a], 2)
    with pytest.raises(ValueError):
        batch_input([], 1)


def test_split_outputs_gives_each_frame_its_row_and_whole_unbatched_outputs() -> None:
    rows = np.arange(8, dtype=np.float32).reshape(4, 2)  # batch 4, per-frame rows
    scalar = np.array(5.0, np.float32)
    reduced = np.array([9.0, 9.0], np.float32)  # no batch axis of size 4
    per = split_outputs([rows, scalar, reduced], n_frames=2, batch=4)  # 2 real frames, 2 padded rows
    assert len(per) == 2
    assert per[0][0].tolist() == [[0.0, 1.0]] and per[1][0].tolist() == [[2.0, 3.0]]
    assert float(per[1][1]) == 5.0 and per[1][2].tolist() == [9.0, 9.0]
    rows[0, 0] = -1  # copies: the request's output buffer is reused by the next job
    assert per[0][0][0, 0] == 0.0
    single = split_outputs([rows[:1]], n_frames=1, batch=1)
    assert single[0][0].tolist() == [[-1.0, 1.0]] and not np.shares_memory(single[0][0], rows)
