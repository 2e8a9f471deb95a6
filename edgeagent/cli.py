"""Command line: argument parsing, logging setup, exceptions → exit codes. The only ``sys.exit``.

Exit codes: 0 ok, 1 crash, 2 usage, 66 model missing/unreadable/uncompilable, 69 endpoint unavailable,
78 configuration error (the systemd unit does not restart on 78).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from edgeagent import __version__
from edgeagent.errors import EXIT_CONFIG, EXIT_CRASH, EXIT_OK, EXIT_USAGE, ConfigError, EdgeAgentError

log = logging.getLogger("edgeagent.cli")

# CLI flag → config key. Every flag of `run` has a key; the file is overridden by the flags given.
RUN_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--model", "model.path", {"help": "model file (IR .xml, .onnx, .tflite, Paddle); default: built-in"}),
    ("--input-shape", "model.input_shape", {"help": "N,C,H,W resolving dynamic dims, e.g. 1,3,480,640"}),
    ("--frame-size", "model.frame_size", {"help": "WIDTHxHEIGHT of incoming frames (default: model size)"}),
    ("--rgb", "model.rgb", {"action": "store_const", "const": True, "help": "the model wants RGB"}),
    ("--bgr", "model.rgb", {"action": "store_const", "const": False, "help": "the model wants BGR"}),
    ("--mean", "model.mean", {"help": "per-channel mean, comma-separated"}),
    ("--scale", "model.scale", {"help": "per-channel scale, comma-separated"}),
    ("--device", "model.device", {"help": "OpenVINO device (CPU)"}),
    ("--precision", "model.precision", {"help": "inference precision: f32, bf16, f16"}),
    ("--cache-dir", "model.cache_dir", {"help": "model and compile cache directory"}),
    ("--listen", "ingest.listen", {"action": "append", "help": "ROUTER endpoint (imagezmq REQ/REP), repeatable"}),
    ("--connect", "ingest.connect", {"action": "append", "help": "SUB connect (imagezmq PUB/SUB), repeatable"}),
    ("--pull", "ingest.pull", {"action": "append", "help": "PULL endpoint (native PUSH), repeatable"}),
    ("--reply", "ingest.reply", {"choices": ["json", "ok"], "help": "reply to REQ senders"}),
    ("--max-sources", "ingest.max_sources", {"type": int}),
    ("--max-frame-age-ms", "ingest.max_frame_age_ms", {"type": float}),
    ("--results", "results.publish", {"help": "PUB endpoint for results ('' disables)"}),
    ("--postprocess", "results.postprocess", {"choices": ["none", "topk"]}),
    ("--topk", "results.topk", {"type": int}),
    ("--cpus", "engine.cpus", {"help": "CPU set, comma-separated (default: all allowed)"}),
    ("--level", "engine.level", {"type": int, "help": "start level (0 = LATENCY)"}),
    ("--max-batch", "engine.max_batch", {"type": int}),
    ("--sla-p99-ms", "sla.p99_ms", {"type": float}),
    ("--sla-window-s", "sla.window_s", {"type": float}),
    ("--adaptive", "sla.adaptive", {"action": "store_const", "const": True, "help": "adapt the level to the SLA"}),
    (
        "--static",
        "sla.adaptive",
        {"action": "store_const", "const": False, "help": "no adaptation: stay at --level (a static configuration)"},
    ),
    ("--metrics", "metrics.listen", {"help": "Prometheus HOST:PORT ('' disables)"}),
    ("--log-level", "log.level", {"choices": ["debug", "info", "warning", "error"]}),
    ("--log-format", "log.format", {"choices": ["kv", "json"]}),
    ("--curve-secret-key", "security.curve_secret_key", {"help": "server CURVE certificate (.key_secret)"}),
    ("--curve-allow-dir", "security.curve_allow_dir", {"help": "directory of allowed client public certs"}),
    ("--curve-exempt", "security.curve_exempt", {"action": "append", "help": "socket kind kept plain"}),
    ("--allow-ip", "security.allow_ips", {"action": "append", "help": "allowed peer address, repeatable"}),
]


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

    run = sub.add_parser("run", help="run the agent")
    run.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    for flag, key, kw in RUN_FLAGS:
        run.add_argument(flag, dest=_dest(key), default=None, **kw)

    info = sub.add_parser("info", help="describe a model and the device's recommended settings")
    info.add_argument("--model", help="model file (default: built-in)")
    info.add_argument("--input-shape")
    info.add_argument("--frame-size")
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
    lat = bsub.add_parser("latency", help="transport floor vs direct OpenVINO vs agent end to end")
    lat.add_argument("--model", help="model file (default: built-in)")
    lat.add_argument("--input-shape")
    lat.add_argument("--size", default=None, help="frame WIDTHxHEIGHT (default: model size)")
    lat.add_argument("--rounds", type=int, default=10)
    lat.add_argument("--per-round", type=int, default=50)
    lat.add_argument("--json", type=Path, help="write results as JSON here")
    from edgeagent.bench.dispatch import add_parser as add_dispatch
    from edgeagent.bench.sla import add_parser as add_sla
    from edgeagent.bench.soak import add_parser as add_soak

    add_sla(bsub)
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
