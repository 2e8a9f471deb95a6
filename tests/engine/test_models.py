"""In-graph pre-processing is numerically what numpy would do, through the agent's engine path."""

from __future__ import annotations

import hashlib
import queue
import time
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import zmq

from edgeagent.config import ModelConfig
from edgeagent.engine import LEVEL0, Compiled, Completion, CpuPlan, Engine, size_name
from edgeagent.errors import ModelError
from edgeagent.models import (
    DYNAMIC,
    build_builtin_model,
    builtin_model_path,
    geometry,
    letterbox_size,
    numpy_preprocess,
    read_model,
    to_bgr,
)
from edgeagent.wire import Frame, FrameLimits, encode_native, parse_frame
from tests.helpers import ppocr_det_path


def run_engine(engine: Engine, image: np.ndarray) -> tuple[list[np.ndarray], int]:
    """One frame through the same path the agent uses (received over ZeroMQ, zero-copy submit)."""
    compiled = engine.compile(LEVEL0)
    activate(engine, compiled)
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://models-test")
    b.connect("inproc://models-test")
    a.send_multipart(encode_native("t", 0, image))
    parts = b.recv_multipart(copy=False)
    frame = parse_frame(parts, FrameLimits(), 0)
    engine.submit([frame])
    job = next_done(engine)
    pointer = engine.input_pointer(job)
    completion: Completion = engine.complete(job)
    buffer_address = np.frombuffer(parts[1].buffer, np.uint8).ctypes.data
    a.close(0)
    b.close(0)
    assert completion.error is None and engine.idle == [0]
    return completion.outputs[0], int(pointer == buffer_address)


def reference(cfg: ModelConfig, info_model_cfg: ModelConfig, image: np.ndarray, engine: Engine) -> list[np.ndarray]:
    """Plain OpenVINO, f32, on numpy-preprocessed input (no PrePostProcessor)."""
    core = ov.Core()
    model, _path = read_model(core, cfg)
    if cfg.input_shape:
        model.reshape(list(cfg.input_shape))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert engine.active is not None
    x = numpy_preprocess(image, engine.active.info)
    return [np.asarray(v) for v in compiled(x).values()]


def test_builtin_model_is_deterministic_and_mobilenet_shaped(tmp_path: Path) -> None:
    m1, m2 = build_builtin_model(), build_builtin_model()
    ops1 = [op.get_type_name() for op in m1.get_ordered_ops()]
    assert ops1.count("GroupConvolution") == 17  # one depthwise conv per inverted residual block
    assert ops1.count("Add") > 17 + 10  # biases plus the residual connections
    assert m1.output(0).get_partial_shape() == ov.PartialShape([1, 1000])
    p1 = builtin_model_path(ModelConfig(cache_dir=str(tmp_path / "a")))
    p2 = builtin_model_path(ModelConfig(cache_dir=str(tmp_path / "b")))
    digest = [hashlib.sha256(p.with_suffix(".bin").read_bytes()).hexdigest() for p in (p1, p2)]
    assert digest[0] == digest[1]
    assert len(ops1) == len([op for op in m2.get_ordered_ops()])


@pytest.mark.parametrize("rgb", [True, False])
def test_builtin_model_matches_numpy_preprocessing(cache_dir: Path, rgb: bool) -> None:
    cfg = ModelConfig(cache_dir=str(cache_dir), precision="f32", rgb=rgb)
    engine = Engine(cfg, CpuPlan.make(None))
    image = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    out, zero_copy = run_engine(engine, image)
    ref = reference(cfg, cfg, image, engine)
    assert zero_copy == 1
    assert out[0].shape == (1, 1000)
    # f32 on both sides: only kernel summation order differs (fused pre-processing), so ~1e-6.
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-4, atol=1e-6)
    assert out[0].argmax() == ref[0].argmax()


