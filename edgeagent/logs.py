"""Structured logging to stderr (the journal): one line per event, key=value or JSON.

Call sites log ``"event=name key=value ..."`` messages; the JSON format turns those pairs into fields.
:class:`RateLimiter` keeps repeated warnings (one bad camera sending garbage at 30 fps) to one line per
interval, with the number suppressed in between.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import threading
import time


class _KVFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return (
            f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} logger={record.name} "
            f"{record.getMessage()}"
            + (f" exc={json.dumps(self.formatException(record.exc_info))}" if record.exc_info else "")
        )


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {"ts": record.created, "level": record.levelname.lower(), "logger": record.name}
        msg = record.getMessage()
        try:
            pairs = [p.split("=", 1) for p in shlex.split(msg)]
            if all(len(p) == 2 for p in pairs):
                for k, v in pairs:  # the record's own ts/level/logger win; a clashing field keeps a prefix
                    out["field_" + k if k in ("ts", "level", "logger") else k] = v
            else:
                out["msg"] = msg
        except ValueError:
            out["msg"] = msg
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup(level: str = "info", fmt: str = "kv") -> None:
    """Configure the ``edgeagent`` logger tree to write to stderr (idempotent)."""
    root = logging.getLogger("edgeagent")
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JSONFormatter() if fmt == "json" else _KVFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def q(value: object) -> str:
    """Quote a value for a key=value log line when it needs it."""
    s = str(value)
    return s if s and all(c.isalnum() or c in "._-:/,+*@" for c in s) else json.dumps(s)


class RateLimiter:
    """Allows one event per key per ``interval_s``; reports how many were suppressed meanwhile."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now_s: float | None = None) -> int | None:
        """None: suppress this one. Otherwise the number suppressed since the last allowed one."""
        now = time.monotonic() if now_s is None else now_s
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            if len(self._last) > 4096:  # bounded: keys include source names
                self._last.clear()
            self._last[key] = now
            return self._suppressed.pop(key, 0)
