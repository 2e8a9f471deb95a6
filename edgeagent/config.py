"""Configuration: one frozen dataclass tree, built by :func:`load` from a TOML file and overrides.

Every CLI flag of ``edgeagent run`` has a key here (``section.key``); flags override the file.
Unknown keys, wrong types and impossible values raise :class:`ConfigError` naming the file, the key,
the value and what was expected. Nothing here exits the process.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from edgeagent.errors import ConfigError, InvalidSetting
from edgeagent.tuner import SLAPolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_SYSTEM_CONFIG = Path("/etc/edgeagent/agent.toml")
MAX_FRAME_SIDE = 16384  # pixels: the largest frame width or height anywhere (config, wire, publisher)
HARD_CAP_BYTES = 32 << 20  # the default largest message (ingest.max_message_bytes)


@dataclass(frozen=True)
class ModelConfig:
    path: str | None = None  # None: the built-in synthetic MobileNetV2-shaped classifier
    input_shape: tuple[int, ...] | None = None  # resolves dynamic dims, e.g. (1, 3, 480, 640)
    frame_size: tuple[int, ...] | None = None  # (width, height) of incoming frames; None: model's size
    rgb: bool | None = None  # the model wants RGB (frames are BGR); None: model default (builtin: True)
    mean: tuple[float, ...] | None = None  # per channel, in the model's colour order
    scale: tuple[float, ...] | None = None
    device: str = "CPU"
    precision: str | None = None  # INFERENCE_PRECISION_HINT (f32, bf16, f16); None: device default
    cache_dir: str | None = None  # None: $XDG_CACHE_HOME/edgeagent
    # How a frame of another size becomes the model's input, in the graph: "stretch" (plain resize) or
    # "letterbox" (aspect kept, centred, the rest filled with pad_value, as YOLO-family detectors train).
    resize: Literal["stretch", "letterbox"] = "stretch"
    pad_value: float = 114.0  # letterbox fill, in pixel units (0-255) before mean/scale
    max_sizes: int = 4  # frame sizes (and pixel formats) with a static compile of their own, per level (LRU)

    def __post_init__(self) -> None:
        if not 0 <= self.pad_value <= 255:
            raise InvalidSetting("pad_value", self.pad_value, "a number in 0 .. 255")
        if not 1 <= self.max_sizes <= 64:
            raise InvalidSetting("max_sizes", self.max_sizes, "an integer in 1 .. 64")
        if self.frame_size is not None and (
            len(self.frame_size) != 2 or min(self.frame_size) < 1 or max(self.frame_size) > MAX_FRAME_SIDE
        ):
            raise InvalidSetting("frame_size", self.frame_size, f"WIDTH,HEIGHT with 1 <= each <= {MAX_FRAME_SIDE}")
        for name in ("mean", "scale"):
            v = getattr(self, name)
            if v is not None and len(v) not in (1, 3):
                raise InvalidSetting(name, v, "1 or 3 comma-separated numbers")
        if self.scale is not None and any(s == 0 for s in self.scale):
            raise InvalidSetting("scale", self.scale, "non-zero numbers")
        if self.input_shape is not None and any(d < 1 for d in self.input_shape):
            raise InvalidSetting("input_shape", self.input_shape, "positive integers, e.g. 1,3,480,640")
        if self.precision is not None and self.precision not in ("f32", "bf16", "f16"):
            raise InvalidSetting("precision", self.precision, "one of f32, bf16, f16")


@dataclass(frozen=True)
class IngestConfig:
    listen: tuple[str, ...] = ("tcp://*:5555",)  # ROUTER: imagezmq REQ/REP senders and native REQ
    connect: tuple[str, ...] = ()  # SUB connects: imagezmq PUB/SUB senders and native PUB
    pull: tuple[str, ...] = ("tcp://*:5557",)  # PULL binds: native PUSH publishers
    reply: Literal["json", "ok"] = "json"  # what a REQ sender gets back for a processed frame
    max_sources: int = 64  # distinct source names kept at once; more are rejected (bounded memory)
    max_frame_age_ms: float = 0.0  # drop frames older than this when their turn comes; 0: off
    max_header_bytes: int = 4096  # JSON headers longer than this are rejected before parsing
    # The hard cap (ZMQ_MAXMSGSIZE): every message up to it reaches the agent and is answered; libzmq
    # drops the connection of a peer that sends a bigger one (counted, logged). 32 MiB: a 3840x2160x3
    # frame is 24.9 MB.
    max_message_bytes: int = HARD_CAP_BYTES
    # Messages queued per connected peer before ZeroMQ pushes back (PUSH) or drops (PUB). Worst-case
    # memory per peer is rcvhwm x max_message_bytes; the agent only ever serves a source's newest frame.
    rcvhwm: int = 8
    source_idle_s: float = 60.0  # a source silent this long frees its place (its counts stay in the totals)

    def __post_init__(self) -> None:
        if not (self.listen or self.connect or self.pull):
            raise InvalidSetting("listen", self.listen, "at least one ingest endpoint (listen, connect or pull)")
        for name in ("listen", "connect", "pull"):
            for ep in getattr(self, name):
                if "://" not in ep:
                    raise InvalidSetting(name, ep, "a ZeroMQ endpoint such as tcp://*:5555 or ipc:///run/x")
        if self.max_sources < 1:
            raise InvalidSetting("max_sources", self.max_sources, "an integer >= 1")
        if self.max_frame_age_ms < 0:
            raise InvalidSetting("max_frame_age_ms", self.max_frame_age_ms, "a number >= 0")
        if not 64 <= self.max_header_bytes <= 1 << 20:
            raise InvalidSetting("max_header_bytes", self.max_header_bytes, "64 .. 1048576")
        if self.max_message_bytes < 65536:
            raise InvalidSetting("max_message_bytes", self.max_message_bytes, "an integer >= 65536")
        if self.source_idle_s <= 0:
            raise InvalidSetting("source_idle_s", self.source_idle_s, "a number of seconds > 0")
        if not 1 <= self.rcvhwm <= 1_000_000:
            raise InvalidSetting("rcvhwm", self.rcvhwm, "an integer in 1 .. 1000000")
        if self.max_sources > 100_000:
            raise InvalidSetting("max_sources", self.max_sources, "an integer <= 100000")
        if self.max_message_bytes > 2**31 - 1:
            raise InvalidSetting("max_message_bytes", self.max_message_bytes, "less than 2 GiB (2147483648)")


@dataclass(frozen=True)
class ResultsConfig:
    publish: str = "tcp://127.0.0.1:5556"  # PUB endpoint; "" disables publishing
    # "topk": a classifier's best classes; "yolo" / "ssd": detections (boxes in the frame's pixels)
    postprocess: Literal["none", "topk", "yolo", "ssd", "yolonas"] = "none"
    topk: int = 5
    send_outputs: bool = True  # attach raw output tensors as extra message parts
    score_threshold: float = 0.25  # detections: lowest score kept
    iou_threshold: float = 0.45  # detections: class-wise NMS overlap
    max_detections: int = 100
    labels: str | None = None  # a file, one label per line (index = class id)

    def __post_init__(self) -> None:
        if not 0 <= self.score_threshold <= 1:
            raise InvalidSetting("score_threshold", self.score_threshold, "a number in 0 .. 1")
        if not 0 < self.iou_threshold <= 1:
            raise InvalidSetting("iou_threshold", self.iou_threshold, "a number in (0, 1]")
        if not 1 <= self.max_detections <= 10000:
            raise InvalidSetting("max_detections", self.max_detections, "an integer in 1 .. 10000")
        if self.publish and "://" not in self.publish:
            raise InvalidSetting("publish", self.publish, "a ZeroMQ endpoint or an empty string")
        if not 1 <= self.topk <= 1000:
            raise InvalidSetting("topk", self.topk, "1 .. 1000")


@dataclass(frozen=True)
class FrigateConfig:
    """``[frigate]``: Frigate NVR's ZMQ detector protocol (Frigate >= 0.17, ``detectors: {x: {type: zmq}}``)."""

    endpoints: tuple[str, ...] = ()  # ROUTERs bound for Frigate's REQ sockets, e.g. tcp://*:5555
    request_timeout_ms: float = 200.0  # Frigate's request_timeout_ms: older requests are dropped as late
    pixel_format: Literal["rgb", "bgr"] = "rgb"  # Frigate's model.input_pixel_format
    float_range: Literal["0-1", "0-255"] = "0-1"  # float32 tensors: their value range
    accept_models: bool = False  # save and load a model Frigate pushes when it is not available here
    max_model_bytes: int = 200 << 20
    model_dir: str | None = None  # where pushed models go; unset: $STATE_DIRECTORY or ~/.local/state/edgeagent

    def __post_init__(self) -> None:
        for ep in self.endpoints:
            if "://" not in ep:
                raise InvalidSetting(
                    "endpoints", ep, "a ZeroMQ endpoint such as tcp://*:5555 or ipc:///tmp/cache/zmq_detector"
                )
        if not 1 <= self.request_timeout_ms <= 600_000:
            raise InvalidSetting("request_timeout_ms", self.request_timeout_ms, "1 .. 600000")
        if not 1024 <= self.max_model_bytes <= 2**31 - 1:
            raise InvalidSetting("max_model_bytes", self.max_model_bytes, "1024 .. 2147483647")


