"""Shared fixtures: free loopback ports, a real agent subprocess, metrics scraping."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    """``python -m edgeagent run ...`` as a subprocess on loopback ports, its stderr collected."""

    def __init__(
        self,
        extra: list[str],
        cache_dir: Path,
        env: dict[str, str] | None = None,
        listen: bool = True,
        pull: bool = True,
    ) -> None:
        self.listen_port = free_port()
        self.pull_port = free_port()
        self.results_port = free_port()
        self.metrics_port = free_port()
        self.listen = f"tcp://127.0.0.1:{self.listen_port}"
        self.pull = f"tcp://127.0.0.1:{self.pull_port}"
        self.results = f"tcp://127.0.0.1:{self.results_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        cmd = [
            sys.executable,
            "-m",
            "edgeagent",
            "run",
            "--listen",
            self.listen if listen else "",
            "--pull",
            self.pull if pull else "",
            "--results",
            self.results,
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
            "--cache-dir",
            str(cache_dir),
            *extra,
        ]
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=full_env, cwd=ROOT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def wait_for(self, text: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if text in line:
                    return line
            seen = len(self.lines)
            if self.proc.poll() is not None and text not in "\n".join(self.lines):
                time.sleep(0.2)  # let the reader catch the last lines
                raise AssertionError(f"agent exited {self.proc.returncode} before {text!r}:\n" + self.log())
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {text!r}:\n" + self.log())

    def log(self) -> str:
        return "\n".join(self.lines[-60:])

    def stop(self, timeout_s: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return int(self.proc.returncode)

    def scrape(self) -> dict[str, Any]:
        from edgeagent.tools import scrape

        return scrape(self.metrics_url)

    def wait_received(self, sent: dict[str, int], timeout_s: float = 15.0) -> None:
        """Until the agent counts every sent frame as received and none is still inside it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            per: dict[str, list[float]] = {}
            for (s, outcome, _r), n in self.frames().items():
                row = per.setdefault(s, [0.0, 0.0])
                row[0 if outcome == "received" else 1] += n
            if all(per.get(s, [0.0, 0.0]) == [float(n), float(n)] for s, n in sent.items()):
                return
            time.sleep(0.2)

    def frames(self) -> dict[tuple[str, str, str], float]:
        """(source, outcome, reason) → count, from the real metrics endpoint."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        out: dict[tuple[str, str, str], float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "edgeagent_frames_total":
                    out[(s.labels["source"], s.labels["outcome"], s.labels["reason"])] = s.value
        return out


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edgeagent-cache")


@pytest.fixture()
def start_agent(cache_dir: Path) -> Iterator[Any]:
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


def ppocr_det_path() -> Path | None:
    """PP-OCRv4 det ONNX shipped inside rapidocr-openvino (installed without its dependencies)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("rapidocr_openvino")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    return p if p.exists() else None