def test_ppocr_det_matches_numpy_preprocessing(cache_dir: Path) -> None:
    path = ppocr_det_path()
    if path is None:
        pytest.fail("rapidocr-openvino is not installed: .ci/run installs it (pip install --no-deps)")
    cfg = ModelConfig(
        path=str(path),
        input_shape=(1, 3, 160, 320),
        cache_dir=str(cache_dir),
        precision="f32",
        rgb=False,
        mean=(123.675, 116.28, 103.53),
        scale=(58.395, 57.12, 57.375),
    )
    engine = Engine(cfg, CpuPlan.make(None))
    # Rendered text, so the detector's probability map lights up and the comparison means something.
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("RGB", (320, 160), "white")
    ImageDraw.Draw(canvas).text((20, 50), "EDGE 2026", fill="black", font=ImageFont.load_default(size=48))
    image = np.ascontiguousarray(np.asarray(canvas)[..., ::-1])
    out, zero_copy = run_engine(engine, image)
    ref = reference(cfg, cfg, image, engine)
    assert zero_copy == 1
    assert out[0].shape == (1, 1, 160, 320)
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-3, atol=1e-4)
    assert out[0].max() > 0.5 and (out[0] > 0.3).mean() > 0.02  # the text lights up the map


def test_resize_in_graph_for_other_frame_sizes(cache_dir: Path) -> None:
    cfg = ModelConfig(cache_dir=str(cache_dir), precision="f32", frame_size=(448, 336))
    engine = Engine(cfg, CpuPlan.make(None))
    compiled = engine.compile(LEVEL0)
    assert compiled.info.frame_hw == (336, 448) and compiled.info.model_hw == (224, 224)
    # A constant frame resizes to the same constant: compare with the model's own 224x224 answer.
    big = np.full((336, 448, 3), 77, np.uint8)
    out_big, _ = run_engine(engine, big)
    engine_small = Engine(ModelConfig(cache_dir=str(cache_dir), precision="f32"), CpuPlan.make(None))
    out_small, _ = run_engine(engine_small, np.full((224, 224, 3), 77, np.uint8))
    np.testing.assert_allclose(out_big[0], out_small[0], rtol=1e-4, atol=1e-6)


DONE: queue.Queue[int] = queue.Queue()


def activate(engine: Engine, compiled: Compiled) -> None:
    engine.activate(compiled, DONE.put)