@dataclass(frozen=True)
class EngineConfig:
    cpus: tuple[int, ...] | None = None  # CPU set for the agent; None: all the process may use
    level: int = 0  # the execution level to start at (index into the ladder)
    max_batch: int = 4  # largest batch the ladder may use (1 disables batching)
    batch_wait_ms: float = 0.0  # batch-forming wait; 0: derived as a small share of the SLA
    # Compiled levels kept in memory: the running one and the levels the controller last left, so that
    # probing a neighbour and coming back needs no compile (a compile takes CPU from inference).
    keep_compiled: int = 3

    def __post_init__(self) -> None:
        if self.cpus is not None and (not self.cpus or min(self.cpus) < 0):
            raise InvalidSetting("cpus", self.cpus, "a non-empty list of CPU numbers")
        if self.level < 0:
            raise InvalidSetting("level", self.level, "an integer >= 0")
        if self.max_batch not in (1, 2, 4, 8):
            raise InvalidSetting("max_batch", self.max_batch, "one of 1, 2, 4, 8")
        if self.batch_wait_ms < 0:
            raise InvalidSetting("batch_wait_ms", self.batch_wait_ms, "a number >= 0")
        if not 1 <= self.keep_compiled <= 8:
            raise InvalidSetting("keep_compiled", self.keep_compiled, "an integer in [1, 8]")


