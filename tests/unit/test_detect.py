"""Detection decoding: exact boxes from outputs that encode known boxes, both YOLO layouts, SSD rows,
class-wise NMS with ties, thresholds and limits, and the mapping back through a resize or a letterbox."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeagent.detect import (
    EMPTY,
    Decoder,
    Detections,
    check_outputs,
    decode_ssd,
    decode_yolo,
    decode_yolonas,
    nms,
    to_frame,
)
from edgeagent.models import Geometry, ModelInfo, geometry


def yolo_output(cands: list[tuple[float, float, float, float, int, float]], classes: int, n: int) -> np.ndarray:
    """[1, 4+C, N] with the given (cx, cy, w, h, class, score) candidates first, the rest near zero."""
    out = np.zeros((1, 4 + classes, n), np.float32)
    out[0, 4:, :] = 0.01
    for i, (cx, cy, w, h, c, s) in enumerate(cands):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + c, i] = s
    return out


CANDS = [
    (100, 100, 40, 40, 0, 0.9),  # A
    (104, 100, 40, 40, 0, 0.8),  # overlaps A a lot, same class: suppressed
    (104, 100, 40, 40, 1, 0.7),  # same place, another class: kept (class-wise NMS)
    (300, 200, 20, 60, 2, 0.6),  # alone
    (500, 500, 10, 10, 0, 0.2),  # under the threshold
]


@pytest.mark.parametrize("layout", ["channels_first", "candidates_first"])
def test_yolo_decodes_known_boxes_with_class_wise_nms(layout: str) -> None:
    out = yolo_output(CANDS, classes=3, n=64)
    if layout == "candidates_first":
        out = np.ascontiguousarray(out.transpose(0, 2, 1))  # [1, N, 4+C]
    det = decode_yolo(out, score_threshold=0.25, iou=0.45, limit=100)
    assert det.classes.tolist() == [0, 1, 2]
    np.testing.assert_allclose(det.scores, [0.9, 0.7, 0.6], rtol=1e-6)
    np.testing.assert_allclose(det.boxes, [[80, 80, 120, 120], [84, 80, 124, 120], [290, 170, 310, 230]])


def test_nms_ties_keep_the_earlier_candidate_and_limit_counts() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.5, 0.5, 0.5, 0.5], np.float32)
    classes = np.array([0, 0, 0, 3])
    assert nms(boxes, scores, classes, iou=0.45, limit=10).tolist() == [0, 2, 3]
    assert nms(boxes, scores, classes, iou=0.45, limit=2).tolist() == [0, 2]
    # IoU exactly at the threshold is kept (suppression needs more overlap than iou).
    half = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)
    assert nms(half, np.array([0.9, 0.8], np.float32), np.zeros(2, np.int64), 0.5, 10).tolist() == [0, 1]


def test_yolo_limit_and_empty() -> None:
    out = yolo_output([(10 + 30 * i, 10, 8, 8, 0, 0.5 + i / 100) for i in range(20)], classes=1, n=32)
    det = decode_yolo(out, 0.25, 0.45, limit=5)
    assert len(det) == 5 and det.scores[0] == pytest.approx(0.69)
    assert len(decode_yolo(yolo_output([], 2, 16), 0.25, 0.45, 100)) == 0
    with pytest.raises(ValueError, match=r"\[1, 4\+C, N\]"):
        decode_yolo(np.zeros((1, 3, 10), np.float32), 0.25, 0.45, 100)


def test_ssd_rows_are_normalised_sorted_and_end_at_a_negative_image_id() -> None:
    rows = np.array(
        [
            [0, 3, 0.6, 0.1, 0.2, 0.3, 0.4],
            [0, 1, 0.9, 0.5, 0.5, 1.0, 1.0],
            [0, 2, 0.1, 0.0, 0.0, 0.5, 0.5],  # under the threshold
            [-1, 0, 0.0, 0, 0, 0, 0],  # end of the list
            [0, 7, 0.99, 0, 0, 1, 1],  # after the end: ignored
        ],
        np.float32,
    )[None, None]
    det = decode_ssd(rows, 0.25, 100, model_hw=(300, 400))
    assert det.classes.tolist() == [1, 3]
    np.testing.assert_allclose(det.boxes, [[200, 150, 400, 300], [40, 60, 120, 120]], rtol=1e-6)


def test_yolonas_flat_rows_are_image_0s_sorted_by_score_and_end_at_a_negative_class() -> None:
    rows = np.array(
        [
            [0, 10, 20, 110, 220, 0.6, 3],
            [0, 0, 0, 640, 640, 0.9, 0],
            [1, 5, 5, 50, 50, 0.99, 1],  # another image of a batch: not this frame's
            [0, 1, 2, 3, 4, 0.1, 2],  # under the threshold
            [0, 0, 0, 0, 0, 0.0, -1],  # end of the list (padding)
            [0, 7, 7, 9, 9, 0.95, 5],  # after the end: ignored
        ],
        np.float32,
    )
    for out in (rows, rows[None]):
        det = decode_yolonas(out, 0.25, 100)
        assert det.classes.tolist() == [0, 3] and det.scores.tolist() == pytest.approx([0.9, 0.6])
        np.testing.assert_array_equal(det.boxes, [[0, 0, 640, 640], [10, 20, 110, 220]])
    assert len(decode_yolonas(rows, 0.25, 1)) == 1
    assert len(decode_yolonas(np.zeros((0, 7), np.float32), 0.25, 100)) == 0
    with pytest.raises(ValueError, match=r"\[N, 7\]"):
        decode_yolonas(np.zeros((1, 84, 10), np.float32), 0.25, 100)
    assert check_outputs("yolonas", [("o", "f32", (20, 7))]) is None
    assert check_outputs("yolonas", [("o", "f32", (1, 20, 7))]) is None
    assert "expects a flat output [N, 7]" in str(check_outputs("yolonas", [("o", "f32", (1, 84, 8400))]))


def info(resize: str, hw: tuple[int, int] = (640, 640)) -> ModelInfo:
    return ModelInfo("m", "m", "in", (1, 3, *hw), hw, False, None, None, (), resize=resize)


def test_letterbox_and_stretch_map_back_to_frame_pixels_and_clip() -> None:
    # A 1280x720 frame letterboxed into 640x640: scale 0.5, 140 rows of padding on top.
    geo = geometry((720, 1280), info("letterbox"))
    assert (geo.sx, geo.sy, geo.top, geo.left) == (0.5, 0.5, 140, 0)
    out = yolo_output([(320, 320, 100, 100, 0, 0.9), (630, 150, 40, 40, 1, 0.8)], classes=2, n=16)
    det = Decoder("yolo", (640, 640), 0.25, 0.45, 100)([out], geo)
    # Centre of the input is the centre of the frame; the second box is clipped at the right edge and
    # partly in the padding above the picture (clipped at the top).
    np.testing.assert_allclose(det.boxes, [[540, 260, 740, 460], [1220, 0, 1280, 60]])
    geo = geometry((720, 1280), info("stretch"))
    det = to_frame(decode_yolo(out, 0.25, 0.45, 100), geo)
    np.testing.assert_allclose(det.boxes[0], [540, 303.75, 740, 416.25])


def test_json_form_has_labels_when_given() -> None:
    out = yolo_output([(10, 10, 4, 4, 1, 0.75)], classes=2, n=8)
    det = Decoder("yolo", (64, 64), 0.25, 0.45, 100)([out], Geometry((64, 64), 1.0, 1.0, 0, 0))
    assert det.as_json(["cat", "dog"]) == [{"class": 1, "label": "dog", "score": 0.75, "box": [8.0, 8.0, 12.0, 12.0]}]
    assert det.as_json() == [{"class": 1, "score": 0.75, "box": [8.0, 8.0, 12.0, 12.0]}]


def test_json_text_is_the_json_encoders_text_of_the_json_form() -> None:
    rng = np.random.default_rng(11)
    k = 7
    det = Detections(
        rng.integers(0, 4, k).astype(np.int64),
        rng.random(k).astype(np.float32),
        (rng.random((k, 4)) * 1000).astype(np.float32),
    )
    odd = Detections(np.array([5, 0]), np.array([np.nan, 0.5], np.float32), np.array([[np.inf, 1, 2, 3], [0, 0, 1, 1]]))
    labels = ["cat", 'a "quoted" label', "naïve", "person"]  # escapes, non-ASCII, an "n" in a label
    for d in (det, odd, EMPTY):
        for lab in (None, labels):
            assert d.json_text(lab) == json.dumps(d.as_json(lab), separators=(",", ":")), (d, lab)


def test_detections_from_the_in_graph_rows_equal_the_column_form() -> None:
    """The in-graph NMS's rows ([6, limit] per frame, read transposed as they are) give the same classes,
    scores, boxes, JSON form and JSON text as the three column arrays, and only the first ``count``."""
    rng = np.random.default_rng(5)
    k, limit = 4, 10
    classes, scores = rng.integers(0, 3, k), np.sort(rng.random(k).astype(np.float32))[::-1]
    boxes = (rng.random((k, 4)) * 640).astype(np.float32)
    out = np.zeros((1, 6, limit), np.float32)
    out[0, :, :k] = np.column_stack([classes, scores, boxes]).T
    out[0, :, k:] = 7  # other candidates, past the count
    decoder = Decoder("yolo", (640, 640), 0.25, 0.45, 100, rows=1)
    geo = Geometry((640, 640), 1.0, 1.0, 0, 0)  # not used: the graph mapped the boxes
    got = decoder([np.zeros(1), out, np.array([k], np.int32)], geo)
    want = Detections(classes.astype(np.int64), scores, boxes)
    assert len(got) == k and got.classes.tolist() == want.classes.tolist() and got.classes.dtype == np.int64
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.boxes, want.boxes)
    for lab in (None, ["a", "b", "c"]):
        assert got.as_json(lab) == want.as_json(lab)
        assert got.json_text(lab) == want.json_text(lab)
    assert len(decoder([np.zeros(1), out, np.array([0], np.int32)], geo)) == 0