def next_done(engine: Engine, timeout_s: float = 60.0) -> int:
    """The next finished job, as the I/O loop learns it: waited for at one request (no callback is set
    then), else handed over by OpenVINO's callback."""
    if not engine.waits:
        return DONE.get(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = engine.wait(100)
        if job is not None:
            return job
    raise AssertionError(f"no job finished within {timeout_s} s")


def infer_frames(engine: Engine, frames: list[Frame]) -> list[np.ndarray]:
    """Each frame as its own job on the running model (activated with :func:`activate`); its first output."""
    outs = []
    for frame in frames:
        engine.submit([frame])
        c = engine.complete(next_done(engine))
        assert c.error is None, c.error
        outs.append(c.outputs[0][0])
    return outs


def frame_of(image: np.ndarray, pix: str) -> Frame:
    return Frame("cam", 0, image if image.ndim == 3 else image[..., None], 0, None, "native", "raw", pix=pix)


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_any_frame_size_and_pixel_format_matches_numpy_on_both_graphs(cache_dir: Path, resize: str) -> None:
    """A 1280x720 frame (BGR, gray, RGBX) gives what plain OpenVINO gives on the frame converted, resized
    (or letterboxed) with numpy: first on the any-size graph, then on its own static graph. Both sides
    run f32; the graphs interpolate with the same bilinear half-pixel rule as the numpy reference, so
    differences are float summation order only (~1e-6 on these softmax outputs)."""
    cfg = ModelConfig(cache_dir=str(cache_dir), precision="f32", resize=resize)
    engine = Engine(cfg, CpuPlan.make(None))
    compiled = engine.compile(LEVEL0)
    assert set(compiled.sizes) == {(224, 224, "bgr"), DYNAMIC}
    activate(engine, compiled)
    rng = np.random.default_rng(7)
    bgr = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    frames = {
        "bgr": frame_of(bgr, "bgr"),
        "gray": frame_of(np.ascontiguousarray(bgr[..., 1]), "gray"),
        "rgbx": frame_of(np.ascontiguousarray(np.dstack([bgr[..., ::-1], np.full((720, 1280), 9, np.uint8)])), "rgbx"),
    }
    core = ov.Core()
    model, _ = read_model(core, cfg)
    plain = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for pix, frame in frames.items():
        ref = plain(numpy_preprocess(to_bgr(frame.image, pix), compiled.info))[0]
        assert not engine.has_size(frame.key)
        (on_any_size,) = infer_frames(engine, [frame])
        graph = engine.compile_size(compiled, frame.key, cfg)
        assert engine.add_size(compiled.uid, frame.key, graph, max_sizes=8) == []
        assert engine.has_size(frame.key)
        (on_own,) = infer_frames(engine, [frame])
        for out in (on_any_size, on_own):
            np.testing.assert_allclose(out, ref, rtol=1e-3, atol=2e-6, err_msg=f"{pix} {resize}")
            assert out.argmax() == ref.argmax()
    if resize == "letterbox":
        assert letterbox_size(720, 1280, 224, 224) == (126, 224, 49, 0)
        g = geometry((720, 1280), compiled.info)
        x, y = g.to_frame(np.array([0.0, 224.0]), np.array([49.0, 175.0]))
        np.testing.assert_allclose([x, y], [[0, 1280], [0, 720]], atol=1e-6)


def test_sizes_beyond_max_sizes_evict_the_least_recently_used(cache_dir: Path) -> None:
    cfg = ModelConfig(cache_dir=str(cache_dir))
    engine = Engine(cfg, CpuPlan.make(None))
    compiled = engine.compile(LEVEL0)
    activate(engine, compiled)
    keys = [(48, 64, "bgr"), (60, 80, "gray"), (90, 120, "bgr")]
    graphs = {k: engine.compile_size(compiled, k, cfg) for k in keys}
    assert engine.add_size(compiled.uid, keys[0], graphs[keys[0]], max_sizes=2) == []
    assert engine.add_size(compiled.uid, keys[1], graphs[keys[1]], max_sizes=2) == []
    infer_frames(engine, [frame_of(np.zeros((48, 64, 3), np.uint8), "bgr")])  # keys[0] used last
    # The start-up size (224x224) is kept, so a third size evicts the least recently used other one.
    assert engine.add_size(compiled.uid, keys[2], graphs[keys[2]], max_sizes=2) == [keys[1]]
    assert [size_name(k) for k in engine.size_keys()][-2:] == ["64x48/bgr", "120x90/bgr"]
    assert engine.has_size((224, 224, "bgr")) and not engine.has_size(keys[1])
    assert engine.add_size(compiled.uid + 1000, keys[1], graphs[keys[1]], max_sizes=2) is None  # another compile
    # A frame whose graph was evicted still runs, on the any-size graph.
    (out,) = infer_frames(engine, [frame_of(np.zeros((60, 80), np.uint8), "gray")])
    assert out.shape == (1, 1000)


def test_one_request_is_waited_for_without_a_callback_and_more_requests_call_back(cache_dir: Path) -> None:
    """At one request the owner thread waits for its job (a Python callback on OpenVINO's thread costs the
    job ~150 us at the median here); with more, OpenVINO's callback hands each finished job over."""
    from edgeagent.tuner import ExecLevel

    engine = Engine(ModelConfig(cache_dir=str(cache_dir)), CpuPlan.make(None))
    called: list[int] = []
    compiled = engine.compile(LEVEL0)
    engine.activate(compiled, called.append)
    assert engine.waits
    image = np.full((*compiled.info.frame_hw, 3), 77, np.uint8)
    engine.submit([frame_of(image, "bgr")])
    job = next_done(engine)
    # OpenVINO runs a request's callback before its wait returns: had one been set, it would have run.
    assert called == [] and engine.complete(job).error is None and engine.idle == [0]
    two = engine.compile(ExecLevel(1, 2, 1))
    engine.activate(two, DONE.put)
    assert not engine.waits
    engine.submit([frame_of(image, "bgr")])
    engine.submit([frame_of(image, "bgr")])
    jobs = sorted(DONE.get(timeout=60) for _ in range(2))
    assert jobs == [0, 1] and all(engine.complete(j).error is None for j in jobs)


def test_model_errors_are_clear(tmp_path: Path) -> None:
    core = ov.Core()
    with pytest.raises(ModelError, match="model file not found"):
        read_model(core, ModelConfig(path=str(tmp_path / "nope.xml")))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="cannot read model"):
        read_model(core, ModelConfig(path=str(bad)))
    det = ppocr_det_path()
    if det is not None:
        eng = Engine(ModelConfig(path=str(det), cache_dir=str(tmp_path)), CpuPlan.make(None))
        with pytest.raises(ModelError, match="dynamic"):
            eng.compile(LEVEL0)