@dataclass(frozen=True)
class SLAConfig(SLAPolicy):
    """``[sla]``: the controller's policy (:class:`~edgeagent.tuner.SLAPolicy`: its fields, defaults and
    checks are defined there, once) with the agent's default SLA, plus whether to adapt at all."""

    p99_ms: float = 30.0  # end-to-end p99 inside the agent (socket in → result out)
    adaptive: bool = True  # enlarge throughput settings while the SLA holds (False: stay at engine.level)
    # "auto": the ladder starts with f32 in ACCURACY mode and moves to the device's fast precision
    # (bf16/f16) as the first throughput rung; "device": the device's (or model.precision) throughout.
    precision: Literal["device", "auto"] = "device"


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9110"  # HOST:PORT of the Prometheus endpoint; "" disables it

    def __post_init__(self) -> None:
        if self.listen:
            host, sep, port = self.listen.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise InvalidSetting("listen", self.listen, "HOST:PORT, e.g. 127.0.0.1:9110")


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["kv", "json"] = "kv"
    rate_limit_s: float = 5.0  # repeated warnings of one kind are logged at most once per this


@dataclass(frozen=True)
class SecurityConfig:
    curve_secret_key: str | None = None  # server certificate with secret key (edgeagent keys generate)
    curve_allow_dir: str | None = None  # directory of allowed client public certificates (*.key)
    curve_exempt: tuple[str, ...] = ()  # socket kinds kept plain (e.g. "listen" for imagezmq senders)
    allow_ips: tuple[str, ...] = ()  # peer addresses allowed on plain sockets (empty: no check)

    def __post_init__(self) -> None:
        for kind in self.curve_exempt:
            if kind not in ("listen", "pull", "publish", "frigate"):
                raise InvalidSetting(
                    "curve_exempt", self.curve_exempt, "socket kinds among listen, pull, publish, frigate"
                )
        if self.curve_allow_dir and not self.curve_secret_key:
            raise InvalidSetting("curve_allow_dir", self.curve_allow_dir, "curve_secret_key to be set as well")


