"""Message formats on the wire: incoming frames (imagezmq and native) and outgoing results.

Incoming frames are two-part messages ``[header, payload]``:

* **imagezmq** (unmodified ``ImageSender``): header ``{"msg", "dtype", "shape"}`` for ``send_image``
  with the raw C-contiguous array as payload, or ``{"msg"}`` alone for ``send_jpg`` with a JPEG payload.
* **native v1**: header ``{"v": 1, "source", "seq", "t_send_ns", "encoding": "raw"|"jpeg",
  "dtype", "shape"}``; ``t_send_ns`` is the publisher's wall clock (``time.time_ns()``) and gives
  frame age when the clocks agree.

Raw frames are uint8 ``[H, W]`` or ``[H, W, 1]`` (gray), ``[H, W, 3]`` (BGR, or RGB for a source
configured so) or ``[H, W, 4]`` (BGRA/BGRX) of any size up to ``MAX_FRAME_SIDE`` a side; the compiled
graph converts and resizes them (:mod:`edgeagent.models`). JPEGs decode to BGR, gray JPEGs to gray.

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

from edgeagent.config import HARD_CAP_BYTES, MAX_FRAME_SIDE
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
    "shape",  # not a frame: HxW, HxWx1, HxWx3 or HxWx4, sides 1 .. MAX_FRAME_SIDE
    "size",  # payload bytes != dtype x shape
    "jpeg",  # undecodable JPEG
    "oversize",  # declared payload beyond ingest.max_message_bytes
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
)
# Pixel formats of a frame as the graph sees it (the channel count and the source's channel order).
PIXEL_FORMATS = ("gray", "bgr", "rgb", "bgrx", "rgbx")
ACCEPTED = (
    "uint8 frames of any size up to {side}x{side}: HxW or HxWx1 (gray), HxWx3 (BGR; RGB with "
    "sources.NAME.pixel_format), HxWx4 (BGRA/BGRX), or JPEG; messages up to {cap} bytes"
)


@dataclass(frozen=True)
class FrameLimits:
    """What :func:`parse_frame` accepts: frames of any size up to ``max_side`` a side whose payload fits
    in ``max_payload_bytes`` (the ingest hard cap)."""

    max_payload_bytes: int = HARD_CAP_BYTES
    max_header_bytes: int = 4096
    max_side: int = MAX_FRAME_SIDE

    def accepted(self) -> str:
        """What a sender may send, in words (rejections, ``info``)."""
        return ACCEPTED.format(side=self.max_side, cap=self.max_payload_bytes)


@dataclass(slots=True)
class Frame:
    """A validated frame. ``image`` is HxWxC uint8 (C 1, 3 or 4, channel order ``pix``); for raw payloads
    it is a view of the received ZeroMQ buffer (no copy), kept alive by ``keepalive``."""

    source: str
    seq: int
    image: np.ndarray
    rx_ns: int  # time.monotonic_ns() when the message was read off the socket
    sent_wall_ns: int | None  # publisher's wall clock, native protocol only
    fmt: str  # "imagezmq", "native" or "frigate" (the protocol: how it is answered)
    encoding: str  # "raw" or "jpeg"
    keepalive: Any = None
    envelope: list[Any] | None = None  # ROUTER routing frames for the reply; None: no reply owed
    reply_sock: Any = None  # the ROUTER socket the request came in on (owned by the I/O thread)
    pix: str = "bgr"  # one of PIXEL_FORMATS
    slot_key: str | None = None  # the slot it waits in when not its source's (one per Frigate socket)
    timeout_ns: int = 0  # older than this when its turn comes: dropped as late (the sender gave up); 0: none

    @property
    def slot(self) -> str:
        return self.slot_key or self.source

    @property
    def key(self) -> tuple[int, int, str]:
        """(height, width, pixel format): frames with one key share a compiled graph and can batch."""
        return (self.image.shape[0], self.image.shape[1], self.pix)


def as_memoryview(part: Any) -> memoryview:
    buf = getattr(part, "buffer", None)
    if buf is not None:
        return memoryview(buf)  # zmq.Frame from recv_multipart(copy=False): a writable view
    return memoryview(part)


def _decode_header(part: Any, limits: FrameLimits) -> dict[str, Any]:
    raw = as_memoryview(part)
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
    if not (1 <= h <= limits.max_side and 1 <= w <= limits.max_side):
        raise BadFrame("shape", f"frame is {w}x{h}; accepted: {limits.accepted()}", source)


_PIX_BY_CHANNELS = {1: "gray", 3: "bgr", 4: "bgrx"}


def _raw_image(header: dict[str, Any], payload: memoryview, limits: FrameLimits, source: str) -> np.ndarray:
    dtype = header.get("dtype")
    if not isinstance(dtype, str):
        raise BadFrame("keys", "'dtype' must be a string", source)
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or len(shape) > 8
    ):
        raise BadFrame("keys", "'shape' must be a list of non-negative integers", source)
    if dtype != "uint8":
        raise BadFrame("dtype", f"received dtype {dtype[:32]!r} shape {shape}; accepted: {limits.accepted()}", source)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in _PIX_BY_CHANNELS):
        raise BadFrame("shape", f"received shape {shape} uint8; accepted: {limits.accepted()}", source)
    h, w = shape[0], shape[1]
    channels = shape[2] if len(shape) == 3 else 1
    # Check the declared size before the frame size so a huge declared shape reads as oversize.
    declared = math.prod(shape)
    if declared > limits.max_payload_bytes:
        raise BadFrame("oversize", f"shape {shape} declares {declared} bytes, limit {limits.max_payload_bytes}", source)
    _check_hw(h, w, limits, source)
    if payload.nbytes != declared:
        raise BadFrame("size", f"payload is {payload.nbytes} bytes, shape {shape} uint8 needs {declared}", source)
    return np.frombuffer(payload, dtype=np.uint8).reshape(h, w, channels)


def _jpeg_image(payload: memoryview, limits: FrameLimits, source: str) -> np.ndarray:
    try:
        # The header first: reject a wrong size (or a decompression bomb) before decoding pixels.
        h, w, colorspace, _sub = simplejpeg.decode_jpeg_header(payload)
        _check_hw(h, w, limits, source)
        if h * w * 3 > limits.max_payload_bytes:
            raise BadFrame("oversize", f"JPEG of {w}x{h} decodes beyond {limits.max_payload_bytes} bytes", source)
        gray = colorspace == "Gray"
        image = simplejpeg.decode_jpeg(payload, colorspace="GRAY" if gray else "BGR")
    except ValueError as exc:
        raise BadFrame("jpeg", f"undecodable JPEG ({str(exc)[:80]})", source) from None
    return np.asarray(image)


# imagezmq header bytes → (source, (H, W, C)) for raw frames: a camera sends the same header bytes with
# every frame, so it is decoded and checked once (bounded; cleared when full). Limits-independent
# checks only: the payload size is checked against the shape on every frame.
_IMAGEZMQ_HEADERS: dict[bytes, tuple[str, tuple[int, int, int], int, str]] = {}
_HEADER_CACHE_MAX = 1024


def parse_frame(parts: Sequence[Any], limits: FrameLimits, rx_ns: int) -> Frame:
    """Validate a two-part message and return a :class:`Frame` (``seq`` -1: assign one on receipt).

    Raises :class:`BadFrame` naming the reason; ``BadFrame.source`` is set once the source is known
    so the rejection is counted against it.
    """
    if len(parts) != 2:
        raise BadFrame("parts", f"{len(parts)} message parts, expected 2 (header, payload)")
    raw_header = getattr(parts[0], "bytes", None) if not isinstance(parts[0], bytes) else parts[0]
    cached = _IMAGEZMQ_HEADERS.get(raw_header) if raw_header is not None else None
    if cached is not None:
        source, shape, declared, pix = cached
        payload = getattr(parts[1], "buffer", None) or as_memoryview(parts[1])
        if payload.nbytes == declared and declared <= limits.max_payload_bytes:
            image = np.ndarray(shape, np.uint8, payload)
            return Frame(source, -1, image, rx_ns, None, "imagezmq", "raw", parts[1], pix=pix)
    header = _decode_header(parts[0], limits)
    payload = as_memoryview(parts[1])
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
        return Frame(
            source, seq, image, rx_ns, t_send, "native", encoding, parts[1], pix=_PIX_BY_CHANNELS[image.shape[2]]
        )
    source = _source_of(header, "msg")
    if "dtype" in header or "shape" in header:
        image = _raw_image(header, payload, limits, source)
        encoding = "raw"
        if raw_header is not None:
            if len(_IMAGEZMQ_HEADERS) >= _HEADER_CACHE_MAX:
                _IMAGEZMQ_HEADERS.clear()
            _IMAGEZMQ_HEADERS[bytes(raw_header)] = (source, image.shape, image.nbytes, _PIX_BY_CHANNELS[image.shape[2]])
    else:
        image = _jpeg_image(payload, limits, source)
        encoding = "jpeg"
    return Frame(source, -1, image, rx_ns, None, "imagezmq", encoding, parts[1], pix=_PIX_BY_CHANNELS[image.shape[2]])


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
