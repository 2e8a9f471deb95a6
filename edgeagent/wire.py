"""Message formats on the wire: incoming frames (imagezmq and native) and outgoing results.

Incoming frames are two-part messages ``[header, payload]``:

* **imagezmq** (unmodified ``ImageSender``): header ``{"msg", "dtype", "shape"}`` for ``send_image``
  with the raw C-contiguous array as payload, or ``{"msg"}`` alone for ``send_jpg`` with a JPEG payload.
* **native v1**: header ``{"v": 1, "source", "seq", "t_send_ns", "encoding": "raw"|"jpeg",
  "dtype", "shape"}``; ``t_send_ns`` is the publisher's wall clock (``time.time_ns()``) and gives
  frame age when the clocks agree.

Nothing in a header is trusted: :func:`parse_frame` checks every field and raises
:class:`~edgeagent.errors.BadFrame` with one of :data:`REJECT_REASONS`.

Results go out on a PUB socket as ``[topic=source, header JSON, tensor 0, tensor 1, ...]``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simplejpeg

from edgeagent.config import MAX_FRAME_SIDE
from edgeagent.errors import BadFrame

NATIVE_VERSION = 1
MAX_SOURCE_CHARS = 128

# The fixed set of reasons a message is rejected (metric label values; documented in the README).
REJECT_REASONS = (
    "parts",  # not exactly two message parts
    "header_size",  # header longer than ingest.max_header_bytes
    "json",  # header is not UTF-8 JSON object
    "keys",  # missing or ill-typed header keys (source name, version, seq ...)
    "dtype",  # an element type other than uint8
    "shape",  # not HxWx3, or not the frame size the model was compiled for
    "size",  # payload bytes != dtype x shape
    "jpeg",  # undecodable JPEG
    "oversize",  # declared or actual payload beyond the frame limit
    "sources",  # more distinct sources than ingest.max_sources
    "internal",  # the agent failed on this message (a bug: logged with its traceback, never fatal)
)
# The fixed set of reasons a valid frame is dropped instead of processed.
DROP_REASONS = (
    "stale",  # replaced by a newer frame of the same source before inference started
    "expired",  # older than ingest.max_frame_age_ms when its turn came
    "late",  # could no longer finish within the SLA when its turn came (deadline-aware dispatch)
    "shutdown",  # still waiting when the agent stopped
    "error",  # inference failed for the job it was in
    "reconfigured",  # waiting when a reloaded model changed the frame size
)


@dataclass(frozen=True)
class FrameLimits:
    """What :func:`parse_frame` accepts. ``frame_hw`` None: any size up to ``max_side``."""

    frame_hw: tuple[int, int] | None
    max_header_bytes: int = 4096
    max_side: int = MAX_FRAME_SIDE

    @property
    def max_payload_bytes(self) -> int:
        if self.frame_hw is not None:
            return self.frame_hw[0] * self.frame_hw[1] * 3
        return self.max_side * self.max_side * 3


@dataclass
class Frame:
    """A validated frame. ``image`` is HxWx3 uint8 BGR; for raw payloads it is a view of the received
    ZeroMQ buffer (no copy), kept alive by ``keepalive``."""

    source: str
    seq: int
    image: np.ndarray
    rx_ns: int  # time.monotonic_ns() when the message was read off the socket
    sent_wall_ns: int | None  # publisher's wall clock, native protocol only
    fmt: str  # "imagezmq" or "native"
    encoding: str  # "raw" or "jpeg"
    keepalive: Any = None
    envelope: list[Any] | None = None  # ROUTER routing frames for the reply; None: no reply owed
    reply_sock: Any = None  # the ROUTER socket the request came in on (owned by the I/O thread)


def _as_memoryview(part: Any) -> memoryview:
    buf = getattr(part, "buffer", None)
    if buf is not None:
        return memoryview(buf)  # zmq.Frame from recv_multipart(copy=False): a writable view
    return memoryview(part)


def _decode_header(part: Any, limits: FrameLimits) -> dict[str, Any]:
    raw = _as_memoryview(part)
    if raw.nbytes > limits.max_header_bytes:
        raise BadFrame("header_size", f"header is {raw.nbytes} bytes, limit {limits.max_header_bytes}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    # ValueError covers JSONDecodeError and integers beyond Python's digit limit; RecursionError: nesting bombs.
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadFrame("json", f"header is not UTF-8 JSON ({exc.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise BadFrame("json", f"header is JSON {type(header).__name__}, expected an object")
    return header


def _source_of(header: dict[str, Any], key: str) -> str:
    source = header.get(key)
    if not isinstance(source, str) or not source or len(source) > MAX_SOURCE_CHARS:
        raise BadFrame("keys", f"'{key}' must be a non-empty string of at most {MAX_SOURCE_CHARS} characters")
    if not source.isprintable():
        raise BadFrame("keys", f"'{key}' contains non-printable characters")
    return source


def _check_hw(h: int, w: int, limits: FrameLimits, source: str) -> None:
    if limits.frame_hw is not None and (h, w) != limits.frame_hw:
        eh, ew = limits.frame_hw
        raise BadFrame("shape", f"frame is {w}x{h}, the model is compiled for {ew}x{eh} frames", source)
    if limits.frame_hw is None and not (1 <= h <= limits.max_side and 1 <= w <= limits.max_side):
        raise BadFrame("shape", f"frame is {w}x{h}, sides must be 1..{limits.max_side}", source)


def _raw_image(header: dict[str, Any], payload: memoryview, limits: FrameLimits, source: str) -> np.ndarray:
    dtype = header.get("dtype")
    if not isinstance(dtype, str):
        raise BadFrame("keys", "'dtype' must be a string", source)
    if dtype != "uint8":
        raise BadFrame("dtype", f"dtype {dtype[:32]!r} is not supported, send uint8 BGR frames", source)
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or len(shape) > 8
    ):
        raise BadFrame("keys", "'shape' must be a list of non-negative integers", source)
    if len(shape) != 3 or shape[2] != 3:
        raise BadFrame("shape", f"shape {shape} is not HxWx3 (BGR)", source)
    h, w = shape[0], shape[1]
    # Check the declared size before the frame size so a huge declared shape reads as oversize.
    declared = math.prod(shape)
    if declared > limits.max_payload_bytes:
        raise BadFrame("oversize", f"declared {declared} bytes, limit {limits.max_payload_bytes}", source)
    _check_hw(h, w, limits, source)
    if payload.nbytes != declared:
        raise BadFrame("size", f"payload is {payload.nbytes} bytes, shape {shape} uint8 needs {declared}", source)
    image = np.frombuffer(payload, dtype=np.uint8).reshape(h, w, 3)
    return image


def _jpeg_image(payload: memoryview, limits: FrameLimits, source: str) -> np.ndarray:
    if payload.nbytes > limits.max_payload_bytes:
        raise BadFrame("oversize", f"JPEG is {payload.nbytes} bytes, limit {limits.max_payload_bytes}", source)
    try:
        # The header first: reject a wrong size (or a decompression bomb) before decoding pixels.
        h, w, _cs, _sub = simplejpeg.decode_jpeg_header(payload)
        _check_hw(h, w, limits, source)
        image = simplejpeg.decode_jpeg(payload, colorspace="BGR")
    except ValueError as exc:
        raise BadFrame("jpeg", f"undecodable JPEG ({str(exc)[:80]})", source) from None
    return np.asarray(image)


def parse_frame(parts: Sequence[Any], limits: FrameLimits, rx_ns: int) -> Frame:
    """Validate a two-part message and return a :class:`Frame` (``seq`` -1: assign one on receipt).

    Raises :class:`BadFrame` naming the reason; ``BadFrame.source`` is set once the source is known
    so the rejection is counted against it.
    """
    if len(parts) != 2:
        raise BadFrame("parts", f"{len(parts)} message parts, expected 2 (header, payload)")
    header = _decode_header(parts[0], limits)
    payload = _as_memoryview(parts[1])
    if "v" in header:
        if header["v"] != NATIVE_VERSION:
            raise BadFrame("keys", f"native protocol version {header['v']!r} is not supported (1)")
        source = _source_of(header, "source")
        seq = header.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63:
            raise BadFrame("keys", "'seq' must be an integer in [0, 2**63)", source)
        t_send = header.get("t_send_ns")
        if t_send is not None and (not isinstance(t_send, int) or isinstance(t_send, bool) or not 0 <= t_send < 2**63):
            raise BadFrame("keys", "'t_send_ns' must be an integer in [0, 2**63) (time.time_ns())", source)
        encoding = header.get("encoding", "raw")
        if encoding == "raw":
            image = _raw_image(header, payload, limits, source)
        elif encoding == "jpeg":
            image = _jpeg_image(payload, limits, source)
        else:
            raise BadFrame("keys", f"'encoding' {str(encoding)[:16]!r} is not raw or jpeg", source)
        return Frame(source, seq, image, rx_ns, t_send, "native", encoding, parts[1])
    source = _source_of(header, "msg")
    if "dtype" in header or "shape" in header:
        image = _raw_image(header, payload, limits, source)
        encoding = "raw"
    else:
        image = _jpeg_image(payload, limits, source)
        encoding = "jpeg"
    return Frame(source, -1, image, rx_ns, None, "imagezmq", encoding, parts[1])


# ---------------------------------------------------------------------------------------------
# Encoding (publishers and the agent's replies)


def encode_native(source: str, seq: int, image: np.ndarray | None = None, jpeg: bytes | None = None) -> list[Any]:
    """A native v1 frame message. Pass a HxWx3 uint8 ``image`` or an encoded ``jpeg``."""
    header: dict[str, Any] = {"v": NATIVE_VERSION, "source": source, "seq": seq, "t_send_ns": time.time_ns()}
    if jpeg is not None:
        header["encoding"] = "jpeg"
        return [json.dumps(header).encode(), jpeg]
    if image is None:
        raise ValueError("encode_native needs an image or a jpeg")
    image = np.ascontiguousarray(image)
    header.update(encoding="raw", dtype=str(image.dtype), shape=list(image.shape))
    return [json.dumps(header).encode(), image]


def encode_imagezmq(msg: str, image: np.ndarray | None = None, jpeg: bytes | None = None) -> list[Any]:
    """Exactly what ``imagezmq.ImageSender.send_image`` / ``send_jpg`` put on the wire."""
    if jpeg is not None:
        return [json.dumps({"msg": msg}).encode(), jpeg]
    if image is None:
        raise ValueError("encode_imagezmq needs an image or a jpeg")
    image = np.ascontiguousarray(image)
    return [json.dumps({"msg": msg, "dtype": str(image.dtype), "shape": list(image.shape)}).encode(), image]


def error_reply(reason: str, detail: str, source: str | None) -> bytes:
    """The JSON a REQ sender gets for a rejected or dropped frame."""
    status = "dropped" if reason in DROP_REASONS else "rejected"
    return json.dumps({"status": status, "reason": reason, "detail": detail, "source": source}).encode()


def dumps(obj: Any) -> bytes:
    """Compact JSON for result headers (NaN never appears: latencies are finite)."""
    return json.dumps(obj, separators=(",", ":")).encode()
