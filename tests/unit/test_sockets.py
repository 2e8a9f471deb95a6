"""The hot path's socket helpers over real ZeroMQ sockets (inproc): whole messages, replies on a ROUTER,
zero-copy above the copy threshold, never blocking."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from edgeagent.io.sockets import COPY_BELOW_BYTES, Sockets, recv_message, send_parts, split_envelope


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[Any], zmq.Socket[Any]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    router, req = ctx.socket(zmq.ROUTER), ctx.socket(zmq.REQ)
    router.bind("inproc://sockets-test")
    req.connect("inproc://sockets-test")
    yield router, req
    router.close(0)
    req.close(0)
    ctx.term()


def test_recv_message_returns_whole_messages_then_none(pair: tuple[zmq.Socket[Any], zmq.Socket[Any]]) -> None:
    router, req = pair
    assert recv_message(router) is None  # nothing waiting: None, not an exception
    big = np.arange(COPY_BELOW_BYTES * 2, dtype=np.uint8)
    req.send_multipart([b'{"msg": "cam"}', big])
    assert router.poll(5000)
    parts = recv_message(router)
    assert parts is not None and len(parts) == 4  # identity, delimiter, header, payload
    body, envelope = split_envelope(parts)
    assert envelope[1] == b"" and body[0].bytes == b'{"msg": "cam"}'
    assert np.array_equal(np.frombuffer(body[1].buffer, np.uint8), big)
    assert recv_message(router) is None
    Sockets.reply(router, envelope, [b"a", b"b"])  # a multi-part reply goes back to the same REQ peer
    assert req.poll(5000) and req.recv_multipart() == [b"a", b"b"]


def test_send_parts_copies_small_parts_and_sends_large_ones_intact(
    pair: tuple[zmq.Socket[Any], zmq.Socket[Any]],
) -> None:
    router, req = pair
    small = np.arange(10, dtype=np.float32)
    large = np.arange(COPY_BELOW_BYTES, dtype=np.float32)  # 4 x the threshold in bytes: zero-copy
    send_parts(req, [b"hdr", small, large, memoryview(b"mv")])
    assert router.poll(5000)
    got = router.recv_multipart()[2:]
    assert got[0] == b"hdr" and got[3] == b"mv"
    assert np.array_equal(np.frombuffer(got[1], np.float32), small)
    assert np.array_equal(np.frombuffer(got[2], np.float32), large)


def test_send_parts_never_blocks_on_a_full_peer() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 1)
    push.bind("inproc://sockets-full")
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 1)
    pull.connect("inproc://sockets-full")
    with pytest.raises(zmq.Again):
        for _ in range(100):
            send_parts(push, [b"x", b"y"])
    push.close(0)
    pull.close(0)
    ctx.term()