def test_the_accuracy_level_compiles_f32_in_accuracy_mode(tmp_path: Path) -> None:
    from edgeagent.tuner import ExecLevel

    engine = Engine(ModelConfig(cache_dir=str(tmp_path)), CpuPlan.make(None))
    accurate = engine.compile(ExecLevel(1, 1, 1, accuracy=True))
    assert accurate.precision == "f32"
    assert str(accurate.model.get_property("EXECUTION_MODE_HINT")).upper().endswith("ACCURACY")
    fast = engine.compile(LEVEL0)
    assert str(fast.model.get_property("EXECUTION_MODE_HINT")).upper().endswith("PERFORMANCE")
    ladder = engine.ladder(4, accuracy_rung=True)
    assert ladder[0].accuracy and not any(lv.accuracy for lv in ladder[1:])


def test_in_graph_yolo_nms_at_a_batch_level_splits_each_frames_rows(cache_dir: Path, tmp_path: Path) -> None:
    """Decode + NMS in the graph gives one list of rows for the whole batch; each frame gets its own rows
    back (split by the per-frame counts), equal to the numpy decode of its raw output."""
    from edgeagent.detect import Decoder, decode_yolo, to_frame
    from edgeagent.tuner import ExecLevel
    from tests.detectors import KEPT, yolo_model

    cfg = ModelConfig(path=str(yolo_model(tmp_path / "y.xml")), cache_dir=str(cache_dir), precision="f32")
    engine = Engine(cfg, CpuPlan.make(None), yolo_nms=(0.25, 0.45, 100))
    compiled = engine.compile(ExecLevel(streams=1, requests=1, batch=2))
    names = [n for n, _t, _s in compiled.info.outputs]
    assert names == ["output0", "detections", "detections_count"]
    activate(engine, compiled)
    frames = [frame_of(np.full((320, 320, 3), v, np.uint8), "bgr") for v in (10, 200)]
    engine.submit(frames)
    c = engine.complete(next_done(engine))
    assert c.error is None and len(c.outputs) == 2
    decoder = Decoder("yolo", (320, 320), 0.25, 0.45, 100, rows=1)
    geo = geometry((320, 320), compiled.info)
    for outs in c.outputs:
        got = decoder(outs, geo)
        want = to_frame(decode_yolo(outs[0], 0.25, 0.45, 100), geo)
        assert len(got) == len(KEPT) and got.classes.tolist() == want.classes.tolist()
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
def test_in_graph_yolo_nms_boxes_are_in_frame_pixels_on_the_any_size_graph_and_on_the_sizes_own(
    cache_dir: Path, tmp_path: Path, resize: str
) -> None:
    """The graph maps the kept boxes to the frame and clips them: from constants on a size's own graph,
    from the frame's shape on the any-size graph (letterbox_size's arithmetic). Both give the float64
    reference's boxes, at the default precision (bf16 where the CPU has it), for a 720p and a gray VGA
    frame: the expected boxes include one clipped at the frame's edge (through the letterbox pad)."""
    from edgeagent.detect import Decoder
    from tests.detectors import expected_yolo, yolo_model

    cfg = ModelConfig(path=str(yolo_model(tmp_path / "y.xml")), cache_dir=str(cache_dir), resize=resize)
    engine = Engine(cfg, CpuPlan.make(None), yolo_nms=(0.25, 0.45, 100))
    compiled = engine.compile(LEVEL0)
    activate(engine, compiled)
    decoder = Decoder("yolo", (320, 320), 0.25, 0.45, 100, rows=1)
    for image, pix in ((np.full((720, 1280, 3), 90, np.uint8), "bgr"), (np.zeros((480, 640), np.uint8), "gray")):
        frame = frame_of(image, pix)
        want = expected_yolo(image.shape[:2], letterbox=resize == "letterbox")
        assert not engine.has_size(frame.key)
        for graph in ("any-size", "own"):
            if graph == "own":
                assert engine.add_size(compiled.uid, frame.key, engine.compile_size(compiled, frame.key, cfg), 8) == []
            engine.submit([frame])
            c = engine.complete(next_done(engine))
            assert c.error is None, c.error
            got = decoder(c.outputs[0], geometry(image.shape[:2], compiled.info))
            assert got.classes.tolist() == [d["class"] for d in want], graph
            np.testing.assert_allclose(got.scores, [d["score"] for d in want], atol=1e-6)
            np.testing.assert_allclose(got.boxes, [d["box"] for d in want], atol=0.02, err_msg=f"{graph} {pix}")


