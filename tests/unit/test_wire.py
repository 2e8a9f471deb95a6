"""parse_frame: both wire formats, any frame size and every pixel format accepted; every bad input
rejected with its named reason and a detail that says what was received and what is accepted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import simplejpeg
import zmq

from edgeagent.errors import BadFrame
from edgeagent.wire import REJECT_REASONS, FrameLimits, encode_imagezmq, encode_native, parse_frame

LIMITS = FrameLimits(max_payload_bytes=48 * 64 * 3 * 4, max_header_bytes=512)
IMG = np.arange(48 * 64 * 3, dtype=np.uint32).astype(np.uint8).reshape(48, 64, 3)


def as_bytes(parts: list[object]) -> list[bytes]:
    return [p if isinstance(p, bytes) else np.ascontiguousarray(p).tobytes() for p in parts]  # type: ignore[arg-type]


def reject(parts: list[bytes], limits: FrameLimits = LIMITS) -> BadFrame:
    with pytest.raises(BadFrame) as err:
        parse_frame(parts, limits, 0)
    assert err.value.reason in REJECT_REASONS
    return err.value


def test_imagezmq_raw_and_jpeg() -> None:
    f = parse_frame(as_bytes(encode_imagezmq("cam", IMG)), LIMITS, 5)
    assert (f.source, f.seq, f.fmt, f.encoding, f.rx_ns) == ("cam", -1, "imagezmq", "raw", 5)
    assert np.array_equal(f.image, IMG)
    jpg = simplejpeg.encode_jpeg(IMG, quality=95, colorspace="BGR")
    f = parse_frame([json.dumps({"msg": "cam"}).encode(), jpg], LIMITS, 0)
    assert f.encoding == "jpeg" and f.image.shape == (48, 64, 3)
    assert np.abs(f.image.astype(int) - IMG.astype(int)).mean() < 20  # lossy, but the same picture


def test_native_raw_jpeg_and_timestamp() -> None:
    f = parse_frame(as_bytes(encode_native("door", 41, IMG)), LIMITS, 0)
    assert (f.source, f.seq, f.fmt) == ("door", 41, "native") and f.sent_wall_ns is not None
    jpg = simplejpeg.encode_jpeg(IMG, colorspace="BGR")
    f = parse_frame(as_bytes(encode_native("door", 42, jpeg=jpg)), LIMITS, 0)
    assert f.encoding == "jpeg" and f.image.shape == (48, 64, 3)


def test_raw_frame_is_a_view_of_the_zmq_buffer() -> None:
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://wire-test")
    b.connect("inproc://wire-test")
    a.send_multipart(encode_imagezmq("cam", IMG), copy=True)
    parts = b.recv_multipart(copy=False)
    f = parse_frame(parts, LIMITS, 0)
    buf = np.frombuffer(parts[1].buffer, np.uint8)
    assert f.image.ctypes.data == buf.ctypes.data and f.image.flags.writeable
    a.close(0)
    b.close(0)


def hdr(**kw: object) -> bytes:
    return json.dumps(kw).encode()


GOOD = IMG.tobytes()


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ([hdr(msg="c", dtype="uint8", shape=[48, 64, 3])], "parts"),
        ([hdr(msg="c"), b"", b""], "parts"),
        ([b"x" * 600, GOOD], "header_size"),
        ([b"\xff\xfe not utf8", GOOD], "json"),
        ([b"{not json", GOOD], "json"),
        ([b"[1, 2]", GOOD], "json"),
        ([hdr(dtype="uint8", shape=[48, 64, 3]), GOOD], "keys"),
        ([hdr(msg="", dtype="uint8", shape=[48, 64, 3]), GOOD], "keys"),
        ([hdr(msg="a\nb", dtype="uint8", shape=[48, 64, 3]), GOOD], "keys"),
        ([hdr(msg=7, dtype="uint8", shape=[48, 64, 3]), GOOD], "keys"),
        ([hdr(msg="c", dtype="float32", shape=[48, 64, 3]), GOOD * 4], "dtype"),
        ([hdr(msg="c", dtype="uint8", shape="48,64,3"), GOOD], "keys"),
        ([hdr(msg="c", dtype="uint8", shape=[48, 64, 2]), GOOD], "shape"),
        ([hdr(msg="c", dtype="uint8", shape=[48, 64, 3, 1]), GOOD], "shape"),
        ([hdr(msg="c", dtype="uint8", shape=[48]), GOOD], "shape"),
        ([hdr(msg="c", dtype="uint8", shape=[0, 64, 3]), b""], "shape"),
        ([hdr(msg="c", dtype="uint8", shape=[48, 64]), GOOD], "size"),
        ([hdr(msg="c", dtype="uint8", shape=[48, 64, 3]), GOOD[:-1]], "size"),
        ([hdr(msg="c", dtype="uint8", shape=[48, 64, 3]), GOOD + b"\0"], "size"),
        ([hdr(msg="c", dtype="uint8", shape=[100000, 100000, 3]), GOOD], "oversize"),
        ([hdr(msg="c"), b"\xff\xd8 not a jpeg"], "jpeg"),
        ([hdr(msg="c", dtype="uint8", shape=[96, 128, 4]), GOOD], "oversize"),
        ([hdr(v=2, source="c", seq=0), GOOD], "keys"),
        ([hdr(v=1, source="c", seq=-1, dtype="uint8", shape=[48, 64, 3]), GOOD], "keys"),
        ([hdr(v=1, source="c", seq=0, encoding="png"), GOOD], "keys"),
        ([hdr(v=1, source="c", seq=0, t_send_ns="now", dtype="uint8", shape=[48, 64, 3]), GOOD], "keys"),
        ([hdr(v=1, source="c", seq=0, t_send_ns=10**400, dtype="uint8", shape=[48, 64, 3]), GOOD], "keys"),
        ([hdr(v=1, source="c", seq=2**70, dtype="uint8", shape=[48, 64, 3]), GOOD], "keys"),
    ],
)
def test_rejections_name_the_reason(parts: list[bytes], reason: str) -> None:
    assert reject(parts).reason == reason


def test_a_jpeg_bigger_than_the_cap_once_decoded_is_rejected_before_decoding() -> None:
    big = simplejpeg.encode_jpeg(np.zeros((256, 256, 3), np.uint8), colorspace="BGR")
    err = reject([hdr(msg="c"), big])
    assert err.reason == "oversize" and "256x256" in err.detail and err.source == "c"


@pytest.mark.parametrize(
    ("shape", "pix"),
    [([30, 40], "gray"), ([30, 40, 1], "gray"), ([30, 40, 3], "bgr"), ([30, 40, 4], "bgrx"), ([7, 1000, 3], "bgr")],
)
def test_every_size_and_pixel_format_is_accepted(shape: list[int], pix: str) -> None:
    data = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    f = parse_frame(as_bytes(encode_imagezmq("cam", data)), LIMITS, 0)
    channels = shape[2] if len(shape) == 3 else 1
    assert f.image.shape == (shape[0], shape[1], channels) and f.pix == pix
    assert f.key == (shape[0], shape[1], pix)
    assert np.array_equal(f.image.reshape(data.shape), data)


def test_a_gray_jpeg_decodes_to_one_channel() -> None:
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))[..., None]
    jpg = simplejpeg.encode_jpeg(gray, colorspace="GRAY")
    f = parse_frame([hdr(msg="nir"), jpg], LIMITS, 0)
    assert (f.pix, f.image.shape) == ("gray", (48, 64, 1))
    assert np.abs(f.image.astype(int) - gray.astype(int)).mean() < 4


def test_rejections_say_what_was_received_and_what_is_accepted() -> None:
    err = reject([hdr(msg="c", dtype="float32", shape=[48, 64, 3]), GOOD * 4])
    assert "'float32'" in err.detail and "[48, 64, 3]" in err.detail and "HxWx3" in err.detail
    err = reject([hdr(msg="c", dtype="uint8", shape=[48, 64, 2]), GOOD])
    assert "[48, 64, 2]" in err.detail and "gray" in err.detail and "JPEG" in err.detail


def test_sides_are_bounded() -> None:
    limits = FrameLimits(max_side=100)
    f = parse_frame([hdr(msg="c", dtype="uint8", shape=[10, 20, 3]), bytes(600)], limits, 0)
    assert f.image.shape == (10, 20, 3)
    assert reject([hdr(msg="c", dtype="uint8", shape=[10, 200, 3]), bytes(6000)], limits).reason == "shape"


def test_a_repeated_imagezmq_header_is_parsed_once_and_still_checked_every_frame() -> None:
    parts = as_bytes(encode_imagezmq("repeat-cam", IMG))
    first = parse_frame(parts, LIMITS, 1)
    second = parse_frame([parts[0], bytes(reversed(parts[1]))], LIMITS, 2)  # same header bytes, new pixels
    assert (second.source, second.pix, second.image.shape, second.rx_ns) == ("repeat-cam", "bgr", (48, 64, 3), 2)
    assert np.array_equal(first.image, IMG) and np.array_equal(second.image, IMG.reshape(-1)[::-1].reshape(IMG.shape))
    assert reject([parts[0], parts[1][:-1]]).reason == "size"  # the payload is checked on every frame
    small = FrameLimits(max_payload_bytes=100, max_header_bytes=512)
    assert reject(parts, small).reason == "oversize"  # and the limits of the socket it came in on
