"""Benchmarks (``edgeagent bench ...``) and what they share with the tests."""

from __future__ import annotations

import socket
import subprocess

_ISSUED_PORTS: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one handed out before in this process: the kernel may offer the port it
    just freed again, and an agent given the same port for two sockets cannot start ("Address already
    in use"). Benchmarks and tests use it."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _ISSUED_PORTS:
            _ISSUED_PORTS.add(port)
            return port
    raise RuntimeError("no fresh loopback port in 100 tries")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """End a process this benchmark started: SIGTERM (an agent drains and exits), then SIGKILL."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
