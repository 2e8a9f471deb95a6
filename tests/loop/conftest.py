"""Fixtures of the in-process loop tests (the fakes live in ``fakes.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .fakes import LADDER, FakeCompiled, FakeEngine, Harness, make_config


@pytest.fixture(params=["callback", "wait", "inline"])
def harness(request: pytest.FixtureRequest) -> Iterator[Callable[..., Harness]]:
    """Every loop test runs three times: with the fake engine calling back at every level; like the real
    engine with a CPU of its own for the I/O thread, waited for at a level of one request (no callback
    there); and like the real engine on 1-2 CPUs, run by the I/O thread itself at a level of one request."""
    made: list[Harness] = []

    def make(
        level: int = 0, engine: Any = None, compiled: Any = None, job_prior_ns: int | None = None, **cfg: Any
    ) -> Harness:
        # Inline: jobs known to be short (as after a few frames), so that the I/O thread runs them itself.
        prior = 1_000_000 if request.param == "inline" and engine is None else 0
        if job_prior_ns is not None:
            prior = job_prior_ns
        engine = engine or FakeEngine(wait_at_one_request=request.param == "wait", inline=request.param == "inline")
        h = Harness(engine, compiled or FakeCompiled(LADDER[level]), level, make_config(**cfg), job_prior_ns=prior)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
