"""Command line: argument parsing, logging setup, exceptions → exit codes. The only ``sys.exit``.

Exit codes: 0 ok, 1 crash, 2 usage, 66 model missing/unreadable/uncompilable, 69 endpoint unavailable,
78 configuration error (the systemd unit does not restart on 78).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from edgeagent import __version__
from edgeagent.errors import EXIT_CONFIG, EXIT_CRASH, EXIT_OK, EXIT_USAGE, ConfigError, EdgeAgentError

log = logging.getLogger("edgeagent.cli")

# CLI flag → config key. Every flag of `run` has a key; the file is overridden by the flags given.
# `run --help` groups the flags by the key's section (RUN_GROUPS) and shows the config default of
# each (from the dataclasses: it cannot drift); a help text says what an unset (None) key means.
RUN_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--model", "model.path", {"metavar": "PATH", "help": "IR .xml, .onnx, .tflite or Paddle (default: built-in)"}),
    (
        "--input-shape",
        "model.input_shape",
        {"metavar": "N,C,H,W", "help": "resolves dynamic dimensions (default: the model's)"},
    ),
    (
        "--frame-size",
        "model.frame_size",
        {"metavar": "WxH", "help": "any size is served; this one is compiled ahead (default: the model's)"},
    ),
    (
        "--resize",
        "model.resize",
        {"choices": ["stretch", "letterbox"], "help": "frames of another size: plain resize, or aspect kept + pad"},
    ),
    ("--pad-value", "model.pad_value", {"type": float, "metavar": "V", "help": "letterbox fill, 0-255"}),
    (
        "--max-sizes",
        "model.max_sizes",
        {"type": int, "metavar": "N", "help": "frame sizes with a compiled graph of their own (LRU)"},
    ),
    (
        "--rgb",
        "model.rgb",
        {"action": "store_const", "const": True, "help": "the model takes RGB (default: the model's; built-in: RGB)"},
    ),
    ("--bgr", "model.rgb", {"action": "store_const", "const": False, "help": "the model takes BGR, as frames come"}),
    ("--mean", "model.mean", {"metavar": "M[,M,M]", "help": "per channel, model's colour order (default: none)"}),
    ("--scale", "model.scale", {"metavar": "S[,S,S]", "help": "per channel, after the mean (default: none)"}),
    ("--device", "model.device", {"metavar": "DEVICE", "help": "OpenVINO device"}),
    (
        "--precision",
        "model.precision",
        {"metavar": "{f32,bf16,f16}", "help": "inference precision (default: the device's)"},
    ),
    (
        "--cache-dir",
        "model.cache_dir",
        {"metavar": "DIR", "help": "model and compile cache (default: $XDG_CACHE_HOME/edgeagent)"},
    ),
    (
        "--listen",
        "ingest.listen",
        {
            "action": "append",
            "metavar": "ENDPOINT",
            "help": "ROUTER for imagezmq REQ/REP senders; repeatable; '': none",
        },
    ),
    (
        "--connect",
        "ingest.connect",
        {"action": "append", "metavar": "ENDPOINT", "help": "SUB to an imagezmq PUB/SUB sender; repeatable"},
    ),
    (
        "--pull",
        "ingest.pull",
        {"action": "append", "metavar": "ENDPOINT", "help": "PULL for native PUSH publishers; repeatable; '': none"},
    ),
    ("--reply", "ingest.reply", {"choices": ["json", "ok"], "help": "what a REQ sender gets for a processed frame"}),
    ("--max-sources", "ingest.max_sources", {"type": int, "metavar": "N", "help": "cameras kept; more are rejected"}),
    (
        "--source-idle-s",
        "ingest.source_idle_s",
        {"type": float, "metavar": "SECONDS", "help": "a silent camera frees its place after this"},
    ),
    (
        "--max-message-bytes",
        "ingest.max_message_bytes",
        {"type": int, "metavar": "BYTES", "help": "hard cap: libzmq drops a peer that sends more"},
    ),
    (
        "--max-frame-age-ms",
        "ingest.max_frame_age_ms",
        {"type": float, "metavar": "MS", "help": "drop older frames when their turn comes; 0: off"},
    ),
    ("--results", "results.publish", {"metavar": "ENDPOINT", "help": "PUB for results, topic = source; '': off"}),
    (
        "--postprocess",
        "results.postprocess",
        {
            "choices": ["none", "topk", "yolo", "ssd", "yolonas"],
            "help": "topk: a classifier's best; yolo, ssd, yolonas: detections",
        },
    ),
    (
        "--score-threshold",
        "results.score_threshold",
        {"type": float, "metavar": "S", "help": "detections: lowest score kept"},
    ),
    (
        "--iou-threshold",
        "results.iou_threshold",
        {"type": float, "metavar": "IOU", "help": "detections: class-wise NMS overlap"},
    ),
    ("--max-detections", "results.max_detections", {"type": int, "metavar": "N", "help": "detections per frame"}),
    (
        "--labels",
        "results.labels",
        {"metavar": "FILE", "help": "one label per line, index = class id (default: none)"},
    ),
    (
        "--frigate",
        "frigate.endpoints",
        {"action": "append", "metavar": "ENDPOINT", "help": "serve Frigate's ZMQ detector here; repeatable"},
    ),
    ("--topk", "results.topk", {"type": int, "metavar": "K", "help": "classes with --postprocess topk"}),
    ("--cpus", "engine.cpus", {"metavar": "LIST", "help": "CPU set, e.g. 1,2,3 (default: all the process may use)"}),
    ("--level", "engine.level", {"type": int, "metavar": "N", "help": "start level; 0 = LATENCY"}),
    ("--max-batch", "engine.max_batch", {"type": int, "metavar": "{1,2,4,8}", "help": "largest batch in the ladder"}),
    ("--sla-p99-ms", "sla.p99_ms", {"type": float, "metavar": "MS", "help": "the SLA: p99 end-to-end latency"}),
    ("--sla-window-s", "sla.window_s", {"type": float, "metavar": "SECONDS", "help": "control window"}),
    (
        "--adaptive",
        "sla.adaptive",
        {"action": "store_const", "const": True, "help": "enlarge throughput settings while the SLA holds"},
    ),
    (
        "--static",
        "sla.adaptive",
        {"action": "store_const", "const": False, "help": "no adaptation: stay at --level (a static configuration)"},
    ),
    ("--metrics", "metrics.listen", {"metavar": "HOST:PORT", "help": "Prometheus endpoint; '': off"}),
    ("--log-level", "log.level", {"choices": ["debug", "info", "warning", "error"], "help": "least severe logged"}),
    ("--log-format", "log.format", {"choices": ["kv", "json"], "help": "key=value or JSON lines on stderr"}),
    (
        "--curve-secret-key",
        "security.curve_secret_key",
        {"metavar": "FILE", "help": "server certificate (.key_secret): CURVE on (default: off)"},
    ),
    (
        "--curve-allow-dir",
        "security.curve_allow_dir",
        {"metavar": "DIR", "help": "allowed client public certificates (*.key), needed with CURVE (default: none)"},
    ),
    (
        "--curve-exempt",
        "security.curve_exempt",
        {"action": "append", "metavar": "{listen,pull,publish}", "help": "socket kept plain; repeatable"},
    ),
    (
        "--allow-ip",
        "security.allow_ips",
        {"action": "append", "metavar": "ADDRESS", "help": "allowed peer address; repeatable (default: any)"},
    ),
]

# Config section → (title, description) of its group in `run --help`, in the order shown.
RUN_GROUPS: dict[str, tuple[str, str | None]] = {
    "model": ("model", "the network and its pre-processing (inside the compiled graph)"),
    "ingest": ("ingest", "where frames come in"),
    "results": ("results", "where results go, and what they hold"),
    "frigate": ("Frigate", "Frigate NVR's ZMQ detector protocol (the rest: [frigate] in the config)"),
    "sla": ("SLA", "the latency target and the adaptive controller (all its knobs: [sla] in the config)"),
    "engine": ("engine", "CPUs and execution level"),
    "metrics": ("metrics", None),
    "security": ("security", "CURVE and address allow-list on the bound sockets"),
    "log": ("logging", None),
}

RUN_EXAMPLES = """\
examples:
  edgeagent run                      # built-in model: imagezmq on port 5555, native PUSH on 5557
  edgeagent run --model det.onnx --input-shape 1,3,480,640 --sla-p99-ms 50   # adapts to the SLA
  edgeagent run --static --level 2   # a static configuration: no adaptation
  edgeagent run --config /etc/edgeagent/agent.toml --log-format json