@dataclass(frozen=True)
class SourceConfig:
    """``[sources."NAME"]``: how one camera is served when the agent cannot serve every frame. Frames
    of a higher ``priority`` go first; within a priority, sources share the results in proportion to
    their ``weight`` (a door camera with weight 2 gets twice the results of a weight-1 parking lot)."""

    weight: float = 1.0
    priority: int = 0
    # Channel order of this camera's raw 3- and 4-channel frames: "bgr" (OpenCV, imagezmq) or "rgb"
    # (picamera2, PIL, most capture SDKs). JPEG frames carry their own colours; gray has one channel.
    pixel_format: Literal["bgr", "rgb"] = "bgr"

    def __post_init__(self) -> None:
        if not 0.01 <= self.weight <= 100:
            raise InvalidSetting("weight", self.weight, "a number in [0.01, 100]")
        if not -100 <= self.priority <= 100:
            raise InvalidSetting("priority", self.priority, "an integer in [-100, 100]")


DEFAULT_SOURCE = SourceConfig()


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    frigate: FrigateConfig = field(default_factory=FrigateConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    sla: SLAConfig = field(default_factory=SLAConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    sources: dict[str, SourceConfig] = field(default_factory=dict)  # source name → its settings


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        plural = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plural.get(args[0], str(args[0]))}"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def coerce(value: Any, tp: Any) -> Any:
    """Convert a TOML value or a CLI string to ``tp`` (``"640x480"`` reads as a tuple of two ints for
    ``tuple[int, ...]``); raise TypeError when it cannot be. Also used for ``info`` and ``bench`` flags."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("", "none"))):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a)
            except TypeError:
                continue
        raise TypeError
    if origin is Literal:
        if value in args:
            return value
        raise TypeError
    if origin is tuple:
        if isinstance(value, str):
            if args[0] in (int, float):
                value = value.replace("x", ",")  # "640x480" reads as 640,480
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return tuple(coerce(v, args[0]) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise TypeError
    if tp in (int, float):
        if isinstance(value, bool):  # TOML true is not 1
            raise TypeError
        if isinstance(value, str):
            try:
                value = int(value, 0) if tp is int else float(value)
            except ValueError as exc:
                raise TypeError from exc
        number = value if isinstance(value, int) or (tp is float and isinstance(value, float)) else None
        if number is None or not math.isfinite(number):  # nan and inf are never a sensible setting
            raise TypeError
        return tp(number)
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError


def _build_section(cls: type[Any], values: Mapping[str, Any], where: str, section: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{section}.{key}'; expected one of: {', '.join(sorted(known))}")
        try:
            kwargs[key] = coerce(value, hints[key])
        except TypeError:
            raise ConfigError(f"{where}: key '{section}.{key}' = {value!r}: expected {_describe(hints[key])}") from None
    try:
        return cls(**kwargs)
    except InvalidSetting as exc:
        raise ConfigError(f"{where}: key '{section}.{exc.key}' = {exc.value!r}: expected {exc.expected}") from None


def build(tree: Mapping[str, Any], where: str) -> Config:
    """Build a :class:`Config` from a nested mapping (``{"sla": {"p99_ms": 30}}``)."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    hints = typing.get_type_hints(Config)
    kwargs: dict[str, Any] = {}
    for name, values in tree.items():
        if name not in sections:
            raise ConfigError(f"{where}: unknown section '[{name}]'; expected one of: {', '.join(sections)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: '{name}' must be a table ([{name}]), got {values!r}")
        if name == "sources":  # a table of tables, one per source name
            kwargs[name] = {}
            for source, table in values.items():
                if not isinstance(table, Mapping):
                    raise ConfigError(f"{where}: 'sources.{source}' must be a table ([sources.\"{source}\"])")
                kwargs[name][source] = _build_section(SourceConfig, table, where, f'sources."{source}"')
            continue
        kwargs[name] = _build_section(hints[name], values, where, name)
    return Config(**kwargs)


def read_file(path: Path) -> dict[str, Any]:
    """Parse a TOML file into a nested dict; errors name the file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load(path: Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load ``path`` (None: defaults only) and apply ``overrides`` (``{"sla.p99_ms": 25.0}``).

    Raises :class:`ConfigError`; override errors name the flag's key as ``command line``.
    """
    tree: dict[str, Any] = read_file(path) if path is not None else {}
    where = str(path) if path is not None else "defaults"
    if not overrides:
        return build(tree, where)
    # File and flags are validated together, once: a flag may fix a file value and vice versa.
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in tree.items()}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        table = merged.setdefault(section, {})
        if isinstance(table, dict):  # a non-table section is reported by build() below
            table[key] = value
    return build(merged, f"{where} + command line" if path is not None else "command line")


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested data (for ``config check`` output and the status command)."""
    return dataclasses.asdict(cfg)


EXAMPLE = """\
# edgeagent configuration (TOML). Every key is optional; the values shown are the defaults.
# Validate with:  edgeagent config check /etc/edgeagent/agent.toml

