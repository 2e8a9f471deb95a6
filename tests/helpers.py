"""What more than one test module needs, written once: the agent as a subprocess, the CLI, CPU hogs,
the accounting identity and waiting for an event.

conftest.py holds only fixtures; test modules import from here, never from each other.

Waiting: a test on this project runs on a shared, noisy machine (other test runs, CPU hogs, CPUs
several times faster or slower than the one it was written on). So a test never sleeps a fixed time
and then asserts that something happened: it waits for the event itself with :func:`wait_until` and
a generous deadline, and the deadline only decides how long a broken agent takes to fail.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zmq

from edgeagent.bench import free_port
from edgeagent.publisher import Publisher

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")

# Per source: frames received, processed, dropped and rejected (the agent's frames_total counter).
Counts = dict[str, dict[str, float]]


def wait_until(
    check: Callable[[], T | None],
    timeout_s: float,
    what: str | Callable[[], str],
    log: Callable[[], str] | None = None,
    interval_s: float = 0.05,
) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    After ``timeout_s`` fail with ``what`` (a callable is evaluated then, to show the last state)
    and, if given, ``log()`` (the agent's log). ``check`` runs once more at the deadline, so a slow
    poll never turns a success into a timeout. ``check`` may raise to fail at once (the agent died).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {text}" + (f":\n{log()}" if log else ""))
        time.sleep(interval_s)


def edgeagent_cmd(*args: str) -> list[str]:
    """``python -m edgeagent ARGS`` with this interpreter: run from ROOT, it is this checkout's package."""
    return [sys.executable, "-m", "edgeagent", *args]


def run_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user does, from the repository root; stdout and stderr captured as text."""
    return subprocess.run(edgeagent_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# A busy loop that ends by itself: a hog outlives its test by at most ``seconds`` even if the test
# process is killed before it can kill the hog.
HOG = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"


def start_hog(seconds: float) -> subprocess.Popen[bytes]:
    """One CPU-bound process running for at most ``seconds``; stop it with :func:`stop_hogs`."""
    return subprocess.Popen([sys.executable, "-c", HOG, str(seconds)])


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    """Kill the hogs this test started (by their PID, via their Popen) and reap them."""
    for h in hogs:
        h.kill()
    for h in hogs:
        h.wait(10)


@contextmanager
def cpu_hogs(n: int, seconds: float) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` hogs for the duration of the ``with`` block (and never longer than ``seconds``)."""
    hogs = [start_hog(seconds) for _ in range(n)]
    try:
        yield hogs
    finally:
        stop_hogs(hogs)


def per_source(frames: Mapping[tuple[str, str, str], float]) -> Counts:
    """(source, outcome, reason) → n, summed over reasons: source → outcome → n."""
    per: Counts = {}
    for (source, outcome, _reason), n in frames.items():
        d = per.setdefault(source, {"received": 0.0, "processed": 0.0, "dropped": 0.0, "rejected": 0.0})
        d[outcome] += n
    return per


