"""The I/O loop with the real engine at a batch level: stacked, padded and split frames give each
frame the same outputs as the model run on that frame alone."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from edgeagent.config import ModelConfig
from edgeagent.engine import CpuPlan, Engine
from edgeagent.tuner import ExecLevel
from edgeagent.wire import Frame

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


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "waited"])
def test_one_request_run_on_the_io_thread_or_waited_gives_plain_inference_outputs(
    harness: Callable[..., Harness], cache_dir: Path, inline: bool
) -> None:
    """At one request the I/O thread runs a short job itself where it shares the inference CPUs, and waits
    for it where it has a CPU of its own; either way each frame gets plain OpenVINO's outputs."""
    model_cfg = ModelConfig(cache_dir=str(cache_dir), precision="f32")
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    engine = Engine(model_cfg, CpuPlan(cpus, cpus, cpus if inline else ()))
    single = engine.compile(ExecLevel(1, 1, 1), model_cfg)
    rng = np.random.default_rng(5)
    images = {f"cam{i}": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for i in range(6)}
    h = harness(level=0, engine=engine, compiled=single)
    for source, img in images.items():  # one source each: none replaces another's waiting frame
        h.send(source, 0, img)
    results = h.collect(6)
    assert engine.inline is inline and engine.waits
    request = single.model.create_infer_request()
    for r in results:
        reference = request.infer({0: ov.Tensor(images[r["source"]][None])})[0]
        np.testing.assert_allclose(r["output0"], reference, rtol=1e-4, atol=1e-6)
    for source in images:
        h.wait("accounting", lambda s=source: h.accounting.snapshot()[s]["processed"] == 1)  # type: ignore[misc]


def test_a_job_openvino_refuses_is_an_error_completion_inline_and_a_refused_submit_waited(cache_dir: Path) -> None:
    """A frame whose tensor does not fit its graph (never made by the ingest: the engine's contract): run
    inline, OpenVINO's refusal comes back as the job's error; submitted, as the RuntimeError the loop
    answers. Either way the request is idle again and the next job runs."""
    model_cfg = ModelConfig(cache_dir=str(cache_dir), precision="f32")
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    good = Frame("cam", 0, np.zeros((224, 224, 3), np.uint8), 0, None, "native", "raw")
    bad = Frame("cam", 1, np.zeros((224, 224, 4), np.uint8), 0, None, "native", "raw")  # 4 channels as "bgr"
    for inline in (True, False):
        engine = Engine(model_cfg, CpuPlan(cpus, cpus, cpus if inline else ()))
        engine.activate(engine.compile(ExecLevel(1, 1, 1), model_cfg), lambda _job: None)
        assert engine.inline is inline
        if inline:
            failed = engine.complete(engine.run([bad]))
            assert failed.error and failed.frames == [bad] and not failed.outputs
            done = engine.complete(engine.run([good]))
        else:
            with pytest.raises(RuntimeError):
                engine.submit([bad])
            engine.submit([good])
            job = engine.wait(10_000)
            assert job is not None
            done = engine.complete(job)
        assert done.error is None and done.outputs[0][0].shape == (1, 1000) and engine.idle == [0]
