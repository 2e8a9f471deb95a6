"""In-graph pre-processing is numerically what numpy would do, through the agent's engine path."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import zmq

from edgeagent.config import ModelConfig
from edgeagent.engine import LEVEL0, Completion, CpuPlan, Engine
from edgeagent.errors import ModelError
from edgeagent.models import build_builtin_model, builtin_model_path, numpy_preprocess, read_model
from edgeagent.wire import FrameLimits, encode_native, parse_frame
from tests.helpers import ppocr_det_path


def run_engine(engine: Engine, image: np.ndarray) -> tuple[list[np.ndarray], int]:
    """One frame through the same path the agent uses (received over ZeroMQ, zero-copy submit)."""
    compiled = engine.compile(LEVEL0)
    done: list[int] = []
    ev = threading.Event()

    def on_done(job: int) -> None:
        done.append(job)
        ev.set()

    engine.activate(compiled, on_done)
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://models-test")
    b.connect("inproc://models-test")
    a.send_multipart(encode_native("t", 0, image))
    parts = b.recv_multipart(copy=False)
    frame = parse_frame(parts, FrameLimits(image.shape[:2]), 0)
    engine.submit([frame])
    assert ev.wait(60)
    pointer = engine.input_pointer(done[0])
    completion: Completion = engine.complete(done[0])
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