def settled(d: Mapping[str, float]) -> bool:
    """The accounting identity: every frame received has left the agent exactly one way."""
    return d["received"] == d["processed"] + d["dropped"] + d["rejected"]


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
        cmd = edgeagent_cmd(
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
        )
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

    def wait_for(self, *texts: str, timeout_s: float = 60.0, since: int = 0) -> str:
        """The first log line from index ``since`` on that contains every one of ``texts``; fails at
        once if the agent exits without logging it. (The log is read by a thread: a line the agent
        wrote before answering a request may not be in ``lines`` yet when the answer arrives.)"""

        def line() -> str | None:
            exited = self.proc.poll() is not None
            if exited:
                self._reader.join(5)  # the reader ends at EOF: then every last line is in
            found = next((ln for ln in self.lines[since:] if all(t in ln for t in texts)), None)
            if found is None and exited:
                raise AssertionError(f"agent exited {self.proc.returncode} before {texts!r}:\n" + self.log())
            return found

        return wait_until(line, timeout_s, f"a log line with {texts!r}", self.log)

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

    def frames(self) -> dict[tuple[str, str, str], float]:
        """(source, outcome, reason) → count, from the real metrics endpoint."""
        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        out: dict[tuple[str, str, str], float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "edgeagent_frames_total":
                    out[(s.labels["source"], s.labels["outcome"], s.labels["reason"])] = s.value
        return out


def accounting_holds(agent: AgentProcess, sent: Mapping[str, int] | None = None, timeout_s: float = 30.0) -> Counts:
    """received = processed + dropped + rejected for every source, once the agent is idle.

    Waits until nothing is inside the agent any more and every frame of ``sent`` (source → frames
    that left the sender) was received, then asserts that exactly those were received: a frame lost
    in transit times out here, a frame counted twice fails the equality.
    """

    def idle() -> Counts | None:
        per = per_source(agent.frames())
        arrived = all(per.get(s, {}).get("received", 0.0) >= n for s, n in (sent or {}).items())
        return per if arrived and all(settled(d) for d in per.values()) else None

    per = wait_until(idle, timeout_s, lambda: f"exact accounting, sent {sent}: {per_source(agent.frames())}", agent.log)
    for s, n in (sent or {}).items():
        assert per[s]["received"] == n, (s, per[s], n)
    return per


# The source of the frames subscriber() sends to prove its subscription; recv_result skips them.
PROBE = "_subscribed"


def subscriber(agent: AgentProcess, topic: bytes = b"", timeout_s: float = 30.0) -> zmq.Socket[Any]:
    """A SUB socket on the agent's results that is known to be subscribed.

    PUB/SUB drops whatever is published before the subscription reaches the agent (the slow joiner),
    and no fixed sleep is sure to be long enough on a busy machine. So probe frames go to the
    agent's ROUTER, one at a time, until one's result comes back here: from then on every result
    with ``topic`` arrives. The probe source counts in the agent's metrics like any other.
    """
    s: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, 0)  # never drop a result on this side, however late the test reads
    s.setsockopt(zmq.SUBSCRIBE, topic)
    if topic:
        s.setsockopt(zmq.SUBSCRIBE, PROBE.encode())
    s.connect(agent.results)
    probe_image = np.zeros((224, 224, 3), np.uint8)
    with Publisher(agent.listen, source=PROBE, mode="req", timeout_s=timeout_s) as probe:

        def probe_result_arrived() -> bool:
            # The agent replies first and publishes at once, so after the reply its result is on the way.
            probe.send(probe_image)
            if not s.poll(500):
                return False
            s.recv_multipart()
            return True

        wait_until(probe_result_arrived, timeout_s, "a subscription to the agent's results", agent.log, 0)
    return s


Result = tuple[str, dict[str, Any], list[bytes]]  # topic, header, output tensors


def poll_result(sub: zmq.Socket[Any], timeout_s: float) -> Result | None:
    """The next published result within ``timeout_s``, skipping subscriber()'s probes; else None."""
    deadline = time.monotonic() + timeout_s
    while sub.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        topic, header, *tensors = sub.recv_multipart()
        if topic.decode() != PROBE:
            return topic.decode(), json.loads(header), tensors
    return None


def recv_result(sub: zmq.Socket[Any], timeout_s: float = 30.0) -> Result:
    """The next published result (skipping subscriber()'s probes); fails after ``timeout_s``."""
    result = poll_result(sub, timeout_s)
    assert result is not None, f"no result published in {timeout_s:g} s"
    return result


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


# ---------------------------------------------------------------- monitoring/ (rules, dashboard)
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "edgeagent-rules.yml"
DASHBOARD = MONITORING / "grafana-edgeagent.json"


@dataclass(frozen=True)
class Rule:
    """One rule of a Prometheus rules file: ``kind`` is "alert" or "record"; ``start:end`` is the
    span of its ``expr:`` entry in the file's text (to replace it)."""

    kind: str
    name: str
    expr: str
    indent: str
    start: int
    end: int


_RULE = re.compile(r"^(?P<indent> *)- (?P<kind>alert|record): (?P<name>\S+)\n", re.M)


