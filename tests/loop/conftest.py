"""Fixtures of the in-process loop tests (the fakes live in ``fakes.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .fakes import LADDER, FakeCompiled, FakeEngine, Harness, make_config


@pytest.fixture()
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(level: int = 0, engine: Any = None, compiled: Any = None, **cfg: Any) -> Harness:
        engine = engine or FakeEngine()
        h = Harness(engine, compiled or FakeCompiled(LADDER[level]), level, make_config(**cfg))
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