[model]
# path = "/var/lib/edgeagent/model.xml"   # IR .xml, .onnx, .tflite, Paddle; unset: built-in model
# input_shape = [1, 3, 480, 640]          # resolves dynamic dimensions
# frame_size = [640, 480]                 # width, height of incoming frames; unset: the model's size
# rgb = true                              # the model wants RGB (frames arrive as BGR)
# mean = [123.675, 116.28, 103.53]        # per channel, subtracted in the graph
# scale = [58.395, 57.12, 57.375]         # per channel, divided in the graph
device = "CPU"
# precision = "bf16"                      # f32, bf16, f16; unset: the device default
# cache_dir = "/var/cache/edgeagent"      # model + OpenVINO compile cache; unset: $XDG_CACHE_HOME/edgeagent
resize = "stretch"                        # frames of another size: "stretch" or "letterbox" (aspect kept)
pad_value = 114.0                         # letterbox fill (0-255)
max_sizes = 4                             # frame sizes with a static compile of their own (LRU, per level)

[ingest]
listen = ["tcp://*:5555"]                 # ROUTER for imagezmq REQ/REP senders (and native REQ)
connect = []                              # SUB: imagezmq PUB/SUB senders (they bind), native PUB
pull = ["tcp://*:5557"]                   # PULL for native PUSH publishers
reply = "json"                            # "json" result summary or "ok" (b"OK") to REQ senders
max_sources = 64
max_frame_age_ms = 0.0                    # 0: off
max_header_bytes = 4096
max_message_bytes = 33554432             # hard cap (32 MiB): bigger messages make libzmq drop the peer
rcvhwm = 8                                # per peer: worst-case memory is peers x rcvhwm x max_message_bytes
source_idle_s = 60.0                      # a silent source frees its place after this