Every flag has a config key and overrides the file; `edgeagent config example` prints them all."""


def _config_default(key: str) -> Any:
    from edgeagent.config import Config

    section, name = key.split(".")
    return getattr(getattr(Config(), section), name)


def _shown_default(key: str) -> str | None:
    """The config default of ``key`` as ``--help`` shows it; None where unset means something the
    flag's help says (the built-in model, the device's precision ...)."""
    value = _config_default(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _help(key: str, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` with the config default appended to its help (argparse %-formats help: % is escaped)."""
    shown = _shown_default(key)
    if kw.get("action") == "store_const":  # a switch: is it what the config does by default?
        shown = "on" if kw["const"] == _config_default(key) else "off"
    text = kw.get("help", "")
    if shown is not None and "(default:" not in text:
        text = f"{text} (default: {shown.replace('%', '%%')})".strip()
    return {**kw, "help": text}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Room for metavars such as ``--curve-exempt {listen,pull,publish}``; the epilog kept as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=min(shutil.get_terminal_size().columns, 110) - 2)


def _dest(key: str) -> str:
    return "cfg__" + key.replace(".", "__")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _flag, key, _kw in RUN_FLAGS:
        value = getattr(args, _dest(key), None)
        if isinstance(value, list):
            value = [v for v in value if v]  # `--pull ""` turns an endpoint list off
        if value is not None:
            out[key] = value
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # usage errors: one line, exit code 2 (raised, cli exits)
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgeagent", description="Latency-bound real-time OpenVINO inference agent.")
    p.add_argument("--version", action="version", version=f"edgeagent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run the agent",
        description="Run the agent: frames in over ZeroMQ, inference, results out, under a latency SLA.",
        usage="%(prog)s [--config FILE] [options]",
        epilog=RUN_EXAMPLES,
        formatter_class=_HelpFormatter,
    )
    run.add_argument("--config", type=Path, metavar="FILE", help="TOML config file; the flags given override it")
    groups = {section: run.add_argument_group(title, text) for section, (title, text) in RUN_GROUPS.items()}
    for flag, key, kw in RUN_FLAGS:
        groups[key.split(".")[0]].add_argument(flag, dest=_dest(key), default=None, **_help(key, kw))

    info = sub.add_parser("info", help="describe a model and the device's recommended settings")
    info.add_argument("--model", help="model file (default: built-in)")
    info.add_argument("--input-shape")
    info.add_argument("--frame-size")
    info.add_argument("--resize", choices=["stretch", "letterbox"])
    info.add_argument("--config", help="a config file: describe what the agent started with it accepts")
    info.add_argument("--json", action="store_true")

    cfgp = sub.add_parser("config", help="check or print configuration")
    csub = cfgp.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    chk = csub.add_parser("check", help="validate a config file without starting")
    chk.add_argument("file", type=Path)
    csub.add_parser("example", help="print a commented example config")

    pub = sub.add_parser("publish", help="send frames to an agent (testing and load)")
    pub.add_argument("--endpoint", default="tcp://127.0.0.1:5557")
    pub.add_argument("--mode", choices=["push", "pub", "req"], default="push")
    pub.add_argument("--format", dest="fmt", choices=["native", "imagezmq"], default="native")
    pub.add_argument("--source", default="camera", help="source name (suffixed -N with --sources N > 1)")
    pub.add_argument("--sources", type=int, default=1, help="virtual cameras sending at once")
    pub.add_argument("--fps", type=float, default=30.0, help="frames per second per source (0: as fast as possible)")
    pub.add_argument("--count", type=int, default=100, help="frames per source")
    pub.add_argument("--duration-s", type=float, default=0.0, help="stop after this long (0: no limit)")
    pub.add_argument("--size", default="224x224", help="WIDTHxHEIGHT of synthetic frames")
    pub.add_argument("--jpeg", action="store_true", help="JPEG-encode frames")
    pub.add_argument("--input", help="a video file or an image folder (OpenCV/PyAV/Pillow when installed)")
    pub.add_argument("--timeout-s", type=float, default=5.0, help="REQ reply timeout (then reconnect)")
    pub.add_argument("--json", action="store_true", help="print the summary as JSON")
    pub.add_argument("--curve-server-key", help="the agent's public certificate (.key): use CURVE")
    pub.add_argument("--curve-client-key", help="this publisher's certificate with secret (.key_secret)")

    keys = sub.add_parser("keys", help="CURVE key pairs")
    ksub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    kg = ksub.add_parser("generate", help="make a key pair in ZeroMQ's certificate format")
    kg.add_argument("directory", type=Path)
    kg.add_argument("--name", default="server")

    st = sub.add_parser("status", help="one-screen summary of a running agent")
    st.add_argument("--metrics", default="http://127.0.0.1:9110/metrics")
    st.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="built-in benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", required=True, parser_class=_Parser)
    lat = bsub.add_parser("latency", help="the agent end to end vs transport, direct OpenVINO and the hand-written hub")
    lat.add_argument("--model", help="model file (default: built-in)")
    lat.add_argument("--input-shape")
    lat.add_argument("--size", default=None, help="frame WIDTHxHEIGHT (default: model size)")
    lat.add_argument("--rounds", type=int, default=10)
    lat.add_argument("--per-round", type=int, default=50)
    lat.add_argument("--cameras", type=int, default=0, help="paced cameras instead of back-to-back requests")
    lat.add_argument("--fps", type=float, default=30.0, help="frames per second per camera (with --cameras)")
    lat.add_argument("--duration-s", type=float, default=10.0, help="seconds per target and round (with --cameras)")
    lat.add_argument("--json", type=Path, help="write results as JSON here")
    from edgeagent.bench.detect import add_parser as add_detect
    from edgeagent.bench.dispatch import add_parser as add_dispatch
    from edgeagent.bench.hotpath import add_parser as add_hotpath
    from edgeagent.bench.sizes import add_parser as add_sizes
    from edgeagent.bench.sla import add_parser as add_sla
    from edgeagent.bench.soak import add_parser as add_soak

    add_sla(bsub)
    add_sizes(bsub)
    add_detect(bsub)
    add_hotpath(bsub)
    add_soak(bsub)
    add_dispatch(bsub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    try:
        return int(_dispatch(args))
    except EdgeAgentError as exc:
        print(f"edgeagent: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    from edgeagent import logs

    if args.command == "run":
        from edgeagent import config as config_mod

        overrides = overrides_from(args)
        cfg = config_mod.load(args.config, overrides)
        logs.setup(cfg.log.level, cfg.log.format)
        return _run(cfg, args.config, overrides)
    logs.setup("warning")
    if args.command == "config":
        return _config(args)
    if args.command == "info":
        from edgeagent.tools import info

        return info(args)
    if args.command == "publish":
        from edgeagent.tools import publish

        return publish(args)
    if args.command == "keys":
        from edgeagent.security import generate_keys

        public, secret = generate_keys(args.directory, args.name)
        print(f"public {public}\nsecret {secret}")
        return EXIT_OK
    if args.command == "status":
        from edgeagent.tools import status

        return status(args)
    if args.command == "bench" and args.bench_command == "dispatch":
        from edgeagent.bench.dispatch import main as bench_dispatch

        return bench_dispatch(args)
    if args.command == "bench" and args.bench_command == "soak":
        from edgeagent.bench.soak import main as bench_soak

        return bench_soak(args)
    if args.command == "bench" and args.bench_command == "hotpath":
        from edgeagent.bench.hotpath import main as bench_hotpath

        return bench_hotpath(args)
    if args.command == "bench" and args.bench_command == "detect":
        from edgeagent.bench.detect import main as bench_detect

        return bench_detect(args)
    if args.command == "bench" and args.bench_command == "sizes":
        from edgeagent.bench.sizes import main as bench_sizes

        return bench_sizes(args)
    if args.command == "bench" and args.bench_command == "sla":
        from edgeagent.bench.sla import main as bench_sla

        return bench_sla(args)
    if args.command == "bench":
        from edgeagent.bench.latency import main as bench_latency

        return bench_latency(args)
    return EXIT_USAGE


def _run(cfg: Any, config_path: Path | None, overrides: dict[str, Any]) -> int:
    from edgeagent.agent import Agent, ForcedExit

    agent = Agent(cfg, config_path, overrides)
    agent.install_signal_handlers()
    try:
        agent.startup()
        agent.run()
    except ForcedExit:
        log.warning("event=forced_exit")
        os._exit(EXIT_CRASH)
    finally:
        t0 = time.monotonic()
        try:
            agent.shutdown()
        except ForcedExit:  # the second signal came while draining
            log.warning("event=forced_exit")
            os._exit(EXIT_CRASH)
        log.info("event=exit shutdown_s=%.3f", time.monotonic() - t0)
    return EXIT_OK


def _config(args: argparse.Namespace) -> int:
    from edgeagent import config as config_mod

    if args.config_command == "example":
        sys.stdout.write(config_mod.EXAMPLE)
        return EXIT_OK
    try:
        cfg = config_mod.load(args.file)
    except ConfigError as exc:
        print(f"edgeagent: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.file}: ok")
    print(json.dumps(config_mod.to_dict(cfg), indent=2))
    return EXIT_OK