def test_in_graph_yolo_nms_in_a_batch_whose_frames_have_different_counts(cache_dir: Path, tmp_path: Path) -> None:
    """Each frame's rows start after the rows of the frames before it in NMS's list: a batch of three
    frames with all, none and some of the candidates (scores scale with the frame's brightness) gives
    each frame exactly the numpy decode of its own raw output, in both orders."""
    from edgeagent.detect import Decoder, decode_yolo, to_frame
    from edgeagent.tuner import ExecLevel
    from tests.detectors import yolo_model

    path = yolo_model(tmp_path / "y.xml", scores_by_brightness=True)
    cfg = ModelConfig(path=str(path), cache_dir=str(cache_dir), precision="f32")
    engine = Engine(cfg, CpuPlan.make(None), yolo_nms=(0.25, 0.45, 100))
    compiled = engine.compile(ExecLevel(streams=1, requests=1, batch=3))
    activate(engine, compiled)
    decoder = Decoder("yolo", (320, 320), 0.25, 0.45, 100, rows=1)
    geo = geometry((320, 320), compiled.info)
    for values in ((255, 0, 100), (0, 100, 255)):
        engine.submit([frame_of(np.full((320, 320, 3), v, np.uint8), "bgr") for v in values])
        c = engine.complete(next_done(engine))
        assert c.error is None and len(c.outputs) == 3
        counts = []
        for outs in c.outputs:
            got = decoder(outs, geo)
            want = to_frame(decode_yolo(outs[0], 0.25, 0.45, 100), geo)
            assert got.classes.tolist() == want.classes.tolist()
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
            np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
            counts.append(len(got))
        by_value = dict(zip(values, counts))
        assert by_value[255] == 6 and by_value[0] == 0 and by_value[100] == 2, by_value


def test_the_switcher_keeps_the_running_and_the_last_left_compiled_levels(cache_dir: Path) -> None:
    from edgeagent.switcher import Switcher
    from edgeagent.tuner import derive_ladder

    ladder = derive_ladder(2, 2, 2, 1, max_batch=4)  # (1,1,1) (1,2,1) (2,3,1) (2,3,2) (2,3,4)
    cfg = ModelConfig(cache_dir=str(cache_dir))
    sw = Switcher(Engine(cfg, CpuPlan.make(None)), ladder, cfg, lambda _ev: None, keep=2)
    two, three = sw.compile(2), sw.compile(3)
    assert two.uid != three.uid and (two.level, three.level) == (ladder[2], ladder[3])
    # A probe that goes back to the level it came from needs no compile (it competed with inference).
    assert sw.compile(2).uid == two.uid and sw.compile(3).uid == three.uid
    assert sw.compile(1).uid == sw.compile(0).uid  # one stream, one batch: more requests need no compile
    four = sw.compile(4)  # keep=2: level 0/1's model and this one; level 3's was used least recently
    assert four.uid not in {two.uid, three.uid}
    assert sw.compile(3).uid != three.uid  # never more than ``keep`` compiled models are kept
    assert sw.compile(4).uid == four.uid


def test_in_graph_yolo_nms_on_an_80_class_head_equals_the_numpy_decode(cache_dir: Path, tmp_path: Path) -> None:
    """300 candidates over 80 classes (a COCO head's shape): the class-shifted single NMS in the graph
    keeps the same boxes, classes and order as the class-wise numpy reference."""
    from edgeagent.bench.detect import synthetic_head
    from edgeagent.detect import Decoder, decode_yolo, to_frame

    cfg = ModelConfig(path=synthetic_head(tmp_path / "head.xml", 80), cache_dir=str(cache_dir), precision="f32")
    engine = Engine(cfg, CpuPlan.make(None), yolo_nms=(0.25, 0.45, 100))
    compiled = engine.compile(LEVEL0)
    activate(engine, compiled)
    engine.submit([frame_of(np.full((640, 640, 3), 90, np.uint8), "bgr")])
    c = engine.complete(next_done(engine))
    assert c.error is None
    geo = geometry((640, 640), compiled.info)
    got = Decoder("yolo", (640, 640), 0.25, 0.45, 100, rows=1)(c.outputs[0], geo)
    want = to_frame(decode_yolo(c.outputs[0][0], 0.25, 0.45, 100), geo)
    assert len(got) == len(want) == 100  # the limit: more than 100 candidates survive NMS
    assert got.classes.tolist() == want.classes.tolist()
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    np.testing.assert_allclose(got.boxes, want.boxes, atol=0.05)
