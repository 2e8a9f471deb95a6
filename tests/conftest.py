"""Fixtures for every test directory; the helpers they use are in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import AgentProcess


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edgeagent-cache")


@pytest.fixture()
def start_agent(cache_dir: Path) -> Iterator[Callable[..., AgentProcess]]:
    """start_agent(*flags, env=..., wait=True, listen=True, pull=True): an agent stopped at teardown."""
    started: list[AgentProcess] = []

    def start(*extra: str, env: dict[str, str] | None = None, wait: bool = True, **kw: Any) -> AgentProcess:
        a = AgentProcess(list(extra), cache_dir, env, **kw)
        started.append(a)
        if wait:
            a.wait_for("event=listening")
        return a

    yield start
    for a in started:
        a.stop()
