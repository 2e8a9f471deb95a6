"""The I/O loop with the real engine at a batch level: stacked, padded and split frames give each
frame the same outputs as the model run on that frame alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov

from edgeagent.config import ModelConfig
from edgeagent.engine import CpuPlan, Engine
from edgeagent.tuner import ExecLevel

from .fakes import Harness


def test_batch_level_outputs_match_single_frame_inference(harness: Callable[..., Harness], cache_dir: Path) -> None:
    model_cfg = ModelConfig(cache_dir=str(cache_dir), precision="f32")
    engine = Engine(model_cfg, CpuPlan.make(None))
    batched = engine.compile(ExecLevel(1, 2, 4), model_cfg)
    single = engine.compile(ExecLevel(1, 1, 1), model_cfg)
    rng = np.random.default_rng(21)
    images = {f"cam{i}": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for i in range(3)}
    h = harness(level=4, engine=engine, compiled=batched, batch_wait_ms=10_000.0)
    for source, img in images.items():
        h.send(source, 0, img)
    h.send("cam3", 0, images["cam0"][::-1].copy())  # the fourth source fills the batch: one job
    results = {r["source"]: r for r in h.collect(4)}
    request = single.model.create_infer_request()
    for source, img in [*images.items(), ("cam3", images["cam0"][::-1].copy())]:
        reference = request.infer({0: ov.Tensor(img[None])})[0]
        got = results[source]
        assert got["exec"]["batch"] == 4 and got["outputs"][0]["shape"] == [1, 1000]
        np.testing.assert_allclose(got["output0"], reference, rtol=1e-4, atol=1e-6)
    # The same frames in partial batches (padding) give the same outputs.
    h2 = harness(level=4, engine=Engine(model_cfg, CpuPlan.make(None)), compiled=batched, batch_wait_ms=1.0)
    h2.send("solo", 0, images["cam1"])
    solo = h2.collect(1)[0]
    np.testing.assert_allclose(solo["output0"], results["cam1"]["output0"], rtol=1e-4, atol=1e-6)