def read_rules(text: str) -> list[Rule]:
    """The rules of a rules file written as monitoring/edgeagent-rules.yml is: ``- alert:`` or
    ``- record:`` followed by ``expr:`` on the next line, inline or as a ``|`` block. (There is no
    YAML parser among the dependencies; a rule that is not found this way fails the caller's test.)"""
    rules = []
    for m in _RULE.finditer(text):
        indent = m["indent"] + "  "
        head = f"{indent}expr: "
        start = m.end()
        assert text.startswith(head, start), f"{m['name']}: expected {head!r} on the next line"
        line_end = text.index("\n", start) + 1
        first = text[start + len(head) : line_end - 1]
        if first.strip() != "|":
            rules.append(Rule(m["kind"], m["name"], first.strip(), indent, start, line_end))
            continue
        end = line_end
        while end < len(text) and (text[end] == "\n" or text.startswith(indent + "  ", end)):
            end = text.index("\n", end) + 1
        expr = "\n".join(ln.strip() for ln in text[line_end:end].splitlines() if ln.strip())
        rules.append(Rule(m["kind"], m["name"], expr, indent, start, end))
    return rules


def replace_exprs(text: str, new_expr: Callable[[Rule], str | None]) -> str:
    """``text`` with the expression of every rule for which ``new_expr`` returns a string replaced."""
    out, pos = [], 0
    for rule in read_rules(text):
        expr = new_expr(rule)
        if expr is None:
            continue
        body = "".join(f"{rule.indent}  {ln}\n" for ln in expr.splitlines())
        out += [text[pos : rule.start], f"{rule.indent}expr: |\n", body]
        pos = rule.end
    return "".join([*out, text[pos:]])


# Grafana's built-in interval variables, and a value for the dashboard's own variables (all used as
# label-value regular expressions: `{instance=~"$instance"}`).
_GRAFANA_INTERVALS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus receives it: Grafana's variables replaced by typical values."""
    return _GRAFANA_VARIABLE.sub(".*", _GRAFANA_INTERVALS.sub("5m", expr))


def dashboard_exprs(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Every PromQL query of a Grafana dashboard, by where it is: panel targets (rows included) and
    the metric selectors of query variables (``label_values(SELECTOR, label)``)."""
    out: dict[str, str] = {}

    def walk(panels: list[Any]) -> None:
        for panel in panels:
            for t in panel.get("targets", []):
                out[f"panel {panel['title']!r} {t['refId']}"] = t["expr"]
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]  # Grafana 10+: dict
        m = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
        assert m, f"variable {var['name']}: expected label_values(SELECTOR, label), got {query!r}"
        out[f"variable {var['name']!r}"] = m[1]
    return out


_PROMQL_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'  # strings
    r"|\{[^}]*\}|\[[^\]]*\]"  # label matchers, ranges
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"  # label lists
    r"|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[smhdwy]*"  # numbers and durations
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<call>\s*\()?"
)
_PROMQL_WORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan", "by", "without", "on", "ignoring"}
# Aggregation operators may take their label list before the parenthesis: `sum by (x) (...)`.
_PROMQL_WORDS |= {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
_PROMQL_WORDS |= {"bottomk", "topk", "quantile", "group_left", "group_right"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small tokenizer, enough for our queries:
    strings, matchers, ranges and label lists are skipped; a name followed by ``(`` is a function,
    and so is an aggregation operator)."""
    names = set()
    for m in _PROMQL_TOKEN.finditer(expr):
        name = m["name"]
        if name and not m["call"] and name.lower() not in _PROMQL_WORDS:
            names.add(name)
    return names


@dataclass
class WindowedScrape:
    """A scrape taken once control windows with results have closed (every family has samples)."""

    text: str  # the exposition text
    status: dict[str, Any]  # the scrape (tools.scrape) that saw the last window with results
    sent: int  # frames sent (and answered) before it


def scrape_after_windows(
    agent: AgentProcess, image: np.ndarray, windows: int = 1, source: str = "cam"
) -> WindowedScrape:
    """Send REQ frames until ``windows`` control windows have closed, the last one with results (its
    percentiles are numbers, not NaN), then take the exposition text. Fails after 60 s."""
    sent = 0
    with Publisher(agent.listen, source=source, mode="req", timeout_s=10) as p:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert isinstance(p.send(image), dict)
            sent += 1
            if sent % 10 == 0:
                st = agent.scrape()
                if st.get("edgeagent_windows_total", 0) >= windows and st["window"].get("p99", float("nan")) > 0:
                    text = urllib.request.urlopen(agent.metrics_url, timeout=5).read().decode()
                    return WindowedScrape(str(text), st, sent)
    raise AssertionError(f"no {windows} control windows with results after {sent} frames:\n{agent.log()}")