[results]
publish = "tcp://127.0.0.1:5556"          # PUB, topic = source name; "" disables
postprocess = "none"                      # "topk": a classifier's best; "yolo" / "ssd" / "yolonas": detections
topk = 5
send_outputs = true
score_threshold = 0.25                    # detections: lowest score kept
iou_threshold = 0.45                      # detections: class-wise NMS overlap
max_detections = 100
# labels = "/etc/edgeagent/coco.txt"      # one label per line (index = class id)

[frigate]
# Frigate NVR (>= 0.17) ZMQ detector: detectors: {ov: {type: zmq, endpoint: tcp://AGENT:5560}}
endpoints = []                            # e.g. ["tcp://*:5560"]; needs results.postprocess yolo, ssd or yolonas
request_timeout_ms = 200.0                # Frigate's request_timeout_ms: older requests are dropped (late)
pixel_format = "rgb"                      # Frigate's model.input_pixel_format
float_range = "0-1"                       # float32 tensors from Frigate: "0-1" or "0-255"
accept_models = false                     # save and load a model Frigate pushes
max_model_bytes = 209715200
# model_dir = "/var/lib/edgeagent/frigate-models"   # unset: $STATE_DIRECTORY or ~/.local/state/edgeagent

[engine]
# cpus = [1, 2, 3]                        # unset: every CPU the process may use
level = 0                                 # start level (0 = LATENCY: 1 stream, 1 request)
max_batch = 4
batch_wait_ms = 0.0                       # 0: a small share of the SLA
keep_compiled = 3                         # compiled levels kept (running + last left): memory vs compiles

[sla]
p99_ms = 30.0                             # the SLA: end-to-end p99 inside the agent
adaptive = true                           # false: a static configuration, pinned at engine.level
precision = "device"                      # "auto": f32 accuracy mode first, fast precision as the first rung
window_s = 1.0                            # control window
min_frames = 50                           # fewer results: the window is extended (up to 5x)
headroom = 0.8                            # step up only while p99 <= headroom x SLA
up_windows = 2                            # good windows with demand before stepping up
busy_demand = 0.8                         # demand: drops, or every request busy this share of a window
idle_windows = 3                          # windows without demand before stepping down
backoff_base_windows = 2                  # a level that broke the SLA waits 2, 4, 8 ... windows
backoff_max_windows = 64
memory_windows = 120                      # how long a level's failure at a load is remembered
load_tolerance = 0.1
min_gain = 0.05                           # a level with this little more goodput than the one below ...
latency_tolerance = 0.2                   # ... and a p99 this much higher goes back down (no gain)
interference_tolerance = 0.15

[metrics]
listen = "127.0.0.1:9110"                 # Prometheus endpoint; "" disables

[security]
# curve_secret_key = "/etc/edgeagent/keys/server.key_secret"   # enables CURVE on bound sockets
# curve_allow_dir = "/etc/edgeagent/keys/clients"              # allowed client public certs (*.key)
curve_exempt = []                         # kinds kept plain: "listen" for imagezmq senders, "frigate"
allow_ips = []                            # plain peers allowed, e.g. ["10.0.0.21", "10.0.0.22"]

# Per-camera service when the agent cannot serve every frame: higher priority first, then shares
# in proportion to weight (default weight 1, priority 0). The name is the imagezmq msg / native source.
# [sources."cam-door"]
# weight = 2.0
# priority = 0
# pixel_format = "bgr"                    # "rgb": this camera's raw frames are RGB/RGBA

[log]
level = "info"
format = "kv"                             # "kv" (key=value) or "json"
rate_limit_s = 5.0
"""
