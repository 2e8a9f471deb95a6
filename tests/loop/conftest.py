"""Fixtures of the in-process loop tests (the fakes live in ``fakes.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .fakes import LADDER, FakeCompiled, FakeEngine, Harness, make_config


@pytest.fixture(params=["callback", "wait"])
def harness(request: pytest.FixtureRequest) -> Iterator[Callable[..., Harness]]:
    """Every loop test runs twice: with the fake engine calling back at every level, and, like the real
    engine, waited for at a level of one request (no callback there)."""
    made: list[Harness] = []

    def make(level: int = 0, engine: Any = None, compiled: Any = None, **cfg: Any) -> Harness:
        engine = engine or FakeEngine(wait_at_one_request=request.param == "wait")
        h = Harness(engine, compiled or FakeCompiled(LADDER[level]), level, make_config(**cfg))
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
